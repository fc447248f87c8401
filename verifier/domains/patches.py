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

This module walks the graph (which nodes are crossed in patch form, and where the walk
goes on densely); the windows are :mod:`verifier.domains.patch_rows`, the rules on them
:mod:`verifier.domains.patch_steps`.
"""

from __future__ import annotations

import math
from typing import Callable

import networkx as nx
import torch

from ..deadline import checkpoint
from ..engine import concretize_linear, propagate_backward
from ..ir.graph import input_node, predecessors_by_slot
from ..linalg import centre_radius, dot
from ..ops import FORWARD, cached_while_constant
from ..ops.relaxation import RELAXATIONS
from .patch_rows import Geometry, Rows, after_conv, concretize_windows, conv_attrs, grid_shape, grown
from .patch_steps import (conv_step, conv_transpose_attrs, conv_transpose_step, elementwise_step, maxpool_step,
                          needs_grad, scale_shift_step)

PATCH_FORMS = ("affine", "elementwise", "pool")


def patch_form(form: str) -> Callable:
    """Decorator: declare that a backward transfer is CROWN's ``form`` rule
    (``"affine"``, ``"elementwise"`` or DeepPoly's max-pool rule ``"pool"``), which
    :func:`patch_bound` may apply to windows instead of calling it on dense coefficients."""
    if form not in PATCH_FORMS:
        raise ValueError(f"patch form must be one of {PATCH_FORMS}, not {form!r}")

    def mark(fn):
        fn.patch_form = form
        return fn

    return mark


def _step_form(domain, graph: nx.DiGraph, n: str) -> str | None:
    """How node ``n`` is crossed in patch form: ``"affine"`` (a 2-D convolution),
    ``"elementwise"``, or ``None`` (the walk goes on densely from ``n``)."""
    node = graph.nodes[n]
    preds = predecessors_by_slot(graph, n)
    if len(preds) != 1 or graph.nodes[preds[0]]["kind"] == "constant" or grid_shape(node["shape"]) is None \
            or grid_shape(graph.nodes[preds[0]]["shape"]) is None:
        return None
    form = getattr(domain.backward_transfer_for(node["kind"]), "patch_form", None)
    if form == "affine" and (conv_attrs(node) is not None or conv_transpose_attrs(node) is not None
                             or _channel_scale(graph, n)):
        return form
    if form == "elementwise" and node["kind"] in RELAXATIONS:
        return form
    if form == "pool" and node["kind"] == "maxpool" and len(node["attrs"]["kernel"]) == 2:
        return form
    return None


def _channel_scale(graph: nx.DiGraph, n: str) -> bool:
    """Whether node ``n`` is a ``scale_shift`` on a grid whose constants broadcast to it: a
    batch normalisation after a convolution, or a scalar shift between activations (Larq's
    ``sign(sign(x) + 0.1)``); not both scalars on the model's input."""
    node = graph.nodes[n]
    if node["kind"] != "scale_shift":
        return False
    shape = tuple(node["shape"])
    try:
        params = [node["params"][k] for k in ("scale", "shift")]
        # a scalar scale of the input (a normalisation) is left to the dense walk, whose sums
        # round as before
        on_input = predecessors_by_slot(graph, n) == [input_node(graph)]
        return (not on_input or any(p.numel() > 1 for p in params)) and all(
            tuple(torch.broadcast_shapes(tuple(p.shape), shape)) == shape for p in params)
    except (KeyError, RuntimeError):
        return False


DENSE_WINDOW_FRACTION = 0.5  # windows of more than this share of their grid's area go dense


def _covers_grid(rows: Rows, shape: tuple) -> bool:
    """Whether the rows' windows span more than :data:`DENSE_WINDOW_FRACTION` of the grid
    (``shape``'s ``H·W``): the dense form costs no more there, and needs no gathers."""
    (k0, k1), (_, H, W) = rows.geometry.kernel, grid_shape(shape)
    return min(k0, H) * min(k1, W) > DENSE_WINDOW_FRACTION * H * W


def patchable(domain, graph: nx.DiGraph, target: str) -> bool:
    """Whether :func:`patch_bound` applies to rows of ``target``: a 2-D convolution,
    transposed convolution or per-entry scale on a grid whose backward transfer in ``domain``
    is CROWN's affine rule."""
    return _step_form(domain, graph, target) == "affine"


def _walk(domain, graph: nx.DiGraph, n: str, rows: Rows, bias: torch.Tensor, context, lower: torch.Tensor,
          upper: torch.Tensor, norm: float, start: torch.Tensor | None = None):
    """Lower bounds ``(B, G, M)`` of the rows at node ``n``'s output plus ``bias``: the
    patch-form steps down to the input, or densely by the engine from the first node they
    do not cover. With a mirrored ``context`` (its relaxations share their slope), also
    those of the rows' negations: ``(lower, mirrored lower)`` (see
    :meth:`~verifier.domains.backward.BackwardDomain.mirrored_bound`)."""
    shape = rows.shape
    while True:
        checkpoint()
        box = rearranged_input_box(graph, n, lower, upper)
        if box is not None:  # the input itself, or its entries reordered: the box there is known
            lower, upper = box
            break
        form = _step_form(domain, graph, n)
        (p,) = predecessors_by_slot(graph, n) if form is not None else (None,)
        step = None
        if form is not None and _covers_grid(rows, graph.nodes[n]["shape"]):
            step = None  # windows as large as the grid: the dense form is the cheaper one
        elif form == "affine" and graph.nodes[n]["kind"] == "conv":
            step = conv_step(rows, graph.nodes[n], graph.nodes[p]["shape"], start)
        elif form == "affine" and graph.nodes[n]["kind"] == "conv_transpose":
            step = conv_transpose_step(rows, graph.nodes[n], graph.nodes[p]["shape"])
        elif form == "affine":
            step = scale_shift_step(rows, graph.nodes[n])
        elif form == "elementwise":
            step = elementwise_step(rows, context, n, graph.nodes[n]["shape"])
        elif form == "pool":
            step = maxpool_step(rows, context, n, graph.nodes[p]["shape"])
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
    value, spread = concretize_windows(rows, lower, upper, norm)
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
    C, H, W = grid_shape(graph.nodes[target]["shape"])
    channel, loc = index // (H * W), index % (H * W)
    B, R = index.shape
    values = torch.zeros((B, R, 1, C, 1, 1), dtype=lower.dtype, device=lower.device)
    values.scatter_(3, channel.reshape(B, R, 1, 1, 1, 1), 1.0)
    rows = Rows(values * sign.to(lower).reshape(1, R, 1, 1, 1, 1), loc,
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
    if conv_attrs(node) is None:
        return None
    weight, bias, stride, padding, dilation, groups = conv_attrs(node)
    if groups != 1 or tuple(dilation) != (1, 1):
        return None
    C, H, W = grid_shape(node["shape"])
    B, L = lower.shape[0], H * W
    (p,) = predecessors_by_slot(graph, target)
    kernel = weight.to(lower)
    mirrored = context.mirror is not None  # rows +e only; their negations come with them
    signed = [kernel] if mirrored else [kernel, -kernel]
    values = torch.cat(signed).reshape(1, 1, len(signed) * C, *kernel.shape[1:]).expand(B, L, -1, -1, -1, -1)
    offset = torch.zeros(C, dtype=lower.dtype, device=lower.device) if bias is None else bias.to(lower)
    constant = torch.cat([offset] if mirrored else [offset, -offset]).reshape(1, 1, -1).expand(B, L, -1)
    start = Rows(values, torch.arange(L, device=lower.device).expand(B, L), Geometry((1, 1), (1, 1), (0, 0), (H, W),
                                                                                       (H, W)))
    start.every_location = True
    rows = after_conv(start, values, stride, padding, graph.nodes[p]["shape"])
    both = _walk(domain, graph, p, rows, constant, context, lower, upper, norm)  # (B, L, 2C), or two (B, L, C)
    lb, ub = (both[0], -both[1]) if mirrored else (both[..., :C], -both[..., C:])
    return lb.transpose(1, 2).reshape(B, C * L), ub.transpose(1, 2).reshape(B, C * L)


REARRANGING_KINDS = ("reshape", "transpose")  # ops whose output entries are their input's, reordered


def _rearrangement_chain(graph: nx.DiGraph, n: str) -> tuple[list[str], str]:
    """``(chain, base)``: the nodes from ``n`` back that only reorder their one input's
    entries (:data:`REARRANGING_KINDS`), and the first node below them (``n`` itself and
    ``[]`` when ``n`` reorders nothing)."""
    chain = []
    while graph.nodes[n]["kind"] in REARRANGING_KINDS:
        preds = predecessors_by_slot(graph, n)
        if len(preds) != 1:
            break
        chain.append(n)
        n = preds[0]
    return chain, n


def rearranged_input_box(graph: nx.DiGraph, n: str, lower: torch.Tensor, upper: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The input box ``(lower, upper)`` ``(B, *input)`` as seen at node ``n`` when ``n`` is the
    input or only reorders its entries (a channels-last model's ``Transpose`` of the image):
    the same ops applied to both corners, ``(B, *n's shape)``; ``None`` otherwise. A
    pass in patch form then concretises its windows there (a box reordered is a box)."""
    chain, base = _rearrangement_chain(graph, n)
    if base != input_node(graph):
        return None
    if not chain:
        return lower, upper
    shape = tuple(graph.nodes[base]["shape"])
    lower, upper = lower.reshape(lower.shape[0], *shape), upper.reshape(upper.shape[0], *shape)
    for m in reversed(chain):
        node = graph.nodes[m]
        lower, upper = FORWARD[node["kind"]](node, lower), FORWARD[node["kind"]](node, upper)
    return lower, upper


def rearranged_patchable(domain, graph: nx.DiGraph, target: str) -> tuple[str, torch.Tensor] | None:
    """``(source, positions)`` when ``target`` only reorders the entries of a node ``source``
    that :func:`patchable` accepts (``target = reshape(transpose(…(source)))``, as a
    channels-last model flattens a convolution's output): entry ``k`` of ``target`` is
    entry ``positions[k]`` of ``source`` (``positions`` ``(N,)`` long, a permutation), so
    its bounds are ``source``'s there and its rows can start in patch form. ``None``
    otherwise."""
    chain, source = _rearrangement_chain(graph, target)
    if not chain or not patchable(domain, graph, source):
        return None

    def build():
        x = torch.arange(math.prod(graph.nodes[source]["shape"])).reshape(1, *graph.nodes[source]["shape"])
        for m in reversed(chain):
            x = FORWARD[graph.nodes[m]["kind"]](graph.nodes[m], x)
        return x.reshape(-1)

    return source, cached_while_constant(graph.nodes[target], ("rearranged from", source), (), build)


def window_entries(domain, graph: nx.DiGraph, target: str) -> int | None:
    """The largest window ``C·K₀·K₁`` of a pass from ``target`` in patch form down to the
    input, or ``None`` when some node on the way is not crossed in patch form (the pass
    would go dense there)."""
    n, (k0, k1), largest = target, (1, 1), 1
    while _rearrangement_chain(graph, n)[1] != input_node(graph):  # until the (reordered) input
        form = _step_form(domain, graph, n)
        if form is None:
            return None
        (p,) = predecessors_by_slot(graph, n)
        if form == "affine" and conv_attrs(graph.nodes[n]) is not None:
            weight, _, (s0, s1), _, (d0, d1), _ = conv_attrs(graph.nodes[n])
            k0, k1 = grown((k0, k1), (s0, s1), (d0, d1), weight.shape[2:])
            largest = max(largest, grid_shape(graph.nodes[p]["shape"])[0] * k0 * k1)
        elif form == "affine" and conv_transpose_attrs(graph.nodes[n]) is not None:
            weight, _, (s0, s1), _ = conv_transpose_attrs(graph.nodes[n])
            k0, k1 = (k0 + weight.shape[2] - 2) // s0 + 1, (k1 + weight.shape[3] - 2) // s1 + 1
            largest = max(largest, grid_shape(graph.nodes[p]["shape"])[0] * k0 * k1)
        elif form == "pool":
            a = graph.nodes[n]["attrs"]
            k0, k1 = grown((k0, k1), a["strides"], a["dilations"], a["kernel"])
            largest = max(largest, grid_shape(graph.nodes[p]["shape"])[0] * k0 * k1)
        n = p
    return largest


__all__ = ["Geometry", "centre_spread", "needs_grad", "patch_bound", "patch_bound_all", "patch_form", "patchable", "rearranged_patchable",
           "window_entries"]
