"""The Spec object that every front-end (VNN-LIB, L∞ robustness) produces."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..errors import SpecError


REFUTATION_TOLERANCE = 1e-6


def refuted_rows(lower_bounds: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Rows proven to hold strictly: ``lb(A_i y) > b_i + τ(1 + |b_i|)``, ``τ = 1e-6``.

    The margin absorbs floating-point rounding in the bound computation and the gap between
    real arithmetic and the model's own (float32) execution, so a property decided at the
    edge of exactness is left open rather than claimed."""
    return lower_bounds > b + REFUTATION_TOLERANCE * (1 + b.abs())


@dataclass
class Conjunction:
    """Output constraints ``A y ≤ b`` that must *all* hold (one disjunct of the unsafe set).

    ``A`` is ``(k, n_outputs)``, ``b`` is ``(k,)``, both float64.
    """

    A: torch.Tensor
    b: torch.Tensor

    def violation(self, y: torch.Tensor) -> torch.Tensor:
        """``max_i (A_i y − b_i)`` per row of ``y`` ``(B, n)``: ``≤ 0`` iff ``y`` is unsafe."""
        return (y.to(self.A) @ self.A.T - self.b).max(dim=-1).values


@dataclass
class InputRegion:
    """An input box ``[lower, upper]`` (flattened, float64) with its unsafe output set:
    a disjunction of :class:`Conjunction` s."""

    lower: torch.Tensor
    upper: torch.Tensor
    disjuncts: list[Conjunction] = field(default_factory=list)

    def violation(self, y: torch.Tensor) -> torch.Tensor:
        """``min_d max_i (A_di y − b_di)``: ``≤ 0`` iff ``y`` lies in the unsafe set."""
        return torch.stack([d.violation(y) for d in self.disjuncts], dim=-1).min(dim=-1).values

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

    def check_model(self, input_size: int, output_size: int) -> None:
        """Error unless the spec's variable counts match the model's sizes."""
        if self.num_inputs != input_size:
            raise SpecError(f"{self.source or 'spec'} declares {self.num_inputs} input variables but the model "
                            f"has {input_size} inputs")
        if self.num_outputs != output_size:
            raise SpecError(f"{self.source or 'spec'} declares {self.num_outputs} output variables but the model "
                            f"has {output_size} outputs")
