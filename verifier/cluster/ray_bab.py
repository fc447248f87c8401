"""``verifier verify ... --ray [ADDRESS]``: branch-and-bound of one property with its
frontier sharded over Ray workers.

:func:`verify_ray` is :func:`verifier.verify.verify` (same checks, overflow check,
screening, attack, Box/CROWN cascade and notes) given Ray versions of two complete
methods through its ``methods`` argument (no registry is changed):

* ``input-split`` (:mod:`.ray_input_split`) — the region's box cut into boxes, each
  searched by :func:`~verifier.complete.input_split.input_split_bab` on a worker;
* ``relu-split`` (:mod:`.ray_relu_split`) — α-CROWN's root bounds computed once in the
  driver and sent once (object store), the root subdomain split on its best-scored ReLUs
  into subdomains (plain tensors: split signs, α, β, bounds), each searched by
  :func:`~verifier.complete.relu_split.search_subdomains` on a worker.

This module holds what both share: the workers (:class:`WorkerPool`, the model sent once
through the object store), the driver's loop over shards (:func:`search_shards`) and the
shared state, one small actor (:class:`Board`):

* a worker that finds a counterexample (confirmed by onnxruntime inside its search)
  posts it; every worker polls the board from its deadline checks (at most every
  :data:`POLL_S` seconds, also inside long bound computations) and stops; the driver
  confirms the counterexample again against the whole region before answering ``sat``;
* when the queue of shards is empty while workers are idle, the board says so; a worker
  that has searched its shard for :data:`SLICE_S` seconds then hands it back and the
  driver cuts it in two (its work so far is redone: the frontier stays inside the worker);
* the timeout is one wall-clock end for the whole cluster (``time.time()``; clocks of the
  nodes are assumed synchronised).

No global bound is shared: both searches decide a property (every subdomain must be
closed by its own bound, or yield a counterexample), so another shard's bound closes
nothing; the board carries only the stop (a counterexample, or the driver's end) and the
idle count.

Verdicts: ``sat`` as soon as one shard gives a confirmed counterexample, ``unsat`` when
every shard is closed, ``unknown`` when some shard ends undecided, ``timeout`` past the
deadline: the same answers as the one-process search (the counterexample may be another
one).
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import networkx as nx
import torch

from ..deadline import Deadline, Timeout
from .ray_session import (LOCAL, check_address, cluster_cpus, connect, model_from, portable_model, require_ray,
                          session_key, workers)

if TYPE_CHECKING:
    from ..verify import VerificationResult

POLL_S = 0.05          # a worker asks the board whether to stop at most this often
SLICE_S = 1.0          # a shard searched this long is handed back for cutting while workers idle
SHARDS_PER_WORKER = 4  # initial shards per worker


@dataclass
class ShardStats:
    """What a distributed search did: shards searched (``shards``), handed back to be cut
    (``sliced``), stopped early by a counterexample found elsewhere or the end of the search
    (``stopped``), boxes / subdomains bounded by all workers (``boxes_bounded``) and those
    left undecided with nothing to split (``exhausted``)."""

    workers: int = 0
    shards: int = 0
    sliced: int = 0
    stopped: int = 0
    boxes_bounded: int = 0
    exhausted: int = 0


class Board:
    """The shared state, a Ray actor: a counterexample found (stop everyone) and how many
    workers wait for a shard. One board serves the searches of one driver one after
    another (starting an actor takes seconds): each search is an *epoch* (:meth:`begin`);
    a call naming an older epoch changes nothing, and its poll says stop (a straggler of an
    ended search stops)."""

    def __init__(self):
        self.epoch, self.stop, self.cex, self.hungry = 0, False, None, 0

    def begin(self) -> int:
        """Start a new search: clear the state; its epoch number."""
        self.epoch, self.stop, self.cex, self.hungry = self.epoch + 1, False, None, 0
        return self.epoch

    def found(self, epoch: int, cex) -> None:
        """Post a confirmed counterexample (the first one is kept) and stop every worker."""
        if epoch == self.epoch:
            self.cex = self.cex if self.cex is not None else cex
            self.stop = True

    def halt(self, epoch: int) -> None:
        """Stop every worker (the driver's end of the search)."""
        if epoch == self.epoch:
            self.stop = True

    def set_hungry(self, epoch: int, count: int) -> None:
        """``count`` workers are idle with no shard queued."""
        if epoch == self.epoch:
            self.hungry = count

    def poll(self, epoch: int) -> tuple[bool, int]:
        """``(stop, hungry)`` for a worker of search ``epoch``."""
        return (self.stop or epoch != self.epoch), (self.hungry if epoch == self.epoch else 0)


_BOARDS: dict[str, object] = {}  # Ray session → this driver's board


def board_of(ray) -> object:
    """This driver's :class:`Board` actor handle (no CPU of its own) in the connected Ray
    session (the ``ray`` module), started on first use and reused."""
    key = session_key(ray)
    if key not in _BOARDS:
        _BOARDS[key] = ray.remote(num_cpus=0)(Board).remote()
    return _BOARDS[key]


class ClusterDeadline(Deadline):
    """A worker's deadline: expires at the cluster-wide wall-clock end ``end_wall``
    (``time.time()`` seconds; ``None``: no limit), when the board (``(actor, epoch)``) says
    stop, or when idle workers wait and this shard has run ``slice_s`` seconds. :attr:`reason` says which
    (``"timeout"``, ``"stopped"``, ``"sliced"``); once expired it stays expired."""

    def __init__(self, end_wall: float | None, board: tuple, slice_s: float = SLICE_S, poll_s: float = POLL_S):
        super().__init__(None if end_wall is None else max(0.0, end_wall - time.time()))
        (self.board, self.epoch), self.poll_s = board, poll_s
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
            stop, hungry = ray.get(self.board.poll.remote(self.epoch))
            if stop:
                self.reason = "stopped"
            elif hungry and now >= self.slice_end:
                self.reason = "sliced"
        return self.reason is not None


def run_shard(search: Callable[[Deadline], tuple[str, object]], end_wall: float | None, board: tuple,
              slice_s: float) -> tuple[str, object]:
    """In a worker: ``search(deadline)`` (a one-process search of one shard, returning
    ``(verdict, counterexample)`` and raising :class:`~verifier.deadline.Timeout` at its
    deadline) under a :class:`ClusterDeadline`, made the active one for
    :func:`~verifier.deadline.checkpoint`. Returns the verdict, or the reason the deadline
    gave (``"timeout"``, ``"stopped"``, ``"sliced"``) with no counterexample; a ``sat``
    counterexample is posted to ``board`` (``(actor, epoch)``) first, so every other worker stops."""
    deadline = ClusterDeadline(end_wall, board, slice_s)
    try:
        with deadline.active():
            status, cex = search(deadline)
    except Timeout:
        status, cex = deadline.reason or "timeout", None
    if status == "sat":
        board[0].found.remote(board[1], cex)
    return status, cex


def warm_worker(state: dict, shared: list, optimizers: bool) -> None:
    """In a worker: fetch the model ``shared[0]`` and run :func:`~verifier.deadline.warm_up`."""
    from ..deadline import warm_up

    model_from(state, shared)
    warm_up(optimizers=optimizers)


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
            self.board = board_of(ray)
        return self._actors

    def warm(self, optimizers: bool = True) -> None:
        """Start the workers (connecting first) and have each fetch the model and run
        :func:`~verifier.deadline.warm_up` now, without waiting: seconds of process start
        and imports that then overlap the driver's own work (α-CROWN at the root)."""
        for actor in self.actors():
            actor.call.remote(warm_worker, self.shared, optimizers)

    def search(self, actor, fn: Callable, *args) -> object:
        """Submit ``fn(state, [model reference], *args)`` (a module-level function of a
        :class:`~verifier.cluster.ray_session.Worker`) to ``actor``; its object reference."""
        return actor.call.remote(fn, self.shared, *args)


def search_shards(pool: WorkerPool, jobs: list, submit: Callable, cut: Callable[[object], list | None],
                  confirm: Callable, deadline: Deadline, stats: ShardStats,
                  slice_s: float = SLICE_S) -> tuple[str, object]:
    """The driver's loop: the shards ``jobs`` searched on ``pool``'s actors, one at a time
    per actor, idle actors served first-come from the queue (dynamic assignment). A shard
    handed back after ``slice_s`` seconds while actors idle is cut (``cut``) into parts,
    each handed back in turn only after twice its parent's time.

    ``submit(actor, job, end_wall, board, slice_s)`` (``board``: the pool's
    :class:`Board` and this search's epoch) submits one shard and returns the
    object reference of ``(status, counterexample, bounded, exhausted)``, status a verdict
    or a :func:`run_shard` reason; ``cut(job)`` is a sliced shard's parts (an empty list
    when the driver finds it closed, ``None`` when it cannot be cut: it is then searched to
    its end); ``confirm(cex)`` is the counterexample confirmed by onnxruntime on the whole
    region, or ``None``. Returns ``("sat", cex)`` at the first confirmed counterexample,
    ``("unknown", None)`` if a shard ends undecided (or its counterexample is not
    confirmed), else ``("unsat", None)``; raises :class:`~verifier.deadline.Timeout` past
    ``deadline`` (every worker is stopped through the board on the way out)."""
    import ray

    actors = pool.actors()
    stats.workers = len(actors)
    board = (pool.board, ray.get(pool.board.begin.remote()))
    queue = [(job, slice_s) for job in jobs]
    idle, pending, hungry, unknown = list(actors), {}, 0, False
    end_wall = None if math.isinf(deadline.remaining()) else time.time() + deadline.remaining()
    try:
        while queue or pending:
            deadline.check()
            while queue and idle:
                (job, own_slice), actor = queue.pop(0), idle.pop()
                pending[submit(actor, job, end_wall, board, own_slice)] = (actor, job, own_slice)
                stats.shards += 1
            now_hungry = 0 if queue else len(idle)
            if now_hungry != hungry:
                hungry = now_hungry
                board[0].set_hungry.remote(board[1], hungry)
            done, _ = ray.wait(list(pending), num_returns=1, timeout=max(0.01, min(0.5, deadline.remaining())))
            for ref in done:
                actor, job, own_slice = pending.pop(ref)
                idle.append(actor)
                status, cex, bounded, exhausted = ray.get(ref)
                stats.boxes_bounded += bounded
                stats.exhausted += exhausted
                if status == "sat":
                    confirmed = confirm(cex)
                    if confirmed is not None:
                        return "sat", confirmed
                    unknown = True  # never answered sat without the whole region's confirmation
                elif status in ("unknown", "stopped"):
                    # "stopped": another worker posted a counterexample (its "sat" is on its way
                    # here); if that one is not confirmed, this shard stays undecided
                    unknown = True
                    stats.stopped += status == "stopped"
                elif status == "sliced":
                    parts = cut(job)
                    stats.sliced += 1
                    # each part may run twice as long before it is handed back in turn: the work
                    # redone after hand-backs stays below about the time a shard ran last
                    queue += [(part, 2 * own_slice) for part in parts] if parts is not None else [(job, math.inf)]
                elif status == "timeout":
                    raise Timeout()
        return ("unknown" if unknown else "unsat"), None
    finally:
        board[0].halt.remote(board[1])
        if pending:  # the workers stop within a poll; count their work and those the broadcast stopped
            for ref in ray.wait(list(pending), num_returns=len(pending), timeout=10)[0]:
                with contextlib.suppress(ray.exceptions.RayError):
                    status, _, bounded, exhausted = ray.get(ref)
                    stats.stopped += status == "stopped"
                    stats.boxes_bounded += bounded
                    stats.exhausted += exhausted


class RayMethod:
    """A complete method whose search runs on a :class:`WorkerPool`: the interface of
    :class:`verifier.complete.methods.CompleteMethod` (name, options, support) taken from
    the one-process method ``base``; subclasses give :meth:`decide`."""

    def __init__(self, base, pool: WorkerPool):
        self.base, self.pool = base, pool
        self.name, self.description, self.options = base.name, base.description, base.options

    def supports(self, graph: nx.DiGraph) -> list[tuple[str, str]]:
        """``base``'s answer: ``(node, reason)`` for every op it cannot decide."""
        return self.base.supports(graph)

    def refuse_unsupported(self, graph: nx.DiGraph) -> None:
        """``base``'s refusal (:class:`~verifier.errors.VerifierInputError`) of unsupported ops."""
        self.base.refuse_unsupported(graph)


def ray_methods(pool: WorkerPool) -> dict[str, RayMethod]:
    """The complete methods that search on ``pool``, ``input-split`` and ``relu-split``, to
    pass as ``verify(..., methods=...)`` (whose ``auto`` then chooses among them)."""
    from ..complete.methods import METHODS
    from .ray_input_split import RayInputSplit
    from .ray_relu_split import RayReluSplit

    return {"input-split": RayInputSplit(METHODS["input-split"], pool),
            "relu-split": RayReluSplit(METHODS["relu-split"], pool)}


def verify_ray(model, spec, domain: str = "auto", timeout: float | None = None, device: str = "cpu",
               dtype: torch.dtype = torch.float64, attack: bool = True, seed: int = 0,
               domain_options: dict | None = None, deadline: Deadline | None = None,
               address: str | None = LOCAL, workers: int | None = None) -> VerificationResult:
    """:func:`verifier.verify.verify` (same arguments, checks, errors and
    :class:`~verifier.verify.VerificationResult`) with input-splitting and ReLU-splitting
    branch-and-bound on Ray at ``address`` (``"local"``: a local Ray instance with this
    machine's cores) with ``workers`` actors (default: the cluster's CPUs). Other methods
    (milp, activation-split, single domains) run in this process, with a note saying so.
    Raises :class:`~verifier.errors.VerifierInputError` without ``ray`` installed, for an
    address where no cluster answers, for ``workers`` that is not a whole number ≥ 1, a
    device other than the CPU, and inside ``verify --proof`` (the workers record no
    certificate)."""
    from ..errors import VerifierInputError
    from ..proof.record import active
    from ..verify import verify

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
    result = verify(model, spec, domain=domain, timeout=timeout, device=device, dtype=dtype, attack=attack,
                    seed=seed, domain_options=domain_options, deadline=deadline,
                    methods=ray_methods(WorkerPool(model, address, workers)))
    if not any("Ray workers" in note for note in result.notes):
        result.notes.append("note: --ray: nothing ran on the Ray workers (they run input-split and relu-split "
                            "branch-and-bound); this property was decided in this process")
    return result
