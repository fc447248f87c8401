"""L∞ robustness as a Spec: the unsafe set is "some other class scores at least as high"."""

from __future__ import annotations

import torch

from ..errors import SpecError
from .model import Conjunction, InputRegion, Spec


def linf_robustness_spec(x: torch.Tensor, label: int, eps: float, num_classes: int,
                         clip: tuple[float, float] | None = (0.0, 1.0)) -> Spec:
    """Input box ``[x − ε, x + ε] ∩ clip``; unsafe iff ``y_j ≥ y_label`` for some ``j ≠ label``,
    i.e. one disjunct ``(e_label − e_j)ᵀ y ≤ 0`` per ``j``.

    The margin matrix the domains bound is therefore ``C`` with rows ``e_label − e_j``.
    """
    if eps < 0:
        raise SpecError(f"eps must be non-negative, got {eps}")
    if not 0 <= label < num_classes:
        raise SpecError(f"label {label} is outside 0..{num_classes - 1}")
    flat = x.detach().reshape(-1).double().cpu()
    lower, upper = flat - eps, flat + eps
    if clip is not None:
        lower, upper = lower.clamp(clip[0], clip[1]), upper.clamp(clip[0], clip[1])
    disjuncts = []
    for j in range(num_classes):
        if j == label:
            continue
        row = torch.zeros(1, num_classes, dtype=torch.float64)
        row[0, label], row[0, j] = 1.0, -1.0
        disjuncts.append(Conjunction(row, torch.zeros(1, dtype=torch.float64)))
    return Spec([InputRegion(lower, upper, disjuncts)], flat.numel(), num_classes, f"linf(label={label}, eps={eps})")
