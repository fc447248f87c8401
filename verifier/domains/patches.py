"""Backward passes from a convolution's outputs with coefficients in patch form
(auto_LiRPA's "patches mode", Xu et al. 2020, "Automatic Perturbation Analysis for
Scalable Certified Robustness and Beyond", §3.3 / App. A).

The intermediate bound of one neuron ``(c, i, j)`` of a 2-D convolution's output starts
from ``Λ = ±e_(c,i,j)``. Pushed back through convolutions and elementwise relaxations,
its coefficients stay zero outside a window of the current node's grid: the
neuron's receptive field. Each row is kept as that window only,

    ``values`` ``(B, R, C, K₀, K₁)`` at origin ``(i·S₀ − P₀, j·S₁ − P₁)``,

with ``K``, ``S``, ``P`` the receptive field's size, stride and padding so far (one
geometry per node, the same for every row). The transfers are CROWN's
(:mod:`verifier.domains.crown`) on the windows:

* convolution ``y = W ⋆ x + b`` (stride ``s``, padding ``p``, dilation ``d``):
  ``Λ_x = conv_transpose(Λ_y, W)`` on each window, ``K' = (K − 1)s + d(k − 1) + 1``,
  ``S' = S·s``, ``P' = P·s + p``; entries that fall on ``x``'s zero padding are dropped
  (they multiply no variable); constant ``Σ Λ_y·b``;
* elementwise relaxations (lines ``a_l x + b_l ≤ f(x) ≤ a_u x + b_u``):
  ``Λ⁺a_l + Λ⁻a_u`` and ``Σ Λ⁺b_l + Λ⁻b_u`` with the lines gathered at the window;
* the input box: ``min Λ·x = Λ·c − |Λ|·r`` over the window (or ``− ε‖Λ‖₂``).

At any other node the windows are scattered into dense ``(B, R, *shape)`` coefficients
and the engine's backward walk (:func:`verifier.engine.propagate_backward`) goes on
from there. A window holds ``C·K₀·K₁`` entries where the dense form holds the whole
``C·H·W`` grid (Wong–Kolter's MNIST net: 256 against 3,136 after the second
convolution), so the passes that bound a convolution's crossing neurons cost a
fraction of the dense ones; the bounds are the same up to float rounding.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import networkx as nx
import torch
import torch.nn.functional as F

from ..engine import concretize_linear, propagate_backward
from ..ir.graph import input_node, predecessors_by_slot
from ..linalg import centre_radius, dot
from ..ops import cached_while_constant
from ..ops.relaxation import RELAXATIONS

PATCH_FORMS = ("affine", "elementwise")


def patch_form(form: str) -> Callable:
    """Decorator: declare that a backward transfer is CROWN's ``form`` rule
    (``"affine"`` or ``"elementwise"``), which :func:`patch_bound` may apply to windows
    instead of calling it on dense coefficients."""
    if form not in PATCH_FORMS:
        raise ValueError(f"patch form must be one of {PATCH_FORMS}, not {form!r}")

    def mark(fn):
        fn.patch_form = form
        return fn

    return mark


class Geometry(NamedTuple):
    """The rows' windows in the current node's grid: size ``kernel``, origin of target
    location ``(i, j)`` at ``(i·stride₀ − padding₀, j·stride₁ − padding₁)``; ``grid`` is
    the current node's ``(H, W)``, ``target`` the target's."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    grid: tuple[int, int]
    target: tuple[int, int]

    def pads(self) -> tuple[int, int, int, int]:
        """``(top, bottom, left, right)`` zero padding of the grid that holds every window."""
        (k0, k1), (s0, s1), (p0, p1), (h, w), (th, tw) = self
        return p0, max(0, (th - 1) * s0 - p0 + k0 - h), p1, max(0, (tw - 1) * s1 - p1 + k1 - w)


def _grid_shape(shape: tuple) -> tuple[int, int, int] | None:
    """``(C, H, W)`` of a node shape ``(1, …, 1, C, H, W)``, else ``None``."""
    shape = tuple(shape)
    if len(shape) < 3 or any(d != 1 for d in shape[:-3]):
        return None
    return shape[-3], shape[-2], shape[-1]


def _conv_attrs(node: dict) -> tuple | None:
    """``(weight, bias, stride, padding, dilation, groups)`` of a 2-D convolution with
    symmetric pads, else ``None``."""
    if node["kind"] != "conv":
        return None
    weight, a = node["params"]["weight"], node["attrs"]
    pads = list(a["pads"])
    if weight.dim() != 4 or pads[:2] != pads[2:]:
        return None
    return weight, node["params"].get("bias"), tuple(a["strides"]), tuple(pads[:2]), tuple(a["dilations"]), a["group"]


class _Rows:
    """The rows' windows at the current node, in groups that share a location:
    ``values`` ``(B, G, M, C, K₀, K₁)`` (``M`` rows per group), ``loc`` ``(B, G)`` the
    groups' locations in the target's grid. One row per group when the rows are chosen
    neurons; every channel and sign of a location when they are all neurons."""

    def __init__(self, values: torch.Tensor, loc: torch.Tensor, geometry: Geometry, clean: bool = True):
        self.values, self.loc, self.geometry, self.is_clean = values, loc, geometry, clean
        self._index = None

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(B, G, M)``."""
        return tuple(self.values.shape[:3])

    def clean(self) -> torch.Tensor:
        """The values with the entries outside the grid (on a convolution's zero padding,
        which multiply no variable) set to zero."""
        if not self.is_clean:
            (k0, k1), (s0, s1), (p0, p1), (h, w), (_, tw) = self.geometry
            if p0 > 0 or p1 > 0 or (self.geometry.target[0] - 1) * s0 + k0 > h or (tw - 1) * s1 + k1 > w:
                device = self.loc.device
                ys = ((self.loc // tw) * s0 - p0).unsqueeze(-1) + torch.arange(k0, device=device)
                xs = ((self.loc % tw) * s1 - p1).unsqueeze(-1) + torch.arange(k1, device=device)
                inside = ((ys >= 0) & (ys < h)).unsqueeze(-1) & ((xs >= 0) & (xs < w)).unsqueeze(-2)
                self.values = self.values * inside[:, :, None, None]
            self.is_clean = True
        return self.values

    def index(self, channels: int) -> torch.Tensor:
        """Flat positions ``(B, G, C·K₀·K₁)`` of each group's window in the padded
        ``(C, H_p, W_p)`` grid."""
        if self._index is None:
            (k0, k1), (s0, s1), _, (h, w), (_, tw) = self.geometry
            top, bottom, left, right = self.geometry.pads()
            hp, wp = h + top + bottom, w + left + right
            device = self.loc.device
            origin = (self.loc // tw) * s0 * wp + (self.loc % tw) * s1  # i·s₀ − p₀ + top (top = p₀)
            offsets = (torch.arange(channels, device=device)[:, None, None] * (hp * wp)
                       + torch.arange(k0, device=device)[None, :, None] * wp
                       + torch.arange(k1, device=device)[None, None, :]).reshape(-1)
            self._index = origin.unsqueeze(-1) + offsets
        return self._index

    def gather(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` ``(B, *E, C, H, W)`` (shared by the rows; ``E`` extra leading axes, e.g. a
        stack of lines) at each group's window: ``(B, G, 1, *E, C, K₀, K₁)``, zero outside
        the grid."""
        (k0, k1), (s0, s1), _, _, (th, tw) = self.geometry
        top, bottom, left, right = self.geometry.pads()
        padded = F.pad(t, (left, right, top, bottom)).contiguous()
        B, G = self.loc.shape
        lead, wp = padded.shape[1:-2], padded.shape[-1]
        strides = padded.stride()
        # every window of the target's grid as a strided view, copied once; then each group takes its own
        windows = padded.as_strided((B, th, tw, *lead, k0, k1), (strides[0], s0 * wp, s1, *strides[1:-2], wp, 1))
        windows = windows.reshape(B * th * tw, -1)
        if G != th * tw or not self.every_location:
            rows = (torch.arange(B, device=t.device)[:, None] * (th * tw) + self.loc).reshape(-1)
            windows = windows.index_select(0, rows)
        return windows.reshape(B, G, 1, *lead, k0, k1)

    every_location = False  # the groups are the target's locations in order (no selection needed)

    def gather_rows(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` ``(B, G, C, H, W)`` (one per row, ``M = 1``) at each row's window
        ``(B, G, 1, C, K₀, K₁)``."""
        top, bottom, left, right = self.geometry.pads()
        B, G, C = t.shape[:3]
        out = F.pad(t, (left, right, top, bottom)).reshape(B, G, -1).gather(2, self.index(C))
        return out.reshape(B, G, 1, C, *self.geometry.kernel)

    def dense(self, shape: tuple) -> torch.Tensor:
        """The windows scattered into dense coefficients ``(B, G·M, *shape)``."""
        C, H, W = _grid_shape(shape)
        top, bottom, left, right = self.geometry.pads()
        B, G, M = self.shape
        flat = self.values.new_zeros((B, G, M, C * (H + top + bottom) * (W + left + right)))
        index = self.index(C).unsqueeze(2).expand(B, G, M, -1)
        flat = flat.scatter(3, index, self.values.reshape(B, G, M, -1))
        grid = flat.reshape(B, G * M, C, H + top + bottom, W + left + right)[..., top:top + H, left:left + W]
        return grid.reshape(B, G * M, *shape)


WINDOW_MATRIX_ENTRIES = 1 << 22  # a convolution's window map is a matrix up to this size (else conv_transpose)


def _window_matrix(node: dict, shape: tuple, like: torch.Tensor) -> torch.Tensor | None:
    """The transposed convolution of one ``(C_o, K₀, K₁)`` window as a matrix
    ``(C_o·K₀·K₁, C_i·k₀'·k₁')`` (one GEMM for every row instead of a transposed
    convolution per row, which torch runs as a loop of small ones), cached per window
    size while the weights are constants; ``None`` when larger than
    :data:`WINDOW_MATRIX_ENTRIES`."""
    weight, _, stride, _, dilation, groups = _conv_attrs(node)
    co, k0, k1 = shape
    ci = weight.shape[1] * groups
    out0, out1 = (k0 - 1) * stride[0] + dilation[0] * (weight.shape[2] - 1) + 1, \
        (k1 - 1) * stride[1] + dilation[1] * (weight.shape[3] - 1) + 1
    if co * k0 * k1 * ci * out0 * out1 > WINDOW_MATRIX_ENTRIES:
        return None

    def build():
        eye = torch.eye(co * k0 * k1, dtype=like.dtype, device=like.device).reshape(-1, co, k0, k1)
        return F.conv_transpose2d(eye, weight.to(like), None, stride, 0, 0, groups, dilation).reshape(co * k0 * k1, -1)

    return cached_while_constant(node, ("patch window", k0, k1, like.dtype, like.device), (weight,), build)


def _conv_step(rows: _Rows, node: dict, in_shape: tuple, start: torch.Tensor | None = None
               ) -> tuple[_Rows, torch.Tensor]:
    """CROWN's affine rule through a convolution, on the windows (module docstring).
    ``start`` ``(B, G)`` of ±1: the rows are ``±e`` at the target (``rows.values`` one-hot,
    ``M = 1``), whose windows are the signed kernels themselves."""
    weight, bias, (s0, s1), (p0, p1), (d0, d1), groups = _conv_attrs(node)
    v = rows.clean()
    B, G, M, Co, K0, K1 = v.shape
    if start is not None and groups == 1 and (d0, d1) == (1, 1):
        channel = v.reshape(B, G, Co).abs().argmax(-1)
        taps = weight.to(v).index_select(0, channel.reshape(-1)).reshape(B, G, 1, *weight.shape[1:])
        out = taps * start.to(v)[..., None, None, None, None]
        constant = (v.new_zeros((B, G)) if bias is None else bias.to(v)[channel] * start.to(v)).unsqueeze(-1)
    else:
        constant = v.new_zeros((B, G, M)) if bias is None else torch.matmul(v.sum((-1, -2)), bias.to(v.dtype))
        matrix = _window_matrix(node, (Co, K0, K1), v)
        flat = v.reshape(B * G * M, Co, K0, K1)
        if matrix is None:
            out = F.conv_transpose2d(flat.contiguous(memory_format=torch.channels_last), weight.to(v), None, (s0, s1),
                                     0, 0, groups, (d0, d1))
        else:
            k0 = (K0 - 1) * s0 + d0 * (weight.shape[2] - 1) + 1
            k1 = (K1 - 1) * s1 + d1 * (weight.shape[3] - 1) + 1
            out = (flat.reshape(B * G * M, -1) @ matrix).reshape(B * G * M, -1, k0, k1)
        out = out.reshape(B, G, M, *out.shape[1:])
    return _after_conv(rows, out, (s0, s1), (p0, p1), in_shape), constant


def _after_conv(rows: _Rows, values: torch.Tensor, stride: tuple, padding: tuple, in_shape: tuple) -> _Rows:
    """The rows with ``values`` ``(B, G, M, C_i, k₀, k₁)`` on the input grid of a convolution
    (``stride``, ``padding``) whose output grid they were on."""
    g = rows.geometry
    _, H, W = _grid_shape(in_shape)
    geometry = Geometry(tuple(values.shape[-2:]), (g.stride[0] * stride[0], g.stride[1] * stride[1]),
                        (g.padding[0] * stride[0] + padding[0], g.padding[1] * stride[1] + padding[1]), (H, W),
                        g.target)
    out = _Rows(values, rows.loc, geometry, clean=False)
    out.every_location = rows.every_location
    return out


def _per_row_or_shared(t: torch.Tensor, B: int, R: int, grid: tuple) -> torch.Tensor | None:
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


def _elementwise_step(rows: _Rows, context, n: str, shape: tuple) -> tuple[_Rows, torch.Tensor] | None:
    """CROWN's elementwise rule on the windows, ``Λ⁺a_l + Λ⁻a_u`` and ``Σ Λ⁺b_l + Λ⁻b_u``;
    with per-row slopes α (one row per group), the bounds and α are gathered first and the
    lines computed on the windows only. Without autograd the four lines are gathered in
    one copy and each picked by the sign of ``Λ`` (equal slopes — the dual LP's — and zero
    lower offsets — ReLU's — skip theirs); under autograd the rule is the dense one's,
    clamp for clamp, so that its gradient at ``Λ = 0`` is the same too. ``None`` where the
    lines have another layout."""
    grid = _grid_shape(shape)
    B, G, M = rows.shape
    alpha = context.free(n)
    if alpha is not None and alpha.shape[1] != 1:
        v = rows.clean()
        (p,) = predecessors_by_slot(context.graph, n)
        alpha = _per_row_or_shared(alpha, B, G, grid)
        if M != 1 or alpha is None or alpha.dim() != 5:
            return None
        l, u = (_per_row_or_shared(t, B, G, grid) for t in context.bounds[p])
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
        lines = [_per_row_or_shared(t, B, G, grid) for t in lines]
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
            out = _Rows(v * slope, rows.loc, rows.geometry)
            out.every_location = rows.every_location
            return out, constant
        windows = [rows.gather(t) for t in lines]
    a_l, b_l, a_u, b_u = windows
    pos, neg = v.clamp(min=0), v.clamp(max=0)
    constant = (pos * b_l + neg * b_u).reshape(B, G, M, -1).sum(-1)
    if context.mirror is not None:
        context.mirror.append((constant - (neg * b_l + pos * b_u).reshape(B, G, M, -1).sum(-1)).reshape(B, -1))
    out = _Rows(pos * a_l + neg * a_u, rows.loc, rows.geometry)
    out.every_location = rows.every_location
    return out, constant


def _shared_rows_step(rows: _Rows, lines: list, same_slope: bool, mirror: list | None = None
                      ) -> tuple[_Rows, torch.Tensor]:
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
    out = _Rows(values, rows.loc, rows.geometry)
    out.every_location = rows.every_location
    return out, constant.reshape(B, G, M)


def _dot(v: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``Σ v·w`` over the window ``(B, G, M)`` for ``v`` ``(B, G, M, …)`` and ``w``
    ``(B, G, 1, …)`` (one batched matrix-vector product)."""
    B, G, M = v.shape[:3]
    v = v.expand(B, G, M, *v.shape[3:])
    return torch.matmul(v.reshape(B * G, M, -1), w.reshape(B * G, -1, 1)).reshape(B, G, M)


def _concretize(rows: _Rows, lower: torch.Tensor, upper: torch.Tensor, norm: float):
    """``(Λ·c, |Λ|·r)`` ``(B, G, M)`` over the input box, whose difference is ``min Λ·x``
    (with ``norm=2``: ``ε‖Λ‖₂`` for the ℓ2 ball of radius ``max r``)."""
    B, G, M = rows.shape
    C, H, W = _grid_shape(lower.shape[1:])
    centre, radius = centre_radius(lower.reshape(B, C, H, W), upper.reshape(B, C, H, W))
    v = rows.values
    value = _dot(v, rows.gather(centre))
    if norm == float("inf"):
        return value, _dot(v.abs(), rows.gather(radius))
    eps = radius.reshape(B, -1).max(dim=1).values
    return value, eps[:, None, None] * v.reshape(B, G, M, -1).norm(p=2, dim=-1)


def _step_form(domain, graph: nx.DiGraph, n: str) -> str | None:
    """How node ``n`` is crossed in patch form: ``"affine"`` (a 2-D convolution),
    ``"elementwise"``, or ``None`` (the walk goes on densely from ``n``)."""
    node = graph.nodes[n]
    preds = predecessors_by_slot(graph, n)
    if len(preds) != 1 or graph.nodes[preds[0]]["kind"] == "constant" or _grid_shape(node["shape"]) is None \
            or _grid_shape(graph.nodes[preds[0]]["shape"]) is None:
        return None
    form = getattr(domain.backward_transfer_for(node["kind"]), "patch_form", None)
    if form == "affine" and _conv_attrs(node) is not None:
        return form
    if form == "elementwise" and node["kind"] in RELAXATIONS:
        return form
    return None


def patchable(domain, graph: nx.DiGraph, target: str) -> bool:
    """Whether :func:`patch_bound` applies to rows of ``target``: a 2-D convolution whose
    backward transfer in ``domain`` is CROWN's affine rule."""
    return _step_form(domain, graph, target) == "affine"


def _walk(domain, graph: nx.DiGraph, n: str, rows: _Rows, bias: torch.Tensor, context, lower: torch.Tensor,
          upper: torch.Tensor, norm: float, start: torch.Tensor | None = None):
    """Lower bounds ``(B, G, M)`` of the rows at node ``n``'s output plus ``bias``: the
    patch-form steps down to the input, or densely by the engine from the first node they
    do not cover. With a mirrored ``context`` (its relaxations share their slope), also
    those of the rows' negations: ``(lower, mirrored lower)`` (see
    :meth:`~verifier.domains.backward.BackwardDomain.mirrored_bound`)."""
    source, shape = input_node(graph), rows.shape
    while n != source:
        form = _step_form(domain, graph, n)
        (p,) = predecessors_by_slot(graph, n) if form is not None else (None,)
        step = None
        if form == "affine":
            step = _conv_step(rows, graph.nodes[n], graph.nodes[p]["shape"], start)
        elif form == "elementwise":
            step = _elementwise_step(rows, context, n, graph.nodes[n]["shape"])
        if step is None:  # from here on densely, by the engine
            lam = rows.dense(tuple(graph.nodes[n]["shape"]))
            lam_x, rest = propagate_backward(graph, domain, n, lam, context)
            bias = bias.reshape(rest.shape) + rest
            if context.mirror is None:
                return concretize_linear(lam_x, bias, lower, upper, norm).reshape(shape)
            value, spread = centre_spread(lam_x, lower, upper, norm)
            return _mirrored(value, spread, bias, context, shape)
        rows, constant = step
        bias, start = bias + constant, None
        n = p
    value, spread = _concretize(rows, lower, upper, norm)
    if context.mirror is None:
        return value - spread + bias
    return _mirrored(value, spread, bias, context, shape)


def centre_spread(lam_x: torch.Tensor | None, lower: torch.Tensor, upper: torch.Tensor, norm: float):
    """``(Λ_x·c, |Λ_x|·r)`` ``(B, k)`` for ``Λ_x`` ``(B, k, *S)`` over the box ``[lower, upper]``
    ``(B, *S)`` (with ``norm=2``: ``ε‖Λ_x‖₂``, ``ε = max r``), whose difference is
    ``min Λ_x·x`` and whose sum is ``−min −Λ_x·x`` (Hölder); zeros without ``Λ_x``."""
    if lam_x is None:
        return 0.0, 0.0
    centre, radius = centre_radius(lower, upper)
    value = dot(lam_x, centre)
    if norm == float("inf"):
        return value, dot(lam_x.abs(), radius)
    eps = radius.reshape(radius.shape[0], -1).max(dim=1).values
    return value, eps[:, None] * lam_x.reshape(*lam_x.shape[:2], -1).norm(p=2, dim=-1)


def _mirrored(value, spread, bias: torch.Tensor, context, shape: tuple):
    """``(v − s + bias, −v − s − bias + Σ mirror)`` reshaped to ``shape``."""
    mirror = sum(m.reshape(bias.shape) for m in context.mirror) if context.mirror else 0.0
    return ((value - spread + bias).reshape(shape), (-value - spread - bias + mirror).reshape(shape))


def patch_bound(domain, graph: nx.DiGraph, target: str, index: torch.Tensor, sign: torch.Tensor, context,
                lower: torch.Tensor, upper: torch.Tensor, norm: float) -> torch.Tensor:
    """Lower bounds ``(B, R)`` of ``sign·v_target[index]`` (``index`` ``(B, R)`` flattened
    entries of the convolution ``target``, ``sign`` ``(R,)`` of ±1) over the input box,
    by the backward pass in patch form (module docstring), one row per group; the
    relaxations come from ``context`` (:class:`~verifier.domains.backward.BackwardPass`).
    Equal to the dense pass from ``Λ = sign·e_index`` up to float rounding."""
    C, H, W = _grid_shape(graph.nodes[target]["shape"])
    channel, loc = index // (H * W), index % (H * W)
    B, R = index.shape
    values = torch.zeros((B, R, 1, C, 1, 1), dtype=lower.dtype, device=lower.device)
    values.scatter_(3, channel.reshape(B, R, 1, 1, 1, 1), 1.0)
    rows = _Rows(values * sign.to(lower).reshape(1, R, 1, 1, 1, 1), loc,
                 Geometry((1, 1), (1, 1), (0, 0), (H, W), (H, W)))
    bias = values.new_zeros((B, R, 1))
    found = _walk(domain, graph, target, rows, bias, context, lower, upper, norm, sign.to(lower).expand(B, R))
    if context.mirror is not None:  # also those of −sign·v_target[index]: (B, 2R)
        return torch.cat([found[0].reshape(B, R), found[1].reshape(B, R)], 1)
    return found.reshape(B, R)


def patch_bound_all(domain, graph: nx.DiGraph, target: str, context, lower: torch.Tensor, upper: torch.Tensor,
                    norm: float) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Lower and upper bounds ``(B, N)`` of every entry of the convolution ``target``
    (flattened), all channels of a location in one group: the first step's windows are
    the kernel itself, shared by every location and sample, and each later one gathers
    the lines once per location. ``None`` when the target is not a plain convolution
    (groups, dilation)."""
    node = graph.nodes[target]
    weight, bias, stride, padding, dilation, groups = _conv_attrs(node)
    if groups != 1 or tuple(dilation) != (1, 1):
        return None
    C, H, W = _grid_shape(node["shape"])
    B, L = lower.shape[0], H * W
    (p,) = predecessors_by_slot(graph, target)
    kernel = weight.to(lower)
    mirrored = context.mirror is not None  # rows +e only; their negations come with them
    signed = [kernel] if mirrored else [kernel, -kernel]
    values = torch.cat(signed).reshape(1, 1, len(signed) * C, *kernel.shape[1:]).expand(B, L, -1, -1, -1, -1)
    offset = torch.zeros(C, dtype=lower.dtype, device=lower.device) if bias is None else bias.to(lower)
    constant = torch.cat([offset] if mirrored else [offset, -offset]).reshape(1, 1, -1).expand(B, L, -1)
    start = _Rows(values, torch.arange(L, device=lower.device).expand(B, L), Geometry((1, 1), (1, 1), (0, 0), (H, W),
                                                                                       (H, W)))
    start.every_location = True
    rows = _after_conv(start, values, stride, padding, graph.nodes[p]["shape"])
    both = _walk(domain, graph, p, rows, constant, context, lower, upper, norm)  # (B, L, 2C), or two (B, L, C)
    lb, ub = (both[0], -both[1]) if mirrored else (both[..., :C], -both[..., C:])
    return lb.transpose(1, 2).reshape(B, C * L), ub.transpose(1, 2).reshape(B, C * L)


def window_entries(domain, graph: nx.DiGraph, target: str) -> int | None:
    """The largest window ``C·K₀·K₁`` of a pass from ``target`` in patch form down to the
    input, or ``None`` when some node on the way is not crossed in patch form (the pass
    would go dense there)."""
    n, source, (k0, k1), largest = target, input_node(graph), (1, 1), 1
    while n != source:
        form = _step_form(domain, graph, n)
        if form is None:
            return None
        (p,) = predecessors_by_slot(graph, n)
        if form == "affine":
            weight, _, (s0, s1), _, (d0, d1), _ = _conv_attrs(graph.nodes[n])
            k0, k1 = (k0 - 1) * s0 + d0 * (weight.shape[2] - 1) + 1, (k1 - 1) * s1 + d1 * (weight.shape[3] - 1) + 1
            largest = max(largest, _grid_shape(graph.nodes[p]["shape"])[0] * k0 * k1)
        n = p
    return largest


__all__ = ["Geometry", "centre_spread", "needs_grad", "patch_bound", "patch_bound_all", "patch_form", "patchable", "window_entries"]
