"""Max-pooling in the checker's Lagrangian bound (numpy, float64, outward rounding).

A ``maxpool`` step ``v_{i+1} = maxpool(v_i)`` has, per output ``o``, a window ``w(o)`` of
input entries (:class:`~verifier.proofcheck.network.Op`'s ``windows`` ``(n_out, K)``).
Its relaxation (DeepPoly, Singh et al. 2019, §4.4, as the verifier's CROWN uses it) has
two parameters per output: ``sel`` (``0 ≤ sel < K``) the window entry ``s = w(o)[sel]``
that bounds the output from below (``max v_w ≥ v_s``), and ``dom``: whether it bounds it
from above too (exact when ``l_s ≥ max_{j≠s} u_j``; else the output is bounded above by
``max_j u_j``). The verifier's rule, re-derived here from the checker's own bounds, picks
the entry with the largest lower bound (the first such) and sets ``dom`` exactly where
that dominance holds; a certificate may also give them (:func:`pool_relaxation`).

For multipliers ``λ`` ``(B, R, n_out)`` at the output the backward pass sets
``c_o = λ_o⁺ + dom_o λ_o⁻`` and ``λ_in = Σ_o c_o e_{s(o)}`` (:func:`pool_multipliers`).
The Lagrangian term ``min_{v ∈ [l, u]} λ·maxpool(v) − λ_in·v`` is bounded below, for ANY
``sel`` and ``dom``, by ``Σ_o t_o − residual`` (:func:`pool_term`), where

* ``λ_o ≥ 0``: ``t_o = λ_o (max v_w − v_s) ≥ 0``, so ``t_o = 0``;
* ``λ_o < 0``, ``dom_o``: ``t_o = λ_o (max v_w − v_s) ≥ λ_o G_o``, ``G_o = 0`` when
  ``max_{j≠s} u_j ≤ l_s`` and ``up(max_{j≠s} u_j − l_s)`` otherwise (an upper bound of
  ``max v_w − v_s`` on the box);
* ``λ_o < 0``, not ``dom_o``: ``t_o = λ_o max v_w ≥ λ_o max_j u_j``;
* nothing above needs ``l ≥ 0``: the input may be a ReLU's output or any other node
  (a convolution's, crossing 0);
* ``residual``: where two windows select the same input, ``λ_in`` is a rounded sum; its
  error is bounded by Higham's sum bound times ``max(|l_j|, |u_j|)``.

Every product and sum is rounded toward the safe side (:mod:`~verifier.proofcheck.rounding`).
"""

from __future__ import annotations

import numpy as np

from .rounding import down, mul_down, mul_up, sum_down, sum_error, sum_up, up


def window_values(windows: np.ndarray, x: np.ndarray, fill: float) -> np.ndarray:
    """``(B, n_out, K)``: ``x`` ``(B, n_in)`` at each window's entries (``fill`` at padding)."""
    padded = np.concatenate([x, np.full((x.shape[0], 1), fill)], 1)
    return padded[:, np.where(windows < 0, x.shape[1], windows)]


def pool_ibp(windows: np.ndarray, l: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact interval bounds ``(B, n_out)`` of the max over each window (no rounding: a
    max of floats is one of them)."""
    return window_values(windows, l, -np.inf).max(-1), window_values(windows, u, -np.inf).max(-1)


def pool_relaxation(windows: np.ndarray, l: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The verifier's rule (module docstring) on bounds ``(B, n_in)``: ``sel`` ``(B, n_out)``
    int64 and ``dom`` ``(B, n_out)`` bool."""
    lw = window_values(windows, l, -np.inf)
    sel = lw.argmax(-1)
    return sel, others_upper(windows, sel, l, u) <= np.take_along_axis(lw, sel[..., None], -1)[..., 0]


def others_upper(windows: np.ndarray, sel: np.ndarray, l: np.ndarray, u: np.ndarray) -> np.ndarray:
    """``(B, n_out)``: ``max_{j ≠ s} u_j`` per window (``−∞`` for a window of one entry)."""
    uw = window_values(windows, u, -np.inf)
    np.put_along_axis(uw, sel[..., None], -np.inf, -1)
    return uw.max(-1)


def _inputs(windows: np.ndarray, sel: np.ndarray) -> np.ndarray:
    """``(B, n_out)`` flat input index of each selected entry."""
    return np.take_along_axis(np.broadcast_to(windows, (len(sel), *windows.shape)), sel[..., None], -1)[..., 0]


def _through(lam: np.ndarray, dom: np.ndarray) -> np.ndarray:
    """``c = λ⁺ + dom·λ⁻`` ``(B, R, n_out)``."""
    return np.where((lam > 0) | dom[:, None, :], lam, 0.0)


def pool_multipliers(windows: np.ndarray, sel: np.ndarray, dom: np.ndarray, lam: np.ndarray,
                     n_in: int) -> np.ndarray:
    """``λ_in`` ``(B, R, n_in)`` from ``λ`` ``(B, R, n_out)``: ``Σ_o c_o e_{s(o)}`` (plain float64)."""
    batch, rows, _ = lam.shape
    out = np.zeros((batch, rows, n_in))
    index = _inputs(windows, sel)[:, None, :]
    np.add.at(out, (np.arange(batch)[:, None, None], np.arange(rows)[None, :, None], index), _through(lam, dom))
    return out


def pool_term(windows: np.ndarray, sel: np.ndarray, dom: np.ndarray, lam: np.ndarray,
              l: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Lower bound ``(B, R)`` of ``min_{v ∈ [l, u]} λ·maxpool(v) − λ_in·v`` with ``λ_in`` from
    :func:`pool_multipliers` (module docstring); ``l``, ``u`` ``(B, n_in)`` or ``(1, n_in)``,
    ``sel``, ``dom`` ``(B, n_out)``, ``lam`` ``(B, R, n_out)``."""
    batch, rows, _ = lam.shape
    l, u = np.broadcast_to(l, (batch, l.shape[1])), np.broadcast_to(u, (batch, u.shape[1]))
    inputs = _inputs(windows, sel)
    l_sel = np.take_along_axis(l, inputs, 1)
    others = others_upper(windows, sel, l, u)
    with np.errstate(invalid="ignore", over="ignore"):
        gap = np.where(others <= l_sel, 0.0, np.maximum(up(others - l_sel), 0.0))  # ≥ max v_w − v_s
        top = window_values(windows, u, -np.inf).max(-1)  # ≥ max v_w
        bound = np.where(dom, gap, top)[:, None, :]
        terms = np.where(lam < 0, mul_down(lam, bound), 0.0)
    total = sum_down(terms)
    count = np.zeros((batch, l.shape[1]))
    np.add.at(count, (np.arange(batch)[:, None], inputs), 1.0)
    most = int(count.max()) if count.size else 0
    if most <= 1:  # every λ_in entry is one c_o or 0: exact
        return total
    magnitude = np.zeros((batch, rows, l.shape[1]))
    np.add.at(magnitude, (np.arange(batch)[:, None, None], np.arange(rows)[None, :, None], inputs[:, None, :]),
              np.abs(_through(lam, dom)))
    error = np.where(count[:, None, :] > 1, sum_error(magnitude, most), 0.0)
    size = np.maximum(np.abs(l), np.abs(u))[:, None, :]
    with np.errstate(invalid="ignore", over="ignore"):
        return down(total - sum_up(np.where(error > 0, mul_up(error, size), 0.0)))
