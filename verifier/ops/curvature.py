"""The generic chord/tangent relaxation of an elementwise op ``y = f(x)`` that is convex or
concave on each of a few pieces of the real line (exp, log, powers, erf, GELU, ELU, …),
shared by every such op file: an op declares ``f'``, its pieces and, where it needs one,
the inputs it is defined on, and inherits :meth:`lines`, :meth:`band`, :meth:`interval`
and :meth:`lp_lines`.

On ``[l, u]`` (CROWN, Zhang et al. 2018, §3.2 and Table 1; DeepPoly, Singh et al. 2019, §4.3):

* ``[l, u]`` inside one convex piece: the chord through ``(l, f(l))``, ``(u, f(u))`` lies
  above ``f`` and every tangent below it, at ``d = l + α(u − l)`` (α-CROWN optimises
  ``α ∈ [0, 1]``, Xu et al. 2021, §3.1; the default is the midpoint). Concave: the reverse.
  A linear piece counts as convex (chord = tangent = f).
* ``[l, u]`` meeting several pieces (``f`` neither convex nor concave there): the parallel
  band of slope ``λ`` = the chord's slope, ``f(x) − λx ∈ [low, high]`` with the range of
  ``g = f − λx`` bounded piece by piece (:func:`convex_min`): on a convex piece ``[a, b]``,
  ``max g = max(g(a), g(b))`` and ``min g`` is found by bisection on ``g'`` with a certified
  lower bound from the tangents at the bracket's ends; concave pieces are the mirror image.
  This is also :meth:`band` everywhere (DeepZ, Singh et al. 2018, §3: for a convex piece
  the chord slope gives the smallest parallelogram).
* ``l ≈ u`` (width ≤ 1e-10·max(1, |l|, |u|)): the constant lines ``[min f, max f]``.

The band's ends and the lines' biases are padded outwards by a few ulps of the magnitude
of ``|slope·x| + |bias|`` over ``[l, u]`` (the bisection, the evaluation at computed critical
points and the bias ``f(d) − f'(d)·d`` are exact only up to rounding, which for ``e^u`` at
large ``u`` is far above ``f(l)``). Any
non-finite coefficient (``exp`` of a large ``u`` overflows: no finite line lies above it)
raises :class:`~verifier.errors.VerifierInputError` rather than let ``0·∞ = NaN`` reach a
bound; an input range outside where ``f`` is defined (``log`` of ``x ≤ 0``, …) does too.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch

from ..errors import VerifierInputError
from . import FORWARD, Node
from .relaxation import Band, Lines, Relaxation

BISECTION_STEPS = 30  # the certified minimum is within |g''|·(b − a)²·2⁻³⁰ of the true one
FLAT = 1e-10  # relative width below which [l, u] is treated as a point
TANGENT_MIN = 1e-6  # smallest α of a tangent point (f' may be infinite at l, e.g. √x at 0)

# where an op is defined: requirement name → (test on [l, u], words for the message)
REQUIREMENTS = {
    "positive": (lambda l, u: l > 0, "> 0"),
    "nonnegative": (lambda l, u: l >= 0, "≥ 0"),
    "nonzero": (lambda l, u: (l > 0) | (u < 0), "of one sign and never 0"),
}


def check_domain(kind: str, requirement: str, l: torch.Tensor, u: torch.Tensor) -> None:
    """Raise :class:`VerifierInputError` unless every ``[l, u]`` lies where ``kind`` is
    defined and finite (``requirement``, a key of :data:`REQUIREMENTS`)."""
    test, words = REQUIREMENTS[requirement]
    ok = test(l, u)
    if bool(ok.all()):
        return
    bad = torch.nonzero(~ok.reshape(-1))[0, 0]
    lo, hi = float(l.reshape(-1)[bad]), float(u.reshape(-1)[bad])
    raise VerifierInputError(
        f"op '{kind}' is undefined or infinite on part of its input range [{lo:.6g}, {hi:.6g}] (it needs inputs "
        f"{words}), so no sound bound exists; narrow the input box so that the input of '{kind}' stays {words}")


def require_finite(kind: str, l: torch.Tensor, u: torch.Tensor, *tensors: torch.Tensor) -> None:
    """Raise :class:`VerifierInputError` when a relaxation coefficient is not finite (the
    op's value overflows the dtype over ``[l, u]``: no finite line bounds it)."""
    if bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all()):
        return
    raise VerifierInputError(
        f"op '{kind}': its linear bounds over the input range [{float(l.min()):.6g}, {float(u.max()):.6g}] are not "
        f"finite in {str(l.dtype).replace('torch.', '')} (the op's value overflows there); narrow the input box "
        f"(or bound in float64)")


def pad(lo: torch.Tensor, hi: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``[lo, hi]`` widened by ``8·eps·(1 + scale)`` on each side (rounding of the band)."""
    eps = 8 * torch.finfo(lo.dtype).eps * (1 + scale.abs())
    return lo - eps, hi + eps


def convex_min(g, dg, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """A certified lower bound of ``min g`` over ``[a, b]`` for convex ``g`` with
    (sub)derivative ``dg``: ``g(a)`` if ``g'(a) ≥ 0``, ``g(b)`` if ``g'(b) ≤ 0``; otherwise
    bisection keeps a bracket ``[p, q]`` with ``g'(p) ≤ 0 ≤ g'(q)``, which holds the
    minimiser ``x*``, and ``g(x*) ≥ max(g(p) + g'(p)(q − p), g(q) − g'(q)(q − p))`` (each a
    tangent below the convex ``g``, at its worst over the bracket)."""
    da, db = dg(a), dg(b)
    p, q = a, b
    for _ in range(BISECTION_STEPS):
        m = (p + q) / 2
        up = dg(m) > 0
        p, q = torch.where(up, p, m), torch.where(up, m, q)
    gap = q - p
    zero = torch.zeros_like(gap)
    inner = torch.maximum(g(p) + torch.where(gap > 0, dg(p) * gap, zero), g(q) - torch.where(gap > 0, dg(q) * gap, zero))
    return torch.where(da >= 0, g(a), torch.where(db <= 0, g(b), inner))


class CurveRelaxation(Relaxation):
    """The relaxation of the module docstring. Subclasses define :meth:`df` and
    :meth:`pieces`, and may set ``requirement`` (a key of :data:`REQUIREMENTS`),
    :meth:`monotonicity` and :meth:`stationary` (for an exact :meth:`interval`)."""

    optimisable = True
    requirement: ClassVar[str | None] = None

    # --- what an op declares --------------------------------------------------------
    def f(self, node: Node, x: torch.Tensor) -> torch.Tensor:
        """The op's forward function."""
        return FORWARD[node["kind"]](node, x)

    def df(self, node: Node, x: torch.Tensor) -> torch.Tensor:
        """``f'(x)`` (at a kink, a one-sided derivative of the piece that ends there)."""
        raise NotImplementedError

    def pieces(self, node: Node) -> tuple[tuple[float, ...], tuple[int, ...]]:
        """Breakpoints ``b₁ < … < bₘ`` and the ``m + 1`` signs of ``f''`` between them
        (``+1`` convex, ``−1`` concave, ``0`` linear)."""
        raise NotImplementedError

    def domain(self, node: Node) -> str | None:
        """The :data:`REQUIREMENTS` key of the inputs where ``f`` is defined (``None``: all)."""
        return self.requirement

    def monotonicity(self, node: Node) -> int:
        """``+1`` non-decreasing, ``−1`` non-increasing (on each piece of its domain), ``0`` neither."""
        return 1

    def stationary(self, node: Node) -> tuple[float, ...] | None:
        """Every point where a non-monotone ``f`` has a local extremum (``None``: unknown,
        then :meth:`interval` bounds the range like a band of slope 0)."""
        return None

    # --- derived ----------------------------------------------------------------------
    def check(self, node: Node, l: torch.Tensor, u: torch.Tensor) -> None:
        """Refuse input ranges outside :meth:`domain`."""
        requirement = self.domain(node)
        if requirement is not None:
            check_domain(node["kind"], requirement, l, u)

    def piece_sign(self, node: Node, l: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """``+1`` where ``[l, u]`` lies in one convex (or linear) piece, ``−1`` in one concave
        piece, ``0`` where it meets several."""
        breaks, signs = self.pieces(node)
        edges = (-math.inf, *breaks, math.inf)
        out = torch.zeros_like(l)
        for i, s in enumerate(signs):
            inside = (l >= edges[i]) & (u <= edges[i + 1])
            out = torch.where(inside, torch.full_like(l, -1.0 if s < 0 else 1.0), out)
        return out

    def g_range(self, node: Node, lam: torch.Tensor, l: torch.Tensor, u: torch.Tensor):
        """Certified ``[min, max]`` of ``g(x) = f(x) − λx`` over ``[l, u]``, piece by piece
        (module docstring), padded."""
        g = lambda x: self.f(node, x) - lam * x  # noqa: E731
        dg = lambda x: self.df(node, x) - lam  # noqa: E731
        neg_g = lambda x: -g(x)  # noqa: E731
        neg_dg = lambda x: -dg(x)  # noqa: E731
        breaks, signs = self.pieces(node)
        edges = [l, *[torch.minimum(torch.maximum(torch.full_like(l, b), l), u) for b in breaks], u]
        lo = hi = None
        for i, s in enumerate(signs):
            a, b = edges[i], edges[i + 1]
            ga, gb = g(a), g(b)
            p_lo, p_hi = torch.minimum(ga, gb), torch.maximum(ga, gb)
            if s > 0:
                p_lo = convex_min(g, dg, a, b)
            elif s < 0:
                p_hi = -convex_min(neg_g, neg_dg, a, b)
            lo = p_lo if lo is None else torch.minimum(lo, p_lo)
            hi = p_hi if hi is None else torch.maximum(hi, p_hi)
        return pad(lo, hi, torch.maximum(lo.abs(), hi.abs()) + lam.abs() * torch.maximum(l.abs(), u.abs()))

    def chord(self, node: Node, l: torch.Tensor, u: torch.Tensor):
        """``(f(l), f(u), flat, slope)``: the chord's slope (0 where ``[l, u]`` is flat)."""
        fl, fu = self.f(node, l), self.f(node, u)
        width = u - l
        flat = width <= FLAT * torch.clamp(torch.maximum(l.abs(), u.abs()), min=1.0)
        slope = (fu - fl) / torch.where(flat, torch.ones_like(width), width)
        return fl, fu, flat, torch.where(flat, torch.zeros_like(slope), slope)

    def tangent(self, node: Node, l: torch.Tensor, u: torch.Tensor, alpha: torch.Tensor):
        """The tangent ``(slope, bias)`` at ``d = l + α(u − l)`` (``α`` clamped to
        ``[TANGENT_MIN, 1]``): below a convex piece, above a concave one."""
        d = l + alpha.clamp(TANGENT_MIN, 1.0) * (u - l)
        slope = self.df(node, d)
        return slope, self.f(node, d) - slope * d

    # --- the relaxation entry -----------------------------------------------------------
    def alpha_init(self, node, l, u):
        return torch.full_like(l, 0.5)

    def lines(self, node, l, u, alpha=None, policy="adaptive"):
        self.check(node, l, u)
        if alpha is None:
            alpha = self.alpha_init(node, l, u)
        else:
            l, u = l.unsqueeze(1), u.unsqueeze(1)
        fl, _, flat, chord = self.chord(node, l, u)
        chord_bias = fl - chord * l
        t_slope, t_bias = self.tangent(node, l, u, alpha)
        convex = self.piece_sign(node, l, u)
        lower_s, lower_b = torch.where(convex > 0, t_slope, chord), torch.where(convex > 0, t_bias, chord_bias)
        upper_s, upper_b = torch.where(convex > 0, chord, t_slope), torch.where(convex > 0, chord_bias, t_bias)
        special = flat | (convex == 0)
        if bool(special.any()):  # the band of slope `chord` (0 where flat)
            low, high = self.g_range(node, chord, l, u)
            lower_s, upper_s = torch.where(special, chord, lower_s), torch.where(special, chord, upper_s)
            lower_b, upper_b = torch.where(special, low, lower_b), torch.where(special, high, upper_b)
        reach = torch.maximum(l.abs(), u.abs())  # biases padded for the rounding of slope·x + bias
        lower_b = pad(lower_b, lower_b, lower_b.abs() + lower_s.abs() * reach)[0]
        upper_b = pad(upper_b, upper_b, upper_b.abs() + upper_s.abs() * reach)[1]
        require_finite(node["kind"], l, u, lower_s, lower_b, upper_s, upper_b)
        return Lines(lower_s, lower_b, upper_s, upper_b)

    def band(self, node, l, u):
        self.check(node, l, u)
        _, _, _, chord = self.chord(node, l, u)
        low, high = self.g_range(node, chord, l, u)
        require_finite(node["kind"], l, u, chord, low, high)
        return Band(chord, low, high)

    def interval(self, node, l, u):
        """Endpoints for monotone ``f``; else ``f`` at the endpoints and the clamped
        :meth:`stationary` points (exact), or the band of slope 0."""
        self.check(node, l, u)
        direction = self.monotonicity(node)
        if direction != 0:
            fl, fu = self.f(node, l), self.f(node, u)
            return (fl, fu) if direction > 0 else (fu, fl)
        points = self.stationary(node)
        if points is None:
            return self.g_range(node, torch.zeros_like(l), l, u)
        values = torch.stack([self.f(node, x) for x in
                              (l, u, *[torch.minimum(torch.maximum(torch.full_like(l, p), l), u) for p in points])])
        return values.min(0).values, values.max(0).values

    def lp_lines(self, node, l, u):
        """CROWN's lines plus, on one convex (concave) piece, the tangents at both ends
        below (above) ``f``: the LP keeps the tightest at every point."""
        main = self.lines(node, l, u)
        lower, upper = [(main.lower_slope, main.lower_bias)], [(main.upper_slope, main.upper_bias)]
        _, _, flat, _ = self.chord(node, l, u)
        convex = self.piece_sign(node, l, u)
        for t in (0.0, 1.0):
            slope, bias = self.tangent(node, l, u, torch.full_like(l, t))
            ok = ~flat & torch.isfinite(slope) & torch.isfinite(bias)
            below, above = ok & (convex > 0), ok & (convex < 0)
            low, high = pad(bias, bias, bias.abs() + slope.abs() * torch.maximum(l.abs(), u.abs()))
            lower.append((torch.where(below, slope, main.lower_slope), torch.where(below, low, main.lower_bias)))
            upper.append((torch.where(above, slope, main.upper_slope), torch.where(above, high, main.upper_bias)))
        return lower, upper


__all__ = ["CurveRelaxation", "REQUIREMENTS", "check_domain", "convex_min", "pad", "require_finite"]
