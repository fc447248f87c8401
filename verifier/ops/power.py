"""Powers with a constant exponent: ``sqrt`` (``p = ½``), ``reciprocal`` (``p = −1``) and
``pow`` (any constant ``p``, attribute ``exponent``), one relaxation entry for the three
(:class:`~verifier.ops.curvature.CurveRelaxation`), ``f'(x) = p·x^{p−1}``, with the pieces
of ``f'' = p(p−1)x^{p−2}``:

* integer ``p ≥ 2`` even: convex on ℝ (not monotone, minimum at 0);
* integer ``p ≥ 3`` odd: concave on ``x ≤ 0``, convex on ``x ≥ 0``, increasing (an input
  range meeting both pieces gets the band);
* integer ``p ≤ −1``: defined for ``x ≠ 0`` only; odd: concave on ``x < 0``, convex on
  ``x > 0``, decreasing on each; even: convex on both sides;
* non-integer ``p``: defined on ``x ≥ 0`` (``p > 0``) or ``x > 0`` (``p < 0``) — ONNX gives NaN
  for a negative base; convex for ``p > 1`` or ``p < 0``, concave for ``0 < p < 1``;
* ``p ∈ {0, 1}``: constant 1 and identity (linear; the converter emits affine maps for them).

An input range outside the domain (e.g. ``[l, u] ∋ 0`` for ``reciprocal``) is refused: the
op is infinite or undefined there, so no bound is sound.
"""

from __future__ import annotations

import torch

from . import Node, forward_op
from .curvature import CurveRelaxation
from .relaxation import relaxation

FIXED = {"sqrt": 0.5, "reciprocal": -1.0}


def exponent(node: Node) -> float:
    """``p``: ½ for ``sqrt``, −1 for ``reciprocal``, the attribute ``exponent`` for ``pow``."""
    return FIXED.get(node["kind"], None) or float(node["attrs"]["exponent"])


@forward_op("sqrt", monotone=True)
def sqrt(node: Node, x: torch.Tensor) -> torch.Tensor:
    """``y = √x`` (``x ≥ 0``)."""
    return torch.sqrt(x)


@forward_op("reciprocal")
def reciprocal(node: Node, x: torch.Tensor) -> torch.Tensor:
    """``y = 1/x`` (``x ≠ 0``)."""
    return torch.reciprocal(x)


@forward_op("pow")
def power(node: Node, x: torch.Tensor) -> torch.Tensor:
    """``y = x^p`` for the constant ``p`` (attribute ``exponent``)."""
    return torch.pow(x, exponent(node))


@relaxation("sqrt", "reciprocal", "pow")
class PowerRelaxation(CurveRelaxation):
    """The pieces of the module docstring."""

    def df(self, node, x):
        p = exponent(node)
        return p * torch.pow(x, p - 1)

    def _case(self, node):
        """``(breakpoints, signs, domain, monotonicity)`` for ``p``."""
        p = exponent(node)
        if p == round(p):
            n = int(p)
            if n in (0, 1):
                return (), (0,), None, 1
            if n >= 2:
                return ((), (1,), None, 0) if n % 2 == 0 else ((0.0,), (-1, 1), None, 1)
            return ((0.0,), (1, 1), "nonzero", 0) if n % 2 == 0 else ((0.0,), (-1, 1), "nonzero", -1)
        if p > 1:
            return (), (1,), "nonnegative", 1
        if p > 0:
            return (), (-1,), "nonnegative", 1
        return (), (1,), "positive", -1

    def pieces(self, node):
        breaks, signs, _, _ = self._case(node)
        return breaks, signs

    def domain(self, node):
        return self._case(node)[2]

    def monotonicity(self, node):
        return self._case(node)[3]

    def stationary(self, node):
        p = exponent(node)
        return (0.0,) if p == round(p) and p >= 2 else ()
