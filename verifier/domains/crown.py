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

    def intermediate_bounds(self, graph: nx.DiGraph, lower: torch.Tensor, upper: torch.Tensor, alpha=None):
        """Bounds ``(l, u)`` of every node a relaxation needs (see module docstring);
        ``alpha`` (node → ``(B, 1, *S)``) fixes the lower ReLU slopes of these passes."""
        states = propagate(graph, BoxDomain(), lower, upper, keep=True)
        need = pre_activation_nodes(graph)
        bounds = {n: (states[n].lower, states[n].upper) for n in need}
        if self.intermediate == "ibp":
            return bounds
        for n in need:
            l, u = bounds[n]
            unstable = ((l < 0) & (u > 0)).reshape(l.shape[0], -1)
            if graph.nodes[n]["kind"] == "input" or not bool(unstable.any()):
                continue
            index = per_sample_rows(unstable)  # each sample bounds only its own unstable neurons
            lb, ub = self._bound_rows(graph, n, index, lower, upper, bounds, alpha)
            l_flat, u_flat = l.reshape(l.shape[0], -1), u.reshape(u.shape[0], -1)
            l_flat = l_flat.scatter(1, index, torch.maximum(l_flat.gather(1, index), lb))
            u_flat = u_flat.scatter(1, index, torch.minimum(u_flat.gather(1, index), ub))
            bounds[n] = (l_flat.reshape(l.shape), u_flat.reshape(u.shape))
        return bounds

    def _bound_rows(self, graph, node_id, index, lower, upper, bounds, alpha=None):
        """CROWN bounds of the flattened entries ``index`` ``(B, R)`` of ``node_id``, in row chunks."""
        shape = tuple(graph.nodes[node_id]["shape"])
        batch = lower.shape[0]
        widest = max(math.prod(graph.nodes[m]["shape"]) for m in topological_order(graph))
        chunk = max(1, MAX_ENTRIES // max(1, 2 * batch * widest))
        lines, pools = self._relaxers(graph, bounds, alpha)
        lbs, ubs = [], []
        for start in range(0, index.shape[1], chunk):
            part = index[:, start:start + chunk]
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

    def _final(self, graph, lower, upper, lam, bounds, alpha=None):
        lines, pools = self._relaxers(graph, bounds, alpha)
        return backward_bound(graph, output_node(graph), lam, lines, pools, lower, upper, self.norm)

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
        lam2 = torch.cat([lam, -lam], 1)
        with torch.no_grad():
            bounds = self.intermediate_bounds(graph, lower, upper)
        alpha, inner = {}, {}
        for n in topological_order(graph):
            node = graph.nodes[n]
            if node["kind"] in ("relu", "leaky_relu"):
                (p,) = predecessors_by_slot(graph, n)
                l, u = bounds[p]
                init = (u > -l).to(lower.dtype) if node["kind"] == "relu" or node["attrs"]["alpha"] <= 1 \
                    else (u <= -l).to(lower.dtype)
                alpha[n] = init.unsqueeze(1).expand(-1, 2 * k, *init.shape[1:]).clone().requires_grad_(True)
                if self.optimise_intermediate:
                    inner[n] = init.unsqueeze(1).clone().requires_grad_(True)
            elif node["kind"] in ("sigmoid", "tanh"):  # tangent points, from the midpoint
                (p,) = predecessors_by_slot(graph, n)
                half = torch.full_like(bounds[p][0], 0.5).unsqueeze(1)
                alpha[n] = half.expand(-1, 2 * k, *half.shape[2:]).clone().requires_grad_(True)
                if self.optimise_intermediate:
                    inner[n] = half.clone().requires_grad_(True)
        with torch.no_grad():
            best = self._final(graph, lower, upper, lam2, bounds, {n: a.detach() for n, a in alpha.items()})
        if alpha and self.iterations > 0:
            opt = torch.optim.Adam(list(alpha.values()) + list(inner.values()), lr=self.lr)
            stale = 0
            for _ in range(self.iterations):
                with torch.enable_grad():
                    step_bounds = self.intermediate_bounds(graph, lower, upper, inner) if inner else bounds
                    current = self._final(graph, lower, upper, lam2, step_bounds, alpha)
                    loss = -current.sum()
                    opt.zero_grad()
                    loss.backward()
                opt.step()
                with torch.no_grad():
                    for a in (*alpha.values(), *inner.values()):
                        a.clamp_(0.0, 1.0)
                    improved = bool((current.detach() > best + 1e-8).any())
                    best = torch.maximum(best, current.detach())
                stale = 0 if improved else stale + 1
                if stale >= self.patience:
                    break
            with torch.no_grad():  # the last step's α, after projection
                last = self.intermediate_bounds(graph, lower, upper, {n: a.detach() for n, a in inner.items()}) \
                    if inner else bounds
                best = torch.maximum(best, self._final(graph, lower, upper, lam2, last,
                                                       {n: a.detach() for n, a in alpha.items()}))
        return best[:, :k], -best[:, k:]


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

