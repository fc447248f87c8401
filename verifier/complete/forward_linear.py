"""Intermediate bounds by forward linear propagation, for inputs of few dimensions.

Backward CROWN bounds each entry of an intermediate node with its own backward pass, so a
network with tens of thousands of unstable entries (a GAN generator's transposed
convolutions) costs tens of thousands of passes. With an input ``x ∈ [lo, hi]`` of ``n``
values, the forward mode of linear bound propagation (Xu et al. 2020, "Automatic
Perturbation Analysis for Scalable Certified Robustness and Beyond", §3.2, auto_LiRPA's
"forward" mode) carries, for every node ``v``, two linear functions of the input,
``A_l x + c_l ≤ v(x) ≤ A_u x + c_u`` for all ``x`` in the box, stored as tensors
``(B, n+1, *S)`` (slot 0 the constant, slot ``j`` the coefficient of ``x_j``): about
``n + 1`` forward passes in all, whatever the number of entries.

* input: ``A = I``, ``c = 0``; constant ``w``: ``A = 0``, ``c = w``;
* affine ``y = Σᵢ Lᵢ xᵢ + f₀`` (:data:`~verifier.ops.AFFINE_KINDS`): with the centre and
  half-width functions ``m = (l + u)/2``, ``h = (u − l)/2`` (``l``, ``u`` the two linear
  functions), ``y ≥ L⁺l + L⁻u = Lm − |L|h`` and ``y ≤ Lm + |L|h`` pointwise; ``Lm`` is the
  op itself on the folded slots (``f₀`` kept in slot 0 only) and ``|L|h`` the op's
  ``|W|`` map (:data:`~verifier.ops.LINEAR_PART`), or the op again for the non-decreasing
  affine ones (add, concat, slices, index maps: ``|L| = L``);
* elementwise ``y = g(z)`` (:data:`~verifier.ops.relaxation.RELAXATIONS`): the relaxation's
  lines ``a_l z + b_l ≤ g(z) ≤ a_u z + b_u`` on ``z``'s concretised interval, composed with
  ``z``'s functions by the sign of each slope (``a⁺ l_z + a⁻ u_z``);
* any other op (bilinear, softmax, pooling): its Box transfer on its inputs' intervals,
  as constant functions.

Each node's interval is its functions' range over the box (``c + A·mid ∓ |A|·rad``)
intersected with its IBP interval and with ``known`` bounds; every step keeps
``l(x) ≤ v(x) ≤ u(x)`` for every ``x`` in the box, so the intervals are sound. Usually
looser than backward CROWN per entry, far cheaper when there are many entries.
"""

from __future__ import annotations

import math

import networkx as nx
import torch

from ..deadline import checkpoint
from ..domains.backward import Bounds, pre_activation_nodes
from ..domains.box import BoxDomain, Interval
from ..ir.graph import input_node, predecessors_by_slot, topological_order
from ..ops import AFFINE_KINDS, FORWARD, LINEAR_PART, MONOTONE_KINDS
from ..ops.relaxation import RELAXATIONS
from .refine import intersect

MAX_INPUTS = 64  # input values beyond which the forward mode is not used (its cost grows with them)
CHUNK_ENTRIES = 1 << 25  # function entries (boxes × (n+1) × widest node) per chunk of boxes


def _fold(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0] * t.shape[1], *t.shape[2:])


def _unfold(t: torch.Tensor, batch: int) -> torch.Tensor:
    return t.reshape(batch, -1, *t.shape[1:])


def _concretise(lo_fn: torch.Tensor, hi_fn: torch.Tensor, mid: torch.Tensor, rad: torch.Tensor):
    """The range of the functions ``(B, n+1, *S)`` over the box ``mid ± rad`` ``(B, n)``."""
    shape = (*mid.shape, *([1] * (lo_fn.dim() - 2)))
    m, r = mid.reshape(shape), rad.reshape(shape)
    low = lo_fn[:, 0] + (lo_fn[:, 1:] * m).sum(1) - (lo_fn[:, 1:].abs() * r).sum(1)
    high = hi_fn[:, 0] + (hi_fn[:, 1:] * m).sum(1) + (hi_fn[:, 1:].abs() * r).sum(1)
    return low, high


def _affine(node: dict, kind: str, inputs: list[tuple[torch.Tensor, torch.Tensor]], input_shapes: list[tuple],
            batch: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The functions of an affine op's output from its inputs' (module docstring); ``None``
    where the op has no ``|L|`` map (it is then bounded by Box)."""
    mids = [_fold((lo + hi) / 2) for lo, hi in inputs]
    halves = [_fold((hi - lo) / 2) for lo, hi in inputs]
    fn = FORWARD[kind]
    zeros = [torch.zeros((1, *s), dtype=mids[0].dtype, device=mids[0].device) for s in input_shapes]
    f0 = fn(node, *zeros)
    centre = _unfold(fn(node, *mids), batch)
    slots = torch.ones(centre.shape[1], dtype=centre.dtype, device=centre.device)
    slots[0] = 0.0  # f₀ belongs to the constant slot only
    centre = centre - f0.unsqueeze(1) * slots.reshape(1, -1, *([1] * (centre.dim() - 2)))
    if kind in LINEAR_PART and len(inputs) == 1:
        spread = _unfold(LINEAR_PART[kind](node, halves[0], True), batch)
    elif kind in MONOTONE_KINDS:  # non-decreasing and affine: |L| = L
        spread = _unfold(fn(node, *halves), batch) - f0.unsqueeze(1)
    else:
        return None
    return centre - spread, centre + spread


def _elementwise(node: dict, kind: str, fn_in: tuple[torch.Tensor, torch.Tensor], l: torch.Tensor,
                 u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The functions of ``g(z)`` from ``z``'s and its interval ``[l, u]`` (module docstring);
    ``None`` where a line is not finite (the op is then bounded by Box)."""
    lines = RELAXATIONS[kind].lines(node, l, u)
    parts = (lines.lower_slope, lines.lower_bias, lines.upper_slope, lines.upper_bias)
    if not all(bool(torch.isfinite(p).all()) for p in parts):
        return None
    lo_z, hi_z = fn_in
    a_l, b_l, a_u, b_u = (p.unsqueeze(1) for p in parts)
    low = a_l.clamp(min=0) * lo_z + a_l.clamp(max=0) * hi_z
    high = a_u.clamp(min=0) * hi_z + a_u.clamp(max=0) * lo_z
    low[:, 0] += b_l[:, 0]
    high[:, 0] += b_u[:, 0]
    return low, high


def _constant_functions(value: torch.Tensor, batch: int, n: int) -> torch.Tensor:
    """``value`` ``(B or 1, *S)`` as functions ``(B, n+1, *S)`` with zero coefficients."""
    out = torch.zeros(batch, n + 1, *value.shape[1:], dtype=value.dtype, device=value.device)
    out[:, 0] = value
    return out


def forward_linear_bounds(graph: nx.DiGraph, lower: torch.Tensor, upper: torch.Tensor,
                          known: Bounds | None = None, need: list[str] | None = None) -> Bounds:
    """Bounds ``(l, u)`` ``(B, *S)`` of the nodes ``need`` (default: every node a relaxation
    needs, :func:`~verifier.domains.backward.pre_activation_nodes`) over the boxes
    ``[lower, upper]`` ``(B, *input_shape)``, by the module docstring's forward mode,
    intersected with IBP and with ``known`` (sound bounds found earlier). Cost and memory
    grow with ``n + 1`` times the network's activations (``n`` the input size)."""
    batch = lower.shape[0]
    n = math.prod(lower.shape[1:])
    need = pre_activation_nodes(graph) if need is None else need
    known = known or {}
    widest = max(math.prod(graph.nodes[v]["shape"]) for v in graph.nodes)
    step = max(1, CHUNK_ENTRIES // ((n + 1) * widest))
    if batch > step:
        parts = [forward_linear_bounds(graph, lower[i:i + step], upper[i:i + step],
                                       {v: (l[i:i + step], u[i:i + step]) for v, (l, u) in known.items()}, need)
                 for i in range(0, batch, step)]
        return {v: (torch.cat([p[v][0] for p in parts]), torch.cat([p[v][1] for p in parts])) for v in need}
    mid, rad = ((lower + upper) / 2).reshape(batch, n), ((upper - lower) / 2).reshape(batch, n)
    box = BoxDomain()
    source = input_node(graph)
    order = topological_order(graph)
    position = {v: i for i, v in enumerate(order)}
    last_read = {v: max((position[s] for s in graph.successors(v)), default=-1) for v in order}
    eye = torch.eye(n, dtype=lower.dtype, device=lower.device).reshape(n, *lower.shape[1:])
    ident = torch.cat([torch.zeros(1, *lower.shape[1:], dtype=lower.dtype, device=lower.device), eye])
    ident = ident.unsqueeze(0).expand(batch, *ident.shape).contiguous()
    fns = {source: (ident, ident)}
    boxes = {source: Interval(*intersect((lower, upper), known.get(source)))}
    for v in order:
        if v == source:
            continue
        checkpoint()
        node = graph.nodes[v]
        kind = node["kind"]
        preds = predecessors_by_slot(graph, v)
        if kind == "constant":
            value = FORWARD["constant"](node, batch)
            boxes[v] = Interval(value, value)
        else:
            state = box.transfer_for(kind)(box, node, *[boxes[p] for p in preds])
            found = None
            if kind in AFFINE_KINDS and all(p in fns for p in preds):
                found = _affine(node, kind, [fns[p] for p in preds],
                                [tuple(graph.nodes[p]["shape"]) for p in preds], batch)
            elif kind in RELAXATIONS and preds[0] in fns:
                found = _elementwise(node, kind, fns[preds[0]], *boxes[preds[0]])
            interval = intersect(tuple(state), known.get(v))
            if found is not None:
                fns[v] = found
                interval = intersect(interval, _concretise(*found, mid, rad))
            boxes[v] = Interval(*interval)
        if v not in fns and bool(torch.isfinite(boxes[v].lower).all() and torch.isfinite(boxes[v].upper).all()):
            fns[v] = tuple(_constant_functions(t, batch, n) for t in boxes[v])  # its interval, as constants
        for p in preds:  # drop what no later node reads
            if last_read[p] <= position[v]:
                fns.pop(p, None)
                if p not in need:
                    boxes.pop(p, None)
    return {v: (boxes[v].lower, boxes[v].upper) for v in need}


__all__ = ["MAX_INPUTS", "forward_linear_bounds"]
