"""LP-closed subdomains in proof certificates: recorded with the LP's dual (HiGHS via
scipy's linprog) and checked by weak duality in outward-rounded float64, not trusted; a
perturbed dual is rejected."""

from __future__ import annotations

import numpy as np
import pytest

from proof_helpers import certify, read_archive, relu_net, robustness_spec, write_archive
from verifier.proof.lp_dual import lp_leaf_dual
from verifier.proofcheck.bounds import crown_bounds
from verifier.proofcheck.certificate import LeafFailed
from verifier.proofcheck.check import check_proof, read_regions
from verifier.proofcheck.lp_leaf import check_lp_leaves
from verifier.proofcheck.network import load_network


@pytest.fixture(scope="module")
def lp_closed(tmp_path_factory):
    """The ReLU-splitting instance of test_proof.py with β-CROWN's extra steps on LP-closed
    subdomains switched off, so those subdomains are recorded from their LP."""
    import verifier.complete.relu_split as relu_split

    work = tmp_path_factory.mktemp("lp")
    model = relu_net(work, 4, 8, [20, 20])
    spec = robustness_spec(work / "relu.vnnlib", model, 4, 8, 0.15)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(relu_split, "PROOF_ITERATIONS", 0)
        status, index = certify(model, spec, str(work / "lp.proof"), "relu-split")
    assert status == "unsat" and index["certified"]
    return model, spec, str(work / "lp.proof"), work


def test_lp_closed_leaves_are_checked_not_trusted(lp_closed):
    model, spec, proof, _ = lp_closed
    index, arrays = read_archive(proof)
    item = next(d for d in index["regions"][0]["disjuncts"] if d["lp_leaves"])
    assert item["trusted_leaves"] == 0
    report = check_proof(model, spec, proof)
    assert report.valid and report.message == "proof valid" and not report.trusted, report.message
    assert report.leaves == item["leaves"] + item["lp_leaves"]


def _lp_key(arrays) -> str:
    return next(k for k in arrays if k.endswith(".lp.dual")).rsplit(".", 1)[0]


def test_a_perturbed_lp_dual_or_a_dropped_lp_leaf_is_rejected(lp_closed):
    model, spec, proof, work = lp_closed
    index, arrays = read_archive(proof)
    key = _lp_key(arrays)
    bad = dict(arrays)
    dual = arrays[f"{key}.dual"].copy()
    j = int(np.abs(dual[0]).argmax())
    dual[0, j] += 1.0
    bad[f"{key}.dual"] = dual
    report = check_proof(model, spec, write_archive(str(work / "dual.proof"), index, bad))
    assert not report.valid and "LP leaf 0" in report.message, report.message
    bad = dict(arrays)
    bad[f"{key}.theta"] = arrays[f"{key}.theta"] - 1.0
    report = check_proof(model, spec, write_archive(str(work / "theta.proof"), index, bad))
    assert not report.valid and "negative" in report.message, report.message
    bad = {k: (v[1:] if k.startswith(f"{key}.") else v) for k, v in arrays.items()}
    item = next(d for d in index["regions"][0]["disjuncts"] if d["lp_leaves"])
    item["lp_leaves"] -= 1
    report = check_proof(model, spec, write_archive(str(work / "drop.proof"), index, bad))
    assert not report.valid and "do not cover" in report.message, report.message


class _Arrays:
    """The part of a certificate :func:`check_lp_leaves` reads."""

    def __init__(self, arrays: dict, tolerance: float = 1e-6):
        self.arrays, self.tolerance = arrays, tolerance

    def array(self, key: str) -> np.ndarray:
        return self.arrays[key]


def test_a_feasible_lps_dual_proves_its_bound(tmp_path):
    """Every ReLU stable on a small box: the LP is feasible with optimum t* > 0; its dual
    (θ, the ReLU inputs' multipliers) re-derives t* + θ·b as a rigorous bound of θA·y
    (strong duality, to the claim tolerance), and a weakened dual is rejected."""
    model = relu_net(tmp_path, 1, 3, [6, 5])
    spec = robustness_spec(tmp_path / "s.vnnlib", model, 1, 3, 1e-3)
    net, region = load_network(model), read_regions(spec)[0]
    bounds = crown_bounds(net, region.lower, region.upper)
    relus = net.relu_inputs
    assert all(not np.any((bounds[i][0] < 0) & (bounds[i][1] > 0)) for i in relus)
    sizes = [net.sizes[i] for i in relus]
    rows = region.rows_of(0)
    found = lp_leaf_dual(net, [(bounds[i][0][0], bounds[i][1][0]) for i in relus], np.zeros(sum(sizes), np.int8),
                         (region.lower[0], region.upper[0]), region.C[rows], region.b[rows])
    assert found is not None and not found.empty
    assert np.isclose(found.theta.sum(), 1.0) and found.value > found.theta @ region.b[rows]
    arrays = {"r0.d0.lp.signs": np.zeros((1, sum(sizes)), np.int8), "r0.d0.lp.theta": found.theta[None],
              "r0.d0.lp.dual": found.dual[None], "r0.d0.lp.lower": np.array([found.value])}
    claims = {r: bounds[i] for r, i in enumerate(relus)}
    signs = check_lp_leaves(net, region, _Arrays(arrays), 0, 0, 1, bounds, claims, sizes)
    assert signs.shape == (1, sum(sizes))
    weak = dict(arrays)
    weak["r0.d0.lp.dual"] = found.dual[None] * 0.5 + 0.1
    with pytest.raises(LeafFailed, match="below the certificate's claim"):
        check_lp_leaves(net, region, _Arrays(weak), 0, 0, 1, bounds, claims, sizes)


def test_a_dual_that_does_not_check_stays_trusted(tmp_path, monkeypatch):
    """The writer keeps an LP leaf trusted when its dual (HiGHS's, within its tolerances)
    would not pass the checker, instead of writing a certificate that fails."""
    import verifier.proof.lp_dual as lp_dual

    model = relu_net(tmp_path, 1, 3, [6, 5])
    spec = robustness_spec(tmp_path / "s.vnnlib", model, 1, 3, 1e-3)
    net, region = load_network(model), read_regions(spec)[0]
    bounds = crown_bounds(net, region.lower, region.upper)
    relu_bounds = [(bounds[i][0][0], bounds[i][1][0]) for i in net.relu_inputs]
    signs = np.zeros((1, sum(len(l) for l, _ in relu_bounds)), np.int8)
    args = (net, relu_bounds, signs, (region.lower[0], region.upper[0]), region.C[region.rows_of(0)],
            region.b[region.rows_of(0)])
    arrays, done = lp_dual.lp_leaf_duals(*args)
    assert done.tolist() == [True] and arrays["theta"].shape == (1, len(region.b[region.rows_of(0)]))
    exact = lp_dual.lp_leaf_dual

    def short(*a, **k):
        found = exact(*a, **k)
        found.dual = found.dual * 0.5 + 0.1
        return found

    monkeypatch.setattr(lp_dual, "lp_leaf_dual", short)
    arrays, done = lp_dual.lp_leaf_duals(*args)
    assert done.tolist() == [False] and arrays == {}
