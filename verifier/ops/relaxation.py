"""The relaxation table: for each elementwise nonlinear op kind, one entry giving its
sound linear bounds on a pre-activation box ``l ≤ x ≤ u`` (elementwise).

Every domain reads its lines from here, never from its own copy:

* :meth:`Relaxation.lines` — the chord/tangent pair ``a_l x + b_l ≤ f(x) ≤ a_u x + b_u``
  of CROWN (Zhang et al. 2018, Table 1; DeepPoly, Singh et al. 2019, §4), with the free
  line chosen by ``alpha`` ∈ [0, 1] when given (α-CROWN, Xu et al. 2021, §3.1);
* :meth:`Relaxation.band` — the parallel band ``f(x) − λx ∈ [low, high]`` of DeepZ
  (Singh et al. 2018, §3) and the Wong–Kolter dual LP (Wong & Kolter 2018, §3.1);
* :meth:`Relaxation.interval` — the exact range of ``f`` on ``[l, u]`` (IBP);
* :meth:`Relaxation.lp_lines` — the lines of the LP/MILP encoding;
* ``optimisable`` (α-CROWN may optimise the free line) and ``piecewise_linear`` (two
  linear pieces: the LP keeps its triangle and the MILP adds one binary per crossing entry;
  the MILP's exact encoders of all op kinds are :mod:`verifier.complete.milp_encoders`).

An op registers its entry with :func:`relaxation` beside its forward function (see
:mod:`verifier.ops.leaky_relu`), and every domain handles it: the kinds are
:data:`RELAXATIONS`'s keys, never written out elsewhere.
"""

from __future__ import annotations

from typing import ClassVar, NamedTuple

import torch

from . import FORWARD, Node


class Lines(NamedTuple):
    """``lower_slope·x + lower_bias ≤ f(x) ≤ upper_slope·x + upper_bias`` on ``[l, u]``,
    each ``(B, *S)`` (or ``(B, k, *S)`` with per-row α)."""

    lower_slope: torch.Tensor
    lower_bias: torch.Tensor
    upper_slope: torch.Tensor
    upper_bias: torch.Tensor


class Band(NamedTuple):
    """``f(x) − slope·x ∈ [low, high]`` on ``[l, u]`` (elementwise, ``(B, *S)`` each)."""

    slope: torch.Tensor
    low: torch.Tensor
    high: torch.Tensor


class Relaxation:
    """Sound linear bounds of one elementwise op kind ``y = f(x)`` (see the module docstring).

    Subclasses implement :meth:`lines`, :meth:`band` and :meth:`alpha_init`; the other
    methods have defaults (a non-decreasing ``f`` for :meth:`interval`, the two CROWN
    lines for :meth:`lp_lines`)."""

    optimisable: ClassVar[bool] = False
    piecewise_linear: ClassVar[bool] = False

    def lines(self, node: Node, l: torch.Tensor, u: torch.Tensor, alpha: torch.Tensor | None = None,
              policy: str = "adaptive") -> Lines:
        """The chord/tangent pair on ``[l, u]`` ``(B, *S)``. ``alpha`` ``(B, k, *S)`` in
        ``[0, 1]`` picks the free line per spec row (then the lines are ``(B, k, *S)``);
        ``policy`` picks it otherwise: ``"adaptive"`` (CROWN's default) or ``"parallel"``
        (the :meth:`band`'s two lines, the dual LP's choice)."""
        raise NotImplementedError

    def band(self, node: Node, l: torch.Tensor, u: torch.Tensor) -> Band:
        """The parallel band of :class:`Band` on ``[l, u]``."""
        raise NotImplementedError

    def alpha_init(self, node: Node, l: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """The ``α`` ``(B, *S)`` for which :meth:`lines` equals the adaptive default."""
        raise NotImplementedError

    def interval(self, node: Node, l: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[min f, max f]`` over ``[l, u]``; the default assumes ``f`` non-decreasing."""
        f = FORWARD[node["kind"]]
        return f(node, l), f(node, u)

    def lp_lines(self, node: Node, l: torch.Tensor, u: torch.Tensor) -> tuple[list, list]:
        """``(lower, upper)`` lists of ``(slope, bias)`` lines for the LP encoding: ``y`` is
        above every lower and below every upper line."""
        lines = self.lines(node, l, u)
        return [(lines.lower_slope, lines.lower_bias)], [(lines.upper_slope, lines.upper_bias)]


RELAXATIONS: dict[str, Relaxation] = {}


def relaxation(*kinds: str):
    """Class decorator: register an instance of the :class:`Relaxation` subclass for ``kinds``."""

    def register(cls: type[Relaxation]) -> type[Relaxation]:
        for kind in kinds:
            RELAXATIONS[kind] = cls()
        return cls

    return register


def band_lines(band: Band) -> Lines:
    """The band's two parallel lines as :class:`Lines`."""
    return Lines(band.slope, band.low, band.slope, band.high)


__all__ = ["Band", "Lines", "RELAXATIONS", "Relaxation", "band_lines", "relaxation"]
