"""Branch-and-bound on general elementwise nonlinearities (GenBaB: Shi et al. 2024,
"Neural Network Verification with Branch-and-Bound for General Nonlinearities", §3).

Let ``z_j`` range over the entries of every node that feeds an op of the relaxation table
(:data:`~verifier.ops.relaxation.RELAXATIONS`: ReLU, LeakyReLU, sigmoid, tanh and whatever
registers later), and let ``[l_j, u_j]`` be the root's intermediate bounds (α-CROWN's over
the input box ``X``). A **subdomain** ``D`` narrows some of these intervals to
``[l^D_j, u^D_j] ⊆ [l_j, u_j]``; it stands for ``X_D = {x ∈ X : l^D_j ≤ z_j(x) ≤ u^D_j ∀j}``.
Splitting ``D`` on entry ``j`` at a point ``p ∈ (l^D_j, u^D_j)`` gives ``[l^D_j, p]`` and
``[p, u^D_j]``, whose sets cover ``X_D``; the point is 0 when the interval contains 0 (the
kink of ReLU-like ops, the inflection point of S-shaped ones: each side is then linear,
convex or concave, where the chord/tangent lines are tight), its midpoint otherwise.

**Bound of a subdomain** (β-CROWN's, Wang et al. 2021, eq. 7, with general split
constraints): for every ``x ∈ X_D`` each ``z_j(x)`` lies in ``[l^D_j, u^D_j]`` (the root
bounds hold on all of ``X``, the narrowing holds by definition of ``X_D``), so the
relaxation entry's lines built on the narrowed intervals are valid at ``x``, and for any
``β⁺, β⁻ ≥ 0``

    min_{x ∈ X_D} Λ·f(x)  ≥  min_{x ∈ X}  Λ·f̃(x) − Σ_j β⁺_j (z̃_j(x) − l^D_j) − Σ_j β⁻_j (u^D_j − z̃_j(x))

(the added terms are ``≤ 0`` on ``X_D``; minimising over ``X ⊇ X_D`` only lowers the
right side). In CROWN's backward pass the multipliers enter as ``Λ_z ← Λ_z − β⁺ + β⁻`` at
each split node, and ``Σ β⁺ l^D − β⁻ u^D`` is added to the bound. ``α`` (tangent points and
ReLU-like slopes) and ``β`` are optimised by projected Adam and inherited from the parent
(:class:`~verifier.complete.beta_crown.BetaCrown`'s loop; every ``(α, β)`` is sound, the
best bound is kept). Intervals with an infinite end get no multiplier on that side.

**Branching** (a generalised BaBSR estimate): for entry ``j`` of a node ``n = g(z_j)`` with
coefficient ``λ_j`` (the worst row's ``Λ`` at ``n``'s output), the bound loses about
``λ⁺·gap_low + λ⁻·gap_up``, the largest distance between ``g`` and its lower (upper) line on
the interval, measured on a few points. The score is ``|λ_j|·(gap − max(gap_left, gap_right))``
— the loss the split removes from the worse child — plus ``10⁻⁶·(gap_low + gap_up)`` to break
ties. An entry whose lines are exact on its interval (a ReLU that no longer crosses), or
whose interval cannot be split in floating point, is never split; an open subdomain with no
entry left goes to an LP on its intervals (:func:`~verifier.complete.relu_split.decide_linear`:
exact for piecewise-linear activations, a sound relaxation otherwise), else ``unknown``.

**Candidates**: each open subdomain's relaxed minimiser ``x* = argmin_X Λ_x·x`` is run in
the model and, when unsafe, confirmed by onnxruntime
(:func:`~verifier.attack.confirm_candidates`) before ``sat`` is reported. The search loop,
frontier and batching are ReLU splitting's (:func:`~verifier.complete.relu_split.search_subdomains`).
"""

from __future__ import annotations

import math

import networkx as nx
import torch

from ..api import Model
from ..attack import Counterexample
from ..deadline import Deadline, interruptible
from ..errors import VerifierInputError
from ..ir.graph import predecessors_by_slot, topological_order
from ..ops import FORWARD
from ..ops.relaxation import RELAXATIONS
from ..spec.model import InputRegion
from .beta_crown import BetaCrown, Bounds, Subdomains
from .refine import CROWN_MAX_DEPTH, SubdomainRefiner
from .relu_split import SplitBaBStats, decide_linear, root_intermediate_bounds, search_disjuncts

GRID = (0.0, 0.25, 0.5, 0.75, 1.0)  # where a line's distance to the function is measured
DESCENT_STARTS, DESCENT_STEPS = 8, 12  # candidate search from the relaxed minimisers


def activation_inputs(graph: nx.DiGraph) -> dict[str, list[str]]:
    """Split-able node ``z`` → the elementwise nonlinear nodes (kinds of
    :data:`~verifier.ops.relaxation.RELAXATIONS`) that read it, in topological order."""
    users: dict[str, list[str]] = {}
    for n in topological_order(graph):
        if graph.nodes[n]["kind"] in RELAXATIONS:
            users.setdefault(predecessors_by_slot(graph, n)[0], []).append(n)
    return users


def split_point(lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """Where ``[lo, hi]`` is split: 0 when it lies strictly inside, else the midpoint."""
    return torch.where((lo < 0) & (hi > 0), torch.zeros_like(lo), (lo + hi) / 2)


def line_gaps(node: dict, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Estimated ``max (g − lower line)`` and ``max (upper line − g)`` of ``g = node``'s op
    over ``[lo, hi]`` (its relaxation entry's default lines), measured at :data:`GRID` and at
    0 (where it lies inside): a heuristic for branching only, never for a bound."""
    kind = node["kind"]
    lines = RELAXATIONS[kind].lines(node, lo, hi)
    points = [lo + t * (hi - lo) for t in GRID] + [torch.minimum(torch.maximum(torch.zeros_like(lo), lo), hi)]
    low = up = torch.zeros_like(lo)
    for x in points:
        g = FORWARD[kind](node, x)
        low = torch.maximum(low, g - (lines.lower_slope * x + lines.lower_bias))
        up = torch.maximum(up, lines.upper_slope * x + lines.upper_bias - g)
    return torch.nan_to_num(low, nan=0.0, posinf=0.0), torch.nan_to_num(up, nan=0.0, posinf=0.0)


class IntervalBetaCrown(BetaCrown):
    """β-CROWN on subdomains that narrow pre-activation intervals (module docstring).

    A :class:`~verifier.complete.beta_crown.Subdomains` batch here holds ``splits[z]``
    ``(N, 2, *S)`` (the intervals' lower and upper ends) for every node with intermediate
    bounds (the split-able ones and the other relaxed ops' inputs), ``alpha[n]``
    ``(N, k, *S)`` per optimisable nonlinear node and ``beta[z]`` ``(N, k, 2, *S)``
    (``β⁺``, ``β⁻``) per split-able node. Before each batch is bounded its intervals are
    tightened (:mod:`verifier.complete.refine`): by the intersected IBP pass always, and by
    CROWN passes on the subdomains of depth ``1..refine_depth`` (0: never)."""

    def __init__(self, graph: nx.DiGraph, lower: torch.Tensor, upper: torch.Tensor, lam: torch.Tensor,
                 root: Bounds, refine_depth: int = CROWN_MAX_DEPTH, **options):
        super().__init__(graph, lower, upper, lam, root, **options)
        self.users = activation_inputs(graph)
        self.nonlinear = {n for ns in self.users.values() for n in ns}
        self.slopes = [(n, z) for z, ns in self.users.items() for n in ns
                       if RELAXATIONS[graph.nodes[n]["kind"]].optimisable]  # (node, its input) with a free α
        self.refiner = SubdomainRefiner(graph, lower, upper, root, list(self.users))
        self.refine_depth = refine_depth

    def clamp(self, splits):
        """Each subdomain's intervals for the split-able nodes, the root's elsewhere (e.g. a
        max-pool input); empty where an interval is (``lo > hi``)."""
        count = next(iter(splits.values())).shape[0]
        empty = torch.zeros(count, dtype=torch.bool, device=self.lam.device)
        out = {}
        for z, (l, u) in self.root.items():
            s = splits.get(z)
            if s is None:
                out[z] = (l.expand(count, *l.shape[1:]), u.expand(count, *u.shape[1:]))
                continue
            out[z] = (s[:, 0], s[:, 1])
            empty |= (s[:, 0] > s[:, 1]).reshape(count, -1).any(dim=1)
        return out, empty

    def root_subdomain(self) -> Subdomains:
        """The whole box: the root intervals, the relaxations' default ``α``, ``β = 0``."""
        k = self.rows
        splits = {z: torch.stack(self.root[z], 1) for z in self.root}
        alpha = {}
        for n, z in self.slopes:
            node = self.graph.nodes[n]
            init = RELAXATIONS[node["kind"]].alpha_init(node, *self.root[z])
            alpha[n] = init.unsqueeze(1).expand(-1, k, *init.shape[1:]).clone()
        beta = {z: torch.zeros(1, k, 2, *self.root[z][0].shape[1:], dtype=self.lam.dtype, device=self.lam.device)
                for z in self.users}
        lb = torch.full((1, k), float("-inf"), dtype=self.lam.dtype, device=self.lam.device)
        return Subdomains(splits, alpha, beta, lb, torch.zeros(1, dtype=torch.long, device=self.lam.device))

    def bound(self, dom: Subdomains, threshold: torch.Tensor | None = None) -> tuple[Subdomains, dict]:
        """:meth:`BetaCrown.bound` on the subdomains with their intervals tightened first
        (class docstring); the returned subdomains keep the tightened intervals, so their
        children inherit them."""
        bounds, _ = self.clamp(dom.splits)
        refined = self.refiner.box(bounds)
        if self.refine_depth > 0:
            refined = self.refiner.crown(refined, (dom.depth >= 1) & (dom.depth <= self.refine_depth))
        dom = Subdomains({z: torch.stack(refined[z], 1) for z in dom.splits}, dom.alpha, dom.beta, dom.lb, dom.depth)
        return super().bound(dom, threshold)

    def evaluate(self, bounds, dom, alpha, beta, record=None):
        """Lower bounds ``(N, k)``: one CROWN pass with ``Λ_z ← Λ_z − β⁺ + β⁻`` at each split
        node plus ``Σ β⁺ l^D − β⁻ u^D``; ``record`` receives ``Λ`` at each nonlinear node's
        output and at the input."""
        n = len(dom)
        constant = torch.zeros(n, self.rows, dtype=self.lam.dtype, device=self.lam.device)

        def visit(node, L):
            nonlocal constant
            if node in beta:
                lo, hi = (t.unsqueeze(1) for t in bounds[node])
                b_lo = torch.where(torch.isfinite(lo), beta[node][:, :, 0], torch.zeros_like(L))
                b_hi = torch.where(torch.isfinite(hi), beta[node][:, :, 1], torch.zeros_like(L))
                L = L - b_lo + b_hi
                term = b_lo * torch.nan_to_num(lo, neginf=0.0) - b_hi * torch.nan_to_num(hi, posinf=0.0)
                constant = constant + term.reshape(n, self.rows, -1).sum(-1)
            if record is not None and (node in self.nonlinear or node == self.source):
                record[node] = L.detach()
            return L

        lb = self.crown.lower_bound(self.graph, self.lower.expand(n, *self.lower.shape[1:]),
                                    self.upper.expand(n, *self.upper.shape[1:]), self.lam.reshape(1, self.rows, -1),
                                    alpha, bounds, visit)
        return lb + constant


    def candidate_inputs(self, model, region, dom, record):
        """The relaxed minimisers (:meth:`BetaCrown.candidate_inputs`), then
        :data:`DESCENT_STEPS` projected sign-gradient steps on the region's violation from
        the :data:`DESCENT_STARTS` lowest-bounded of them (for smooth activations the
        minimiser of the relaxation is rarely a point of the subdomain); both sets are
        returned, each to be confirmed by onnxruntime."""
        x = super().candidate_inputs(model, region, dom, record)
        if x is None:
            return None
        lower, upper = self.lower.reshape(1, -1), self.upper.reshape(1, -1)
        start = x[dom.lb.min(dim=1).values.argsort()[:DESCENT_STARTS]].detach().clone()
        step = (upper - lower) / 4
        y = start
        with torch.enable_grad():
            for _ in range(DESCENT_STEPS):
                y = y.detach().requires_grad_(True)
                v = region.violation(model(y).double().cpu())
                (grad,) = torch.autograd.grad(interruptible(v.sum()), y)
                y = torch.minimum(torch.maximum(y.detach() - step * grad.sign(), lower), upper)
                step = step * 0.7
        return torch.cat([x, y.detach()])


class IntervalLayout:
    """Flat numbering of every split-able entry (across the nodes of
    :func:`activation_inputs`), the branching scores and the split (module docstring)."""

    def __init__(self, graph: nx.DiGraph, users: dict[str, list[str]], root: Bounds):
        self.graph = graph
        self.nodes = list(users.items())
        self.sizes = [math.prod(root[z][0].shape[1:]) for z, _ in self.nodes]
        self.offsets = [sum(self.sizes[:i]) for i in range(len(self.sizes))]

    def scores(self, dom: Subdomains, bounds_root, record: dict, row: torch.Tensor) -> torch.Tensor:
        """``(N, total)`` scores; ``−inf`` where the entry is exact or cannot be split."""
        n = len(dom)
        picks = torch.arange(n, device=row.device)
        parts = []
        for z, users in self.nodes:
            lo, hi = dom.splits[z][:, 0], dom.splits[z][:, 1]
            p = split_point(lo, hi)
            score, loose = torch.zeros_like(lo), torch.zeros_like(lo)
            for u in users:
                node = self.graph.nodes[u]
                lam = record[u][picks, row] if u in record else torch.zeros_like(lo)
                low, up = line_gaps(node, lo, hi)
                left, right = line_gaps(node, lo, p), line_gaps(node, p, hi)
                gain_low = low - torch.maximum(left[0], right[0])
                gain_up = up - torch.maximum(left[1], right[1])
                score = score + lam.clamp(min=0) * gain_low + (-lam).clamp(min=0) * gain_up + 1e-6 * (low + up)
                f_scale = FORWARD[node["kind"]](node, lo).abs() + FORWARD[node["kind"]](node, hi).abs()
                loose = torch.maximum(loose, (low + up) / (1e-9 * (1 + f_scale)))
            ok = (p > lo) & (p < hi) & torch.isfinite(lo) & torch.isfinite(hi) & (loose > 1)
            parts.append(torch.where(ok, torch.nan_to_num(score, nan=0.0), torch.full_like(score, float("-inf")))
                         .reshape(n, -1))
        return torch.cat(parts, dim=1)

    def split(self, dom: Subdomains, flat: torch.Tensor) -> Subdomains:
        """Two children per subdomain, entry ``flat[i]``'s interval cut at :func:`split_point`:
        the first ``N`` keep ``[lo, p]``, the next ``N`` keep ``[p, hi]``."""
        children = Subdomains.concat([dom, dom])
        n = len(dom)
        flat2 = torch.cat([flat, flat])
        rows = torch.arange(2 * n, device=flat.device)
        side = (rows >= n).long()  # 0: the left child sets hi = p; 1: the right child sets lo = p
        for (z, _), offset, size in zip(self.nodes, self.offsets, self.sizes):
            hit = (flat2 >= offset) & (flat2 < offset + size)
            if bool(hit.any()):
                s = children.splits[z].reshape(2 * n, 2, -1).clone()
                r, j = rows[hit], flat2[hit] - offset
                p = split_point(s[r, 0, j], s[r, 1, j])
                s[r, 1 - side[hit], j] = p
                children.splits[z] = s.reshape(children.splits[z].shape)
        children.depth = children.depth + 1
        return children


def activation_split_bab(model: Model, region: InputRegion, deadline: Deadline, disjuncts: list[int] | None = None,
                         region_index: int = 0, dtype: torch.dtype = torch.float64, device: str = "cpu",
                         batch: int = 128, iterations: int = 3, candidates: int = 1, root=None,
                         stats: SplitBaBStats | None = None,
                         refine_depth: int = CROWN_MAX_DEPTH) -> tuple[str, Counterexample | None]:
    """Decide the region's ``disjuncts`` (default: all) by splitting activation inputs:
    ``("unsat", None)`` when every subdomain of every disjunct is closed, ``("sat", cex)`` on
    a confirmed counterexample, ``("unknown", None)`` when an open subdomain has nothing
    left to split and its LP does not decide it. ``root``: intermediate bounds valid on the region's box (default:
    α-CROWN's); ``refine_depth``: subdomains up to this depth get CROWN-tightened
    intermediate bounds (:mod:`verifier.complete.refine`; 0: the IBP tightening only). Raises :class:`~verifier.deadline.Timeout` at the deadline."""
    stats = stats if stats is not None else SplitBaBStats()
    graph = model.graph_for(device, dtype)
    users = activation_inputs(graph)
    if not users:
        raise VerifierInputError("activation-split branch-and-bound needs a network with an elementwise "
                                 f"nonlinearity ({', '.join(sorted(RELAXATIONS))})")
    if root is None:
        root, _ = root_intermediate_bounds(model, region, device, dtype)
    lower = model.as_batch(region.lower.to(device=device, dtype=dtype))
    upper = model.as_batch(region.upper.to(device=device, dtype=dtype))
    return search_disjuncts(model, region, deadline, disjuncts, region_index,
                            lambda lam: IntervalBetaCrown(graph, lower, upper, lam.to(lower), root,
                                                          iterations=iterations, refine_depth=refine_depth),
                            IntervalLayout(graph, users, root), decide_linear, batch, stats, candidates)


__all__ = ["IntervalBetaCrown", "IntervalLayout", "activation_inputs", "activation_split_bab", "line_gaps",
           "split_point"]
