"""L∞ robustness as a Spec: the unsafe set is "some other class scores at least as high"."""

from __future__ import annotations

import math
import numbers

import torch

from ..errors import SpecError
from .model import Conjunction, InputRegion, Spec


def _integer(value, name: str) -> int:
    """``value`` as a Python int (an int, numpy integer or one-element integer tensor)."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.dtype.is_floating_point \
            and value.dtype != torch.bool:
        return int(value.item())
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise SpecError(f"{name} must be an integer, got {value!r}")
    return int(value)


def linf_robustness_spec(x: torch.Tensor, label: int, eps: float, num_classes: int,
                         clip: tuple[float, float] | None = (0.0, 1.0)) -> Spec:
    """Input box ``[x − ε, x + ε] ∩ clip``; unsafe iff ``y_j ≥ y_label`` for some ``j ≠ label``,
    i.e. one disjunct ``(e_label − e_j)ᵀ y ≤ 0`` per ``j``.

    ``x`` is any shape (flattened; every entry finite), ``eps`` a finite number ``≥ 0``,
    ``num_classes`` an integer ``≥ 2``, ``label`` an integer in ``0..num_classes−1``, ``clip``
    ``None`` or finite ``(low, high)`` with ``low ≤ high``. Raises :class:`SpecError` otherwise.
    The margin matrix the domains bound is therefore ``C`` with rows ``e_label − e_j``.
    """
    num_classes = _integer(num_classes, "num_classes")
    if num_classes < 2:
        raise SpecError(f"num_classes must be at least 2, got {num_classes}")
    label = _integer(label, "label")
    if not 0 <= label < num_classes:
        raise SpecError(f"label {label} is outside 0..{num_classes - 1}")
    if isinstance(eps, bool) or not isinstance(eps, (numbers.Real, torch.Tensor)):
        raise SpecError(f"eps must be a number, got {eps!r}")
    eps = float(eps)
    if not math.isfinite(eps) or eps < 0:
        raise SpecError(f"eps must be a finite number >= 0, got {eps}")
    if not isinstance(x, torch.Tensor):
        raise SpecError(f"x must be a tensor, got {type(x).__name__}")
    if x.numel() == 0:
        raise SpecError("x is empty")
    if x.is_complex() or not (x.dtype.is_floating_point or x.dtype in (torch.uint8, torch.int8, torch.int16,
                                                                        torch.int32, torch.int64)):
        raise SpecError(f"x must be a real tensor, got dtype {x.dtype}")
    flat = x.detach().reshape(-1).double().cpu()
    bad = torch.nonzero(~torch.isfinite(flat)).reshape(-1)
    if len(bad):
        raise SpecError(f"x has a non-finite entry ({float(flat[int(bad[0])])}) at flat index {int(bad[0])}")
    lower, upper = flat - eps, flat + eps
    if clip is not None:
        low, high = (float(c) for c in clip)
        if not (math.isfinite(low) and math.isfinite(high) and low <= high):
            raise SpecError(f"clip must be finite (low, high) with low <= high, got {tuple(clip)}")
        lower, upper = lower.clamp(low, high), upper.clamp(low, high)
    disjuncts = []
    for j in range(num_classes):
        if j == label:
            continue
        row = torch.zeros(1, num_classes, dtype=torch.float64)
        row[0, label], row[0, j] = 1.0, -1.0
        disjuncts.append(Conjunction(row, torch.zeros(1, dtype=torch.float64)))
    spec = Spec([InputRegion(lower, upper, disjuncts)], flat.numel(), num_classes, f"linf(label={label}, eps={eps})")
    spec.validate()
    return spec
