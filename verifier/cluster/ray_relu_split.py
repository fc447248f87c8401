"""ReLU-splitting branch-and-bound of one region on Ray workers (``verify --ray`` with
``--method relu-split``, or ``auto`` for ReLU networks of more than 16 inputs).

The one-process search (:func:`verifier.complete.relu_split.relu_split_bab`, β-CROWN after
Wang et al. 2021) runs per open disjunct from α-CROWN's intermediate bounds of the whole
box. Here the driver

1. computes those root bounds once (:func:`~verifier.complete.methods.alpha_crown_root`)
   and puts them in the object store (each worker fetches them once per region);
2. bounds each open disjunct's root subdomain with β-CROWN and splits it on its
   best-scored crossing ReLUs (the one-process search's BaBSR scores and split,
   ``relu_split.Layout``) into ``2^d`` subdomains, ``d = ⌈log2(4 × workers / disjuncts)⌉``
   (none when there are that many open disjuncts; each is then a shard): the shards,
   plain tensors (:class:`~verifier.complete.beta_crown.Subdomains`: split signs ``int8``
   per pre-activation, α and β, bounds, depth);
3. runs :func:`~verifier.cluster.ray_bab.search_shards`: each worker searches its shard with
   :func:`~verifier.complete.relu_split.search_subdomains` (the one-process loop, its
   engine's root subdomain being the shard, :class:`ShardEngine`), polling the board for a
   counterexample found elsewhere; a shard sliced while workers idle is bounded and split
   once more in the driver (two shards).

Every shard is a subset of the region's box with a sound lower bound (a parent's bound
holds on its children), its candidates are confirmed by onnxruntime in the worker and
again on the whole region in the driver, so the verdict is the one-process search's:
``sat`` with a confirmed counterexample, ``unsat`` when every shard of every open disjunct
is closed, ``unknown`` when one ends undecided (then, as in one process, the exact MILP
runs in the driver where the network is MILP-exact), ``timeout`` past the deadline.
Over the network go the root bounds and the region once per region (object store; mnist_fc
256x6: 28 kB and 24 kB), per shard its subdomain (split signs, α and β of ``k`` rows per
ReLU: 32 kB for 256x6 and one row), and back a verdict, a counterexample and two counts.
"""

from __future__ import annotations

import inspect
import math

import networkx as nx
import torch

from ..complete.beta_crown import BetaCrown, Subdomains, relu_pre_activations
from ..deadline import Deadline
from ..spec.model import InputRegion, refuted_rows
from .ray_bab import SHARDS_PER_WORKER, SLICE_S, RayMethod, ShardStats, WorkerPool, run_shard, search_shards
from .ray_session import fetched, model_from

SEARCH_OPTIONS = ("batch", "iterations", "candidates")  # relu_split_bab's options a worker's search takes


class ShardEngine(BetaCrown):
    """:class:`~verifier.complete.beta_crown.BetaCrown` whose root subdomain is a shard
    (``shard``: :class:`~verifier.complete.beta_crown.Subdomains`, ``None``: the whole box),
    so that :func:`~verifier.complete.relu_split.search_subdomains` searches from it."""

    def __init__(self, *args, shard: Subdomains | None = None, **kwargs):
        self.shard = shard  # before BetaCrown's constructor, whose narrow-dtype copy shares it
        super().__init__(*args, **kwargs)

    def root_subdomain(self) -> Subdomains:
        """The shard (its split signs, α, β, bound and depth), or the whole box."""
        return super().root_subdomain() if self.shard is None else self.shard


def search_options(options: dict) -> dict:
    """``batch``, ``iterations``, ``candidates``: those of ``options`` given, else the
    defaults of :func:`~verifier.complete.relu_split.relu_split_bab` (one source of them)."""
    from ..complete.relu_split import relu_split_bab

    defaults = inspect.signature(relu_split_bab).parameters
    return {name: options.get(name, defaults[name].default) for name in SEARCH_OPTIONS}


def make_engine(model, region: InputRegion, disjunct: int, root: dict, dtype: torch.dtype, iterations: int,
                shard: Subdomains | None = None) -> ShardEngine:
    """The β-CROWN engine of one disjunct's rows ``(1, k, *out)`` over the region's box
    (CPU, ``dtype``), from the root intermediate bounds ``root`` (node → ``(l, u)``), with
    the one-process search's optimisation dtype
    (:func:`~verifier.complete.relu_split.default_bound_dtype`: float32 steps, float64
    bounds on large networks)."""
    from ..complete.relu_split import beta_crown_engine

    out_shape = tuple(model.graph.nodes[model.graph.graph["output"]]["shape"])
    lam = region.disjuncts[disjunct].A.reshape(1, -1, *out_shape)
    return beta_crown_engine(model, region, lam, root, dtype, "cpu", iterations, engine=ShardEngine, shard=shard)


def layout_for(graph: nx.DiGraph, root: dict):
    """The one-process search's numbering, scores and split of the graph's ReLUs
    (:class:`~verifier.complete.relu_split.Layout`)."""
    from ..complete.relu_split import Layout

    return Layout(relu_pre_activations(graph), root)


def cut(engine: BetaCrown, region: InputRegion, disjunct: int, dom: Subdomains, parts: int) -> list[Subdomains] | None:
    """One subdomain ``dom`` cut into about ``parts`` (at least 2) shards: bounded by
    ``engine``, then split on its ``⌈log2 parts⌉`` best-scored crossing ReLUs (fewer where
    fewer cross), one :class:`Subdomains` of one subdomain per shard, each with its parent's
    bound (sound: it holds on every child). ``[]`` when the bound closes ``dom``; ``None``
    when no ReLU is left to split."""
    conj = region.disjuncts[disjunct]
    strict = None if conj.strict is None else conj.strict.reshape(-1).to(dtype=torch.bool)
    bounded, record = engine.bound(dom)
    lb = torch.nan_to_num(bounded.lb, nan=float("-inf"))
    if bool(refuted_rows(lb.double().cpu(), conj.b.double().cpu(), strict).any()):
        return []
    layout = layout_for(engine.graph, engine.root)
    scores = layout.scores(bounded, engine.root, record, (lb - conj.b.to(lb)).argmin(dim=1))[0]
    depth = min(max(1, math.ceil(math.log2(max(2, parts)))), int(torch.isfinite(scores).sum()))
    if depth == 0:
        return None
    order = scores.topk(depth).indices
    children = bounded
    for r in range(depth):
        children = layout.split(children, order[r:r + 1].repeat(2 ** r))
    return [children.select(torch.tensor([i])) for i in range(len(children))]


def search_on_worker(state: dict, shared: list, sent: list, index: int, disjunct: int, dom: Subdomains,
                     end_wall: float | None, board, slice_s: float, dtype: torch.dtype,
                     options: dict) -> tuple[str, object, int, int]:
    """In a worker (:class:`~verifier.cluster.ray_session.Worker`):
    ``(status, counterexample, subdomains bounded, subdomains exhausted)`` of
    :func:`~verifier.complete.relu_split.search_subdomains` from the shard ``dom`` of
    disjunct ``disjunct``, with the model ``shared[0]``, the root bounds ``sent[0]`` and the
    region ``sent[1]`` (object-store references, each fetched once per worker); status as
    :func:`~verifier.cluster.ray_bab.run_shard` returns it. ``options``: :func:`search_options`."""
    from ..complete.relu_split import SplitBaBStats, decide_linear, search_subdomains
    from ..deadline import warm_up

    model, root, region = model_from(state, shared), fetched(state, "root", sent[0]), fetched(state, "region", sent[1])
    warm_up(optimizers=True)
    engine = make_engine(model, region, disjunct, root, dtype, options["iterations"], shard=dom)
    layout, stats = layout_for(engine.graph, root), SplitBaBStats()
    status, cex = run_shard(lambda deadline: search_subdomains(
        model, region, index, engine, layout, disjunct, deadline, batch=options["batch"], stats=stats,
        candidates=options["candidates"], exhausted=decide_linear), end_wall, board, slice_s)
    return status, cex, stats.domains_bounded, stats.exhausted


def distributed_relu_split(pool: WorkerPool, region: InputRegion, root: dict, disjuncts: list[int],
                           deadline: Deadline, index: int = 0, dtype: torch.dtype = torch.float64,
                           stats: ShardStats | None = None, slice_s: float = SLICE_S,
                           **options) -> tuple[str, object]:
    """``("sat", cex)`` / ``("unsat", None)`` / ``("unknown", None)`` for the region's open
    ``disjuncts``, as :func:`~verifier.complete.relu_split.relu_split_bab` answers from the
    root intermediate bounds ``root`` (:func:`~verifier.complete.methods.alpha_crown_root`,
    ``(1, *S)`` per node), with the shards searched on ``pool``'s actors (see the module
    docstring); raises :class:`~verifier.deadline.Timeout` past ``deadline``. ``options``:
    ``batch``, ``iterations``, ``candidates`` of the one-process search."""
    import ray

    from ..attack import confirm_candidates

    stats = stats if stats is not None else ShardStats()
    options = search_options(options)
    if not disjuncts:
        return "unsat", None
    parts = math.ceil(SHARDS_PER_WORKER * len(pool.actors()) / len(disjuncts))  # shards per disjunct
    sent = [ray.put(root), ray.put(region)]  # once per region; a shard carries only its subdomain
    engines = {d: make_engine(pool.model, region, d, root, dtype, options["iterations"]) for d in disjuncts}
    jobs = []
    for d in disjuncts:
        deadline.check()
        whole = engines[d].root_subdomain()
        shards = cut(engines[d], region, d, whole, parts) if parts > 1 else None
        jobs += [(d, whole)] if shards is None else [(d, s) for s in shards]

    def submit(actor, job, end_wall, board, own_slice):
        return pool.search(actor, search_on_worker, sent, index, job[0], job[1], end_wall, board, own_slice, dtype,
                           options)

    def confirm(cex):
        return confirm_candidates(pool.model, region, torch.tensor(cex.x, dtype=torch.float64)[None], index)

    def cut_job(job):
        d, dom = job
        shards = cut(engines[d], region, d, dom, 2)
        return None if shards is None else [(d, s) for s in shards]

    return search_shards(pool, jobs, submit, cut_job, confirm, deadline, stats, slice_s)


class RayReluSplit(RayMethod):
    """The ``relu-split`` complete method with the search on a
    :class:`~verifier.cluster.ray_bab.WorkerPool`."""

    def decide(self, model, region: InputRegion, index: int, deadline: Deadline, device: str, dtype: torch.dtype,
               options: dict, notes: list[str]) -> tuple[str, object]:
        """As :class:`verifier.complete.methods.ReluSplit`: α-CROWN at the root, the search
        on the workers, then the exact MILP (in the driver) if it stays undecided on a
        MILP-exact network. Raises :class:`~verifier.errors.VerifierInputError` for an
        option of the one-process method that the workers' search does not take."""
        from ..complete.methods import METHODS, alpha_crown_root
        from ..errors import VerifierInputError

        unknown = sorted(set(options) - set(SEARCH_OPTIONS) - {"time_limit"})
        if unknown:  # an option of the one-process method the workers' search does not take yet
            raise VerifierInputError(f"relu-split on Ray workers takes the options "
                                     f"{', '.join(SEARCH_OPTIONS)}, time_limit; not {', '.join(unknown)} (drop --ray)")
        self.pool.warm()  # the workers start while α-CROWN runs here
        root, open_disjuncts = alpha_crown_root(model, region, index, device, dtype, notes)
        if not open_disjuncts:
            return "unsat", None
        self.refuse_unsupported(model.graph)
        stats = ShardStats()
        try:
            status, cex = distributed_relu_split(self.pool, region, root, open_disjuncts, deadline, index, dtype,
                                                 stats, **{k: v for k, v in options.items() if k in SEARCH_OPTIONS})
        finally:
            notes.append(f"region {index}: relu-split branch-and-bound on {stats.workers} Ray workers bounded "
                         f"{stats.boxes_bounded} subdomains in {stats.shards} shards ({stats.sliced} handed back "
                         f"and split, {stats.stopped} stopped early by a counterexample or the end of the search)")
        milp = METHODS["milp"]
        if status != "unknown" or milp.supports(model.graph, root):
            return status, cex
        return milp.decide(model, region, index, deadline, device, dtype,
                           {k: v for k, v in options.items() if k == "time_limit"}, notes)
