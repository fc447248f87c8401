"""Deciding a property: attack first, then bound with an abstract domain.

Verdicts use VNN-COMP words: ``sat`` (a counterexample, confirmed by onnxruntime),
``unsat`` (the property holds: every disjunct of every region is proven empty),
``unknown`` (neither), ``timeout``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .api import Model, compute_bounds
from .attack import Counterexample, attack_region
from .deadline import Deadline, Timeout
from .errors import VerifierInputError
from .spec.model import InputRegion, Spec


@dataclass
class VerificationResult:
    status: str
    counterexample: Counterexample | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def disjuncts_refuted(region: InputRegion, lower_bounds: torch.Tensor) -> list[bool]:
    """For each disjunct ``A y ≤ b``: proven empty iff some row has ``lb(A_i y) > b_i``.

    ``lower_bounds`` are lower bounds of the stacked rows (``region.stacked()``)."""
    _, b, sizes = region.stacked()
    margins = lower_bounds.reshape(-1).double().cpu() - b
    return [bool((chunk > 0).any()) for chunk in torch.split(margins, sizes)]


def bound_region(model: Model, region: InputRegion, domain: str, device: str, dtype: torch.dtype,
                 **domain_options) -> list[bool]:
    """Which of the region's disjuncts ``domain`` proves empty over the region's box."""
    C, _, _ = region.stacked()
    lower = region.lower.to(device=device, dtype=dtype)
    upper = region.upper.to(device=device, dtype=dtype)
    with torch.no_grad():
        lb, _ = compute_bounds(model, lower, upper, domain=domain, C=C.to(device=device, dtype=dtype),
                               **domain_options)
    return disjuncts_refuted(region, lb[0])


def verify(model: Model, spec: Spec, domain: str = "box", timeout: float | None = None,
           device: str = "cpu", dtype: torch.dtype = torch.float64, attack: bool = True,
           seed: int = 0, domain_options: dict | None = None) -> VerificationResult:
    """Attack every region, then try to refute every disjunct with ``domain`` bounds."""
    deadline = Deadline(timeout)
    if (domain_options or {}).get("projections"):
        raise VerifierInputError("random projections estimate bounds for training and are not sound; "
                                 "verify with exact dual-lp (drop the projections option)")
    spec.check_model(model.input_size, model.output_size)
    notes: list[str] = []
    try:
        if attack:
            for index, region in enumerate(spec.regions):
                hit = attack_region(model, region, deadline, region_index=index, seed=seed, device=device)
                if hit is not None:
                    return VerificationResult("sat", hit, deadline.elapsed(), [f"counterexample in region {index}"])
                deadline.check()
        open_disjuncts = 0
        for index, region in enumerate(spec.regions):
            deadline.check()
            refuted = bound_region(model, region, domain, device, dtype, **(domain_options or {}))
            open_disjuncts += refuted.count(False)
            notes.append(f"region {index}: {refuted.count(True)}/{len(refuted)} disjuncts refuted by {domain}")
        deadline.check()
    except Timeout:
        return VerificationResult("timeout", None, deadline.elapsed(), notes)
    status = "unsat" if open_disjuncts == 0 else "unknown"
    return VerificationResult(status, None, deadline.elapsed(), notes)
