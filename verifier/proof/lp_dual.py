"""The dual solution of an LP-closed subdomain, for its certificate.

ReLU splitting closes a subdomain with every ReLU fixed by an LP (HiGHS,
:func:`~verifier.complete.relu_split.decide_linear`). When β-CROWN's steps do not re-derive
it, the certificate writer (:mod:`verifier.proof.writer`) solves that LP once more, in the
checker's own chain variables (:class:`~verifier.proofcheck.network.Network`), with
``scipy.optimize.linprog`` (HiGHS), and records its dual solution, which the checker
verifies by weak duality (:mod:`verifier.proofcheck.lp_leaf`) without trusting HiGHS.

The LP, for the disjunct ``A y ≤ b`` (``k`` rows), over variables ``v_0 … v_K`` (every chain
node, flattened) and ``t``:

    min t   s.t.  v_{i+1} = op_i(v_i)   (affine ops; a fixed ReLU is the identity or 0),
                  A v_K − t ≤ b,   v_0 ∈ box,   l_r ≤ v_{relu input r} ≤ u_r (root bounds ∩ splits).

Its optimum ``t* > 0`` proves the disjunct empty on the subdomain. The dual gives
``θ = −`` the inequality marginals (``θ ≥ 0``, ``Σθ = 1``) and the equality marginals: those of
the rows defining each ReLU's input are the multipliers ``λ_r`` of the Lagrangian bound of
``(θ A)·y`` (every other multiplier follows from them by the backward pass; the variable
bounds' multipliers are the exact minima over the intervals). ``θ A·y ≥ t* + θ·b`` is the
claim.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linprog

from ..proofcheck.network import Network


@dataclass
class LpDual:
    """One subdomain's LP dual: ``theta`` ``(k,)``, ``dual`` ``(T,)`` (``λ`` at every ReLU's
    input, in chain order) and ``value``: the claimed minimum of ``(θ A)·y``; ``empty``: the
    root bounds and the splits contradict each other (nothing to bound)."""

    theta: np.ndarray
    dual: np.ndarray
    value: float
    empty: bool = False


def _op_rows(net: Network, i: int, l: np.ndarray | None, u: np.ndarray | None, s: np.ndarray | None):
    """``(M, c)``: the rows ``v_{i+1} − M v_i = c`` of step ``i``; ``None`` for a step the
    LP cannot state exactly (a crossing ReLU that is not split, max-pooling)."""
    op, n = net.ops[i], net.sizes[i]
    if op.kind == "linear":
        return sp.csr_matrix(op.value), np.zeros(op.value.shape[0])
    if op.kind == "shift":
        return sp.identity(n, format="csr"), op.value
    if op.kind == "scale":
        return sp.diags(op.value, format="csr"), np.zeros(n)
    if op.kind == "div":
        return sp.diags(1.0 / op.value, format="csr"), np.zeros(n)
    if op.kind == "relu" and l is not None:
        active, dead = (l >= 0) | (s > 0), (u <= 0) | (s < 0)
        if np.any(~active & ~dead):
            return None
        return sp.diags(active.astype(np.float64), format="csr"), np.zeros(n)
    return None


def lp_leaf_dual(net: Network, relu_bounds: list[tuple[np.ndarray, np.ndarray]], signs: np.ndarray,
                 box: tuple[np.ndarray, np.ndarray], A: np.ndarray, b: np.ndarray) -> LpDual | None:
    """The LP of the module docstring for one subdomain: ``relu_bounds`` the root bounds of
    each ReLU's input ``(n_r,)``, ``signs`` ``(T,)`` its splits, ``box`` ``(n_0,)`` each,
    ``A`` ``(k, n_K)``, ``b`` ``(k,)``. ``None`` when the LP is not exact (an unsplit crossing
    ReLU, max-pooling, a ReLU on the input) or HiGHS does not solve it to optimality."""
    relus = net.relu_inputs
    if not relus or relus[0] == 0:
        return None
    cuts = np.cumsum([len(l) for l, _ in relu_bounds])[:-1]
    per = dict(zip(relus, np.split(signs.astype(np.int64), cuts)))
    clamped = {}
    for node, (l, u) in zip(relus, relu_bounds):
        s = per[node]
        clamped[node] = (np.where(s > 0, np.maximum(l, 0.0), l), np.where(s < 0, np.minimum(u, 0.0), u))
        if np.any(clamped[node][0] > clamped[node][1]):
            return LpDual(np.zeros(len(b)), np.zeros(len(signs)), np.inf, empty=True)
    offsets = np.concatenate([[0], np.cumsum(net.sizes)])
    total = int(offsets[-1]) + 1  # every node, then t
    rows, rhs = [], []
    for i in range(len(net.ops)):
        l, u = clamped.get(i, (None, None))
        found = _op_rows(net, i, l, u, per.get(i))
        if found is None:
            return None
        M, c = found
        n_out, n_in = M.shape
        block = sp.hstack([sp.csr_matrix((n_out, int(offsets[i]))), -M, sp.identity(n_out, format="csr"),
                           sp.csr_matrix((n_out, total - int(offsets[i]) - n_in - n_out))])
        rows.append(block)
        rhs.append(np.broadcast_to(c, (n_out,)))
    lo, hi = np.full(total, -np.inf), np.full(total, np.inf)
    lo[: net.sizes[0]], hi[: net.sizes[0]] = box
    for node, (l, u) in clamped.items():
        lo[offsets[node]:offsets[node + 1]], hi[offsets[node]:offsets[node + 1]] = l, u
    eq, eq_rhs = sp.vstack(rows).tocsr(), np.concatenate(rhs)
    # the rows of step i define v_{i+1}; they start at offsets[i+1] − n_0 in the stacked rows
    defining = np.concatenate([np.arange(offsets[node], offsets[node + 1]) - net.sizes[0] for node in relus])
    spec = sp.hstack([sp.csr_matrix((len(b), int(offsets[-2]))), sp.csr_matrix(A), -np.ones((len(b), 1))]).tocsr()
    cost = np.zeros(total)
    cost[-1] = 1.0
    res = linprog(cost, A_ub=spec, b_ub=b, A_eq=eq, b_eq=eq_rhs, bounds=np.stack([lo, hi], 1), method="highs")
    if res.status == 0 and res.eqlin is not None and res.ineqlin is not None:
        theta = np.maximum(-np.asarray(res.ineqlin.marginals, dtype=np.float64), 0.0)
        return LpDual(theta, np.asarray(res.eqlin.marginals, dtype=np.float64)[defining], float(res.fun + theta @ b))
    if res.status != 2:
        return None
    # infeasible: the same rows with slacks p − q on the ReLU inputs' rows, min Σ(p + q) > 0;
    # its dual bounds the zero objective above 0 (θ = 0): no point satisfies the rows
    T = len(defining)
    slack = sp.csr_matrix((np.concatenate([-np.ones(T), np.ones(T)]),
                           (np.concatenate([defining, defining]), np.arange(2 * T))), shape=(eq.shape[0], 2 * T))
    res = linprog(np.concatenate([np.zeros(total), np.ones(2 * T)]), A_eq=sp.hstack([eq, slack]).tocsr(), b_eq=eq_rhs,
                  bounds=np.concatenate([np.stack([lo, hi], 1), np.tile([0.0, np.inf], (2 * T, 1))]), method="highs")
    if res.status != 0 or res.eqlin is None or not res.fun > 0:
        return None
    return LpDual(np.zeros(len(b)), np.asarray(res.eqlin.marginals, dtype=np.float64)[defining], float(res.fun))


class _Leaves:
    """One LP leaf as :func:`~verifier.proofcheck.lp_leaf.check_lp_leaves` reads it."""

    def __init__(self, arrays: dict, rows: int, A: np.ndarray, b: np.ndarray):
        self.arrays, self.tolerance = arrays, 1e-6
        self.C, self.b = A, b
        self._rows = rows

    def array(self, key: str) -> np.ndarray:
        return self.arrays[key.rsplit(".", 1)[1]]

    def rows_of(self, d: int) -> slice:
        return slice(0, self._rows)


def lp_leaf_duals(net: Network, relu_bounds: list[tuple[np.ndarray, np.ndarray]], signs: np.ndarray,
                  box: tuple[np.ndarray, np.ndarray], A: np.ndarray, b: np.ndarray) -> tuple[dict, np.ndarray]:
    """:func:`lp_leaf_dual` for each subdomain ``signs`` ``(N, T)``, each dual then checked
    as the checker will (:func:`~verifier.proofcheck.lp_leaf.check_lp_leaves`, on interval
    bounds ∩ ``relu_bounds``, which are no tighter than the checker's), so a dual that
    HiGHS's tolerances leave short stays trusted instead of failing the certificate.
    Returns the ``lp`` arrays (``signs``, ``theta``, ``dual``, ``lower``) of the duals that
    check and ``(N,)`` which ones."""
    from ..proofcheck.bounds import interval_bounds
    from ..proofcheck.certificate import LeafFailed
    from ..proofcheck.lp_leaf import check_lp_leaves

    bounds = interval_bounds(net, box[0][None], box[1][None])
    for node, (l, u) in zip(net.relu_inputs, relu_bounds):
        bounds[node] = (np.maximum(bounds[node][0], l[None]), np.minimum(bounds[node][1], u[None]))
    claims = {r: bounds[node] for r, node in enumerate(net.relu_inputs)}
    sizes = [len(l) for l, _ in relu_bounds]
    kept, done = [], np.zeros(len(signs), bool)
    for i, s in enumerate(signs):
        found = lp_leaf_dual(net, relu_bounds, s, box, A, b)
        if found is None:
            continue
        one = {"signs": s[None], "theta": found.theta[None], "dual": found.dual[None],
               "lower": np.array([np.nan if found.empty else found.value])}
        leaf = _Leaves(one, len(b), A, b)
        try:
            check_lp_leaves(net, leaf, leaf, 0, 0, 1, bounds, claims, sizes)
        except LeafFailed:
            continue
        kept.append(one)
        done[i] = True
    if not kept:
        return {}, done
    return {name: np.concatenate([one[name] for one in kept]) for name in kept[0]}, done
