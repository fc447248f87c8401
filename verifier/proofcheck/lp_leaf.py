"""Checking the LP-closed subdomains of a ``relu-split`` certificate by weak duality.

A subdomain that an LP (HiGHS) closed is recorded with the LP's dual solution
(:mod:`verifier.proof.lp_dual`): weights ``θ`` ``(k,)`` of the disjunct's rows ``A y ≤ b``
and the multipliers ``λ_r`` at every ReLU's input ``(T,)``. Its ReLUs are all fixed (a
subdomain the search split to the end), or some are not (the leaves of the LP tree that
certifies a disjunct the MILP closed, :mod:`verifier.proof.milp_tree`): an unfixed
crossing ReLU's term ``λ_out·max(z, 0) − λ_in·z`` is minimised exactly over its interval,
i.e. over the vertices ``l``, ``0``, ``u``, which is its minimum over the LP's triangle
(vertices ``(l, 0)``, ``(0, 0)``, ``(u, u)``: a linear function of ``(z, a)`` is least at a
vertex of the hull of the graph). Every other ReLU entry's term is minimised too, never
skipped: with multipliers given outright, ``λ_in`` need not equal ``λ_out`` on an active
entry. The checker does not trust them: for ANY ``θ ≥ 0`` and any ``λ``, the Lagrangian bound of
:func:`~verifier.proofcheck.bounds.lagrangian_bound` with objective ``c = fl(θ A)`` and
the ReLU inputs' multipliers set to ``λ`` (every other multiplier follows by the backward
pass; each variable bound is handled by minimising its term exactly over its interval,
which is what the bound constraints' own multipliers would do) is a lower bound of
``c·y`` on the subdomain (weak duality). With the rounding of ``c`` charged on the output
bounds, ``θA·y ≥ lb − |θA − c|·max(|l_y|, |u_y|)``, and

    lb − residual > Σ θ_i b_i  (rounded up)

shows that no ``y`` of the subdomain satisfies every row (a convex combination of them
fails), i.e. the disjunct is empty there. ``θ = 0`` is allowed: a bound above 0 of the zero
objective shows that the subdomain itself is empty (an infeasible LP's Farkas-type
certificate, from the LP that minimises the violation of the ReLU inputs' rows). Each
leaf's bound must also reach its claim (``t* + θ·b``, or that minimal violation), as any
other leaf's.
"""

from __future__ import annotations

import numpy as np

from .bounds import Relaxation, clamped_domains, lagrangian_bound
from .certificate import CertificateMalformed, LeafFailed, below_claim
from .network import Network
from .rounding import down, matmul_error, mul_up, sum_up

BATCH = 256


def _split(flat: np.ndarray, sizes: list[int]) -> dict[int, np.ndarray]:
    return dict(enumerate(np.split(flat, np.cumsum(sizes)[:-1], axis=-1)))


def check_lp_leaves(net: Network, region, cert, r: int, d: int, count: int, bounds, claims: dict,
                    sizes: list[int]) -> np.ndarray:
    """Check the ``count`` LP leaves of disjunct ``d`` of region ``r`` (module docstring) on
    the root ``bounds`` (``claims``: the root bounds the ReLU lines are built from); return
    their split signs ``(count, T)`` for the cover check. Raises :class:`LeafFailed`
    naming the first leaf that does not refute the disjunct or falls below its claim."""
    key = f"r{r}.d{d}.lp"
    signs, theta, dual, lower = (cert.array(f"{key}.{name}") for name in ("signs", "theta", "dual", "lower"))
    rows = region.rows_of(d)
    A, b = region.C[rows], region.b[rows]
    T = sum(sizes)
    if signs.shape != (count, T) or theta.shape != (count, len(b)) or dual.shape != (count, T) \
            or lower.shape != (count,):
        raise CertificateMalformed(f"region {r}, disjunct {d}: LP leaf arrays of the wrong shape")
    if not (np.all(np.isfinite(theta)) and np.all(theta >= 0) and np.all(np.isfinite(dual))):
        raise LeafFailed(f"region {r}, disjunct {d}: an LP leaf's dual is negative or not finite")
    if np.any(np.abs(signs.astype(np.int16)) > 1):
        raise LeafFailed(f"region {r}, disjunct {d}: split signs outside {{-1, 0, 1}}")
    for start in range(0, count, BATCH):
        n = len(signs[start:start + BATCH])
        value, threshold, live = dual_bounds(net, A, b, signs[start:start + n], theta[start:start + n],
                                             dual[start:start + n], bounds, claims, sizes)
        claim = lower[start:start + n][live]
        short = np.nonzero(below_claim(value, np.where(np.isfinite(claim), claim, np.nan), cert.tolerance))[0]
        if len(short):
            i = int(short[0])
            raise LeafFailed(f"region {r}, disjunct {d}, LP leaf {start + int(live[i])}: re-derived dual bound "
                             f"{value[i]:.12g} is below the certificate's claim {claim[i]:.12g}")
        bad = np.nonzero(~(value > threshold))[0]
        if len(bad):
            i = int(bad[0])
            raise LeafFailed(f"region {r}, disjunct {d}, LP leaf {start + int(live[i])}: its dual bound "
                             f"{value[i]:.9g} of θ·A y does not exceed θ·b = {threshold[i]:.9g}")
    return signs


def dual_bounds(net: Network, A: np.ndarray, b: np.ndarray, signs: np.ndarray, theta: np.ndarray, dual: np.ndarray,
                bounds: list[tuple[np.ndarray, np.ndarray]], claims: dict[int, tuple[np.ndarray, np.ndarray]],
                sizes: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The weak-duality bound of LP leaves (module docstring): for split ``signs`` ``(N, T)``
    (``0``: unfixed, a crossing entry's term minimised over its whole interval, i.e. its
    triangle), ``theta`` ``(N, k)`` ``≥ 0`` and ``dual`` ``(N, T)`` on the root ``bounds`` of
    the rows ``A`` ``(k, m)``, ``b`` ``(k,)``: ``(value, threshold, live)``, ``value``
    ``(L,)`` a rigorous lower bound of ``θA·y`` on each of the ``L`` non-empty subdomains
    ``live`` ``(L,)`` (the empty ones need no bound) and ``threshold`` ``(L,)`` ``θ·b``
    rounded up: ``value > threshold`` refutes the disjunct there. ``claims``: per ReLU the
    bounds ``(1, n_r)`` its relaxation's shape is read from; ``sizes``: each ReLU's entries."""
    K = len(net.ops)
    colsum = np.abs(A).sum(0)
    out_l, out_u = bounds[K]
    size = np.maximum(np.abs(out_l), np.abs(out_u))  # (1, m)
    s_r = _split(signs.astype(np.float64), sizes)
    domains, empty = clamped_domains(net, bounds, s_r)
    live = np.nonzero(~empty)[0]
    if len(live) == 0:
        return np.zeros(0), np.zeros(0), live
    th = theta[live]
    objective = th @ A  # (N, m), plain float64: its rounding is charged below
    with np.errstate(invalid="ignore", over="ignore"):
        residual = sum_up(mul_up(matmul_error(th, colsum), size))
        threshold = sum_up(mul_up(th, b[None, :]))
    relax = Relaxation(dict(claims), signs={i: v[live] for i, v in s_r.items()},
                       direct={i: v[live][:, None, :] for i, v in _split(dual, sizes).items()})
    lb = lagrangian_bound(net, K, objective[:, None, :], bounds, relax,
                          {node: (l[live], u[live]) for node, (l, u) in domains.items()})[:, 0]
    with np.errstate(invalid="ignore"):
        value = np.where(np.isnan(lb - residual), -np.inf, down(lb - residual))
    return value, threshold, live
