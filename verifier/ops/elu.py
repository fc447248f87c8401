"""ELU and SELU as one kind ``elu``: ``y = γx`` for ``x > 0``, ``γα(eᕽ − 1)`` for ``x ≤ 0``
(ONNX Elu: ``γ = 1``; Selu: its ``alpha``, ``gamma``), with ``α ≥ 0``, ``γ > 0``
(the converter refuses other values), so ``f`` is non-decreasing.

``f' = γ`` (``x > 0``), ``γαeᕽ`` (``x ≤ 0``): the left piece is convex, the right one
linear, and at 0 the slope goes from ``γα`` to ``γ``: for ``α ≤ 1`` that is a convex kink
and ``f`` is convex on ℝ (chord above, tangent below); for ``α > 1`` (SELU) it is a
concave kink, and a range straddling 0 gets the band
(:class:`~verifier.ops.curvature.CurveRelaxation`).
"""

from __future__ import annotations

import torch

from . import Node, forward_op
from .curvature import CurveRelaxation
from .relaxation import relaxation


def _params(node: Node) -> tuple[float, float]:
    return float(node["attrs"]["alpha"]), float(node["attrs"].get("gamma", 1.0))


@forward_op("elu", monotone=True)
def elu(node: Node, x: torch.Tensor) -> torch.Tensor:
    """``y = γx`` (``x > 0``), ``γα(eᕽ − 1)`` (``x ≤ 0``)."""
    alpha, gamma = _params(node)
    return torch.where(x > 0, gamma * x, gamma * alpha * torch.expm1(torch.clamp(x, max=0.0)))


@relaxation("elu")
class EluRelaxation(CurveRelaxation):
    """The pieces of the module docstring (the derivative at 0 is the left one)."""

    def df(self, node, x):
        alpha, gamma = _params(node)
        return torch.where(x > 0, torch.full_like(x, gamma), gamma * alpha * torch.exp(torch.clamp(x, max=0.0)))

    def pieces(self, node):
        alpha, _ = _params(node)
        return ((), (1,)) if alpha <= 1 else ((0.0,), (1, 0))
