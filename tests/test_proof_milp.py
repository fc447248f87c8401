"""Disjuncts the MILP closed, in proof certificates: the writer's LP branch-and-bound
(verifier/proof/milp_tree.py) turns them into LP leaves the checker verifies by weak
duality (verifier/proofcheck/lp_leaf.py), with crossing ReLUs minimised over their
triangle; the checker's Lagrangian bound with given multipliers is sound for any
multipliers; a tree over its cap leaves the disjunct trusted."""

from __future__ import annotations

import numpy as np
import pytest

from verifier.proofcheck.bounds import Relaxation, interval_bounds, lagrangian_bound
from verifier.proofcheck.network import Network, Op


def _chain(rng: np.random.Generator, widths: list[int]) -> Network:
    ops, sizes = [], [widths[0]]
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        W = rng.normal(size=(b, a))
        ops += [Op("linear", W, abs_value=np.abs(W)), Op("shift", rng.normal(size=b) * 0.3)]
        sizes += [b, b]
        if i < len(widths) - 2:
            ops.append(Op("relu"))
            sizes.append(b)
    return Network(ops, sizes)


def _forward(net: Network, x: np.ndarray) -> list[np.ndarray]:
    out = [x]
    for op in net.ops:
        v = out[-1]
        out.append(v @ op.value.T if op.kind == "linear" else v + op.value if op.kind == "shift" else np.maximum(v, 0))
    return out


@pytest.mark.parametrize("seed", range(6))
def test_given_multipliers_bound_every_point_whatever_they_are(seed):
    """The Lagrangian bound with multipliers given outright at the ReLU inputs (an LP
    leaf's dual) is a lower bound for ANY multipliers: active and dead entries' terms
    ``(λ_out − λ_in)·z`` are minimised too, not skipped as exact zeros (they were: a
    dual of 100 on an active entry of y = relu(x), x ∈ [1, 2], 'proved' y ≥ 100)."""
    rng = np.random.default_rng(seed)
    net = _chain(rng, [3, 5, 4, 2])
    centre = rng.uniform(-1, 1, 3)
    eps = [0.01, 0.5][seed % 2]  # small boxes: every ReLU stable; wide: crossing ones too
    lo, hi = (centre - eps)[None], (centre + eps)[None]
    bounds = interval_bounds(net, lo, hi)
    lam = rng.normal(size=(1, 1, 2))
    direct = {r: rng.normal(size=(1, 1, net.sizes[i])) * 10 for r, i in enumerate(net.relu_inputs)}
    shape = {r: bounds[i] for r, i in enumerate(net.relu_inputs)}
    lb = lagrangian_bound(net, len(net.ops), lam, bounds, Relaxation(shape, direct=direct))[0, 0]
    x = rng.uniform(lo, hi, size=(4000, 3))
    values = _forward(net, x)[-1] @ lam[0, 0]
    assert lb <= values.min()
    W = np.array([[1.0]])
    one = Network([Op("linear", W, abs_value=W), Op("relu"), Op("linear", W, abs_value=W)], [1, 1, 1, 1])
    b = interval_bounds(one, np.array([[1.0]]), np.array([[2.0]]))
    forged = lagrangian_bound(one, 3, np.ones((1, 1, 1)), b, Relaxation({0: b[1]}, direct={0: np.full((1, 1, 1), 100.0)}))
    assert forged[0, 0] <= 1.0
