"""``exp``, ``log`` and ``softplus``: forward functions and relaxation entries (one
convex or concave piece each, :class:`~verifier.ops.curvature.CurveRelaxation`).

* ``exp`` is convex and increasing on ℝ: chord above, tangent ``e^d(1 + x − d)`` below.
  Where ``e^u`` overflows the dtype, no finite line lies above it and the relaxation
  refuses (Box still gives the sound ``+∞``).
* ``log`` is concave and increasing on ``x > 0``: chord below, tangent ``log d + (x − d)/d``
  above; an input range reaching ``x ≤ 0`` (where ``log`` is ``−∞`` or undefined) is refused.
* ``softplus(x) = log(1 + eᕽ)`` (ONNX Softplus) is convex and increasing, ``f' = σ(x)``;
  computed as ``max(x, 0) + log1p(e^{−|x|})``, exact to rounding for every ``x``.
"""

from __future__ import annotations

import torch

from . import Node, forward_op
from .curvature import CurveRelaxation
from .relaxation import relaxation


@forward_op("exp", monotone=True)
def exp(node: Node, x: torch.Tensor) -> torch.Tensor:
    """``y = eᕽ``."""
    return torch.exp(x)


@forward_op("log", monotone=True)
def log(node: Node, x: torch.Tensor) -> torch.Tensor:
    """``y = ln x`` (``x > 0``)."""
    return torch.log(x)


@forward_op("softplus", monotone=True)
def softplus(node: Node, x: torch.Tensor) -> torch.Tensor:
    """``y = ln(1 + eᕽ) = max(x, 0) + ln(1 + e^{−|x|})``."""
    return torch.relu(x) + torch.log1p(torch.exp(-x.abs()))


@relaxation("exp")
class ExpRelaxation(CurveRelaxation):
    """Convex everywhere, ``f' = eᕽ``."""

    def df(self, node, x):
        return torch.exp(x)

    def pieces(self, node):
        return (), (1,)


@relaxation("log")
class LogRelaxation(CurveRelaxation):
    """Concave on ``x > 0``, ``f' = 1/x``."""

    requirement = "positive"

    def df(self, node, x):
        return 1 / x

    def pieces(self, node):
        return (), (-1,)


@relaxation("softplus")
class SoftplusRelaxation(CurveRelaxation):
    """Convex everywhere, ``f' = σ(x)``."""

    def df(self, node, x):
        return torch.sigmoid(x)

    def pieces(self, node):
        return (), (1,)
