"""Input-splitting branch-and-bound of one region on Ray workers (``verify --ray`` with
``--method input-split``, or ``auto`` for inputs of at most 16 values).

The region's box is cut into shards (bisection of the input with the largest width
relative to the region's, :data:`~verifier.cluster.ray_bab.SHARDS_PER_WORKER` per worker),
each searched by :func:`verifier.complete.input_split.input_split_bab` on a worker through
the driver loop :func:`~verifier.cluster.ray_bab.search_shards` (a sliced shard is
bisected again). Over the network go, per shard, its box and the region's output
constraints (a few kB for ≤ 16 inputs), and back a verdict, a counterexample and two
counts.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from ..deadline import Deadline
from ..spec.model import InputRegion
from .ray_bab import SHARDS_PER_WORKER, SLICE_S, RayMethod, ShardStats, WorkerPool, run_shard, search_shards
from .ray_session import model_from


def search_on_worker(state: dict, shared: list, region: InputRegion, index: int, end_wall: float | None, board,
                     slice_s: float, dtype: torch.dtype, device: str, options: dict) -> tuple[str, object, int, int]:
    """In a worker (:class:`~verifier.cluster.ray_session.Worker`):
    ``(status, counterexample, boxes bounded, boxes exhausted)`` of
    :func:`~verifier.complete.input_split.input_split_bab` on one shard of the model
    ``shared[0]`` (fetched once per worker); status as :func:`~verifier.cluster.ray_bab.run_shard`
    returns it."""
    from ..complete.input_split import BaBStats, input_split_bab
    from ..deadline import warm_up

    model = model_from(state, shared)
    warm_up(optimizers=False)
    stats = BaBStats()
    status, cex = run_shard(lambda deadline: input_split_bab(model, region, deadline, domain="crown",
                                                             region_index=index, dtype=dtype, device=device,
                                                             stats=stats, **options), end_wall, board, slice_s)
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


def distributed_input_split(pool: WorkerPool, region: InputRegion, deadline: Deadline, index: int = 0,
                            dtype: torch.dtype = torch.float64, device: str = "cpu", stats: ShardStats | None = None,
                            slice_s: float = SLICE_S, **options) -> tuple[str, object]:
    """``("sat", cex)`` / ``("unsat", None)`` / ``("unknown", None)`` for one region, as
    :func:`~verifier.complete.input_split.input_split_bab` answers, with the shards searched
    on ``pool``'s actors (see the module docstring); raises
    :class:`~verifier.deadline.Timeout` past ``deadline``. ``options``: ``batch``,
    ``split_rule`` of the one-process search."""
    from ..attack import confirm_candidates

    stats = stats if stats is not None else ShardStats()
    scale = (region.upper.reshape(-1) - region.lower.reshape(-1)).double().cpu()

    def submit(actor, box, end_wall, board, own_slice):
        return pool.search(actor, search_on_worker, shard(region, *box), index, end_wall, board, own_slice, dtype,
                           device, options)

    def confirm(cex):
        return confirm_candidates(pool.model, region, torch.tensor(cex.x, dtype=torch.float64)[None], index)

    def cut(box):
        halves = bisect(*box, scale)
        return None if halves is None else list(halves)

    return search_shards(pool, initial_shards(region, SHARDS_PER_WORKER * len(pool.actors())), submit, cut, confirm,
                         deadline, stats, slice_s)


class RayInputSplit(RayMethod):
    """The ``input-split`` complete method with the search on a
    :class:`~verifier.cluster.ray_bab.WorkerPool`."""

    def decide(self, model, region: InputRegion, index: int, deadline: Deadline, device: str, dtype: torch.dtype,
               options: dict, notes: list[str]) -> tuple[str, object]:
        """As :class:`verifier.complete.methods.InputSplit`, the boxes searched on the workers."""
        stats = ShardStats()
        try:
            return distributed_input_split(self.pool, region, deadline, index, dtype, device, stats, **options)
        finally:
            notes.append(f"region {index}: input-split branch-and-bound on {stats.workers} Ray workers bounded "
                         f"{stats.boxes_bounded} boxes in {stats.shards} shards ({stats.sliced} handed back and "
                         f"split, {stats.stopped} stopped early by a counterexample or the end of the search)")
