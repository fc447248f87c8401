"""Linear relaxations of the nonlinear op kinds: for pre-activation bounds ``l ≤ x ≤ u``,
lines ``a_l x + b_l ≤ f(x) ≤ a_u x + b_u`` on ``[l, u]`` (elementwise).

Used by every backward domain; the choice of the free lower slope is a policy:
``"adaptive"`` (CROWN: 1 if ``u > −l`` else 0), ``"parallel"`` (``u/(u−l)``, the
Wong–Kolter dual), or an explicit tensor ``α`` (α-CROWN, any value in [0, 1] is sound).
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class Lines(NamedTuple):
    lower_slope: torch.Tensor
    lower_bias: torch.Tensor
    upper_slope: torch.Tensor
    upper_bias: torch.Tensor


def relu_lines(l: torch.Tensor, u: torch.Tensor, policy="adaptive", alpha: torch.Tensor | None = None) -> Lines:
    """ReLU: dead (``u ≤ 0``) → 0; active (``l ≥ 0``) → ``x``; crossing → upper chord
    ``u(x − l)/(u − l)`` and lower line ``αx`` with ``α ∈ [0, 1]``."""
    return leaky_relu_lines(l, u, 0.0, policy, alpha)


def leaky_relu_lines(l: torch.Tensor, u: torch.Tensor, slope: float, policy="adaptive",
                     alpha: torch.Tensor | None = None) -> Lines:
    """``f(x) = x`` (x ≥ 0), ``s·x`` (x < 0). For ``s ≤ 1`` f is convex: the chord through
    ``(l, s l)`` and ``(u, u)`` is above, any line ``c·x`` with ``c ∈ [s, 1]`` below. For
    ``s > 1`` f is concave and the roles swap. With ``alpha`` ``(B, k, *S)`` (per spec row) the
    lines get that shape too; otherwise they have the shape of ``l``."""
    if alpha is not None:
        l, u = l.unsqueeze(1), u.unsqueeze(1)
    crossing = (l < 0) & (u > 0)
    active = l >= 0
    denom = torch.where(crossing, u - l, torch.ones_like(u))
    chord = torch.where(crossing, (u - slope * l) / denom, torch.ones_like(u))
    chord_bias = torch.where(crossing, (slope - 1) * u * l / denom, torch.zeros_like(u))
    lo_c, hi_c = min(slope, 1.0), max(slope, 1.0)
    if alpha is not None:
        free = lo_c + (hi_c - lo_c) * alpha
    elif policy == "parallel":
        free = chord
    else:
        free = torch.where(u > -l, torch.full_like(u, 1.0), torch.full_like(u, slope))
    passing = torch.where(active, torch.ones_like(u), torch.full_like(u, slope))  # not crossing
    free = torch.where(crossing, free, passing)
    chord = torch.where(crossing, chord, passing)
    zero = torch.zeros_like(chord_bias)
    if slope <= 1:
        return Lines(free, zero, chord, chord_bias)
    return Lines(chord, chord_bias, free, zero)


def _sigmoid_prime(fn: str, x: torch.Tensor) -> torch.Tensor:
    if fn == "sigmoid":
        s = torch.sigmoid(x)
        return s * (1 - s)
    return 1 - torch.tanh(x) ** 2


def s_shaped_lines(fn: str, l: torch.Tensor, u: torch.Tensor, alpha: torch.Tensor | None = None) -> Lines:
    """Sigmoid or tanh (``f'`` unimodal, peak at 0; convex left of 0, concave right).

    * ``u ≤ 0`` (convex): upper = chord, lower = tangent at ``d = l + α(u − l)``;
    * ``l ≥ 0`` (concave): lower = chord, upper = tangent at ``d``;
      any ``α ∈ [0, 1]`` is sound (a tangent of a convex piece lies below it); the default
      is the midpoint, α-CROWN optimises ``α`` (shape ``(B, k, *S)``, per spec row);
    * crossing: two parallel lines of slope ``λ = min(f'(l), f'(u))``. ``f(x) − λx`` is
      non-decreasing on ``[l, u]`` (``f' ≥ λ`` there), so the offsets ``f(l) − λl`` and
      ``f(u) − λu`` bound it from below and above (the DeepZ rule).
    """
    f = torch.sigmoid if fn == "sigmoid" else torch.tanh
    if alpha is not None:
        l, u = l.unsqueeze(1), u.unsqueeze(1)
    fl, fu = f(l), f(u)
    width = u - l
    flat = width <= 1e-12
    chord = torch.where(flat, _sigmoid_prime(fn, l), (fu - fl) / torch.where(flat, torch.ones_like(width), width))
    chord_bias = fl - chord * l
    mid = (l + u) / 2 if alpha is None else l + alpha * (u - l)
    tangent = _sigmoid_prime(fn, mid)
    tangent_bias = f(mid) - tangent * mid
    lam = torch.minimum(_sigmoid_prime(fn, l), _sigmoid_prime(fn, u))
    par_lo, par_hi = fl - lam * l, fu - lam * u
    convex, concave = u <= 0, l >= 0
    lower_slope = torch.where(convex, tangent, torch.where(concave, chord, lam))
    lower_bias = torch.where(convex, tangent_bias, torch.where(concave, chord_bias, par_lo))
    upper_slope = torch.where(convex, chord, torch.where(concave, tangent, lam))
    upper_bias = torch.where(convex, chord_bias, torch.where(concave, tangent_bias, par_hi))
    return Lines(lower_slope, lower_bias, upper_slope, upper_bias)


def lines_for(node: dict, l: torch.Tensor, u: torch.Tensor, policy="adaptive", alpha=None) -> Lines:
    """The relaxation of ``node`` (relu, leaky_relu, sigmoid, tanh) on ``[l, u]``."""
    kind = node["kind"]
    if kind == "relu":
        return relu_lines(l, u, policy, alpha)
    if kind == "leaky_relu":
        return leaky_relu_lines(l, u, node["attrs"]["alpha"], policy, alpha)
    if kind in ("sigmoid", "tanh"):
        return s_shaped_lines(kind, l, u, alpha)
    raise KeyError(kind)


ELEMENTWISE_NONLINEAR = ("relu", "leaky_relu", "sigmoid", "tanh")
