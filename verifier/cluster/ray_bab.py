"""``verifier verify ... --ray [ADDRESS]``: input-splitting branch-and-bound of one
property with its frontier sharded over Ray workers.

:func:`verify_ray` is :func:`verifier.verify.verify` (same checks, overflow check,
screening, attack, Box/CROWN cascade and notes) in which the ``input-split`` method —
used by ``--method input-split`` and by ``auto`` for inputs of at most 16 values — is,
for the duration of the call, :class:`RayInputSplit`: the region's box is cut into
shards (bisection of the input with the largest width relative to the region's), and each
shard is searched by :func:`verifier.complete.input_split.input_split_bab` on a Ray actor
that holds the model (sent once through the object store). Shared state is one small
actor, :class:`Board`:

* a worker that finds a counterexample (confirmed by onnxruntime inside the search)
  posts it; every worker polls the board from its deadline checks (at most every
  :data:`POLL_S` seconds, also inside long bound computations) and stops; the driver
  confirms the counterexample again against the whole region before answering ``sat``;
* when the queue of shards is empty while workers are idle, the board says so; a worker
  that has searched its shard for :data:`SLICE_S` seconds then hands it back and the
  driver bisects it into two shards (its work so far is redone: the frontier stays inside
  the worker; a public hook in ``input_split.py`` returning it would avoid that);
* the timeout is one wall-clock end for the whole cluster (``time.time()``; clocks of the
  nodes are assumed synchronised).

Input splitting has no global bound to share: a box is closed by its own bounds, never by
another box's, so the board carries only the stop (a counterexample, or the driver's end)
and the idle count; a best-bound broadcast belongs to ReLU splitting, not distributed here.

Verdicts: ``sat`` as soon as one shard gives a confirmed counterexample, ``unsat`` when
every shard is refuted, ``unknown`` when some shard ends undecided at float resolution,
``timeout`` past the deadline: the same answers as the one-process search (the
counterexample may be another one). Over the network go the model once per actor, per
shard its box and the region's output constraints (a few kB for ≤ 16 inputs), and back a
verdict, a counterexample and two counts; the board's poll is one small round trip.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, replace

import torch

from ..deadline import Deadline, Timeout
from ..spec.model import InputRegion
from .ray_session import LOCAL, check_address, cluster_cpus, connect, model_from, portable_model, require_ray, workers

POLL_S = 0.05          # a worker asks the board whether to stop at most this often
SLICE_S = 1.0          # a shard searched this long is handed back for splitting while workers idle
SHARDS_PER_WORKER = 4  # initial shards per worker


@dataclass
class ShardStats:
    """What a distributed search did: shards searched (``shards``), handed back to be split
    (``sliced``), stopped early by a counterexample found elsewhere or the end of the search
    (``stopped``), boxes bounded by all workers and open boxes left at float resolution
    (``exhausted``)."""

    workers: int = 0
    shards: int = 0
    sliced: int = 0
    stopped: int = 0
    boxes_bounded: int = 0
    exhausted: int = 0


class Board:
    """The shared state, a Ray actor: a counterexample found (stop everyone) and how many
    workers wait for a shard."""

    def __init__(self):
        self.stop, self.cex, self.hungry = False, None, 0

    def found(self, cex) -> None:
        """Post a confirmed counterexample (the first one is kept) and stop every worker."""
        if self.cex is None:
            self.cex = cex
        self.stop = True

    def halt(self) -> None:
        """Stop every worker (the driver's end of the search)."""
        self.stop = True

    def set_hungry(self, count: int) -> None:
        """``count`` workers are idle with no shard queued."""
        self.hungry = count

    def poll(self) -> tuple[bool, int]:
        """``(stop, hungry)``."""
        return self.stop, self.hungry


class ClusterDeadline(Deadline):
    """A worker's deadline: expires at the cluster-wide wall-clock end ``end_wall``
    (``time.time()`` seconds; ``None``: no limit), when the board says stop, or when idle
    workers wait and this shard has run ``slice_s`` seconds. :attr:`reason` says which
    (``"timeout"``, ``"stopped"``, ``"sliced"``); once expired it stays expired."""

    def __init__(self, end_wall: float | None, board, slice_s: float = SLICE_S, poll_s: float = POLL_S):
        super().__init__(None if end_wall is None else max(0.0, end_wall - time.time()))
        self.board, self.poll_s = board, poll_s
        self.slice_end = time.monotonic() + slice_s
        self.reason: str | None = None
        self._next_poll = 0.0

    def expired(self) -> bool:
        import ray

        if self.reason is None and super().expired():
            self.reason = "timeout"
        now = time.monotonic()
        if self.reason is None and now >= self._next_poll:
            self._next_poll = now + self.poll_s
            stop, hungry = ray.get(self.board.poll.remote())
            if stop:
                self.reason = "stopped"
            elif hungry and now >= self.slice_end:
                self.reason = "sliced"
        return self.reason is not None


def search_on_worker(state: dict, shared: list, region: InputRegion, index: int, end_wall: float | None, board,
                     slice_s: float, dtype: torch.dtype, device: str, options: dict) -> tuple[str, object, int, int]:
    """In a worker (:class:`~verifier.cluster.ray_session.Worker`):
    ``(status, counterexample, boxes bounded, boxes exhausted)`` of
    :func:`~verifier.complete.input_split.input_split_bab` on one shard of the model
    ``shared[0]`` (fetched once per worker); status is its verdict, or the
    :class:`ClusterDeadline` reason that ended it. A counterexample is posted to ``board``
    before returning."""
    from ..complete.input_split import BaBStats, input_split_bab
    from ..deadline import warm_up

    model = model_from(state, shared)
    warm_up(optimizers=False)
    deadline, stats = ClusterDeadline(end_wall, board, slice_s), BaBStats()
    try:
        with deadline.active():
            status, cex = input_split_bab(model, region, deadline, domain="crown", region_index=index,
                                          dtype=dtype, device=device, stats=stats, **options)
    except Timeout:
        status, cex = deadline.reason or "timeout", None
    if status == "sat":
        board.found.remote(cex)
    return status, cex, stats.boxes_bounded, stats.exhausted


def shard(region: InputRegion, lo: torch.Tensor, hi: torch.Tensor) -> InputRegion:
    """The sub-region ``[lo, hi]`` of ``region`` (same output constraints); a strict side of
    ``region`` stays strict where the shard shares it, internal faces are closed."""
    def strict(flags, mine, theirs):
        return None if flags is None else flags.reshape(-1).cpu() & (mine == theirs)

    return replace(region, lower=lo, upper=hi,
                   lower_strict=strict(region.lower_strict, lo, region.lower.reshape(-1).double().cpu()),
                   upper_strict=strict(region.upper_strict, hi, region.upper.reshape(-1).double().cpu()))


def bisect(lo: torch.Tensor, hi: torch.Tensor, scale: torch.Tensor):
    """``((lo, left_hi), (right_lo, hi))``: the box halved across the input with the largest
    width relative to ``scale`` among those whose midpoint lies strictly inside; ``None``
    when no input can be halved (float resolution)."""
    mid = (lo + hi) / 2
    splittable = (mid > lo) & (mid < hi)
    if not bool(splittable.any()):
        return None
    rel = torch.where(splittable, (hi - lo) / torch.where(scale > 0, scale, torch.ones_like(scale)),
                      torch.full_like(lo, -math.inf))
    dim = int(rel.argmax())
    left_hi, right_lo = hi.clone(), lo.clone()
    left_hi[dim] = right_lo[dim] = mid[dim]
    return (lo, left_hi), (right_lo, hi)


def initial_shards(region: InputRegion, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """About ``count`` boxes covering the region's box, by breadth-first bisection."""
    lo, hi = region.lower.reshape(-1).double().cpu(), region.upper.reshape(-1).double().cpu()
    scale, boxes = hi - lo, [(lo, hi)]
    while len(boxes) < count:
        halves = bisect(*boxes[0], scale)
        if halves is None:
            break
        boxes = boxes[1:] + list(halves)
    return boxes


class WorkerPool:
    """The model in the object store and the Ray workers
    (:func:`~verifier.cluster.ray_session.workers`) that search its shards; connects on
    first use (:meth:`actors`)."""

    def __init__(self, model, address: str | None = LOCAL, workers: int | None = None):
        self.model, self.address, self.workers, self._actors = model, address, workers, None

    def actors(self) -> list:
        """The workers (default: one per CPU of the cluster)."""
        if self._actors is None:
            ray = connect(self.address)
            self.shared = [ray.put(portable_model(self.model))]  # sent by reference with every shard
            self._actors = workers(ray, self.workers or cluster_cpus(ray))
        return self._actors

    def search(self, actor, region: InputRegion, *args):
        """Submit :func:`search_on_worker` of one shard to ``actor``; its object reference."""
        return actor.call.remote(search_on_worker, self.shared, region, *args)


def distributed_input_split(pool: WorkerPool, region: InputRegion, deadline: Deadline, index: int = 0,
                            dtype: torch.dtype = torch.float64, device: str = "cpu", stats: ShardStats | None = None,
                            slice_s: float = SLICE_S, **options) -> tuple[str, object]:
    """``("sat", cex)`` / ``("unsat", None)`` / ``("unknown", None)`` for one region, as
    :func:`~verifier.complete.input_split.input_split_bab` answers, with the shards searched
    on ``pool``'s actors (see the module docstring); raises
    :class:`~verifier.deadline.Timeout` past ``deadline``. ``options``: ``batch``,
    ``split_rule`` of the one-process search."""
    import ray

    from ..attack import confirm_candidates

    stats = stats if stats is not None else ShardStats()
    actors = pool.actors()
    stats.workers = len(actors)
    board = ray.remote(num_cpus=0)(Board).remote()
    scale = (region.upper.reshape(-1) - region.lower.reshape(-1)).double().cpu()
    queue = [(box, slice_s) for box in initial_shards(region, SHARDS_PER_WORKER * len(actors))]
    idle, pending, hungry, unknown = list(actors), {}, 0, False
    end_wall = None if math.isinf(deadline.remaining()) else time.time() + deadline.remaining()
    try:
        while queue or pending:
            deadline.check()
            while queue and idle:
                ((lo, hi), own_slice), actor = queue.pop(0), idle.pop()
                ref = pool.search(actor, shard(region, lo, hi), index, end_wall, board, own_slice, dtype, device,
                                  options)
                pending[ref] = (actor, lo, hi)
                stats.shards += 1
            now_hungry = 0 if queue else len(idle)
            if now_hungry != hungry:
                hungry = now_hungry
                board.set_hungry.remote(hungry)
            done, _ = ray.wait(list(pending), num_returns=1, timeout=max(0.01, min(0.5, deadline.remaining())))
            for ref in done:
                actor, lo, hi = pending.pop(ref)
                idle.append(actor)
                status, cex, bounded, exhausted = ray.get(ref)
                stats.boxes_bounded += bounded
                stats.exhausted += exhausted
                if status == "sat":
                    x = torch.tensor(cex.x, dtype=torch.float64)[None]
                    confirmed = confirm_candidates(pool.model, region, x, index)
                    if confirmed is not None:
                        return "sat", confirmed
                    unknown = True  # never answered sat without the whole region's confirmation
                elif status in ("unknown", "stopped"):
                    # "stopped": another worker posted a counterexample (its "sat" is on its way
                    # here); if that one is not confirmed, this shard stays undecided
                    unknown = True
                    stats.stopped += status == "stopped"
                elif status == "sliced":
                    halves = bisect(lo, hi, scale)
                    stats.sliced += 1
                    queue += [(box, slice_s) for box in halves] if halves else [((lo, hi), math.inf)]
                elif status == "timeout":
                    raise Timeout()
        return ("unknown" if unknown else "unsat"), None
    finally:
        board.halt.remote()
        if pending:  # the workers stop within a poll; count their boxes and those the broadcast stopped
            for ref in ray.wait(list(pending), num_returns=len(pending), timeout=10)[0]:
                with contextlib.suppress(ray.exceptions.RayError):
                    status, _, bounded, exhausted = ray.get(ref)
                    stats.stopped += status == "stopped"
                    stats.boxes_bounded += bounded
                    stats.exhausted += exhausted
        ray.kill(board)


class RayInputSplit:
    """The ``input-split`` complete method with the search on a :class:`WorkerPool`
    (the interface of :class:`verifier.complete.methods.CompleteMethod`)."""

    def __init__(self, base, pool: WorkerPool):
        self.base, self.pool = base, pool
        self.name, self.description, self.options = base.name, base.description, base.options

    def supports(self, graph):
        return self.base.supports(graph)

    def refuse_unsupported(self, graph) -> None:
        self.base.refuse_unsupported(graph)

    def decide(self, model, region, index, deadline, device, dtype, options, notes):
        stats = ShardStats()
        try:
            return distributed_input_split(self.pool, region, deadline, index, dtype, device, stats, **options)
        finally:
            notes.append(f"region {index}: input-split branch-and-bound on {stats.workers} Ray workers bounded "
                         f"{stats.boxes_bounded} boxes in {stats.shards} shards ({stats.sliced} handed back and "
                         f"split, {stats.stopped} stopped early by a counterexample or the end of the search)")


def verify_ray(model, spec, domain: str = "auto", timeout: float | None = None, device: str = "cpu",
               dtype: torch.dtype = torch.float64, attack: bool = True, seed: int = 0,
               domain_options: dict | None = None, deadline: Deadline | None = None,
               address: str | None = LOCAL, workers: int | None = None):
    """:func:`verifier.verify.verify` (same arguments, checks, errors and
    :class:`~verifier.verify.VerificationResult`) with input-splitting branch-and-bound on
    Ray at ``address`` (``"local"``: a local Ray instance with this machine's cores) with
    ``workers`` actors (default: the cluster's CPUs). Other methods (relu-split for larger
    inputs, milp, single domains) run in this process, with a note saying so. Raises
    :class:`~verifier.errors.VerifierInputError` without ``ray`` installed, for an address
    where no cluster answers, and inside ``verify --proof`` (the workers record no
    certificate)."""
    from ..complete import methods
    from ..verify import verify

    from ..errors import VerifierInputError
    from ..proof.record import active

    require_ray()
    check_address(address)
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise VerifierInputError(f"workers must be a whole number >= 1, not {workers!r}")
    if str(device) != "cpu":
        raise VerifierInputError(f"--ray searches on CPU workers; --device {device} is not available there "
                                 f"(drop one of them)")
    if active() is not None:  # the workers' search would leave the certificate without its leaves
        raise VerifierInputError("--proof and --ray: the distributed search records no certificate; "
                                 "drop --ray to write a proof")
    pool = WorkerPool(model, address, workers)
    base = methods.METHODS["input-split"]
    methods.METHODS["input-split"] = RayInputSplit(base, pool)  # for this call only (restored below)
    try:
        result = verify(model, spec, domain=domain, timeout=timeout, device=device, dtype=dtype, attack=attack,
                        seed=seed, domain_options=domain_options, deadline=deadline)
    finally:
        methods.METHODS["input-split"] = base
    if not any("Ray workers" in note for note in result.notes):
        result.notes.append("note: --ray distributes input-split branch-and-bound only; this property was decided "
                            "in this process")
    return result
