"""CROWN (DeepPoly-style back-substitution) and CROWN-IBP; the shared backward driver.

``crown``: intermediate bounds of every pre-activation by its own backward pass to the
input (intersected with IBP), then one backward pass for ``C·f``. ``crown-ibp``: the
intermediate bounds come from IBP (Box), as in CROWN-IBP training. Lower slopes of
crossing ReLUs follow the adaptive rule (1 if ``u > −l`` else 0).

α-CROWN lives in :mod:`verifier.domains.alpha_crown`, the Wong–Kolter dual LP in
:mod:`verifier.domains.dual_lp`; both run on :class:`BackwardDomain`.
"""

from __future__ import annotations

import math

import networkx as nx
import torch

from ..deadline import checkpoint
from ..engine import propagate
from ..errors import VerifierInputError
from ..ir.graph import output_node, predecessors_by_slot, topological_order
from ..linalg import per_sample_rows, selection_rows, spec_matrix
from . import register_domain
from .backward import MaxPoolRelaxation, backward_bound, pre_activation_nodes
from .base import Domain
from .box import BoxDomain
from .relaxations import lines_for

MAX_ENTRIES = 1 << 26  # Λ entries per backward pass before rows are chunked


def _intersect(bounds, other):
    """``[max(l, l'), min(u, u')]`` (``other`` may be ``None``)."""
    if other is None:
        return bounds
    return torch.maximum(bounds[0], other[0]), torch.minimum(bounds[1], other[1])


class BackwardDomain(Domain):
    """Shared driver of backward domains: intermediate bounds, relaxations, final pass."""

    policy = "adaptive"

    def __init__(self, intermediate: str = "crown", norm: float = float("inf")):
        if intermediate not in ("crown", "ibp"):
            raise VerifierInputError(f"intermediate bounds must be 'crown' or 'ibp', not '{intermediate}'")
        self.intermediate = intermediate
        self.norm = float(norm)

    # --- relaxations from bounds ----------------------------------------------------
    def _relaxers(self, graph, bounds, alpha=None):
        cache_lines, cache_pools = {}, {}

        def lines(n):
            if n not in cache_lines:
                (p,) = predecessors_by_slot(graph, n)
                l, u = bounds[p]
                a = None if alpha is None else alpha.get(n)
                cache_lines[n] = lines_for(graph.nodes[n], l, u, self.policy, a)
            return cache_lines[n]

        def pools(n):
            if n not in cache_pools:
                (p,) = predecessors_by_slot(graph, n)
                cache_pools[n] = MaxPoolRelaxation(graph.nodes[n], *bounds[p])
            return cache_pools[n]

        return lines, pools

    def intermediate_bounds(self, graph: nx.DiGraph, lower: torch.Tensor, upper: torch.Tensor, alpha=None,
                            rows: dict | None = None, per_target: bool = False, known: dict | None = None):
        """Bounds ``(l, u)`` of every node a relaxation needs (see module docstring).

        ``alpha`` fixes the lower ReLU slopes of these passes: node → ``(B, 1, *S)``
        shared by every pass, or with ``per_target`` target → {node → ``(B, 2R, *S)``},
        one slope per row of that target's pass (its ``R`` lower then ``R`` upper rows).
        ``rows`` (target → ``(B, R)`` flattened indices) fixes which entries are bounded;
        by default each sample's unstable entries are. ``known`` bounds (sound ones found
        earlier) are intersected in, node by node."""
        states = propagate(graph, BoxDomain(), lower, upper, keep=True)
        need = pre_activation_nodes(graph)
        bounds = {n: (states[n].lower, states[n].upper) for n in need}
        if self.intermediate == "ibp":
            return bounds if known is None else {n: _intersect(b, known.get(n)) for n, b in bounds.items()}
        for n in need:
            checkpoint()
            bounds[n] = _intersect(bounds[n], None if known is None else known.get(n))
            l, u = bounds[n]
            if graph.nodes[n]["kind"] == "input":
                continue
            if rows is not None and n in rows:
                index = rows[n]
            else:
                unstable = ((l < 0) & (u > 0)).reshape(l.shape[0], -1)
                if (rows is not None) or not bool(unstable.any()):
                    continue
                index = per_sample_rows(unstable)  # each sample bounds only its own unstable neurons
            slopes = (alpha or {}).get(n) if per_target else alpha
            lb, ub = self._bound_rows(graph, n, index, lower, upper, bounds, slopes)
            l_flat, u_flat = l.reshape(l.shape[0], -1), u.reshape(u.shape[0], -1)
            l_flat = l_flat.scatter(1, index, torch.maximum(l_flat.gather(1, index), lb))
            u_flat = u_flat.scatter(1, index, torch.minimum(u_flat.gather(1, index), ub))
            bounds[n] = (l_flat.reshape(l.shape), u_flat.reshape(u.shape))
        return bounds

    def _bound_rows(self, graph, node_id, index, lower, upper, bounds, alpha=None):
        """CROWN bounds of the flattened entries ``index`` ``(B, R)`` of ``node_id``, in row
        chunks; ``alpha`` tensors are ``(B, 1, *S)`` or per row ``(B, 2R, *S)``."""
        shape = tuple(graph.nodes[node_id]["shape"])
        batch, R = lower.shape[0], index.shape[1]
        widest = max(math.prod(graph.nodes[m]["shape"]) for m in topological_order(graph))
        chunk = max(1, MAX_ENTRIES // max(1, 2 * batch * widest))
        per_row = alpha is not None and any(a.shape[1] == 2 * R and R > 0 for a in alpha.values())
        lines, pools = self._relaxers(graph, bounds, alpha)
        lbs, ubs = [], []
        for start in range(0, R, chunk):
            part = index[:, start:start + chunk]
            if per_row and part.shape[1] < R:
                stop = start + part.shape[1]
                lines, pools = self._relaxers(graph, bounds, {
                    m: torch.cat([a[:, start:stop], a[:, R + start:R + stop]], 1) for m, a in alpha.items()})
            lam = selection_rows(shape, part, lower)
            both = backward_bound(graph, node_id, torch.cat([lam, -lam], 1), lines, pools, lower, upper, self.norm)
            lbs.append(both[:, : part.shape[1]])
            ubs.append(-both[:, part.shape[1]:])
        return torch.cat(lbs, 1), torch.cat(ubs, 1)

    # --- the final pass -------------------------------------------------------------
    def _spec(self, graph, lower, C):
        out_shape = tuple(graph.nodes[output_node(graph)]["shape"])
        C = spec_matrix(C, math.prod(out_shape), lower)
        return C.reshape(C.shape[0], C.shape[1], *out_shape)

    def _final(self, graph, lower, upper, lam, bounds, alpha=None, visit=None):
        lines, pools = self._relaxers(graph, bounds, alpha)
        return backward_bound(graph, output_node(graph), lam, lines, pools, lower, upper, self.norm, visit)

    def lower_bound(self, graph: nx.DiGraph, lower: torch.Tensor, upper: torch.Tensor, C: torch.Tensor | None = None,
                    alpha: dict | None = None, bounds: dict | None = None, visit=None) -> torch.Tensor:
        """Lower bounds ``(B, k)`` of ``C·f`` only — one backward pass of ``k`` rows, half
        the work of :meth:`bound` (what certified training needs). ``alpha``: fixed lower
        slopes of the final pass, node → ``(B, 1 or k, *S)`` in ``[0, 1]``; ``bounds``:
        intermediate bounds to use instead of computing them (they must be sound);
        ``visit``: the hook of :func:`~verifier.domains.backward.backward_bound`
        (branch-and-bound reads and amends the coefficients ``Λ`` there)."""
        lam = self._spec(graph, lower, C)
        if bounds is None:
            bounds = self.intermediate_bounds(graph, lower, upper)
        return self._final(graph, lower, upper, lam, bounds, alpha, visit)

    def bound(self, graph, lower, upper, C=None):
        lam = self._spec(graph, lower, C)
        k = lam.shape[1]
        bounds = self.intermediate_bounds(graph, lower, upper)
        both = self._final(graph, lower, upper, torch.cat([lam, -lam], 1), bounds)
        return both[:, :k], -both[:, k:]


@register_domain
class CrownDomain(BackwardDomain):
    name = "crown"
    description = "CROWN back-substitution, intermediate bounds by CROWN (intermediate='ibp': CROWN-IBP)"


@register_domain
class CrownIBPDomain(BackwardDomain):
    name = "crown-ibp"
    description = "CROWN final pass on IBP intermediate bounds (the CROWN-IBP bound)"

    def __init__(self, norm: float = float("inf")):
        super().__init__("ibp", norm)
