"""``erf`` and ``gelu`` (ONNX Gelu, ``approximate="none"``): forward functions and
relaxation entries (:class:`~verifier.ops.curvature.CurveRelaxation`).

* ``erf``: ``f' = (2/√π)e^{−x²}``, ``f'' = −2x·f'``: convex on ``x ≤ 0``, concave on ``x ≥ 0``,
  increasing (S-shaped, like tanh).
* ``gelu(x) = x·Φ(x) = ½x(1 + erf(x/√2))`` (Hendrycks & Gimpel 2016): ``f' = Φ(x) + xφ(x)``,
  ``f'' = φ(x)(2 − x²)``: concave on ``x ≤ −√2``, convex on ``[−√2, √2]``, concave on
  ``x ≥ √2``; not monotone, with its one minimum at ``x* ≈ −0.7518`` (``f'(x*) = 0``, found
  by Newton's method at import), which the interval includes.
"""

from __future__ import annotations

import math

import torch

from . import Node, forward_op
from .curvature import CurveRelaxation
from .relaxation import relaxation

SQRT2 = math.sqrt(2.0)


def _gelu_slope(x):
    return 0.5 * (1 + torch.erf(x / SQRT2)) + x * torch.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


def _gelu_argmin() -> float:
    """The root of ``Φ(x) + xφ(x)`` near −0.75 (Newton on ``f'``, ``f'' = φ(x)(2 − x²)``)."""
    x = -0.75
    for _ in range(50):
        phi = math.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
        x -= (0.5 * (1 + math.erf(x / SQRT2)) + x * phi) / (phi * (2 - x * x))
    return x


GELU_ARGMIN = _gelu_argmin()


@forward_op("erf", monotone=True)
def erf(node: Node, x: torch.Tensor) -> torch.Tensor:
    """``y = erf(x) = (2/√π)∫₀ˣ e^{−t²} dt``."""
    return torch.erf(x)


@forward_op("gelu")
def gelu(node: Node, x: torch.Tensor) -> torch.Tensor:
    """``y = ½x(1 + erf(x/√2))``."""
    return 0.5 * x * (1 + torch.erf(x / SQRT2))


@relaxation("erf")
class ErfRelaxation(CurveRelaxation):
    """Convex then concave, the inflection at 0."""

    def df(self, node, x):
        return 2 / math.sqrt(math.pi) * torch.exp(-x * x)

    def pieces(self, node):
        return (0.0,), (1, -1)


@relaxation("gelu")
class GeluRelaxation(CurveRelaxation):
    """Concave, convex, concave; inflections at ±√2; minimum at ``GELU_ARGMIN``."""

    def df(self, node, x):
        return _gelu_slope(x)

    def pieces(self, node):
        return (-SQRT2, SQRT2), (-1, 1, -1)

    def monotonicity(self, node):
        return 0

    def stationary(self, node):
        return (GELU_ARGMIN,)
