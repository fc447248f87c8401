"""Sigmoid and tanh: forward functions and their relaxation entry.

Both are S-shaped: ``f'`` is unimodal with its peak at 0, so ``f`` is convex left of 0
and concave right of it (CROWN, Zhang et al. 2018, §3.2 and Table 1; DeepPoly, Singh et
al. 2019, §4.3):

* ``u ≤ 0`` (convex): upper = chord, lower = tangent at ``d = l + α(u − l)``;
* ``l ≥ 0`` (concave): lower = chord, upper = tangent at ``d``; any ``α ∈ [0, 1]`` is sound
  (a tangent of a convex piece lies below it); the default is the midpoint, α-CROWN
  optimises ``α`` per spec row;
* crossing: two parallel lines of slope ``λ = min(f'(l), f'(u))``: ``f(x) − λx`` is
  non-decreasing on ``[l, u]`` (``f' ≥ λ`` there), so ``f(l) − λl`` and ``f(u) − λu`` bound it
  (DeepZ's rule, Singh et al. 2018, Thm. 3.2, which is also the :meth:`band` everywhere).

The ``"parallel"`` policy does not apply: the lines are always the ones above.
"""

from __future__ import annotations

import torch

from . import Node, forward_op
from .relaxation import Band, Lines, Relaxation, relaxation


@forward_op("sigmoid", monotone=True)
def sigmoid(node: Node, x: torch.Tensor) -> torch.Tensor:
    """``y = 1 / (1 + e^{−x})``."""
    return torch.sigmoid(x)


@forward_op("tanh", monotone=True)
def tanh(node: Node, x: torch.Tensor) -> torch.Tensor:
    """``y = tanh(x)``."""
    return torch.tanh(x)


_FUNCTIONS = {"sigmoid": torch.sigmoid, "tanh": torch.tanh}


def derivative(kind: str, x: torch.Tensor) -> torch.Tensor:
    """``f'(x)``: ``σ(1 − σ)`` for sigmoid, ``1 − tanh²`` for tanh."""
    if kind == "sigmoid":
        s = torch.sigmoid(x)
        return s * (1 - s)
    return 1 - torch.tanh(x) ** 2


@relaxation("sigmoid", "tanh")
class SShapedRelaxation(Relaxation):
    """The chord/tangent relaxation of the module docstring."""

    optimisable = True

    def lines(self, node, l, u, alpha=None, policy="adaptive"):
        kind = node["kind"]
        f = _FUNCTIONS[kind]
        if alpha is not None:
            l, u = l.unsqueeze(1), u.unsqueeze(1)
        fl, fu = f(l), f(u)
        width = u - l
        flat = width <= 1e-12
        chord = torch.where(flat, derivative(kind, l), (fu - fl) / torch.where(flat, torch.ones_like(width), width))
        chord_bias = fl - chord * l
        mid = (l + u) / 2 if alpha is None else l + alpha * (u - l)
        tangent = derivative(kind, mid)
        tangent_bias = f(mid) - tangent * mid
        lam = torch.minimum(derivative(kind, l), derivative(kind, u))
        par_lo, par_hi = fl - lam * l, fu - lam * u
        convex, concave = u <= 0, l >= 0
        lower_slope = torch.where(convex, tangent, torch.where(concave, chord, lam))
        lower_bias = torch.where(convex, tangent_bias, torch.where(concave, chord_bias, par_lo))
        upper_slope = torch.where(convex, chord, torch.where(concave, tangent, lam))
        upper_bias = torch.where(convex, chord_bias, torch.where(concave, tangent_bias, par_hi))
        return Lines(lower_slope, lower_bias, upper_slope, upper_bias)

    def band(self, node, l, u):
        kind = node["kind"]
        f = _FUNCTIONS[kind]
        lam = torch.minimum(derivative(kind, l), derivative(kind, u))
        return Band(lam, f(l) - lam * l, f(u) - lam * u)

    def alpha_init(self, node, l, u):
        return torch.full_like(l, 0.5)
