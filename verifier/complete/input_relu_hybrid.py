"""ReLU splitting inside deep input-split boxes (the hybrid of input and neuron splitting).

Input splitting halves boxes until their bounds close; on a property whose true margin is
tiny (ACAS Xu 3_3 and 4_2 property 2: about 0.001) the deep boxes keep a few crossing ReLUs
whose relaxation error no input halving removes quickly. Splitting those neurons instead
(β-CROWN, :func:`~verifier.complete.relu_split.relu_split_bab`, as nnenum splits neurons
with star sets) decides such a box exactly. :class:`ReluHybrid` chooses the open boxes worth
it and runs that search on each, with the box's own intermediate bounds as its root bounds
(valid on the box, so the search is sound on it) and a time budget per box:

- **criterion**: the box is at least :data:`MIN_DEPTH` bisections deep and has at most
  :data:`MAX_CROSSING` crossing ReLUs (``l < 0 < u`` in its intermediate bounds); a box already
  tried is tried again only :data:`RETRY_DEPTH` levels deeper (its children inherit the mark);
- **budget**: at most :data:`BUDGET` seconds per box, and the hybrid's total time stays within
  :data:`SHARE` of the input-split search's elapsed time, so it cannot starve the bisection;
- **outcome**: ``unsat`` on the box is a complete proof of the box (every ReLU subdomain
  closed, or decided by the exact LP) and the box is dropped as closed; ``sat`` is a
  counterexample confirmed by onnxruntime inside the box (so inside the region); anything
  else (the budget ran out, an LP undecided) returns the box to input splitting unchanged.
  A box is never counted as proved without that complete sub-search.

Not used under ``verify --proof`` (:func:`verifier.proof.record.active`): the certificate's
bisection tree has no leaf kind for a box closed by ReLU splits, so every box is left to
input splitting there and each certificate stays complete.

Off by default (``input_split_bab(relu_hybrid=False)``): measured on ACAS Xu at 30 s
(``benchmarks/input_split_ab.py --variants fsb,fsb-h``, load 3-4) it solved neither 3_3 nor
4_2 property 2 and lost 1_1 property 6 and 5_3 property 2 (docs/complete.md): the
subdomains keep the box's intermediate bounds (clamped by the splits, never tightened), so
each box costs more ReLU-split work than the input splits it replaces.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import networkx as nx
import torch

from ..api import Model
from ..attack import Counterexample
from ..deadline import Deadline, Timeout
from ..spec.model import InputRegion
from .beta_crown import relu_pre_activations
from .methods import METHODS

MIN_DEPTH = 6  # bisections before a box may go to ReLU splitting
MAX_CROSSING = 80  # crossing ReLUs at most in a box handed to ReLU splitting
RETRY_DEPTH = 6  # a box whose sub-search did not finish is retried this many levels deeper
BUDGET = 3.0  # seconds of ReLU splitting per box
SHARE = 0.5  # the hybrid's total time at most this share of the search's elapsed time
ITERATIONS = 3  # α, β optimisation steps per ReLU-split subdomain


@dataclass
class HybridStats:
    """Counters of the hybrid: boxes handed to ReLU splitting, closed by it, returned open."""

    tried: int = 0
    closed: int = 0
    returned: int = 0
    seconds: float = 0.0
    subdomains: int = 0  # ReLU-split subdomains bounded in all


class ReluHybrid:
    """Hands deep open input-split boxes with few crossing ReLUs to ReLU splitting.

    ``model``/``region``: the input-split search's; ``graph``: ``model.graph_for(device,
    dtype)``. Disabled (``enabled`` False) when the network is not one ReLU splitting decides
    (an activation other than ReLU) or when a proof is being recorded."""

    def __init__(self, model: Model, region: InputRegion, graph: nx.DiGraph, region_index: int, dtype: torch.dtype,
                 device: str, stats: HybridStats | None = None):
        from ..proof.record import active

        self.model, self.region, self.region_index = model, region, region_index
        self.dtype, self.device = dtype, device
        # the module's constants, read when the search starts
        self.min_depth, self.max_crossing, self.retry_depth = MIN_DEPTH, MAX_CROSSING, RETRY_DEPTH
        self.budget, self.share, self.iterations = BUDGET, SHARE, ITERATIONS
        self.stats = stats if stats is not None else HybridStats()
        self.started = time.monotonic()
        self.pre = relu_pre_activations(graph)
        self.enabled = (active() is None and self.budget > 0 and bool(self.pre)
                        and not METHODS["relu-split"].supports(graph))

    def crossing(self, inter: dict) -> torch.Tensor:
        """``(N,)``: crossing ReLUs (``l < 0 < u``) per box of the intermediate bounds
        ``inter`` (node → ``(l, u)``, ``(N, *S)`` each)."""
        count = None
        for z in self.pre.values():
            l, u = inter[z]
            c = ((l < 0) & (u > 0)).reshape(len(l), -1).sum(dim=1)
            count = c if count is None else count + c
        return count

    def eligible(self, depth: torch.Tensor, next_try: torch.Tensor, inter: dict | None) -> torch.Tensor:
        """``(N,)`` bool: boxes at depth ``depth`` ``(N,)`` to hand to ReLU splitting now
        (deep enough, at or past their retry depth ``next_try`` ``(N,)``, few crossing ReLUs,
        time share left)."""
        none = torch.zeros_like(depth, dtype=torch.bool)
        if not self.enabled or inter is None or any(z not in inter for z in self.pre.values()):
            return none
        if self.spent():
            return none
        return (depth >= self.min_depth) & (depth >= next_try) & (self.crossing(inter).cpu() <= self.max_crossing)

    def spent(self) -> bool:
        """The hybrid has used its share of the search's elapsed time."""
        return self.stats.seconds > self.share * (time.monotonic() - self.started)

    def decide(self, lo: torch.Tensor, hi: torch.Tensor, inter: dict, open_disjuncts: list[int],
               deadline: Deadline) -> tuple[str, Counterexample | None]:
        """ReLU splitting on one box ``[lo, hi]`` ``(n,)`` for its ``open_disjuncts``, from its
        intermediate bounds ``inter`` (node → ``(l, u)``, ``(1, *S)``), within the per-box
        budget: ``"unsat"`` only when every subdomain of every open disjunct closed (a proof
        of the box), ``"sat"`` with a confirmed counterexample inside the box, else
        ``"open"``. Raises :class:`~verifier.deadline.Timeout` when ``deadline`` (the whole
        search's) passes."""
        from .relu_split import SplitBaBStats, relu_split_bab

        start = time.monotonic()
        self.stats.tried += 1
        sub = Deadline(max(0.0, min(self.budget, deadline.remaining())))
        split_stats = SplitBaBStats()
        try:
            verdict, cex = relu_split_bab(self.model, self._box_region(lo, hi), sub, disjuncts=open_disjuncts,
                                          region_index=self.region_index, dtype=self.dtype, device=self.device,
                                          root={z: (l, u) for z, (l, u) in inter.items()}, stats=split_stats,
                                          iterations=self.iterations)
        except Timeout:
            if deadline.expired():
                raise
            verdict, cex = "open", None
        finally:
            self.stats.seconds += time.monotonic() - start
            self.stats.subdomains += split_stats.domains_bounded
        if verdict == "unsat":
            self.stats.closed += 1
            return "unsat", None
        if verdict == "sat":
            return "sat", cex
        self.stats.returned += 1
        return "open", None

    def _box_region(self, lo: torch.Tensor, hi: torch.Tensor) -> InputRegion:
        """The region restricted to the box ``[lo, hi]``: same disjuncts; a side keeps its
        strictness only where it is the region's own side."""
        region = self.region
        shape = region.lower.shape
        # clamped to the region (a float32 search's box may round outside it): the box's
        # intermediate bounds hold on any part of it
        lower = torch.maximum(lo.reshape(shape).to(region.lower), region.lower)
        upper = torch.minimum(hi.reshape(shape).to(region.upper), region.upper)
        lower_strict = None if region.lower_strict is None else region.lower_strict & (lower == region.lower)
        upper_strict = None if region.upper_strict is None else region.upper_strict & (upper == region.upper)
        return InputRegion(lower=lower, upper=upper, disjuncts=region.disjuncts,
                           lower_strict=lower_strict, upper_strict=upper_strict)
