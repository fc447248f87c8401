"""CROWN's backward rules on windows (:mod:`verifier.domains.patches`): through a 2-D
convolution (:func:`conv_step`, a GEMM with the cached window matrix where it fits) and
through an elementwise relaxation (:func:`elementwise_step`, the lines gathered at the
windows). Both return the rows on the predecessor's grid and the constant they add,
``(B, G, M)``; the formulas are in the docstring of :mod:`verifier.domains.patches`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..ir.graph import predecessors_by_slot
from ..ops import cached_while_constant
from ..ops.relaxation import RELAXATIONS
from .patch_rows import Geometry, Rows, after_conv, conv_attrs, grid_shape, grown


WINDOW_MATRIX_ENTRIES = 1 << 22  # a convolution's window map is a matrix up to this size (else conv_transpose)


def window_matrix(node: dict, shape: tuple, like: torch.Tensor) -> torch.Tensor | None:
    """The transposed convolution of one ``(C_o, K₀, K₁)`` window as a matrix
    ``(C_o·K₀·K₁, C_i·k₀'·k₁')`` (one GEMM for every row instead of a transposed
    convolution per row, which torch runs as a loop of small ones), cached per window
    size while the weights are constants; ``None`` when larger than
    :data:`WINDOW_MATRIX_ENTRIES`."""
    weight, _, stride, _, dilation, groups = conv_attrs(node)
    co, k0, k1 = shape
    ci = weight.shape[1] * groups
    out0, out1 = grown((k0, k1), stride, dilation, weight.shape[2:])
    if co * k0 * k1 * ci * out0 * out1 > WINDOW_MATRIX_ENTRIES:
        return None

    def build():
        eye = torch.eye(co * k0 * k1, dtype=like.dtype, device=like.device).reshape(-1, co, k0, k1)
        return F.conv_transpose2d(eye, weight.to(like), None, stride, 0, 0, groups, dilation).reshape(co * k0 * k1, -1)

    return cached_while_constant(node, ("patch window", k0, k1, like.dtype, like.device), (weight,), build)


def conv_step(rows: Rows, node: dict, in_shape: tuple, start: torch.Tensor | None = None
               ) -> tuple[Rows, torch.Tensor]:
    """CROWN's affine rule through a convolution, on the windows (module docstring).
    ``start`` ``(B, G)`` of ±1: the rows are ``±e`` at the target (``rows.values`` one-hot,
    ``M = 1``), whose windows are the signed kernels themselves."""
    weight, bias, (s0, s1), (p0, p1), (d0, d1), groups = conv_attrs(node)
    v = rows.clean()
    B, G, M, Co, K0, K1 = v.shape
    if start is not None and groups == 1 and (d0, d1) == (1, 1):
        channel = v.reshape(B, G, Co).abs().argmax(-1)
        taps = weight.to(v).index_select(0, channel.reshape(-1)).reshape(B, G, 1, *weight.shape[1:])
        out = taps * start.to(v)[..., None, None, None, None]
        constant = (v.new_zeros((B, G)) if bias is None else bias.to(v)[channel] * start.to(v)).unsqueeze(-1)
    else:
        constant = v.new_zeros((B, G, M)) if bias is None else torch.matmul(v.sum((-1, -2)), bias.to(v.dtype))
        matrix = window_matrix(node, (Co, K0, K1), v)
        flat = v.reshape(B * G * M, Co, K0, K1)
        if matrix is None:
            out = F.conv_transpose2d(flat.contiguous(memory_format=torch.channels_last), weight.to(v), None, (s0, s1),
                                     0, 0, groups, (d0, d1))
        else:
            k0, k1 = grown((K0, K1), (s0, s1), (d0, d1), weight.shape[2:])
            out = (flat.reshape(B * G * M, -1) @ matrix).reshape(B * G * M, -1, k0, k1)
        out = out.reshape(B, G, M, *out.shape[1:])
    return after_conv(rows, out, (s0, s1), (p0, p1), in_shape), constant


def conv_transpose_attrs(node: dict) -> tuple | None:
    """``(weight, bias, stride, begin pads)`` of a 2-D transposed convolution with one group
    and no dilation (the ones :func:`conv_transpose_step` crosses), else ``None``."""
    if node["kind"] != "conv_transpose":
        return None
    weight, a = node["params"]["weight"], node["attrs"]
    if weight.dim() != 4 or a["group"] != 1 or tuple(a["dilations"]) != (1, 1):
        return None
    return weight, node["params"].get("bias"), tuple(a["strides"]), tuple(a["pads"][:2])


def conv_transpose_step(rows: Rows, node: dict, in_shape: tuple) -> tuple[Rows, torch.Tensor]:
    """CROWN's affine rule through a transposed convolution ``y[o] = Σ_{o = s·i + t − p} W[:, :, t]ᵀ x[i]``
    (weight ``(C_i, C_o, k₀, k₁)``, stride ``s``, begin pads ``p``) on the windows: a window of
    ``Λ_y`` of size ``K`` at origin ``a`` reaches the inputs ``i₀ = ⌈(a + p − k + 1)/s⌉ …
    ⌊(a + p + K − 1)/s⌋``, and ``Λ_x[i₀ + v] = Σ_t Λ_y[s·v + t − d]·W[t]`` with
    ``d = a + p − s·i₀``: the ordinary stride-``s`` convolution with ``W`` of the window
    zero-padded by ``d`` in front, one convolution per phase ``a mod s`` (the new windows
    have ``K' = ⌈(K + k − 1)/s⌉`` entries). The new origins are ``i₀``: an affine function of
    the location when ``s`` divides the windows' stride, else kept per window
    (:attr:`Rows.origins`). Constant ``Σ Λ_y·b`` over the window's entries inside the grid."""
    weight, bias, stride, pads = conv_transpose_attrs(node)
    v = rows.clean()
    B, G, M, Co, K0, K1 = v.shape
    ci, _, k0, k1 = weight.shape
    w = weight.to(v)
    constant = v.new_zeros((B, G, M)) if bias is None else torch.matmul(v.sum((-1, -2)), bias.to(v.dtype))
    sizes = [(K + k - 2) // s + 1 for K, k, s in zip((K0, K1), (k0, k1), stride)]
    oy, ox = rows.window_origins()
    firsts = [torch.div(o + p - k + 1 + s - 1, s, rounding_mode="floor")
              for o, p, k, s in zip((oy, ox), pads, (k0, k1), stride)]
    fronts = [o + p - s * f for o, p, s, f in zip((oy, ox), pads, stride, firsts)]  # d ∈ [k − s, k − 1]
    spans = [s * (n - 1) + k for s, n, k in zip(stride, sizes, (k0, k1))]
    out = v.new_zeros((B * G, M, ci, *sizes))
    flat = v.reshape(B * G, M, Co, K0, K1)
    phase = (fronts[0] * (max(k1, stride[1]) + 1) + fronts[1]).reshape(-1)
    for key in torch.unique(phase).tolist():
        members = (phase == key).nonzero().reshape(-1)
        d0, d1 = int(fronts[0].reshape(-1)[members[0]]), int(fronts[1].reshape(-1)[members[0]])
        part = flat.index_select(0, members).reshape(-1, Co, K0, K1)
        part = F.pad(part, (d1, spans[1] - d1 - K1, d0, spans[0] - d0 - K0))  # negative: cropped
        found = F.conv2d(part, w, None, stride)
        out.index_copy_(0, members, found.reshape(len(members), M, ci, *sizes))
    out = out.reshape(B, G, M, ci, *sizes)
    _, H, W = grid_shape(in_shape)
    g = rows.geometry
    uniform = rows.origins is None and all(S % s == 0 for S, s in zip(g.stride, stride))
    if uniform:  # i₀ = (S/s)·j − P' for every location j, P' = −⌈(p − P − k + 1)/s⌉
        new_stride = (g.stride[0] // stride[0], g.stride[1] // stride[1])
        new_pad = tuple(-((p - P - k + s) // s) for P, p, k, s in zip(g.padding, pads, (k0, k1), stride))
        geometry = Geometry(tuple(sizes), new_stride, new_pad, (H, W), g.target)
        found = Rows(out, rows.loc, geometry, clean=False)
    else:
        geometry = Geometry(tuple(sizes), g.stride, g.padding, (H, W), g.target)
        found = Rows(out, rows.loc, geometry, clean=False, origins=(firsts[0], firsts[1]))
    found.every_location = rows.every_location
    return found, constant


def scale_shift_step(rows: Rows, node: dict) -> tuple[Rows, torch.Tensor]:
    """CROWN's affine rule through ``y = a ⊙ x + b`` (constants broadcast to the grid) on the
    windows: ``Λ_x = a ⊙ Λ_y``, constant ``Σ Λ_y·b`` (``a`` and ``b`` gathered at the
    windows; entries outside the grid meet zeros there)."""
    v = rows.values
    B = v.shape[0]
    grid = grid_shape(node["shape"])
    scale, shift = (node["params"][k].to(v).expand(tuple(node["shape"])).reshape(1, *grid).expand(B, *grid)
                    for k in ("scale", "shift"))
    taps = rows.gather(torch.stack([scale, shift], 1)).unbind(3)  # each (B, G, 1, C, K₀, K₁)
    B, G, M = rows.shape
    constant = torch.matmul(v.reshape(B * G, M, -1), taps[1].reshape(B * G, -1, 1)).reshape(B, G, M)
    return rows.like(v * taps[0]), constant


def per_row_or_shared(t: torch.Tensor, B: int, R: int, grid: tuple) -> torch.Tensor | None:
    """A line tensor ``(B, *S)``, ``(B, 1, *S)`` or ``(B, R, *S)`` as ``(B, C, H, W)`` (shared)
    or ``(B, R, C, H, W)`` (per row); ``None`` for any other shape."""
    if not isinstance(t, torch.Tensor):
        return None
    n = math.prod(grid)
    if t.numel() == B * n:
        return t.reshape(B, *grid)
    if t.numel() == B * R * n and t.dim() >= 2 and t.shape[1] == R:
        return t.reshape(B, R, *grid)
    return None


def needs_grad(*tensors: torch.Tensor) -> bool:
    """Whether autograd records an op on ``tensors`` (α-CROWN's steps)."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def elementwise_step(rows: Rows, context, n: str, shape: tuple) -> tuple[Rows, torch.Tensor] | None:
    """CROWN's elementwise rule on the windows, ``Λ⁺a_l + Λ⁻a_u`` and ``Σ Λ⁺b_l + Λ⁻b_u``;
    with per-row slopes α (one row per group), the bounds and α are gathered first and the
    lines computed on the windows only. Without autograd the four lines are gathered in
    one copy and each picked by the sign of ``Λ`` (equal slopes — the dual LP's — and zero
    lower offsets — ReLU's — skip theirs); under autograd the rule is the dense one's,
    clamp for clamp, so that its gradient at ``Λ = 0`` is the same too. ``None`` where the
    lines have another layout."""
    grid = grid_shape(shape)
    B, G, M = rows.shape
    alpha = context.free(n)
    if alpha is not None and alpha.shape[1] != 1:
        v = rows.clean()
        (p,) = predecessors_by_slot(context.graph, n)
        alpha = per_row_or_shared(alpha, B, G, grid)
        if M != 1 or alpha is None or alpha.dim() != 5:
            return None
        l, u = (per_row_or_shared(t, B, G, grid) for t in context.bounds[p])
        if l is None or u is None or l.dim() != 4:
            return None
        node = context.graph.nodes[n]
        flat = lambda t: t.reshape(B, -1)  # noqa: E731  (entries of every window, elementwise)
        lines = RELAXATIONS[node["kind"]].lines(node, flat(rows.gather(l)), flat(rows.gather(u)),
                                                alpha=flat(rows.gather_rows(alpha)).unsqueeze(1),
                                                policy=context.policy)
        if any(t.numel() != v.numel() for t in lines):
            return None
        windows = [t.reshape(v.shape) for t in lines]
    else:
        lines = context.lines(n)
        same_slope = lines[0] is lines[2]
        if context.mirror is not None and not same_slope:
            raise RuntimeError(f"mirrored backward pass through '{n}', whose two lines have different slopes")
        lines = [per_row_or_shared(t, B, G, grid) for t in lines]
        if any(t is None or t.dim() != 4 for t in lines):
            return None
        v = rows.values  # entries outside the grid meet zero lines there
        if all(v.stride(i) == 0 or v.shape[i] == 1 for i in (0, 1)):  # the same rows everywhere (a kernel): GEMMs
            return _shared_rows_step(rows, lines, same_slope, context.mirror)
        if not needs_grad(v, *lines):
            a_l, b_l, a_u, b_u = lines
            zero_low = not bool(b_l.any())
            stack = [a_l] + ([] if same_slope else [a_u]) + [b_u] + ([] if zero_low else [b_l])
            w = rows.gather(torch.stack(stack, 1)).unbind(3)
            up = v >= 0
            slope = w[0] if same_slope else torch.where(up, w[0], w[1])
            if zero_low:  # summed as under autograd below (α-CROWN meets these bounds as near-ties)
                constant = (v.clamp(max=0) * w[-1]).reshape(B, G, M, -1).sum(-1)
                other = None if context.mirror is None else v.clamp(min=0) * w[-1]
            else:
                constant = (v * torch.where(up, w[-1], w[-2])).reshape(B, G, M, -1).sum(-1)
                other = None if context.mirror is None else v * torch.where(up, w[-2], w[-1])
            if other is not None:  # the rows −Λ: Σ −Λ⁻b_l − Λ⁺b_u
                context.mirror.append((constant - other.reshape(B, G, M, -1).sum(-1)).reshape(B, -1))
            return rows.like(v * slope), constant
        windows = [rows.gather(t) for t in lines]
    a_l, b_l, a_u, b_u = windows
    pos, neg = v.clamp(min=0), v.clamp(max=0)
    constant = (pos * b_l + neg * b_u).reshape(B, G, M, -1).sum(-1)
    if context.mirror is not None:
        context.mirror.append((constant - (neg * b_l + pos * b_u).reshape(B, G, M, -1).sum(-1)).reshape(B, -1))
    return rows.like(pos * a_l + neg * a_u), constant


def _shared_rows_step(rows: Rows, lines: list, same_slope: bool, mirror: list | None = None
                      ) -> tuple[Rows, torch.Tensor]:
    """The elementwise rule when every group holds the same rows ``V`` ``(M, D)`` (the
    kernel, after the target's convolution): ``V⁺ ⊙ a_l + V⁻ ⊙ a_u`` by broadcasting, and
    the offsets ``Σ V⁺ b_l + V⁻ b_u`` as one matrix product over all groups."""
    v = rows.values
    B, G, M = rows.shape
    base = v[0, 0]
    pos, neg = base.clamp(min=0), base.clamp(max=0)
    a_l, b_l, a_u, b_u = lines
    stack = [a_l, b_u, b_l] + ([] if same_slope else [a_u])
    w = rows.gather(torch.stack(stack, 1)).unbind(3)  # each (B, G, 1, C, K₀, K₁)
    values = base * w[0] if same_slope else pos * w[0] + neg * w[3]
    flat = lambda t: t.reshape(B * G, -1)  # noqa: E731
    constant = flat(w[1]) @ neg.reshape(M, -1).t() + flat(w[2]) @ pos.reshape(M, -1).t()
    if mirror is not None:  # the rows −V: Σ −V⁻b_l − V⁺b_u
        mirror.append((constant - flat(w[2]) @ neg.reshape(M, -1).t() - flat(w[1]) @ pos.reshape(M, -1).t())
                      .reshape(B, -1))
    return rows.like(values), constant.reshape(B, G, M)


def maxpool_step(rows: Rows, context, n: str, in_shape: tuple) -> tuple[Rows, torch.Tensor] | None:
    """DeepPoly's max-pool rule (:func:`~verifier.domains.crown.crown_maxpool`) on the
    windows: each output ``y`` of a pooling window is bounded below by its selected input
    ``x_s`` (largest lower bound) and above by ``x_s`` where it dominates the window, else
    by ``max u``; so ``Λ_x`` puts ``Λ⁺ + Λ⁻·[dom]`` on ``x_s`` and the constant is
    ``Σ Λ⁻·[¬dom]·max u``. Window entry ``(a, b)`` (offset ``(δ₀, δ₁)`` of its selection in
    the pooling window, dilation ``d``) lands on entry ``(a·s₀ + δ₀d₀, b·s₁ + δ₁d₁)`` of a
    window of size ``K' = (K − 1)s + d(k − 1) + 1``, as after a convolution with stride
    ``s`` and the pooling's begin pads. ``None`` (the walk goes dense) for 1-D pooling or
    when the relaxation's batch is not the rows'."""
    node = context.graph.nodes[n]
    a = node["attrs"]
    rel = context.pool(n)
    v = rows.clean()  # entries off the grid would otherwise reach it through Λ⁺
    B, G, M, C, K0, K1 = v.shape
    if rel.one_d or rel.sel.shape[0] != B or context.mirror is not None:
        return None
    (kh, kw), (s0, s1), (d0, d1) = a["kernel"], a["strides"], a["dilations"]
    _, Ho, Wo = grid_shape(node["shape"])
    sel = rel.sel.reshape(B, C, Ho, Wo)
    dom, max_u = rel.dominates.reshape(B, C, Ho, Wo).to(v.dtype), rel.max_u.reshape(B, C, Ho, Wo).to(v.dtype)
    taps = rows.gather(torch.stack([dom, max_u, (sel // kw).to(v.dtype), (sel % kw).to(v.dtype)], 1))
    dom, max_u, row, col = taps.unbind(3)  # each (B, G, 1, C, K₀, K₁), zero off the grid
    pos, neg = v.clamp(min=0), v.clamp(max=0)
    through = pos + neg * dom
    constant = (neg * (1 - dom) * max_u).reshape(B, G, M, -1).sum(-1)
    k0, k1 = grown((K0, K1), (s0, s1), (d0, d1), (kh, kw))
    device = v.device
    target = ((torch.arange(K0, device=device)[:, None] * s0 + row.long() * d0) * k1
              + torch.arange(K1, device=device)[None, :] * s1 + col.long() * d1)
    out = v.new_zeros((B, G, M, C, k0 * k1)).scatter_add(
        4, target.reshape(B, G, 1, C, K0 * K1).expand(B, G, M, C, K0 * K1), through.reshape(B, G, M, C, K0 * K1))
    pads = rel.pads  # (top, left, bottom, right)
    return after_conv(rows, out.reshape(B, G, M, C, k0, k1), (s0, s1), (pads[0], pads[1]), in_shape), constant
