"""The Spec object that every front-end (VNN-LIB, L∞ robustness) produces."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..errors import SpecError


REFUTATION_TOLERANCE = 1e-6


def refuted_rows(lower_bounds: torch.Tensor, b: torch.Tensor, strict: torch.Tensor | None = None) -> torch.Tensor:
    """Rows proven to hold strictly (the row ``A_i y ≤ b_i`` / ``A_i y < b_i`` cannot hold anywhere).

    ``lower_bounds`` ``(..., k)`` bounds ``A_i y`` from below, ``b`` ``(k,)``; ``strict``
    ``(k,)`` bool (``None``: no strict row). A closed row is refuted when
    ``lb > b_i + τ(1 + |b_i|)``, ``τ = 1e-6``: the margin absorbs floating-point rounding in
    the bound computation and the gap between real arithmetic and the model's own (float32)
    execution, so a property decided at the edge of exactness is left open rather than
    claimed. A strict row ``A_i y < b_i`` is refuted when ``lb ≥ b_i``: it fails only where
    ``A_i y`` reaches ``b_i``, so a bound that *attains* ``b_i`` (a ReLU clamped at 0, a dead
    branch: exact in floating point) decides it; below ``b_i`` nothing is claimed. A NaN
    lower bound is read as ``−inf`` (never a refutation)."""
    lower_bounds = torch.nan_to_num(lower_bounds, nan=float("-inf"), posinf=float("inf"), neginf=float("-inf"))
    b = b.to(lower_bounds)
    closed = lower_bounds > b + REFUTATION_TOLERANCE * (1 + b.abs())
    if strict is None:
        return closed
    return torch.where(strict.to(closed.device), lower_bounds >= b, closed)


@dataclass
class Conjunction:
    """Output constraints ``A y ≤ b`` that must *all* hold (one disjunct of the unsafe set).

    ``A`` is ``(k, n_outputs)``, ``b`` is ``(k,)``, both float64. ``strict`` ``(k,)`` bool
    marks rows written with ``<``/``>`` (``A_i y < b_i``); ``None`` means none is strict.
    Bounding treats every row as closed (``≤``), which only enlarges the unsafe set and is
    sound for ``unsat``; a counterexample must satisfy :meth:`holds`, strictly where strict.
    """

    A: torch.Tensor
    b: torch.Tensor
    strict: torch.Tensor | None = None

    def violation(self, y: torch.Tensor) -> torch.Tensor:
        """``max_i (A_i y − b_i)`` per row of ``y`` ``(B, n)``: ``≤ 0`` iff ``y`` lies in the
        closed unsafe set (the relaxation that attacks minimise and domains bound)."""
        return (y.to(self.A) @ self.A.T - self.b).max(dim=-1).values

    def holds(self, y: torch.Tensor) -> torch.Tensor:
        """``(B,)`` bool: every row holds for ``y`` ``(B, n)`` exactly as written, evaluated in
        float64 (``A_i y < b_i`` for strict rows, ``≤`` otherwise; NaN never holds)."""
        lhs = y.to(self.A) @ self.A.T
        closed = lhs <= self.b
        if self.strict is not None:
            closed = torch.where(self.strict.to(closed.device), lhs < self.b, closed)
        return closed.all(dim=-1)


@dataclass
class InputRegion:
    """An input box ``[lower, upper]`` (flattened, float64) with its unsafe output set:
    a disjunction of :class:`Conjunction` s."""

    lower: torch.Tensor
    upper: torch.Tensor
    disjuncts: list[Conjunction] = field(default_factory=list)
    lower_strict: torch.Tensor | None = None
    upper_strict: torch.Tensor | None = None

    def violation(self, y: torch.Tensor) -> torch.Tensor:
        """``min_d max_i (A_di y − b_di)``: ``≤ 0`` iff ``y`` lies in the closed unsafe set."""
        return torch.stack([d.violation(y) for d in self.disjuncts], dim=-1).min(dim=-1).values

    def is_unsafe(self, y: torch.Tensor) -> torch.Tensor:
        """``(B,)`` bool: ``y`` ``(B, n)`` satisfies some disjunct exactly as written
        (strict rows strictly); the test every counterexample must pass."""
        return torch.stack([d.holds(y) for d in self.disjuncts], dim=-1).any(dim=-1)

    def contains(self, x: torch.Tensor) -> torch.Tensor:
        """``(B,)`` bool: ``x`` ``(B, n)`` (flattened, compared in float64) lies in the box as
        written: ``lower < x`` where ``lower_strict`` else ``lower ≤ x``, likewise above."""
        x = x.reshape(x.shape[0], -1).to(torch.float64)
        lower, upper = self.lower.to(x), self.upper.to(x)
        above = x >= lower if self.lower_strict is None else \
            torch.where(self.lower_strict.to(x.device), x > lower, x >= lower)
        below = x <= upper if self.upper_strict is None else \
            torch.where(self.upper_strict.to(x.device), x < upper, x <= upper)
        return (above & below).all(dim=-1)

    def stacked(self) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """All disjuncts' rows in one matrix ``C``, their ``b``, and each disjunct's row count."""
        C = torch.cat([d.A for d in self.disjuncts])
        b = torch.cat([d.b for d in self.disjuncts])
        return C, b, [d.A.shape[0] for d in self.disjuncts]


@dataclass
class Spec:
    """A property: ``sat`` iff some ``x`` in some region's box has ``f(x)`` in that
    region's unsafe set."""

    regions: list[InputRegion]
    num_inputs: int
    num_outputs: int
    source: str = ""

    def validate(self) -> None:
        """Raise :class:`SpecError` unless the spec is well formed: at least one region,
        every box finite with ``lower ≤ upper`` (``<`` where a side is strict), every
        region with at least one disjunct, every ``A``/``b`` finite and of matching sizes.
        Front-ends call it; :func:`~verifier.verify.verify` calls it for specs built in code."""
        name = self.source or "spec"
        if not self.regions:
            raise SpecError(f"{name}: the spec has no input region")
        for r, region in enumerate(self.regions):
            lower, upper = region.lower.reshape(-1), region.upper.reshape(-1)
            if lower.shape != (self.num_inputs,) or upper.shape != (self.num_inputs,):
                raise SpecError(f"{name}: region {r} box has {lower.numel()}/{upper.numel()} bounds, "
                                f"expected {self.num_inputs}")
            for side, values in (("lower", lower), ("upper", upper)):
                bad = torch.nonzero(~torch.isfinite(values)).reshape(-1)
                if len(bad):
                    i = int(bad[0])
                    raise SpecError(f"{name}: region {r}: input X_{i} has a non-finite {side} bound "
                                    f"({float(values[i])}); every input needs finite bounds")
            empty = lower > upper
            if region.lower_strict is not None or region.upper_strict is not None:
                strict = torch.zeros_like(empty)
                for flags in (region.lower_strict, region.upper_strict):
                    if flags is not None:
                        strict |= flags.reshape(-1).to(strict.device)
                empty |= strict & (lower >= upper)
            bad = torch.nonzero(empty).reshape(-1)
            if len(bad):
                i = int(bad[0])
                raise SpecError(f"{name}: region {r}: input X_{i} has an empty range "
                                f"[{float(lower[i])!r}, {float(upper[i])!r}] (lower bound above upper bound)")
            if not region.disjuncts:
                raise SpecError(f"{name}: region {r} has no output constraint")
            for d, conj in enumerate(region.disjuncts):
                if conj.A.dim() != 2 or conj.A.shape[1] != self.num_outputs or conj.b.shape != (conj.A.shape[0],):
                    raise SpecError(f"{name}: region {r} disjunct {d}: A is {list(conj.A.shape)} and b is "
                                    f"{list(conj.b.shape)}; expected (k, {self.num_outputs}) and (k,)")
                if not (bool(torch.isfinite(conj.A).all()) and bool(torch.isfinite(conj.b).all())):
                    raise SpecError(f"{name}: region {r} disjunct {d}: an output constraint has a non-finite "
                                    f"coefficient or right-hand side")

    def check_model(self, input_size: int, output_size: int) -> None:
        """Error unless the spec's variable counts match the model's sizes."""
        if self.num_inputs != input_size:
            raise SpecError(f"{self.source or 'spec'} declares {self.num_inputs} input variables but the model "
                            f"has {input_size} inputs")
        if self.num_outputs != output_size:
            raise SpecError(f"{self.source or 'spec'} declares {self.num_outputs} output variables but the model "
                            f"has {output_size} outputs")
