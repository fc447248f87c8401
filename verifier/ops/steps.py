"""Step functions of quantised networks: ``sign``, ``floor``, ``ceil`` and ``round`` (half
to even, as ONNX Round), forward functions and one relaxation entry. Each is
non-decreasing (so the interval is ``[f(l), f(u)]``). The MILP encodes each exactly on a
finite range, one binary per step (its encoder table, :mod:`verifier.complete.milp_encoders`);
``piecewise_linear`` stays false (that flag is ReLU's one-binary-per-crossing-entry rule
of the LP encoding), and the LP gets the lines below.

Two sound lines on each side, chosen per entry by their value at the midpoint of
``[l, u]`` (for linear bounds that is their mean gap to ``f``):

* the constants ``f(l) ≤ f(x) ≤ f(u)``;
* slanted lines: ``x − 1 ≤ ⌊x⌋ ≤ x``, ``x ≤ ⌈x⌉ ≤ x + 1``, ``x − ½ ≤ round(x) ≤ x + ½``; for
  ``sign`` on a range with ``l < 0``, the upper line through ``(l, −1)`` and ``(0, 1)``,
  ``1 + 2x/(−l)`` (≥ 1 for ``x ≥ 0``, ≥ −1 on ``[l, 0)``), and with ``u > 0`` the lower line
  ``−1 + 2x/u`` (mirror image); otherwise the constants.

The band (DeepZ) is the constants' (slope 0) unless the slanted band of slope 1 is
narrower (floor/ceil/round over more than one step). The LP gets both lines of each side.
"""

from __future__ import annotations

import torch

from . import Node, forward_op
from .relaxation import Band, Lines, Relaxation, relaxation
from .surrogate import with_surrogate

# slanted band f(x) − x ∈ [low, high]
SLANTED = {"floor": (-1.0, 0.0), "ceil": (0.0, 1.0), "round": (-0.5, 0.5)}


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


@forward_op("sign", monotone=True)
def sign(node: Node, x: torch.Tensor) -> torch.Tensor:
    """``y = −1, 0, 1`` for ``x < 0, = 0, > 0``."""
    return with_surrogate(torch.sign(x), x, _identity)


@forward_op("floor", monotone=True)
def floor(node: Node, x: torch.Tensor) -> torch.Tensor:
    """``y = ⌊x⌋``."""
    return with_surrogate(torch.floor(x), x, _identity)


@forward_op("ceil", monotone=True)
def ceil(node: Node, x: torch.Tensor) -> torch.Tensor:
    """``y = ⌈x⌉``."""
    return with_surrogate(torch.ceil(x), x, _identity)


@forward_op("round", monotone=True)
def round_half_even(node: Node, x: torch.Tensor) -> torch.Tensor:
    """``y`` = the nearest integer to ``x``, ties to even."""
    return with_surrogate(torch.round(x), x, _identity)


def _slanted(kind: str, l: torch.Tensor, u: torch.Tensor) -> Lines:
    """The slanted lines of the module docstring (``Lines``)."""
    one = torch.ones_like(l)
    if kind in SLANTED:
        low, high = SLANTED[kind]
        return Lines(one, torch.full_like(l, low), one, torch.full_like(l, high))
    fl, fu = torch.sign(l), torch.sign(u)
    zero = torch.zeros_like(l)
    up = l < 0
    upper_s = torch.where(up, 2 / torch.where(up, -l, one), zero)
    upper_b = torch.where(up, one, fu)
    down = u > 0
    lower_s = torch.where(down, 2 / torch.where(down, u, one), zero)
    lower_b = torch.where(down, -one, fl)
    return Lines(lower_s, lower_b, upper_s, upper_b)


@relaxation("sign", "floor", "ceil", "round")
class StepRelaxation(Relaxation):
    """The relaxation of the module docstring."""

    def _both(self, node, l, u):
        f = {"sign": torch.sign, "floor": torch.floor, "ceil": torch.ceil, "round": torch.round}[node["kind"]]
        return f(l), f(u), _slanted(node["kind"], l, u)

    def lines(self, node, l, u, alpha=None, policy="adaptive"):
        if alpha is not None:
            l, u = l.unsqueeze(1), u.unsqueeze(1)
        fl, fu, s = self._both(node, l, u)
        mid = (l + u) / 2
        zero = torch.zeros_like(l)
        slant_up = s.upper_slope * mid + s.upper_bias < fu
        slant_low = s.lower_slope * mid + s.lower_bias > fl
        return Lines(torch.where(slant_low, s.lower_slope, zero), torch.where(slant_low, s.lower_bias, fl),
                     torch.where(slant_up, s.upper_slope, zero), torch.where(slant_up, s.upper_bias, fu))

    def band(self, node, l, u):
        fl, fu, _ = self._both(node, l, u)
        if node["kind"] not in SLANTED:
            return Band(torch.zeros_like(l), fl, fu)
        low, high = SLANTED[node["kind"]]
        slant = (fu - fl) > (high - low)
        return Band(slant.to(l.dtype), torch.where(slant, torch.full_like(l, low), fl),
                    torch.where(slant, torch.full_like(l, high), fu))

    def alpha_init(self, node, l, u):
        return torch.full_like(l, 0.5)

    def lp_lines(self, node, l, u):
        fl, fu, s = self._both(node, l, u)
        zero = torch.zeros_like(l)
        return [(zero, fl), (s.lower_slope, s.lower_bias)], [(zero, fu), (s.upper_slope, s.upper_bias)]
