"""A checkable certificate for a disjunct that HiGHS's MILP closed: an LP branch-and-bound.

``scipy.optimize.milp`` returns neither HiGHS's branch tree nor the duals of its nodes,
so the certificate writer (:mod:`verifier.proof.writer`) builds its own tree, from the
region's root (every ReLU unfixed), in the checker's chain variables: at each node the LP
of :func:`~verifier.proof.lp_dual.lp_leaf_dual` (fixed ReLUs exact, unfixed crossing ones
by their triangle, the root bounds clamped by the node's splits) is solved with HiGHS
(``scipy.optimize.linprog``) and its dual ``(θ, λ)`` bounded exactly as the checker will
(:func:`~verifier.proofcheck.lp_leaf.dual_bounds`, on the checker's own root bounds). A
node whose bound refutes the disjunct becomes an LP leaf (split signs ``0`` on the ReLUs it
left unfixed); otherwise it is split on the crossing ReLU whose triangle is most violated
at the LP optimum, weighted by the upper face's dual (the most-infeasible rule of MILP
solvers; Achterberg et al. 2005), and both children are searched depth first. Where ReLU
splitting ran first, its closed leaves (``known``) are replayed: a node they cover needs
no LP and an open node they reach is split as they were. The leaves (the tree's and the
search's it used) form a complete case split by construction, which the checker verifies
(:func:`~verifier.proofcheck.check.covers`).

The search stops at ``max_nodes`` LPs or ``seconds``; the disjunct then stays trusted to
HiGHS, exactly as without the tree, and its reason says so. Nothing here is trusted by
the checker: a leaf is only a choice of multipliers that it bounds in outward-rounded
arithmetic.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..proofcheck.network import Network
from .lp_dual import lp_leaf_dual

MAX_NODES = 2000  # LPs per disjunct (verify --proof-lp-nodes)
SECONDS = 60.0  # wall-clock seconds per disjunct
MARGIN = 1e-9  # a leaf's bound must clear θ·b by this much (relative): the checker's BLAS may round differently


@dataclass
class LpTree:
    """The outcome of :func:`lp_tree`: ``arrays`` (the ``lp`` leaves: ``signs`` ``(L, T)``
    int8, ``theta`` ``(L, k)``, ``dual`` ``(L, T)``, ``lower`` ``(L,)``) when every leaf
    refuted the disjunct, else ``None`` and ``reason`` (why it stopped); ``nodes``: LPs solved;
    ``covered``: nodes the search's own leaves closed (``known``)."""

    arrays: dict | None
    nodes: int
    seconds: float
    reason: str = ""
    covered: int = 0


def lp_tree(net: Network, bounds: list[tuple[np.ndarray, np.ndarray]], A: np.ndarray, b: np.ndarray,
            max_nodes: int = MAX_NODES, seconds: float = SECONDS, known: np.ndarray | None = None) -> LpTree:
    """The LP branch-and-bound of the module docstring for the disjunct ``A y ≤ b``
    (``A`` ``(k, m)``, ``b`` ``(k,)``) on the checker's root ``bounds`` (per chain node
    ``(1, n_i)`` lower and upper, as :func:`~verifier.proofcheck.bounds.crown_bounds`
    gives them). At most ``max_nodes`` LPs and ``seconds`` of wall-clock time. Never
    raises for an LP HiGHS cannot solve (that node is split, or the tree gives up).

    ``known`` ``(M, T)``: split signs of subdomains the search closed (its leaves, which the
    certificate keeps). A node they cover together (:func:`~verifier.proofcheck.check.covers`
    on those compatible with its splits) needs no LP (``LpTree.covered`` counts them), and
    an open node they reach is split on the entry they fix most often, so the tree replays
    the search and its LPs close only what the search left open."""
    from ..proofcheck.check import covers
    from ..proofcheck.lp_leaf import dual_bounds

    start = time.perf_counter()
    relus = net.relu_inputs
    other = sorted({op.kind for op in net.ops} - {"linear", "shift", "scale", "div", "relu"})
    if other or not relus or relus[0] == 0:
        return LpTree(None, 0, 0.0, "the LP branch-and-bound states affine and ReLU steps only"
                                    + (f", not {', '.join(other)}" if other else " (a ReLU on the input)"))
    relu_bounds = [(bounds[i][0][0], bounds[i][1][0]) for i in relus]
    sizes = [net.sizes[i] for i in relus]
    claims = {r: bounds[i] for r, i in enumerate(relus)}
    box = (bounds[0][0][0], bounds[0][1][0])
    T = sum(sizes)
    known = np.zeros((0, T), np.int8) if known is None else known.astype(np.int8)
    stack = [(np.zeros(T, np.int8), np.arange(len(known)))]
    leaves: list[dict] = []
    nodes = covered = 0
    while stack:
        elapsed = time.perf_counter() - start
        if nodes >= max_nodes or elapsed > seconds:
            cap = f"{max_nodes} LPs" if nodes >= max_nodes else f"{seconds:g} s"
            return LpTree(None, nodes, elapsed, f"its LP branch-and-bound reached its cap of {cap} with "
                                                f"{len(stack)} subdomains open")
        s, compatible = stack.pop()
        below = known[compatible]
        below[:, s != 0] = 0  # the node's own splits hold on all of it
        if len(below) and covers(below):
            covered += 1
            continue
        nodes += 1
        found = lp_leaf_dual(net, relu_bounds, s, box, A, b)
        if found is not None and found.empty:  # only crossing ReLUs are split: cannot happen, kept sound
            leaves.append({"signs": s, "theta": found.theta, "dual": found.dual, "lower": np.nan})
            continue
        if found is not None:
            value, threshold, live = dual_bounds(net, A, b, s[None], found.theta[None], found.dual[None], bounds,
                                                 claims, sizes)
            if len(live) == 0 or value[0] > threshold[0] + MARGIN * (1 + abs(threshold[0])):
                lower = value[0] if len(live) else np.nan
                leaves.append({"signs": s, "theta": found.theta, "dual": found.dual, "lower": lower})
                continue
        fixed = (below != 0).sum(0)
        j = int(fixed.argmax()) if fixed.any() else _branch(s, found, relu_bounds)
        if j is None:
            return LpTree(None, nodes, time.perf_counter() - start,
                          "its LP branch-and-bound found a subdomain with every ReLU fixed whose LP dual does "
                          "not refute it")
        for side in (-1, 1):
            child = s.copy()
            child[j] = side
            stack.append((child, compatible[known[compatible, j] != -side]))
    arrays = {"signs": np.zeros((len(leaves), T), np.int8), "theta": np.zeros((len(leaves), len(b))),
              "dual": np.zeros((len(leaves), T)), "lower": np.zeros(len(leaves))}
    for i, leaf in enumerate(leaves):
        for name in arrays:
            arrays[name][i] = leaf[name]
    return LpTree(arrays, nodes, time.perf_counter() - start, covered=covered)


def _branch(s: np.ndarray, found, relu_bounds) -> int | None:
    """The entry to split (flat index) at a node that stays open: the best LP score
    (:class:`~verifier.proof.lp_dual.LpDual`), else (no LP optimum, or every gap 0 to
    HiGHS's tolerance) the unfixed crossing entry with the widest ``min(−l, u)``;
    ``None`` when every crossing entry is fixed."""
    l = np.concatenate([lo for lo, _ in relu_bounds])
    u = np.concatenate([hi for _, hi in relu_bounds])
    open_ = (s == 0) & (l < 0) & (u > 0)
    if not open_.any():
        return None
    if found is not None and found.score is not None:
        score = np.where(open_, found.score, -np.inf)
        if score.max() > 1e-12:
            return int(score.argmax())
    return int(np.where(open_, np.minimum(-l, u), -np.inf).argmax())
