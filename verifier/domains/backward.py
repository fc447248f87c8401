"""The backward engine shared by CROWN, α-CROWN and the dual LP.

A lower bound on ``Λ_t·v_t`` (``v_t`` the value of node ``t``) is pushed from ``t`` back
to the input, in reverse topological order, one transfer per op kind:

* affine ``y = Σ Lᵢ xᵢ + f₀``: ``Λ_{xᵢ} += Lᵢᵀ Λ_y``, bias ``+= Λ_y·f₀``;
* elementwise nonlinear ``y = f(x)`` with lines ``a_l x + b_l ≤ f(x) ≤ a_u x + b_u``:
  ``Λ_x += Λ⁺ a_l + Λ⁻ a_u``, bias ``+= Λ⁺·b_l + Λ⁻·b_u``;
* max-pool (DeepPoly): below by the window entry with the largest lower bound, above by
  that entry when it dominates the window (``l_j ≥ max_{i≠j} u_i``), else by ``max u``.

At the input, ``Λ·x + bias`` is minimised over the box (``Λ·c − |Λ|·r``) or the ℓ2 ball
(``Λ·c − ε‖Λ‖₂``). Upper bounds are lower bounds of ``−Λ``.
"""

from __future__ import annotations

from typing import Callable

import networkx as nx
import torch

from ..deadline import checkpoint
from ..errors import VerifierInputError
from ..ir.graph import input_node, predecessors_by_slot, topological_order
from ..ops import FORWARD
from ..ops.adjoint import AFFINE_KINDS, adjoint, dot, offset
from ..ops.pool import _all_pads
from ..ops.spatial import pad_spatial
from .relaxations import ELEMENTWISE_NONLINEAR, Lines

Bounds = dict[str, tuple[torch.Tensor, torch.Tensor]]


def pre_activation_nodes(graph: nx.DiGraph) -> list[str]:
    """Nodes whose bounds the relaxations need (inputs of nonlinear ops), topologically."""
    need = []
    for n in topological_order(graph):
        kind = graph.nodes[n]["kind"]
        if kind in ELEMENTWISE_NONLINEAR or kind == "maxpool":
            (p,) = predecessors_by_slot(graph, n)
            if p not in need:
                need.append(p)
    return need


class MaxPoolRelaxation:
    """DeepPoly max-pool relaxation of a 1-D or 2-D ``maxpool`` node, per window (via
    unfold; 1-D pooling runs as 2-D with a unit height): the entry with the largest lower
    bound is selected; it bounds the output from below, and from above too when it
    dominates the window, otherwise ``max u`` does."""

    def __init__(self, node: dict, l: torch.Tensor, u: torch.Tensor):
        a = node["attrs"]
        spatial = len(a["kernel"])
        if spatial not in (1, 2):
            raise VerifierInputError(f"max-pooling over {spatial} axes is not supported by this domain "
                                     f"(node '{node['source']}'); use box")
        pads = _all_pads(node)
        self.one_d = spatial == 1
        if self.one_d:
            a = {"kernel": [1, a["kernel"][0]], "strides": [1, a["strides"][0]], "dilations": [1, a["dilations"][0]]}
            pads = [0, pads[0], 0, pads[1]]
            l, u = l.unsqueeze(-2), u.unsqueeze(-2)
        self.attrs, self.pads = a, pads
        self.in_shape = tuple(l.shape[1:])  # per-sample
        lp, up = self._patches(l, float("-inf")), self._patches(u, float("-inf"))  # (N, C, K, L)
        lower_sel, self.sel = lp.max(dim=2)
        others = up.scatter(2, self.sel.unsqueeze(2), float("-inf")).max(dim=2).values
        out_shape = (*l.shape[:-2], *self._out_hw(l))
        self._dominates = (lower_sel >= others).reshape(out_shape)
        self._max_u = up.max(dim=2).values.reshape(out_shape)

    def _external(self, t: torch.Tensor) -> torch.Tensor:
        return t.squeeze(-2) if self.one_d else t

    @property
    def dominates(self) -> torch.Tensor:
        """Per output entry: the selected entry dominates its window."""
        return self._external(self._dominates)

    @property
    def max_u(self) -> torch.Tensor:
        return self._external(self._max_u)

    def _out_hw(self, x: torch.Tensor) -> tuple[int, int]:
        a = self.attrs
        hp = x.shape[-2] + self.pads[0] + self.pads[2]
        wp = x.shape[-1] + self.pads[1] + self.pads[3]
        kh = (a["kernel"][0] - 1) * a["dilations"][0] + 1
        kw = (a["kernel"][1] - 1) * a["dilations"][1] + 1
        return (hp - kh) // a["strides"][0] + 1, (wp - kw) // a["strides"][1] + 1

    def _patches(self, x: torch.Tensor, fill: float) -> torch.Tensor:
        a = self.attrs
        flat = pad_spatial(x.reshape(-1, *x.shape[-3:]), self.pads, fill)
        cols = torch.nn.functional.unfold(flat, a["kernel"], a["dilations"], 0, a["strides"])
        return cols.reshape(flat.shape[0], flat.shape[1], -1, cols.shape[-1])

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """The selected entry of each window of ``x`` ``(B, k, *in)`` → ``(B, k, *out)``."""
        if self.one_d:
            x = x.unsqueeze(-2)
        B, k = x.shape[:2]
        cols = self._patches(x.reshape(B * k, *x.shape[2:]), 0.0)  # (B·k·s, C, K, L)
        per_sample = self.sel.shape[0] // B
        cols = cols.reshape(B, k, per_sample, *cols.shape[1:])
        idx = self.sel.reshape(B, 1, per_sample, self.sel.shape[1], 1, self.sel.shape[2])
        picked = cols.gather(4, idx.expand(B, k, per_sample, cols.shape[3], 1, cols.shape[5]))
        return self._external(picked.reshape(B, k, *self._dominates.shape[1:]))

    def adjoint(self, lam: torch.Tensor) -> torch.Tensor:
        """Transpose of :meth:`gather` for ``Λ`` of shape ``(B, k, *out)``."""
        if self.one_d:
            lam = lam.unsqueeze(-2)
        a = self.attrs
        B, k = lam.shape[:2]
        channels, L = self.sel.shape[1], self.sel.shape[2]
        K = a["kernel"][0] * a["kernel"][1]
        per_sample = self.sel.shape[0] // B
        vals = lam.reshape(B, k, per_sample, channels, 1, L)
        idx = self.sel.reshape(B, 1, per_sample, channels, 1, L).expand(B, k, per_sample, channels, 1, L)
        cols = torch.zeros((B, k, per_sample, channels, K, L), dtype=lam.dtype, device=lam.device)
        cols = cols.scatter(4, idx, vals).reshape(B * k * per_sample, channels * K, L)
        h, w = self.in_shape[-2:]
        hp, wp = h + self.pads[0] + self.pads[2], w + self.pads[1] + self.pads[3]
        full = torch.nn.functional.fold(cols, (hp, wp), a["kernel"], a["dilations"], 0, a["strides"])
        full = full[..., self.pads[0]: self.pads[0] + h, self.pads[1]: self.pads[1] + w]
        return self._external(full.reshape(B, k, *self.in_shape))


def backward_bound(graph: nx.DiGraph, target: str, lam: torch.Tensor, lines: Callable[[str], Lines],
                   pools: Callable[[str], MaxPoolRelaxation], lower: torch.Tensor, upper: torch.Tensor,
                   norm: float = float("inf"),
                   visit: Callable[[str, torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Lower bound ``(B, k)`` of ``Λ·v_target`` over the input set (see module docstring).

    ``lam`` is ``(B, k, *shape_of_target)``; ``lines(n)``/``pools(n)`` give node ``n``'s
    relaxation (built from intermediate bounds by the caller). ``visit(n, Λ_n)``, if given,
    sees each node's accumulated ``Λ`` before its transfer and returns the ``Λ`` to use:
    branch-and-bound adds its split multipliers there (``Λ_z += β·s``) and reads the
    coefficients its branching score needs.
    """
    lams = {target: lam}
    bias = torch.zeros(lam.shape[:2], dtype=lam.dtype, device=lam.device)
    source = input_node(graph)
    for n in reversed(topological_order(graph)):
        if n not in lams or n == source:
            continue
        checkpoint()
        L = lams.pop(n)
        if visit is not None:
            L = visit(n, L)
        node = graph.nodes[n]
        kind = node["kind"]
        if kind == "constant":
            bias = bias + dot(L, FORWARD["constant"](node, 1))
            continue
        preds = predecessors_by_slot(graph, n)
        shapes = [tuple(graph.nodes[p]["shape"]) for p in preds]
        if kind in AFFINE_KINDS:
            bias = bias + dot(L, offset(node, shapes, L))
            contributions = adjoint(node, L, shapes)
        elif kind in ELEMENTWISE_NONLINEAR:
            rel = lines(n)
            pos, neg = L.clamp(min=0), L.clamp(max=0)
            contributions = [pos * rel.lower_slope.unsqueeze(1) + neg * rel.upper_slope.unsqueeze(1)
                             if rel.lower_slope.dim() == L.dim() - 1 else pos * rel.lower_slope + neg * rel.upper_slope]
            b_l, b_u = rel.lower_bias, rel.upper_bias
            if b_l.dim() == L.dim() - 1:
                b_l, b_u = b_l.unsqueeze(1), b_u.unsqueeze(1)
            bias = bias + (pos * b_l + neg * b_u).reshape(*L.shape[:2], -1).sum(-1)
        elif kind == "maxpool":
            rel = pools(n)
            pos, neg = L.clamp(min=0), L.clamp(max=0)
            dom = rel.dominates.unsqueeze(1)
            through = pos + torch.where(dom, neg, torch.zeros_like(neg))
            bias = bias + dot(torch.where(dom, torch.zeros_like(neg), neg), rel.max_u)
            contributions = [rel.adjoint(through)]
        else:
            raise VerifierInputError(f"no backward transfer for op kind '{kind}' (node '{node['source']}')")
        for p, c in zip(preds, contributions):
            lams[p] = lams[p] + c if p in lams else c
    L = lams.get(source)
    if L is None:  # the target does not depend on the input
        return bias
    if visit is not None:
        L = visit(source, L)
    centre, radius = (upper + lower) / 2, (upper - lower) / 2
    value = dot(L, centre) + bias
    if norm == float("inf"):
        return value - dot(L.abs(), radius)
    eps = radius.reshape(radius.shape[0], -1).max(dim=1).values
    return value - eps[:, None] * L.reshape(*L.shape[:2], -1).norm(p=2, dim=-1)
