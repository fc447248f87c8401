"""``abs`` and ``hard_swish``: piecewise ops with kinks, forward functions and relaxation
entries (:class:`~verifier.ops.curvature.CurveRelaxation`; neither is in the MILP's exact
set: ``piecewise_linear`` stays false).

* ``abs``: convex, minimum 0 at 0. Chord above; below, on a crossing range, the line
  ``a·x`` with ``a = 2α − 1 ∈ [−1, 1]`` (every such line is below ``|x|``; the default is
  ``a = 1`` where ``u > −l``, else ``−1``, as CROWN's adaptive ReLU slope; α-CROWN optimises
  ``α``). The LP also gets ``−x`` and ``x`` below: with the chord, the exact convex hull.
* ``hard_swish(x) = x·max(0, min(1, x/6 + ½))`` (ONNX HardSwish): 0 for ``x ≤ −3``,
  ``x(x + 3)/6`` (convex) on ``[−3, 3]``, ``x`` for ``x ≥ 3``; the kinks at ±3 are concave (the
  slope drops from 0 to −½ and from 3/2 to 1), so a range meeting two pieces gets the band.
  Minimum −3/8 at ``x = −3/2``.
"""

from __future__ import annotations

import torch

from . import Node, forward_op
from .curvature import CurveRelaxation
from .relaxation import relaxation


@forward_op("abs")
def absolute_value(node: Node, x: torch.Tensor) -> torch.Tensor:
    """``y = |x|``."""
    return torch.abs(x)


@forward_op("hard_swish")
def hard_swish(node: Node, x: torch.Tensor) -> torch.Tensor:
    """``y = x·clip(x/6 + ½, 0, 1)``."""
    return x * torch.clamp(x / 6 + 0.5, 0.0, 1.0)


@relaxation("abs")
class AbsRelaxation(CurveRelaxation):
    """Convex; the free lower line of the module docstring."""

    def df(self, node, x):
        return torch.sign(x)

    def pieces(self, node):
        return (), (1,)

    def monotonicity(self, node):
        return 0

    def stationary(self, node):
        return (0.0,)

    def tangent(self, node, l, u, alpha):
        slope = torch.where(l >= 0, torch.ones_like(alpha), torch.where(u <= 0, -torch.ones_like(alpha), 2 * alpha - 1))
        return slope, torch.zeros_like(slope)

    def alpha_init(self, node, l, u):
        return (u > -l).to(l.dtype)


@relaxation("hard_swish")
class HardSwishRelaxation(CurveRelaxation):
    """Linear, convex, linear; at ±3 the derivative is the middle piece's one-sided one."""

    def df(self, node, x):
        middle = (2 * x + 3) / 6
        return torch.where(x < -3, torch.zeros_like(x), torch.where(x > 3, torch.ones_like(x), middle))

    def pieces(self, node):
        return (-3.0, 3.0), (0, 1, 0)

    def monotonicity(self, node):
        return 0

    def stationary(self, node):
        return (-1.5,)
