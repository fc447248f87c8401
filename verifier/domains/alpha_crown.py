"""α-CROWN (Xu et al. 2021, "Fast and Complete", §3.1): CROWN with optimised slopes.

``alpha-crown``: the lower slopes of the final pass become variables ``α ∈ [0, 1]`` per
neuron and per spec row, maximised by projected Adam on the bound, keeping the best
value seen per row (so never looser than CROWN with the same intermediate bounds). With
``optimise_intermediate`` (default) the slopes used while computing the intermediate
bounds are variables too (one per neuron, shared by the rows of those passes), and the
intermediate bounds are recomputed, differentiably, at every step. Sigmoid/tanh tangent
points (in their convex or concave pieces) are optimised the same way; their lines on
intervals that straddle 0 stay the fixed parallel pair. So are the McCormick mixing
weights of bilinear products (:func:`~verifier.domains.crown.crown_bilinear`). Which
nodes have free parameters, and their starting values, is what each backward transfer
declares (:func:`~verifier.domains.backward.relaxed`): nothing here names an op kind.
"""

from __future__ import annotations

import networkx as nx
import torch

from ..deadline import checkpoint, interruptible
from ..ir.graph import predecessors_by_slot, topological_order
from ..linalg import per_sample_rows
from . import register_domain
from .backward import BackwardDomain, declaration, elementwise_source, pre_activation_nodes, refinable

MAX_SLOPES = 1 << 25  # per-target intermediate slopes beyond this are shared per neuron


@register_domain
class AlphaCrownDomain(BackwardDomain):
    name = "alpha-crown"
    description = "CROWN with ReLU slopes and sigmoid/tanh tangent points optimised per neuron and row"
    # the chosen-rows layout, as in the optimisation steps: the starting bounds must be the steps' to the
    # last bit, or the near-ties between them (torch.maximum's gradient) fall by the rounding
    all_rows = False
    exact_steps = True

    def __init__(self, intermediate: str = "crown", norm: float = float("inf"), iterations: int = 20,
                 lr: float = 0.1, patience: int = 5, optimise_intermediate: bool = True):
        super().__init__(intermediate, norm)
        self.iterations, self.lr, self.patience = iterations, lr, patience
        self.optimise_intermediate = bool(optimise_intermediate) and intermediate == "crown"

    def lower_bound(self, graph, lower, upper, C=None, alpha=None, bounds=None, visit=None):
        """With fixed ``alpha``/``bounds``/``visit``: the CROWN pass of
        :meth:`BackwardDomain.lower_bound`; otherwise the optimised bound's lower half."""
        if alpha is not None or bounds is not None or visit is not None:
            return super().lower_bound(graph, lower, upper, C, alpha, bounds, visit)
        return self.bound(graph, lower, upper, C)[0]

    def bound(self, graph, lower, upper, C=None):
        lam = self.spec_rows(graph, lower, C)
        k = lam.shape[1]
        best, _ = self.optimise(graph, lower, upper, torch.cat([lam, -lam], 1))
        return best[:, :k], -best[:, k:]

    def optimise(self, graph, lower, upper, lam, bounds: dict | None = None):
        """Lower bounds ``(B, k)`` of ``Λ·f`` with optimised slopes, and the tightest
        intermediate bounds met on the way (the intersection of every step's, each of
        which is sound), which branch-and-bound starts from. ``bounds``: CROWN's
        intermediate bounds on this box when the caller has them (sound ones; e.g. from a
        CROWN step just before), instead of computing them again."""
        k = lam.shape[1]
        if bounds is None:
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
            best = self.final_pass(graph, lower, upper, lam, bounds, {n: a.detach() for n, a in alpha.items()})
        if alpha and self.iterations > 0:
            inner_params = list({id(a): a for per in inner.values() for a in per.values()}.values())
            opt = torch.optim.Adam(list(alpha.values()) + inner_params, lr=self.lr)
            stale = 0
            for _ in range(self.iterations):
                checkpoint()
                with torch.enable_grad():
                    step_bounds = self.intermediate_bounds(graph, lower, upper, inner, rows, True, tightest) \
                        if inner else bounds
                    current = self.final_pass(graph, lower, upper, lam, step_bounds, alpha)
                    loss = -current.sum()
                    opt.zero_grad()
                    interruptible(loss).backward()
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
                best = torch.maximum(best, self.final_pass(graph, lower, upper, lam, last,
                                                       {n: a.detach() for n, a in alpha.items()}))
        return best, tightest

    def alpha_init(self, graph: nx.DiGraph, n: str, bounds) -> torch.Tensor:
        """CROWN's starting point ``(B, *A)`` for node ``n``'s free parameters, as its
        transfer declares it (adaptive ReLU slopes, midpoint sigmoid/tanh tangents,
        McCormick's default mix), from the bounds of its inputs."""
        found = declaration(graph, n, self)
        return found.alpha_init(graph.nodes[n], *[bounds[p] for p in predecessors_by_slot(graph, n)])

    def optimisable(self, graph: nx.DiGraph) -> list[str]:
        """Every node whose relaxation has free parameters (α), topologically."""
        out = []
        for n in topological_order(graph):
            found = declaration(graph, n, self)
            if found is not None and found.optimisable(graph.nodes[n]):
                out.append(n)
        return out

    def _initial_slopes(self, graph, bounds, lower, k):
        """Variables of the final pass: one per parameter and spec row ``(B, k, *A)``."""
        out = {}
        for n in self.optimisable(graph):
            init = self.alpha_init(graph, n, bounds)
            out[n] = init.unsqueeze(1).expand(-1, k, *init.shape[1:]).clone().requires_grad_(True)
        return out

    def _intermediate_slopes(self, graph, bounds, lower):
        """Variables of the intermediate passes: per target, one per parameter and row of
        that target's pass (auto_LiRPA's layout), when that fits in ``MAX_SLOPES``;
        otherwise one per parameter shared by all passes. Returns the fixed rows per target too."""
        inits = {n: self.alpha_init(graph, n, bounds) for n in self.optimisable(graph)}
        rows, per_target, total = {}, {}, 0
        targets = pre_activation_nodes(graph, self)
        for t in targets:
            l, u = bounds[t]
            unstable = refinable(graph, t, l, u, self).reshape(l.shape[0], -1)
            if graph.nodes[t]["kind"] == "input" or not bool(unstable.any()) \
                    or elementwise_source(graph, t, targets) is not None:  # bounded without a pass
                continue
            rows[t] = per_sample_rows(unstable)
            before = nx.ancestors(graph, t)
            per_target[t] = [n for n in inits if n in before]
            total += 2 * rows[t].shape[1] * sum(inits[n].numel() for n in per_target[t])
        if total > MAX_SLOPES:  # shared slopes, same shape convention per target
            shared = {n: init.unsqueeze(1).requires_grad_(True) for n, init in inits.items()}
            return rows, {t: {n: shared[n] for n in nodes} for t, nodes in per_target.items()}
        inner = {}
        for t, nodes in per_target.items():
            R = rows[t].shape[1]
            inner[t] = {n: inits[n].unsqueeze(1).expand(-1, 2 * R, *inits[n].shape[1:]).clone().requires_grad_(True)
                        for n in nodes}
        return rows, inner
