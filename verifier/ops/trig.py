"""``sin`` and ``cos``: forward functions and one relaxation entry.

Write ``f(x) = sin(x + φ)`` (``φ = 0`` for sin, ``π/2`` for cos). ``f`` is concave where
``sin(x + φ) ≥ 0``, i.e. ``x + φ ∈ [2kπ, (2k+1)π]``, and convex on the other half periods:

* ``[l, u]`` inside one half period: CROWN's chord/tangent pair
  (:class:`~verifier.ops.curvature.CurveRelaxation`, tangent point ``α``-optimisable);
* otherwise the band of slope ``λ`` = the chord's slope (``|λ| ≤ 1`` by the mean value
  theorem) with the *exact* range of ``g = f − λx``: ``g' = 0`` at
  ``x = ±acos(λ) − φ + 2πk``; along each of the two families ``g`` changes by ``−2πλ`` per
  period, so its extremes over ``[l, u]`` are at ``l``, ``u`` and the first and last member
  of each family inside ``[l, u]`` (six candidates, clamped into ``[l, u]``);
* the interval (IBP) is the same with ``λ = 0``: exact.
"""

from __future__ import annotations

import math

import torch

from . import Node, forward_op
from .curvature import CurveRelaxation, pad
from .relaxation import relaxation

PHASE = {"sin": 0.0, "cos": math.pi / 2}


@forward_op("sin")
def sin(node: Node, x: torch.Tensor) -> torch.Tensor:
    """``y = sin x``."""
    return torch.sin(x)


@forward_op("cos")
def cos(node: Node, x: torch.Tensor) -> torch.Tensor:
    """``y = cos x``."""
    return torch.cos(x)


@relaxation("sin", "cos")
class TrigRelaxation(CurveRelaxation):
    """The relaxation of the module docstring."""

    def df(self, node, x):
        return torch.cos(x) if node["kind"] == "sin" else -torch.sin(x)

    def monotonicity(self, node):
        return 0

    def piece_sign(self, node, l, u):
        phi = PHASE[node["kind"]]
        k = torch.floor((l + phi) / math.pi)
        one = (u + phi) <= (k + 1) * math.pi
        concave = torch.remainder(k, 2) == 0
        return torch.where(one, torch.where(concave, -torch.ones_like(l), torch.ones_like(l)), torch.zeros_like(l))

    def g_range(self, node, lam, l, u):
        phi = PHASE[node["kind"]]
        theta = torch.acos(lam.clamp(-1.0, 1.0))
        points = [l, u]
        for base in (theta - phi, -theta - phi):
            first = base + 2 * math.pi * torch.ceil((l - base) / (2 * math.pi))
            last = base + 2 * math.pi * torch.floor((u - base) / (2 * math.pi))
            points += [torch.minimum(torch.maximum(p, l), u) for p in (first, last)]
        values = torch.stack([self.f(node, x) - lam * x for x in points])
        lo, hi = values.min(0).values, values.max(0).values
        return pad(lo, hi, 1 + lam.abs() * torch.maximum(l.abs(), u.abs()))

    def interval(self, node, l, u):
        return self.g_range(node, torch.zeros_like(l), l, u)
