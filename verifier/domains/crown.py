"""CROWN (DeepPoly-style back-substitution) and α-CROWN.

``crown``: intermediate bounds of every pre-activation by its own backward pass to the
input (intersected with IBP), then one backward pass for ``C·f``. ``crown-ibp``: the
intermediate bounds come from IBP (Box), as in CROWN-IBP training. Lower slopes of
crossing ReLUs follow the adaptive rule (1 if ``u > −l`` else 0).

``alpha-crown``: the lower slopes of the final pass become variables ``α ∈ [0, 1]`` per
neuron and per spec row, maximised by projected Adam on the bound, keeping the best
value seen per row (so never looser than CROWN with the same intermediate bounds). With
``optimise_intermediate`` (default) the slopes used while computing the intermediate
bounds are variables too (one per neuron, shared by the rows of those passes), and the
intermediate bounds are recomputed, differentiably, at every step. Sigmoid/tanh tangent
points (in their convex or concave pieces) are optimised the same way; their lines on
intervals that straddle 0 stay the fixed parallel pair.
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
MAX_SLOPES = 1 << 25  # per-target intermediate slopes beyond this are shared per neuron


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


@register_domain
class AlphaCrownDomain(BackwardDomain):
    name = "alpha-crown"
    description = "CROWN with ReLU slopes and sigmoid/tanh tangent points optimised per neuron and row"

    def __init__(self, intermediate: str = "crown", norm: float = float("inf"), iterations: int = 20,
                 lr: float = 0.1, patience: int = 5, optimise_intermediate: bool = True):
        super().__init__(intermediate, norm)
        self.iterations, self.lr, self.patience = iterations, lr, patience
        self.optimise_intermediate = bool(optimise_intermediate) and intermediate == "crown"

    def bound(self, graph, lower, upper, C=None):
        lam = self._spec(graph, lower, C)
        k = lam.shape[1]
        best, _ = self.optimise(graph, lower, upper, torch.cat([lam, -lam], 1))
        return best[:, :k], -best[:, k:]

    def optimise(self, graph, lower, upper, lam):
        """Lower bounds ``(B, k)`` of ``Λ·f`` with optimised slopes, and the tightest
        intermediate bounds met on the way (the intersection of every step's, each of
        which is sound), which branch-and-bound starts from."""
        k = lam.shape[1]
        with torch.no_grad():
            bounds = self.intermediate_bounds(graph, lower, upper)
        alpha = self._initial_slopes(graph, bounds, lower, k)
        rows, inner = ({}, {}) if not self.optimise_intermediate else self._intermediate_slopes(graph, bounds, lower)
        tightest = dict(bounds)

        def tighten(found):
            for n, (l, u) in found.items():
                tl, tu = tightest[n]
                tightest[n] = (torch.maximum(tl, l.detach()), torch.minimum(tu, u.detach()))

        with torch.no_grad():
            best = self._final(graph, lower, upper, lam, bounds, {n: a.detach() for n, a in alpha.items()})
        if alpha and self.iterations > 0:
            inner_params = list({id(a): a for per in inner.values() for a in per.values()}.values())
            opt = torch.optim.Adam(list(alpha.values()) + inner_params, lr=self.lr)
            stale = 0
            for _ in range(self.iterations):
                checkpoint()
                with torch.enable_grad():
                    step_bounds = self.intermediate_bounds(graph, lower, upper, inner, rows, True, tightest) \
                        if inner else bounds
                    current = self._final(graph, lower, upper, lam, step_bounds, alpha)
                    loss = -current.sum()
                    opt.zero_grad()
                    loss.backward()
                opt.step()
                with torch.no_grad():
                    if inner:
                        tighten(step_bounds)
                    for a in (*alpha.values(), *inner_params):
                        a.clamp_(0.0, 1.0)
                    improved = bool((current.detach() > best + 1e-8).any())
                    best = torch.maximum(best, current.detach())
                stale = 0 if improved else stale + 1
                if stale >= self.patience:
                    break
            with torch.no_grad():  # the last step's α, after projection
                last = self.intermediate_bounds(
                    graph, lower, upper, {t: {n: a.detach() for n, a in per.items()} for t, per in inner.items()},
                    rows, True, tightest) if inner else bounds
                if inner:
                    tighten(last)
                best = torch.maximum(best, self._final(graph, lower, upper, lam, last,
                                                       {n: a.detach() for n, a in alpha.items()}))
        return best, tightest


    @staticmethod
    def _slope_init(node: dict, l: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """CROWN's starting point: adaptive ReLU slopes, midpoint sigmoid/tanh tangents."""
        if node["kind"] in ("sigmoid", "tanh"):
            return torch.full_like(l, 0.5)
        if node["kind"] == "relu" or node["attrs"]["alpha"] <= 1:
            return (u > -l).to(l.dtype)
        return (u <= -l).to(l.dtype)

    def _optimisable(self, graph):
        """(node, its input) for every node with an optimisable relaxation."""
        return [(n, predecessors_by_slot(graph, n)[0]) for n in topological_order(graph)
                if graph.nodes[n]["kind"] in ("relu", "leaky_relu", "sigmoid", "tanh")]

    def _initial_slopes(self, graph, bounds, lower, k):
        """Variables of the final pass: one per neuron and spec row ``(B, k, *S)``."""
        out = {}
        for n, p in self._optimisable(graph):
            init = self._slope_init(graph.nodes[n], *bounds[p])
            out[n] = init.unsqueeze(1).expand(-1, k, *init.shape[1:]).clone().requires_grad_(True)
        return out

    def _intermediate_slopes(self, graph, bounds, lower):
        """Variables of the intermediate passes: per target, one per neuron and row of that
        target's pass (auto_LiRPA's layout), when that fits in ``MAX_SLOPES``; otherwise one
        per neuron shared by all passes. Returns the fixed rows per target too."""
        slopes = self._optimisable(graph)
        rows, per_target, total = {}, {}, 0
        for t in pre_activation_nodes(graph):
            l, u = bounds[t]
            unstable = ((l < 0) & (u > 0)).reshape(l.shape[0], -1)
            if graph.nodes[t]["kind"] == "input" or not bool(unstable.any()):
                continue
            rows[t] = per_sample_rows(unstable)
            before = nx.ancestors(graph, t)
            per_target[t] = [(n, p) for n, p in slopes if n in before]
            total += 2 * rows[t].shape[1] * sum(bounds[p][0].numel() for _, p in per_target[t])
        if total > MAX_SLOPES:  # shared slopes, same shape convention per target
            shared = {n: self._slope_init(graph.nodes[n], *bounds[p]).unsqueeze(1).requires_grad_(True)
                      for n, p in slopes}
            return rows, {t: {n: shared[n] for n, _ in pairs} for t, pairs in per_target.items()}
        inner = {}
        for t, pairs in per_target.items():
            R = rows[t].shape[1]
            inner[t] = {}
            for n, p in pairs:
                init = self._slope_init(graph.nodes[n], *bounds[p])
                inner[t][n] = init.unsqueeze(1).expand(-1, 2 * R, *init.shape[1:]).clone().requires_grad_(True)
        return rows, inner


@register_domain
class DualLPDomain(BackwardDomain):
    """Wong–Kolter dual network bound (seed 003, eq. 7 and Algorithm 1).

    For ``ν_K = −c``, ``ν̂_i = W_iᵀ ν_{i+1}``, ``ν_i = D_i ν̂_i`` with ``D = 0`` (dead),
    ``1`` (active), ``u/(u−ℓ)`` (crossing), the bound is
    ``J = −Σ ν_{i+1}ᵀ b_i − xᵀ ν̂₁ − ε‖ν̂₁‖₁ + Σ_crossing ℓ_ij [ν_ij]₊``. This is the backward
    pass with both ReLU lines of slope ``u/(u−ℓ)`` (the upper one through ``(ℓ, 0)``), so it
    runs on the shared backward engine with the ``parallel`` slope policy; layer bounds
    (Algorithm 1) are the same recursion started from ``±I`` at each layer.
    Supported: affine ops (dense, conv, residual add, reshapes) and ReLU.

    ``projections=K`` switches to the random Cauchy projection estimate
    (:mod:`verifier.domains.projections`): faster on wide layers, for training only —
    it is **not a sound bound** and ``verify`` refuses it.
    """

    name = "dual-lp"
    description = "Wong-Kolter dual LP bound (ReLU networks)"
    policy = "parallel"

    ALLOWED = {"input", "constant", "relu"}

    def __init__(self, intermediate: str = "crown", norm: float = float("inf"), projections: int | None = None,
                 seed: int | None = None):
        super().__init__(intermediate, norm)
        self.projections, self.seed = projections, seed

    def bound(self, graph, lower, upper, C=None):
        from ..ops.adjoint import AFFINE_KINDS

        bad = sorted({d["kind"] for _, d in graph.nodes(data=True)} - self.ALLOWED - AFFINE_KINDS)
        if bad:
            raise VerifierInputError(f"the dual-lp domain handles networks of affine ops and ReLU only; "
                                     f"this model has {', '.join(bad)} (use crown or alpha-crown)")
        if self.projections:
            from .projections import ProjectedDualDomain

            return ProjectedDualDomain(self.projections, self.seed).bound(graph, lower, upper, C)
        return super().bound(graph, lower, upper, C)

