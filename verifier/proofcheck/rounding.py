"""Outward-rounded float64 arithmetic for the proof checker (numpy only).

IEEE 754 rounds every elementary operation to nearest, so the exact result ``e`` of one
operation and its computed value ``x`` satisfy ``|e − x| ≤ u|x|/(1 − u)`` (``u = 2⁻⁵³``;
``≤ 2⁻¹⁰⁷⁵`` in the subnormal range). :func:`down` and :func:`up` move ``x`` by
``2⁻⁵⁰|x| + 2⁻¹⁰⁶⁰``, more than that error even after the move's own rounding, so they
return a guaranteed lower / upper bound of ``e`` (three vector passes, cheaper than
``numpy.nextafter``). Sums and dot products of ``n`` terms, in whatever order numpy or the
BLAS adds them (pairwise, blocked, with or without fused multiply-add), satisfy Higham's
a-priori bound (*Accuracy and Stability of Numerical Algorithms*, 2nd ed., Lemma 3.1,
eq. 3.5)

    |fl(Σ aᵢbᵢ) − Σ aᵢbᵢ| ≤ γₙ Σ|aᵢbᵢ| + n·η,    γₙ = n·u / (1 − n·u),  η = 2⁻¹⁰⁷⁴,

and :func:`gamma` returns ``2γₙ₊₁`` (the factor 2 absorbs the rounding of ``Σ|aᵢbᵢ|``).
For a matrix product the checker bounds ``Σᵢ|aᵢ||b_ij| ≤ maxᵢ|aᵢ| · Σᵢ|b_ij|`` (an outer
product instead of a second matrix product). Every helper returns a guaranteed lower
(``*_down``) or upper (``*_up``) bound of the exact real value; a NaN (``∞ − ∞``) that
reaches a final bound is read as ``−∞`` (lower) / ``+∞`` (upper) by :func:`lower_or_inf`.
"""

from __future__ import annotations

import numpy as np

UNIT = 2.0 ** -53
ETA = 2.0 ** -1074
STEP = 2.0 ** -50  # relative move of down/up: 16 u, more than one rounding plus its own
TINY = 2.0 ** -1060  # absolute move: covers subnormal rounding
INF = np.inf


def down(x: np.ndarray) -> np.ndarray:
    """A lower bound of any real whose round-to-nearest is ``x`` (module docstring)."""
    return x - (np.abs(x) * STEP + TINY)


def up(x: np.ndarray) -> np.ndarray:
    """An upper bound of any real whose round-to-nearest is ``x``."""
    return x + (np.abs(x) * STEP + TINY)


def lower_or_inf(x: np.ndarray) -> np.ndarray:
    """``x`` with NaN read as ``−∞`` (a lower bound that proves nothing)."""
    return np.where(np.isnan(x), -INF, x)


_GAMMA: dict[int, float] = {}


def gamma(n: int) -> float:
    """``2·γ_{n+1}`` rounded up: the relative error factor of an ``n``-term sum or dot product
    (cached: it depends on ``n`` only, and the bounds ask for the same few ``n`` many times)."""
    value = _GAMMA.get(n)
    if value is None:
        nu = (n + 1) * UNIT
        value = _GAMMA[n] = float(up(up(2.0 * nu) / down(1.0 - nu)))
    return value


def sum_error(magnitude: np.ndarray, n: int) -> np.ndarray:
    """Upper bound of the rounding error of an ``n``-term sum whose terms' absolute values
    sum (computed) to ``magnitude``."""
    return up(up(magnitude * gamma(n)) + (n + 1) * ETA)


def sum_down(t: np.ndarray, axis: int = -1) -> np.ndarray:
    """Lower bound of the exact sum of ``t`` along ``axis``."""
    n = t.shape[axis]
    with np.errstate(invalid="ignore", over="ignore"):
        return down(t.sum(axis) - sum_error(np.abs(t).sum(axis), n))


def sum_up(t: np.ndarray, axis: int = -1) -> np.ndarray:
    """Upper bound of the exact sum of ``t`` along ``axis``."""
    return -sum_down(-t, axis)


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` for ``a`` ``(..., m)``, ``b`` ``(m, n)`` as one matrix product."""
    return (a.reshape(-1, a.shape[-1]) @ b).reshape(*a.shape[:-1], b.shape[-1])


def matmul_error(a: np.ndarray, b_colsum: np.ndarray) -> np.ndarray:
    """Upper bound ``(..., n)`` of ``|fl(a @ b) − a @ b|`` given ``b_colsum = Σᵢ |b_ij|``
    ``(n,)`` (``a`` ``(..., m)``, ``b`` ``(m, n)``)."""
    with np.errstate(invalid="ignore", over="ignore"):
        scale = up(np.abs(a).max(-1, keepdims=True) * gamma(a.shape[-1]))
        return up(scale * b_colsum + (a.shape[-1] + 1) * ETA)


def matmul_down(a: np.ndarray, b: np.ndarray, b_colsum: np.ndarray | None = None) -> np.ndarray:
    """Lower bound of the exact ``a @ b`` (``(..., m) @ (m, n)``)."""
    colsum = np.abs(b).sum(0) if b_colsum is None else b_colsum
    with np.errstate(invalid="ignore", over="ignore"):
        return down(matmul(a, b) - matmul_error(a, up(colsum * (1 + gamma(len(b))))))


def matmul_up(a: np.ndarray, b: np.ndarray, b_colsum: np.ndarray | None = None) -> np.ndarray:
    """Upper bound of the exact ``a @ b``."""
    return -matmul_down(-a, b, b_colsum)


def mul_down(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Lower bound of the exact elementwise product."""
    with np.errstate(invalid="ignore", over="ignore"):
        return down(a * b)


def mul_up(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Upper bound of the exact elementwise product."""
    with np.errstate(invalid="ignore", over="ignore"):
        return up(a * b)


def interval_product_min(lo: np.ndarray, hi: np.ndarray, l: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Lower bound of ``min {c·v : c ∈ [lo, hi], v ∈ [l, u]}`` elementwise (the four
    corners, each rounded down)."""
    return np.minimum(np.minimum(mul_down(lo, l), mul_down(lo, u)), np.minimum(mul_down(hi, l), mul_down(hi, u)))
