"""The Spec object that every front-end (VNN-LIB, L∞ robustness) produces."""

from __future__ import annotations

import math
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

    def float64_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(first, last)``: per input (flattened, float64, cpu), the smallest and largest
        float64 inside the range as written (a strict side moves one ulp inward). An input
        with ``first > last`` holds no float64 number: the box is empty in float64."""
        lower, upper = self.lower.reshape(-1).double().cpu(), self.upper.reshape(-1).double().cpu()
        first, last = lower, upper
        if self.lower_strict is not None:
            first = torch.where(self.lower_strict.reshape(-1).cpu(),
                                torch.nextafter(lower, torch.full_like(lower, math.inf)), lower)
        if self.upper_strict is not None:
            last = torch.where(self.upper_strict.reshape(-1).cpu(),
                               torch.nextafter(upper, torch.full_like(upper, -math.inf)), upper)
        return first, last

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
    declared_at: dict[str, int] | None = None  # variable name (``X_3``) → line of its declaration, when read from a file

    def validate(self) -> None:
        """Raise :class:`SpecError` unless the spec is well formed: ``num_inputs`` and
        ``num_outputs`` integers ≥ 1; at least one region, each an :class:`InputRegion`
        whose ``lower``/``upper`` are float32/float64 tensors on cpu or cuda with
        ``num_inputs`` finite values and whose ``lower_strict``/``upper_strict`` are ``None``
        or bool tensors of ``num_inputs`` flags; every box non-empty in float64 (some
        float64 ``x`` has ``lower ≤ x ≤ upper``, ``<`` where a side is strict: so
        ``lower > upper``, a strict side with ``lower == upper`` and an open interval between
        adjacent floats are all refused); every region with at least one disjunct, each a
        :class:`Conjunction` whose ``A`` ``(k, num_outputs)`` and ``b`` ``(k,)`` are finite
        float32/float64 tensors and whose ``strict`` is ``None`` or ``k`` bool flags.
        Front-ends call it; :func:`~verifier.verify.verify` calls it for specs built in code."""
        name = self.source or "spec"
        for what, n in (("num_inputs", self.num_inputs), ("num_outputs", self.num_outputs)):
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise SpecError(f"{name}: {what} must be an integer ≥ 1, not {n!r}")
        if not isinstance(self.regions, (list, tuple)) or not self.regions:
            raise SpecError(f"{name}: the spec has no input region")
        for r, region in enumerate(self.regions):
            if not isinstance(region, InputRegion):
                raise SpecError(f"{name}: region {r} is a {type(region).__name__}, not an InputRegion")
            where = f"{name}: region {r}"
            _check_values(region.lower, f"{where}: lower", (self.num_inputs,))
            _check_values(region.upper, f"{where}: upper", (self.num_inputs,))
            _check_flags(region.lower_strict, f"{where}: lower_strict", self.num_inputs)
            _check_flags(region.upper_strict, f"{where}: upper_strict", self.num_inputs)
            lower, upper = region.lower.reshape(-1).double().cpu(), region.upper.reshape(-1).double().cpu()
            for side, values in (("lower", lower), ("upper", upper)):
                bad = torch.nonzero(~torch.isfinite(values)).reshape(-1)
                if len(bad):
                    i = int(bad[0])
                    raise SpecError(f"{where}: input X_{i} has a non-finite {side} bound "
                                    f"({float(values[i])}); every input needs finite bounds")
            first, last = region.float64_range()
            bad = torch.nonzero(first > last).reshape(-1)
            if len(bad):
                i = int(bad[0])
                why = ("lower bound above upper bound" if lower[i] > upper[i] else
                       "no float64 number lies in it: a strict side excludes its endpoint")
                raise SpecError(f"{where}: input X_{i} has an empty range "
                                f"[{float(lower[i])!r}, {float(upper[i])!r}] ({why})")
            if not isinstance(region.disjuncts, (list, tuple)) or not region.disjuncts:
                raise SpecError(f"{where} has no output constraint")
            for d, conj in enumerate(region.disjuncts):
                at = f"{where} disjunct {d}"
                if not isinstance(conj, Conjunction):
                    raise SpecError(f"{at} is a {type(conj).__name__}, not a Conjunction")
                _check_values(conj.A, f"{at}: A", None)
                _check_values(conj.b, f"{at}: b", None)
                if conj.A.dim() != 2 or conj.A.shape[1] != self.num_outputs or conj.b.shape != (conj.A.shape[0],):
                    raise SpecError(f"{at}: A is {list(conj.A.shape)} and b is "
                                    f"{list(conj.b.shape)}; expected (k, {self.num_outputs}) and (k,)")
                _check_flags(conj.strict, f"{at}: strict", conj.A.shape[0])
                if not (bool(torch.isfinite(conj.A).all()) and bool(torch.isfinite(conj.b).all())):
                    raise SpecError(f"{at}: an output constraint has a non-finite "
                                    f"coefficient or right-hand side")

    def check_model(self, input_size: int, output_size: int) -> None:
        """Error unless the spec's variable counts match the model's sizes (naming the line that
        declares the first variable the model lacks, when the spec was read from a file)."""
        for kind, letter, declared, size in (("input", "X", self.num_inputs, input_size),
                                             ("output", "Y", self.num_outputs, output_size)):
            if declared != size:
                line = (self.declared_at or {}).get(f"{letter}_{size}")  # the first variable the model lacks
                where = f"{self.source}:{line}" if line and self.source else self.source or "spec"
                raise SpecError(f"{where}: declares {declared} {kind} variable{_s(declared)}"
                                f"{_names(letter, declared)} but the model has {size} {kind}{_s(size)}"
                                f"{_names(letter, size)}")


def _s(count: int) -> str:
    """The plural ending for ``count`` things."""
    return "" if count == 1 else "s"


def _names(letter: str, count: int) -> str:
    """`` (X_0 to X_4)`` for ``count`` variables named ``letter`` (empty for none)."""
    return "" if count < 1 else f" ({letter}_0)" if count == 1 else f" ({letter}_0 to {letter}_{count - 1})"


_SPEC_DTYPES = (torch.float32, torch.float64)


def _check_values(t, what: str, numel: tuple[int] | None) -> None:
    """``t`` must be a float32/float64 tensor on cpu or cuda (with ``numel[0]`` values)."""
    if not isinstance(t, torch.Tensor):
        raise SpecError(f"{what} must be a torch tensor, not {type(t).__name__}")
    if t.dtype not in _SPEC_DTYPES:
        raise SpecError(f"{what} has dtype {str(t.dtype).replace('torch.', '')}; expected float64 (or float32)")
    if t.device.type not in ("cpu", "cuda"):
        raise SpecError(f"{what} is on device '{t.device}'; expected a cpu (or cuda) tensor")
    if numel is not None and t.numel() != numel[0]:
        raise SpecError(f"{what} has {t.numel()} values, expected {numel[0]}")


def _check_flags(t, what: str, count: int) -> None:
    """``t`` must be ``None`` or a bool tensor of ``count`` flags on cpu or cuda."""
    if t is None:
        return
    if not isinstance(t, torch.Tensor) or t.dtype != torch.bool:
        raise SpecError(f"{what} must be None or a bool tensor, not "
                        f"{getattr(t, 'dtype', type(t).__name__)}")
    if t.device.type not in ("cpu", "cuda"):
        raise SpecError(f"{what} is on device '{t.device}'; expected a cpu (or cuda) tensor")
    if t.numel() != count:
        raise SpecError(f"{what} has {t.numel()} flags, expected {count} (one per "
                        f"{'row' if what.endswith(': strict') else 'input'})")
