"""LeakyReLU ``y = x`` (``x ≥ 0``), ``s·x`` (``x < 0``), in one file: its forward function
and its relaxation entry, from which every domain (Box, DeepZ, CROWN, α-CROWN, the dual
LP, the LP/MILP) takes its transfer. ReLU is the case ``s = 0`` (:mod:`verifier.ops.relu`).

Relaxation on a crossing box ``l < 0 < u`` (dead and active entries are linear): for
``s ≤ 1`` f is convex, so the chord through ``(l, s·l)`` and ``(u, u)``,
``c = (u − s·l)/(u − l)``, ``b = (s − 1)·u·l/(u − l)``, lies above, and every line ``a·x``
with ``a ∈ [s, 1]`` below (CROWN, Zhang et al. 2018, Table 1; α-CROWN's ``a = s + (1 − s)α``,
Xu et al. 2021, eq. 3). For ``s > 1`` f is concave and the two roles swap. The parallel
band (DeepZ, Singh et al. 2018, Thm. 3.1 generalised) is ``f(x) − c·x ∈ [min(0, b), max(0, b)]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..linalg import crossing
from . import Node, forward_op
from .relaxation import Band, Lines, Relaxation, band_lines, relaxation


def negative_slope(node: Node) -> float:
    """The slope ``s`` of ``x < 0`` (ONNX LeakyRelu's ``alpha``, renamed so that it never
    collides with α-CROWN's α; 0 for ReLU)."""
    return float(node["attrs"].get("negative_slope", 0.0))


@forward_op("leaky_relu")
def leaky_relu(node: Node, x: torch.Tensor) -> torch.Tensor:
    """``y = x`` for ``x ≥ 0``, ``s·x`` otherwise."""
    return F.leaky_relu(x, negative_slope(node))


def _chord(l: torch.Tensor, u: torch.Tensor, s: float):
    """Crossing mask, chord slope (the passing slope where not crossing) and chord bias."""
    cross = crossing(l, u)
    denom = torch.where(cross, u - l, torch.ones_like(u))
    passing = torch.where(l >= 0, torch.ones_like(u), torch.full_like(u, s))
    chord = torch.where(cross, (u - s * l) / denom, passing)
    bias = torch.where(cross, (s - 1) * u * l / denom, torch.zeros_like(u))
    return cross, chord, bias, passing


@relaxation("leaky_relu")
class LeakyReluRelaxation(Relaxation):
    """The piecewise-linear relaxation of the module docstring (any ``s``)."""

    optimisable = True

    def slope(self, node: Node) -> float:
        return negative_slope(node)

    def lines(self, node, l, u, alpha=None, policy="adaptive"):
        s = self.slope(node)
        if alpha is None and policy == "parallel":
            return band_lines(self.band(node, l, u))
        if alpha is not None:
            l, u = l.unsqueeze(1), u.unsqueeze(1)
        cross, chord, chord_bias, passing = _chord(l, u, s)
        lo_c, hi_c = min(s, 1.0), max(s, 1.0)
        if alpha is not None:
            free = lo_c + (hi_c - lo_c) * alpha
        else:
            free = torch.where(u > -l, torch.full_like(u, 1.0), torch.full_like(u, s))
        free = torch.where(cross, free, passing)
        zero = torch.zeros_like(chord_bias)
        if s <= 1:
            return Lines(free, zero, chord, chord_bias)
        return Lines(chord, chord_bias, free, zero)

    def band(self, node, l, u):
        cross, chord, b, _ = _chord(l, u, self.slope(node))
        zero = torch.zeros_like(u)
        return Band(chord, torch.where(cross, torch.minimum(zero, b), zero),
                    torch.where(cross, torch.maximum(zero, b), zero))

    def alpha_init(self, node, l, u):
        if self.slope(node) <= 1:
            return (u > -l).to(l.dtype)
        return (u <= -l).to(l.dtype)

    def interval(self, node, l, u):
        f = lambda t: leaky_relu(node, t)  # noqa: E731
        if self.slope(node) >= 0:
            return f(l), f(u)
        return f(torch.clamp(torch.zeros_like(l), l, u)), torch.maximum(f(l), f(u))

    def lp_lines(self, node, l, u):
        """Convex (``s ≤ 1``): both pieces below, the chord above; concave: the band."""
        s = self.slope(node)
        band = self.band(node, l, u)
        upper = [(band.slope, band.high)]
        if s <= 1:
            return [(torch.ones_like(l), torch.zeros_like(l)), (torch.full_like(l, s), torch.zeros_like(l))], upper
        return [(band.slope, band.low)], upper
