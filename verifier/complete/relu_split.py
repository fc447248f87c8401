"""Branch-and-bound by ReLU splitting, for high-dimensional inputs (β-CROWN style).

Per open disjunct ``A y ≤ b`` of a region: the root intermediate bounds come from
α-CROWN (optimised slopes, intermediate passes included); subdomains are bounded in
batches by :class:`~verifier.complete.beta_crown.BetaCrown` (α and β optimised per
subdomain, inherited from the parent). A subdomain is closed when some row is refuted
(:func:`~verifier.spec.model.refuted_rows`: ``lb(A_i y) > b_i`` plus a margin, ``lb ≥ b_i``
for a row written strict; a NaN bound refutes nothing). Each open subdomain is split on the crossing ReLU with the largest
score ``[−Λ_j]₊ · (−l_j u_j)/(u_j − l_j)`` — the lower-bound loss of that neuron's
triangle intercept (the BaBSR estimate; ``Λ`` the coefficient of the worst row at the
ReLU's output). The frontier is explored newest-first in batches, so memory stays bounded
(depth × batch subdomains); when few subdomains are open, each is split on several
neurons at once to fill the batch. Every bounded subdomain's relaxed minimiser
``x* = argmin_box Λ_x·x`` is evaluated as a candidate counterexample (confirmed with
onnxruntime before it counts).

Throughput choices (measured with ``benchmarks/bab_throughput.py``): a float64 search on a
network of at least :data:`FLOAT32_NEURONS` ReLUs optimises α, β in float32 and certifies
each bound by one float64 pass (0.75 to 0.97 of float64's time per batch; the subdomains'
α, β are stored in float32, half the frontier's memory) (:func:`default_bound_dtype`; verdicts as sound as float64's).
Intermediate bounds are never recomputed in subdomains: every layer's are the root's,
clamped by the subdomain's own splits (:func:`~verifier.complete.beta_crown.clamp_to_splits`),
so nothing of an unchanged layer is redone. The frontier stays newest-first: on an ``unsat``
disjunct every open subdomain must be closed whatever the order, and the ``sat`` instances of
mnist_fc needing branching were found within 961 subdomains (about a second), so ordering
by bound would buy nothing measurable while newest-first bounds memory by depth × batch.
Filtered smart branching (``candidates`` > 1, :func:`_smart_choice`) is off by default: on
mnist_fc 256x4, oval21 and ACAS Xu it did not reduce the subdomains needed enough to pay
for its extra evaluations (4 of 7 instances solved at 20 s with 1, 3 or 5 candidates; of the
solved ones only one needed fewer subdomains, 4261 instead of 5311 with 3 candidates; 1.6×
and 1.7× fewer subdomains per second with 3 and 5).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..api import Model
from ..attack import Counterexample, confirm_candidates
from ..deadline import Deadline, checkpoint
from ..spec.model import InputRegion, refuted_rows
from .memory import bound_in_parts
from .beta_crown import BetaCrown, Subdomains, relu_pre_activations
from .methods import METHODS
from ..proof.hooks import record_relu_leaves, record_trusted_leaves
from ..proof.record import active


@dataclass
class SplitBaBStats:
    """Counters of a split branch-and-bound (ReLU or general activation splits)."""

    domains_bounded: int = 0
    max_frontier: int = 0
    max_depth: int = 0
    exhausted: int = 0  # open subdomains with nothing left to split (ReLU: decided by an LP)


ReluBaBStats = SplitBaBStats


def root_intermediate_bounds(model: Model, region: InputRegion, device: str, dtype: torch.dtype,
                             iterations: int = 20, region_index: int | None = None):
    """α-CROWN's tightest intermediate bounds over the region's box, and its lower
    bounds of every stacked spec row ``(k,)``. Under ``verify --proof`` (with
    ``region_index``) the slopes behind every kept bound are recorded
    (:mod:`verifier.proof.alpha_record`)."""
    from ..domains.alpha_crown import AlphaCrownDomain

    graph = model.graph_for(device, dtype)
    C, _, _ = region.stacked()
    lower = model.as_batch(region.lower.to(device=device, dtype=dtype))
    upper = model.as_batch(region.upper.to(device=device, dtype=dtype))
    recording = active() is not None and region_index is not None
    if recording:
        from ..proof.alpha_record import RecordingAlphaCrown

        domain = RecordingAlphaCrown(iterations=iterations)
    else:
        domain = AlphaCrownDomain(iterations=iterations)
    lam = domain.spec_rows(graph, lower, C.to(lower))
    best, bounds = domain.optimise(graph, lower, upper, lam)
    if recording:  # the search starts from bounds the certificate can re-derive
        from ..proof.hooks import record_relu_root

        bounds, best = domain.reproducible(graph, lower, upper, lam)
        record_relu_root(region_index, graph, domain, bounds)
        active().arithmetic(dtype)
    return bounds, best[0]


class Layout:
    """Flat numbering of every split-able neuron, across ReLU nodes in topological order."""

    def __init__(self, pre: dict[str, str], root):
        self.nodes = list(pre.items())
        self.sizes = [math.prod(root[z][0].shape[1:]) for _, z in self.nodes]
        self.offsets = [sum(self.sizes[:i]) for i in range(len(self.sizes))]
        self.total = sum(self.sizes)

    def scores(self, dom: Subdomains, bounds_root, record: dict, row: torch.Tensor) -> torch.Tensor:
        """``(N, total)`` branching scores (−inf where a neuron is stable or split)."""
        parts = []
        n = len(dom)
        picks = torch.arange(n, device=row.device)
        for relu, z in self.nodes:
            l, u = (t.expand(n, *t.shape[1:]).reshape(n, -1) for t in bounds_root[z])
            s = dom.splits[z].reshape(n, -1)
            lam = record[relu][picks, row].reshape(n, -1)
            crossing = (l < 0) & (u > 0) & (s == 0)
            width = torch.where(crossing, u - l, torch.ones_like(u))
            intercept = torch.where(crossing, -l * u / width, torch.zeros_like(u))
            score = lam.clamp(max=0).neg() * intercept + 1e-4 * lam.abs() * torch.minimum(u, -l).clamp(min=0)
            parts.append(torch.where(crossing, score, torch.full_like(score, float("-inf"))))
        return torch.cat(parts, dim=1)

    def split(self, dom: Subdomains, flat: torch.Tensor) -> Subdomains:
        """Two children per subdomain: neuron ``flat[i]`` active (``+1``) / inactive (``−1``)."""
        children = Subdomains.concat([dom, dom])
        n = len(dom)
        sign = torch.cat([torch.ones(n, dtype=torch.int8), -torch.ones(n, dtype=torch.int8)]).to(flat.device)
        flat2 = torch.cat([flat, flat])
        rows = torch.arange(2 * n, device=flat.device)
        for (relu, z), offset, size in zip(self.nodes, self.offsets, self.sizes):
            hit = (flat2 >= offset) & (flat2 < offset + size)
            if bool(hit.any()):
                s = children.splits[z].reshape(2 * n, -1).clone()
                s[rows[hit], flat2[hit] - offset] = sign[hit]
                children.splits[z] = s.reshape(children.splits[z].shape)
        children.depth = children.depth + 1
        return children


def relu_split_bab(model: Model, region: InputRegion, deadline: Deadline, disjuncts: list[int] | None = None,
                   region_index: int = 0, dtype: torch.dtype = torch.float64, device: str = "cpu",
                   batch: int = 128, iterations: int = 3, candidates: int = 1, root=None,
                   stats: SplitBaBStats | None = None,
                   bound_dtype: torch.dtype | None = None) -> tuple[str, Counterexample | None]:
    """Decide the region's ``disjuncts`` (default: all) by ReLU splitting:
    ``("unsat", None)`` when every subdomain of every disjunct is closed, ``("sat", cex)``
    on a confirmed counterexample, ``("unknown", None)`` when the exact LP of a subdomain
    with every ReLU fixed is undecided (time limit). Raises :class:`~verifier.deadline.Timeout` at the deadline.

    ``bound_dtype``: the dtype the α, β optimisation of the subdomains runs in; a dtype
    narrower than ``dtype`` (float32 under float64) optimises there and certifies every
    bound in ``dtype`` (:mod:`~verifier.complete.beta_crown`'s docstring), so verdicts are
    as sound as a search wholly in ``dtype``; ``None``: :func:`default_bound_dtype`."""
    stats = stats if stats is not None else SplitBaBStats()
    graph = model.graph_for(device, dtype)
    METHODS["relu-split"].refuse_unsupported(graph)  # ReLUs, and no other activation
    pre = relu_pre_activations(graph)
    if root is None:
        root, _ = root_intermediate_bounds(model, region, device, dtype, region_index=region_index)
    proof = active() is not None
    layout = Layout(pre, root)
    bound_dtype = default_bound_dtype(dtype, layout.total) if bound_dtype is None else bound_dtype

    def make_engine(lam):
        engine = beta_crown_engine(model, region, lam, root, dtype, device, iterations, bound_dtype)
        if proof:  # verify --proof: closed subdomains are recorded with re-derivable α, β
            engine.track_best, engine.proof_region = True, region_index
        return engine

    return search_disjuncts(model, region, deadline, disjuncts, region_index, make_engine,
                            layout, decide_linear, batch, stats, candidates)


def beta_crown_engine(model: Model, region: InputRegion, lam: torch.Tensor, root, dtype: torch.dtype, device: str,
                      iterations: int, bound_dtype: torch.dtype | None = None, engine: type = BetaCrown,
                      **kwargs) -> BetaCrown:
    """The β-CROWN ``engine`` (a :class:`~verifier.complete.beta_crown.BetaCrown` class) of the
    rows ``lam`` ``(1, k, *out)`` over the region's box in ``dtype`` on ``device``, from the
    root intermediate bounds ``root`` (node → ``(l, u)``, ``(1, *S)`` each), optimising α, β
    in ``bound_dtype`` (``None``: :func:`default_bound_dtype`); ``kwargs`` go to the class."""
    graph = model.graph_for(device, dtype)
    if bound_dtype is None:
        bound_dtype = default_bound_dtype(dtype, Layout(relu_pre_activations(graph), root).total)
    lower = model.as_batch(region.lower.to(device=device, dtype=dtype))
    upper = model.as_batch(region.upper.to(device=device, dtype=dtype))
    fast = model.graph_for(device, bound_dtype) if bound_dtype != dtype else None
    return engine(graph, lower, upper, lam.to(lower), root, iterations=iterations, fast_graph=fast, **kwargs)


FLOAT32_NEURONS = 512  # split-able ReLUs from which float64 searches optimise in float32


def default_bound_dtype(dtype: torch.dtype, neurons: int) -> torch.dtype:
    """The dtype :func:`relu_split_bab` optimises subdomains in by default: float32 for a
    float64 search on a network with at least :data:`FLOAT32_NEURONS` split-able ReLUs
    (``neurons``), else ``dtype``. Measured on one CPU thread (``benchmarks/bab_throughput.py
    --batch-timing``: one β-CROWN bound of 128 subdomains, best of 5 interleaved, float32
    with its float64 certifying pass / float64): ACAS Xu (300 ReLUs) 1.05 and 1.26, mnist_fc
    256x2 (512) 0.75 to 0.97, 256x4 (1024) 0.83, 256x6 (1536) 0.83 to 0.87, oval21 base_kw
    (3172) 0.75 to 0.79: small networks cost per operation, not per flop, and the float64
    certifying pass is then pure overhead."""
    return torch.float32 if dtype == torch.float64 and neurons >= FLOAT32_NEURONS else dtype


def search_disjuncts(model: Model, region: InputRegion, deadline: Deadline, disjuncts: list[int] | None,
                     region_index: int, make_engine, layout, exhausted, batch: int, stats: SplitBaBStats,
                     candidates: int) -> tuple[str, Counterexample | None]:
    """:func:`search_subdomains` on each of the region's ``disjuncts`` (default: all), with
    the engine ``make_engine(lam)`` for the disjunct's rows ``lam`` ``(1, k, *out)`` (as given,
    on the CPU: the engine moves them): ``sat``
    at the first confirmed counterexample, else ``unknown`` if any disjunct stays open,
    else ``unsat``."""
    out_shape = tuple(model.graph.nodes[model.graph.graph["output"]]["shape"])
    verdict = "unsat"
    for d in (range(len(region.disjuncts)) if disjuncts is None else disjuncts):
        conj = region.disjuncts[d]
        engine = make_engine(conj.A.reshape(1, -1, *out_shape))
        found, cex = search_subdomains(model, region, region_index, engine, layout, d, deadline, batch, stats,
                                       candidates, exhausted)
        if found == "sat":
            return "sat", cex
        if found == "unknown":
            verdict = "unknown"
    return verdict, None


def _threshold(b: torch.Tensor, strict: torch.Tensor | None = None) -> torch.Tensor:
    """A lower bound above which each row is surely refuted (``b`` plus the refutation margin;
    for a strict row, which ``lb ≥ b`` refutes, the largest float below ``b``): the β
    optimisation stops early once every subdomain has such a row."""
    closed = b + 1e-6 * (1 + b.abs()) + 1e-12
    if strict is None:
        return closed
    return torch.where(strict.to(b.device), torch.nextafter(b, torch.full_like(b, float("-inf"))), closed)


def search_subdomains(model, region, region_index, engine: BetaCrown, layout, disjunct: int, deadline: Deadline,
                      batch: int, stats: SplitBaBStats, candidates: int, exhausted):
    """The branch-and-bound loop of the module docstring for one disjunct, shared by ReLU
    and general activation splitting. ``engine`` bounds batches of subdomains
    (:meth:`BetaCrown.bound`, :meth:`BetaCrown.clamp`); ``layout`` numbers the split-able
    entries and gives ``scores(dom, root, record, row)`` (``−inf``: not split-able) and
    ``split(dom, flat)`` (two children per subdomain); ``exhausted(model, region,
    region_index, disjunct, engine, dom, stats)`` decides open subdomains with nothing left
    to split. Returns ``(verdict, counterexample)``."""
    conj = region.disjuncts[disjunct]
    b = conj.b.to(engine.lam)
    strict = None if conj.strict is None else conj.strict.reshape(-1).to(dtype=torch.bool)
    threshold = _threshold(b, None if strict is None else strict.to(b.device))
    dom, record = engine.bound(engine.root_subdomain(), threshold)
    stats.domains_bounded += 1
    frontier: list[tuple[Subdomains, torch.Tensor]] = []
    verdict = "unsat"
    while True:
        checkpoint()
        deadline.check()
        dom.lb = torch.nan_to_num(dom.lb, nan=float("-inf"))  # a NaN bound refutes nothing
        open_rows = ~refuted_rows(dom.lb.double().cpu(), b.double().cpu(),
                                  None if strict is None else strict.cpu()).any(dim=1)
        if getattr(engine, "proof_region", None) is not None and not bool(open_rows.all()):
            record_relu_leaves(engine, disjunct, dom.select((~open_rows).nonzero().reshape(-1).to(dom.lb.device)))
        if bool(open_rows.any()):
            keep = open_rows.nonzero().reshape(-1).to(dom.lb.device)
            dom = dom.select(keep)
            record = {n: t[keep] for n, t in record.items()}
            cex = _candidates(model, region, region_index, engine, dom, record)
            if cex is not None:
                return "sat", cex
            worst_row = (dom.lb - b).argmin(dim=1)
            scores = layout.scores(dom, engine.root, record, worst_row)
            finished = torch.isinf(scores).all(dim=1) & (scores < 0).all(dim=1)
            if bool(finished.any()):
                found, cex = exhausted(model, region, region_index, disjunct, engine,
                                       dom.select(finished.nonzero().reshape(-1)), stats)
                if found == "sat":
                    return "sat", cex
                if found == "unknown":
                    verdict = "unknown"
                alive = (~finished).nonzero().reshape(-1)
                dom, scores = dom.select(alive), scores[alive]
            if len(dom):
                frontier.append((dom, scores))
        stats.max_frontier = max(stats.max_frontier, sum(len(f[0]) for f in frontier))
        if not frontier:
            return verdict, None
        dom, scores = _pop(frontier, batch)
        splits_each = max(1, min(6, int(math.log2(max(1, batch // len(dom))))))
        splits_each = min(splits_each, int(torch.isfinite(scores).sum(dim=1).min()))
        order = scores.topk(max(1, splits_each), dim=1).indices
        if splits_each == 1 and candidates > 1:
            order = _smart_choice(engine, layout, dom, scores, b, candidates)[:, None]
        children = dom
        for r in range(max(1, splits_each)):
            children = layout.split(children, order[:, r].repeat(2 ** r))
        stats.max_depth = max(stats.max_depth, int(children.depth.max()))
        dom, record = bound_in_parts(lambda part: engine.bound(children.select(part), threshold), len(children),
                                     _merge_bounded)
        stats.domains_bounded += len(children)


def _smart_choice(engine: BetaCrown, layout, dom: Subdomains, scores: torch.Tensor, b: torch.Tensor,
                  candidates: int) -> torch.Tensor:
    """Filtered smart branching: of each subdomain's ``candidates`` best BaBSR neurons,
    the one whose two children have the best worse bound, each child bounded once with
    the parent's α and β (no optimisation). Returns ``(N,)`` flat neuron indices."""
    k = max(1, min(candidates, int(torch.isfinite(scores).sum(dim=1).min())))
    top = scores.topk(k, dim=1).indices  # (N, k)
    if k == 1:
        return top[:, 0]
    n = len(dom)
    children = layout.split(Subdomains.concat([dom] * k), top.T.reshape(-1))  # (2kN): active block, inactive block
    _, empty = engine.clamp(children.splits)
    lb = engine.estimate(children).to(b.dtype)
    value = torch.where(empty[:, None], torch.full_like(lb, float("inf")), lb - b).max(dim=1).values
    worse = torch.minimum(value[: k * n], value[k * n:]).reshape(k, n)
    return top[torch.arange(n, device=top.device), worse.argmax(dim=0)]


def decide_linear(model, region, region_index, disjunct, engine: BetaCrown, dom: Subdomains, stats: SplitBaBStats):
    """Subdomains with nothing left to split: one LP per subdomain (the MILP encoding with
    the split nodes' inputs clamped to the subdomain's intervals, ``restricted``). With every
    ReLU fixed the network is affine there and the LP decides the disjunct exactly; for
    other activations the LP's lines are a sound relaxation on those intervals, so
    ``unsat`` stays sound and ``sat`` needs onnxruntime's confirmation as always.
    ``unknown`` if any LP is undecided."""
    from .milp import milp_disjunct

    if any(data["kind"] == "maxpool" for _, data in engine.graph.nodes(data=True)):
        return "unknown", None  # max-pooling keeps a relaxation: no exact LP
    bounds, _ = engine.clamp(dom.splits)
    verdict = "unsat"
    for i in range(len(dom)):
        checkpoint()
        found, cex = milp_disjunct(model, region, disjunct, {n: (l[i:i + 1], u[i:i + 1]) for n, (l, u) in bounds.items()},
                                   region_index, dtype=engine.lam.dtype, device=str(engine.lam.device), restricted=True)
        stats.exhausted += 1
        if found == "unsat" and getattr(engine, "proof_region", None) is not None:
            _record_linear_leaf(engine, region, disjunct, dom.select(torch.tensor([i], device=dom.lb.device)))
        if found == "sat":
            return found, cex
        if found == "unknown":
            verdict = "unknown"
    return verdict, None


PROOF_ITERATIONS = 200  # β steps that try to re-derive an LP-closed leaf for its certificate


def _record_linear_leaf(engine: BetaCrown, region: InputRegion, disjunct: int, dom: Subdomains) -> None:
    """``verify --proof``: an LP closed subdomain ``dom`` (every ReLU fixed). With every
    ReLU fixed the β-CROWN bound is the Lagrangian dual of that LP, so enough β steps
    reach a bound that closes it: then it is recorded as an ordinary leaf (its α, β
    re-derivable); otherwise as trusted to HiGHS."""
    conj = region.disjuncts[disjunct]
    b = conj.b.to(engine.lam)
    strict = None if conj.strict is None else conj.strict.reshape(-1).to(dtype=torch.bool)
    steps = engine.iterations
    try:
        engine.iterations = PROOF_ITERATIONS
        bounded, _ = engine.bound(dom, _threshold(b, None if strict is None else strict.to(b.device)))
    finally:
        engine.iterations = steps
    if bool(refuted_rows(bounded.lb.double().cpu(), b.double().cpu(), None if strict is None else strict.cpu()).any()):
        record_relu_leaves(engine, disjunct, bounded)
    else:
        record_trusted_leaves(engine, disjunct, dom.splits)


def _merge_bounded(parts):
    doms, records = zip(*parts)
    return Subdomains.concat(list(doms)), {n: torch.cat([r[n] for r in records]) for n in records[0]}


def _pop(frontier: list, batch: int) -> tuple[Subdomains, torch.Tensor]:
    """Take up to ``batch`` of the newest subdomains off the frontier."""
    dom, scores = frontier.pop()
    if len(dom) > batch:
        rest = torch.arange(len(dom) - batch)
        take = torch.arange(len(dom) - batch, len(dom))
        frontier.append((dom.select(rest), scores[rest]))
        dom, scores = dom.select(take), scores[take]
    return dom, scores


def _candidates(model, region, region_index, engine: BetaCrown, dom: Subdomains, record: dict):
    """Evaluate the engine's candidate inputs of each open subdomain (the relaxation's
    minimiser of its worst row, :meth:`BetaCrown.candidate_inputs`)."""
    x = engine.candidate_inputs(model, region, dom, record)
    return None if x is None else confirm_candidates(model, region, x, region_index)
