"""The dual solution of an LP over a ReLU subdomain, for its certificate.

ReLU splitting closes a subdomain with every ReLU fixed by an LP (HiGHS,
:func:`~verifier.complete.relu_split.decide_linear`). When β-CROWN's steps do not re-derive
it, the certificate writer (:mod:`verifier.proof.writer`) solves that LP once more, in the
checker's own chain variables (:class:`~verifier.proofcheck.network.Network`), with
``scipy.optimize.linprog`` (HiGHS), and records its dual solution, which the checker
verifies by weak duality (:mod:`verifier.proofcheck.lp_leaf`) without trusting HiGHS.
The LP branch-and-bound that certifies a disjunct the MILP closed
(:mod:`verifier.proof.milp_tree`) solves the same LP on subdomains whose ReLUs are not
all fixed: an unfixed crossing ReLU ``a = max(z, 0)``, ``l < 0 < u``, is its triangle
(Ehlers 2017), the convex hull of its graph on ``[l, u]`` (vertices ``(l, 0)``, ``(0, 0)``,
``(u, u)``): ``a ≥ 0``, ``a ≥ z``, ``a ≤ u(z − l)/(u − l)``.

The LP, for the disjunct ``A y ≤ b`` (``k`` rows), over variables ``v_0 … v_K`` (every chain
node, flattened) and ``t``:

    min t   s.t.  v_{i+1} = op_i(v_i)   (affine ops; a fixed ReLU is the identity or 0;
                                          an unfixed crossing one its triangle),
                  A v_K − t ≤ b,   v_0 ∈ box,   l_r ≤ v_{relu input r} ≤ u_r (root bounds ∩ splits).

Its optimum ``t* > 0`` proves the disjunct empty on the subdomain. The dual gives
``θ = −`` the spec rows' marginals (``θ ≥ 0``, ``Σθ = 1``) and the equality marginals: those of
the rows defining each ReLU's input are the multipliers ``λ_r`` of the Lagrangian bound of
``(θ A)·y`` (every other multiplier follows from them by the backward pass; the variable
bounds' and the triangles' multipliers are replaced by the exact minimum of each term
over its interval, which is the minimum over the triangle: a linear function of
``(z, a)`` is least at a vertex). ``θ A·y ≥ t* + θ·b`` is the claim.
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
    root bounds and the splits contradict each other (nothing to bound). ``score``
    ``(T,)``: for branching, each unfixed crossing entry's triangle gap at the LP optimum
    ``a − max(z, 0)`` weighted by its upper face's marginal (the most-infeasible rule of
    MILP solvers), ``−∞`` on every other entry; ``None`` when the LP had no optimum."""

    theta: np.ndarray
    dual: np.ndarray
    value: float
    empty: bool = False
    score: np.ndarray | None = None


def _op_rows(net: Network, i: int):
    """``(M, c)``: the rows ``v_{i+1} − M v_i = c`` of the affine step ``i``; ``None`` for a
    step that is not affine (ReLUs are stated by :func:`_relu_rows`)."""
    op, n = net.ops[i], net.sizes[i]
    if op.kind == "linear":
        return sp.csr_matrix(op.value), np.zeros(op.value.shape[0])
    if op.kind == "shift":
        return sp.identity(n, format="csr"), op.value
    if op.kind == "scale":
        return sp.diags(op.value, format="csr"), np.zeros(n)
    if op.kind == "div":
        return sp.diags(1.0 / op.value, format="csr"), np.zeros(n)
    return None


def _relu_rows(l: np.ndarray, u: np.ndarray, s: np.ndarray):
    """A ReLU step on ``[l, u]`` ``(n,)`` with split signs ``s``: the equality rows
    ``a_j − d_j z_j = 0`` ``(E, n)`` of its stable entries (``d_j`` 1 active, 0 dead) and which
    entries they are; the two triangle rows ``[z_j − a_j ≤ 0, a_j − c_j z_j ≤ −c_j l_j]`` of
    each crossing entry (``c = u/(u − l)``) as ``(Z, A, rhs)`` blocks, ``(2X, n)`` each, and
    the crossing entries ``(X,)``."""
    active, dead = (l >= 0) | (s > 0), (u <= 0) | (s < 0)
    stable, cross = np.nonzero(active | dead)[0], np.nonzero(~active & ~dead)[0]
    n = len(l)
    select = sp.csr_matrix((np.ones(len(stable)), (np.arange(len(stable)), stable)), shape=(len(stable), n))
    X = len(cross)
    c = u[cross] / (u[cross] - l[cross])
    rows = np.arange(2 * X)
    Z = sp.csr_matrix((np.concatenate([np.ones(X), -c]), (rows, np.concatenate([cross, cross]))), shape=(2 * X, n))
    Aa = sp.csr_matrix((np.concatenate([-np.ones(X), np.ones(X)]), (rows, np.concatenate([cross, cross]))),
                       shape=(2 * X, n))
    return select, active[stable].astype(np.float64), stable, (Z, Aa, np.concatenate([np.zeros(X), -c * l[cross]])), cross


def _chain_lp(net: Network, clamped: dict, per: dict, box: tuple[np.ndarray, np.ndarray]):
    """The constraints of the module docstring's LP but the spec rows: ``(eq, eq_rhs, ub,
    ub_rhs, bounds (V, 2), defining (T,), faces)`` over ``V`` variables (every node, then
    ``t``); ``defining``: the equality rows of every ReLU input's entries, in chain order;
    ``faces``: per ReLU ``(node, crossing entries, their upper-face rows in ub)``. ``None``
    for a chain the LP cannot state (max-pooling, a ReLU not fed by an affine step)."""
    offsets = np.concatenate([[0], np.cumsum(net.sizes)]).astype(int)
    total = int(offsets[-1]) + 1
    eq, eq_rhs, ub, ub_rhs, faces, defining = [], [], [], [], [], {}
    lo, hi = np.full(total, -np.inf), np.full(total, np.inf)
    lo[: net.sizes[0]], hi[: net.sizes[0]] = box
    n_eq = n_ub = 0

    def block(M, start, n_rows, into):  # M acting on the variables from ``start``
        into.append(sp.hstack([sp.csr_matrix((n_rows, start)), M,
                               sp.csr_matrix((n_rows, total - start - M.shape[1]))]).tocsr())

    for i, op in enumerate(net.ops):
        a, b = int(offsets[i]), int(offsets[i + 1])
        n_in, n_out = net.sizes[i], net.sizes[i + 1]
        if op.kind == "relu":
            l, u = clamped[i]
            lo[a:b], hi[a:b] = l, u
            select, d, stable, (Z, Aa, rhs), cross = _relu_rows(l, u, per[i])
            block(sp.hstack([-select.multiply(d[:, None]), select]).tocsr(), a, len(stable), eq)
            eq_rhs.append(np.zeros(len(stable)))
            block(sp.hstack([Z, Aa]).tocsr(), a, len(rhs), ub)
            ub_rhs.append(rhs)
            lo[b + cross] = 0.0
            faces.append((i, cross, n_ub + len(cross) + np.arange(len(cross))))
            n_eq, n_ub = n_eq + len(stable), n_ub + len(rhs)
            continue
        found = _op_rows(net, i)
        if found is None:
            return None
        M, c = found
        block(sp.hstack([-M, sp.identity(n_out, format="csr")]).tocsr(), a, n_out, eq)
        eq_rhs.append(np.broadcast_to(c, (n_out,)))
        defining[i + 1] = n_eq + np.arange(n_out)
        n_eq += n_out
    relus = net.relu_inputs
    if not relus or any(node not in defining for node in relus):
        return None
    ub_m = sp.vstack(ub).tocsr() if ub else sp.csr_matrix((0, total))
    return (sp.vstack(eq).tocsr(), np.concatenate(eq_rhs), ub_m, np.concatenate(ub_rhs) if ub_rhs else np.zeros(0),
            np.stack([lo, hi], 1), np.concatenate([defining[node] for node in relus]), faces)


def lp_leaf_dual(net: Network, relu_bounds: list[tuple[np.ndarray, np.ndarray]], signs: np.ndarray,
                 box: tuple[np.ndarray, np.ndarray], A: np.ndarray, b: np.ndarray) -> LpDual | None:
    """The LP of the module docstring for one subdomain: ``relu_bounds`` the root bounds of
    each ReLU's input ``(n_r,)``, ``signs`` ``(T,)`` its splits (``0``: unfixed; a crossing
    one is its triangle), ``box`` ``(n_0,)`` each, ``A`` ``(k, n_K)``, ``b`` ``(k,)``. ``None``
    when the LP cannot be stated (max-pooling, a ReLU on the input) or HiGHS does not solve
    it to optimality."""
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
    built = _chain_lp(net, clamped, per, box)
    if built is None:
        return None
    eq, eq_rhs, ub, ub_rhs, bounds, defining, faces = built
    total = bounds.shape[0]
    offsets = np.concatenate([[0], np.cumsum(net.sizes)]).astype(int)
    spec = sp.hstack([sp.csr_matrix((len(b), int(offsets[-2]))), sp.csr_matrix(A), -np.ones((len(b), 1))]).tocsr()
    cost = np.zeros(total)
    cost[-1] = 1.0
    res = linprog(cost, A_ub=sp.vstack([spec, ub]).tocsr(), b_ub=np.concatenate([b, ub_rhs]), A_eq=eq, b_eq=eq_rhs,
                  bounds=bounds, method="highs")
    if res.status == 0 and res.eqlin is not None and res.ineqlin is not None:
        marg = -np.asarray(res.ineqlin.marginals, dtype=np.float64)
        theta = np.maximum(marg[: len(b)], 0.0)
        score = np.full(len(signs), -np.inf)
        start = np.concatenate([[0], np.cumsum([len(l) for l, _ in relu_bounds])])
        for r, (node, cross, rows) in enumerate(faces):
            z, a = res.x[offsets[node] + cross], res.x[offsets[node + 1] + cross]
            score[start[r] + cross] = np.maximum(a - np.maximum(z, 0.0), 0.0) * (np.abs(marg[len(b) + rows]) + 1e-9)
        return LpDual(theta, np.asarray(res.eqlin.marginals, dtype=np.float64)[defining], float(res.fun + theta @ b),
                      score=score)
    if res.status != 2:
        return None
    # infeasible: the same rows with slacks p − q on the ReLU inputs' rows, min Σ(p + q) > 0;
    # its dual bounds the zero objective above 0 (θ = 0): no point satisfies the rows
    T = len(defining)
    slack = sp.csr_matrix((np.concatenate([-np.ones(T), np.ones(T)]),
                           (np.concatenate([defining, defining]), np.arange(2 * T))), shape=(eq.shape[0], 2 * T))
    res = linprog(np.concatenate([np.zeros(total), np.ones(2 * T)]), A_eq=sp.hstack([eq, slack]).tocsr(), b_eq=eq_rhs,
                  A_ub=sp.hstack([ub, sp.csr_matrix((ub.shape[0], 2 * T))]).tocsr() if ub.shape[0] else None,
                  b_ub=ub_rhs if ub.shape[0] else None,
                  bounds=np.concatenate([bounds, np.tile([0.0, np.inf], (2 * T, 1))]), method="highs")
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
    from ..proofcheck.certificate import CertificateError, LeafFailed
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
        except (LeafFailed, CertificateError):
            continue
        kept.append(one)
        done[i] = True
    if not kept:
        return {}, done
    return {name: np.concatenate([one[name] for one in kept]) for name in kept[0]}, done
