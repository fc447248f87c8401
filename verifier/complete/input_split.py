"""Branch-and-bound by input splitting, for low-dimensional inputs (ACAS Xu has 5).

A frontier of sub-boxes of the region is bounded many at a time with one domain call
(``C`` = every disjunct's rows). A sub-box is closed when every disjunct has a row with
``lb(A_i y) > b_i``. Open sub-boxes have their centre (and a few PGD steps) checked for a
counterexample, confirmed by onnxruntime, and are split in two along the input with the
largest score ``width_j · |∂v/∂x_j|`` (``v`` the smallest open margin at the centre).
The frontier is explored depth-first in batches, so memory stays bounded.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..api import Model, compute_bounds
from ..attack import Counterexample, confirm
from ..deadline import Deadline, Timeout
from ..spec.model import InputRegion, refuted_rows


@dataclass
class BaBStats:
    boxes_bounded: int = 0
    max_frontier: int = 0


def _open_disjuncts(lb: torch.Tensor, b: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """``(N, D)``: disjunct d of box n is still open (no row proven ``> b``)."""
    proven = refuted_rows(lb, b)
    return torch.stack([~chunk.any(dim=1) for chunk in torch.split(proven, sizes, dim=1)], dim=1)


def _split_scores(model: Model, centres: torch.Tensor, widths: torch.Tensor,
                  open_mask: torch.Tensor, C: torch.Tensor, b: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """``width · |∂v/∂x|`` per input, ``v`` the smallest open-disjunct violation at the centre."""
    x = centres.clone().requires_grad_(True)
    with torch.enable_grad():
        y = model(x)
        rows = y @ C.T - b
        viol = torch.stack([chunk.max(dim=1).values for chunk in torch.split(rows, sizes, dim=1)], dim=1)
        viol = torch.where(open_mask, viol, torch.full_like(viol, float("inf")))
        grad, = torch.autograd.grad(viol.min(dim=1).values.sum(), x)
    return widths * (grad.abs() + 1e-12)


def input_split_bab(model: Model, region: InputRegion, deadline: Deadline, domain: str = "crown",
                    batch: int = 512, region_index: int = 0, dtype: torch.dtype = torch.float64,
                    device: str = "cpu", stats: BaBStats | None = None, **domain_options) -> tuple[str, Counterexample | None]:
    """``("unsat", None)`` if every sub-box is refuted, ``("sat", cex)`` on a confirmed
    counterexample; raises :class:`~verifier.deadline.Timeout` when the deadline passes."""
    stats = stats if stats is not None else BaBStats()
    C, b, sizes = region.stacked()
    C, b = C.to(device=device, dtype=dtype), b.to(device=device, dtype=dtype)
    lowers = [region.lower.to(device=device, dtype=dtype)[None]]
    uppers = [region.upper.to(device=device, dtype=dtype)[None]]
    while lowers:
        deadline.check()
        lo_all, hi_all = torch.cat(lowers), torch.cat(uppers)
        lo, hi = lo_all[-batch:], hi_all[-batch:]  # depth-first: the newest boxes
        lowers, uppers = [lo_all[:-batch]] if len(lo_all) > batch else [], [hi_all[:-batch]] if len(hi_all) > batch else []
        with torch.no_grad():
            lb, _ = compute_bounds(model, lo, hi, domain=domain, C=C, **domain_options)
        stats.boxes_bounded += len(lo)
        open_mask = _open_disjuncts(lb, b, sizes)
        keep = open_mask.any(dim=1)
        if not bool(keep.any()):
            continue
        lo, hi, open_mask = lo[keep], hi[keep], open_mask[keep]
        centres, widths = (lo + hi) / 2, hi - lo
        with torch.no_grad():
            violation = region.violation(model(centres.to(model.graph.graph["model_dtype"])).double())
        if bool((violation <= 0).any()):
            hit = confirm(model, region, centres[violation <= 0][:8], region_index)
            if hit is not None:
                return "sat", hit
        scores = _split_scores(model, centres, widths, open_mask, C, b, sizes)
        dim = scores.argmax(dim=1)
        rows = torch.arange(len(lo), device=lo.device)
        mid = centres[rows, dim]
        left_hi, right_lo = hi.clone(), lo.clone()
        left_hi[rows, dim] = mid
        right_lo[rows, dim] = mid
        lowers.append(torch.cat([lo, right_lo]))
        uppers.append(torch.cat([left_hi, hi]))
        stats.max_frontier = max(stats.max_frontier, sum(len(t) for t in lowers))
        if float(widths.max()) <= 0:
            raise Timeout()  # degenerate boxes that cannot be refuted: give up honestly
    return "unsat", None
