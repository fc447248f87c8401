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


@pytest.fixture(scope="module")
def milp_closed(tmp_path_factory):
    """The ReLU-splitting instance of test_proof.py, its disjunct closed by the MILP twice:
    ``replay.proof``, relu-split with every fully split subdomain's LP made undecided (as a
    time limit would), so the search ends 'unknown' having closed most of the disjunct;
    ``root.proof``, the MILP method (α-CROWN's root, then HiGHS), so the LP tree starts
    from the root with no leaf of a search."""
    import verifier.complete.relu_split as relu_split
    from proof_helpers import certify, relu_net, robustness_spec

    work = tmp_path_factory.mktemp("milp")
    model = relu_net(work, 4, 8, [20, 20])
    spec = robustness_spec(work / "relu.vnnlib", model, 4, 8, 0.15)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(relu_split, "decide_linear", lambda *a, **k: ("unknown", None))
        status, index = certify(model, spec, str(work / "replay.proof"), "relu-split")
    assert status == "unsat" and index["certified"]
    status, index = certify(model, spec, str(work / "root.proof"), "milp")
    assert status == "unsat" and index["certified"]
    return model, spec, work


def _tree_disjunct(index: dict) -> dict:
    return next(d for d in index["regions"][0]["disjuncts"] if d.get("lp_tree"))


def test_a_milp_closed_disjunct_checks_with_no_trusted_part(milp_closed):
    """From the root: LP leaves only, ReLUs left unfixed (bounded by their triangle).
    After the search: the tree replays the search's splits, its leaves close the nodes
    they cover (no LP there) and LPs close what the search left open."""
    from proof_helpers import read_archive
    from verifier.proofcheck.check import check_proof

    model, spec, work = milp_closed
    index, arrays = read_archive(str(work / "root.proof"))
    item = _tree_disjunct(index)
    assert item["milp"] is None and item["lp_leaves"] >= 2 and item["leaves"] == 0 and item["lp_tree"]["covered"] == 0
    signs = arrays[f"r0.d{item['index']}.lp.signs"]
    l, u = (np.concatenate([arrays[f"r0.claims.{side}{i}"] for i in range(2)]) for side in "lu")
    assert ((signs == 0) & (l < 0) & (u > 0)).any(), "the tree's leaves leave crossing ReLUs unfixed"
    index, _ = read_archive(str(work / "replay.proof"))
    replay = _tree_disjunct(index)
    assert replay["milp"] is None and replay["leaves"] > 10 * replay["lp_leaves"] >= 10
    assert replay["lp_tree"]["covered"] > 0 and replay["lp_tree"]["nodes"] < item["lp_tree"]["nodes"]
    for name in ("root", "replay"):
        report = check_proof(model, spec, str(work / f"{name}.proof"))
        assert report.valid and report.message == "proof valid" and not report.trusted, (name, report.message)


@pytest.mark.parametrize("name", ["theta", "dual", "dropped", "sign", "claim", "dropped after the search"])
def test_perturbed_tree_leaves_are_rejected(milp_closed, name):
    from proof_helpers import read_archive, write_archive
    from verifier.proofcheck.check import check_proof

    model, spec, work = milp_closed
    index, arrays = read_archive(str(work / ("replay.proof" if "search" in name else "root.proof")))
    item = _tree_disjunct(index)
    key = f"r0.d{item['index']}.lp"
    bad = dict(arrays)
    if name == "theta":  # the weights of the rows: θ = e_0 bounds another combination
        theta = np.zeros_like(arrays[f"{key}.theta"])
        theta[:, 0] = 1.0
        bad[f"{key}.theta"] = np.where(theta == arrays[f"{key}.theta"], 1 - theta, theta)
    elif name == "dual":
        dual = arrays[f"{key}.dual"].copy()
        j = int(np.abs(dual[0]).argmax())
        dual[0, j] *= 1.5
        bad[f"{key}.dual"] = dual
    elif name.startswith("dropped"):  # the tree's last leaf
        bad = {k: (v[:-1] if k.startswith(f"{key}.") else v) for k, v in arrays.items()}
        item["lp_leaves"] -= 1
    elif name == "sign":  # a split of one leaf turned the other way
        signs = arrays[f"{key}.signs"].copy()
        j = int(np.nonzero(signs[0])[0][0])
        signs[0, j] = -signs[0, j]
        bad[f"{key}.signs"] = signs
    else:
        lower = arrays[f"{key}.lower"].copy()
        lower[0] += 1.0
        bad[f"{key}.lower"] = lower
    report = check_proof(model, spec, write_archive(str(work / f"{name.replace(' ', '_')}.proof"), index, bad))
    assert not report.valid and ("LP leaf" in report.message or "do not cover" in report.message), report.message


def test_a_tree_over_its_cap_leaves_the_disjunct_trusted(milp_closed):
    """With a cap of 2 LPs the tree from the root does not finish: the disjunct stays
    trusted to HiGHS, as before, and both the certificate and the checker's report say why."""
    from proof_helpers import certify
    from verifier.proofcheck.check import check_proof
    from verifier.proof import record

    model, spec, work = milp_closed
    init = record.ProofRecorder.__init__

    def capped(self):
        init(self)
        self.lp_nodes = 2

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(record.ProofRecorder, "__init__", capped)
        status, index = certify(model, spec, str(work / "capped.proof"), "milp")
    assert status == "unsat"
    milp = [d["milp"] for d in index["regions"][0]["disjuncts"] if d["milp"]]
    assert milp and all("cap of 2 LPs" in m for m in milp), milp
    report = check_proof(model, spec, str(work / "capped.proof"))
    assert report.valid and len(report.trusted) == len(milp) and "cap of 2 LPs" in report.trusted[0], report.trusted


def test_cli_proof_lp_nodes(milp_closed, capsys):
    """``--proof-lp-nodes 0`` leaves the MILP's disjunct trusted and the ``proof:`` line
    names it; a negative cap, or a cap without ``--proof``, is refused before any work."""
    from cli_helpers import assert_refused, run

    model, spec, work = milp_closed
    proof = work / "cli.proof"
    for extra, words in ((["--proof-lp-nodes", "-1", "--proof", proof], "--proof-lp-nodes must be an integer in"),
                         (["--proof-lp-nodes", "5"], "--proof-lp-nodes needs --proof FILE")):
        assert_refused(*run(capsys, "verify", model, spec, "--method", "milp", *extra), words)
    code, out, err = run(capsys, "verify", model, spec, "--method", "milp", "--no-cache", "--proof", proof,
                         "--proof-lp-nodes", "0")
    assert code == 0 and "result: unsat" in out, (out, err)
    assert "1 disjunct trusted to HiGHS's MILP: region 0, disjunct 0" in out, out
    code, out, err = run(capsys, "check-proof", model, spec, proof)
    assert code == 0 and "trusted (not re-derived): region 0, disjunct 0: HiGHS MILP" in out, out
    assert out.strip().endswith("proof valid (with 1 parts trusted to HiGHS)"), out


def test_a_milp_mark_on_a_disjunct_the_search_covered_is_dropped():
    """The MILP runs on every disjunct α-CROWN left open once relu-split ends 'unknown', so
    a disjunct the search closed on its own is marked too: its leaves cover every phase,
    so the writer drops the mark and no LP tree is built."""
    import torch

    from verifier.proof.record import ReluRegion
    from verifier.proof.writer import _MilpTrees

    rec = ReluRegion(claims=[(torch.tensor([-1.0, -1.0]), torch.tensor([1.0, 1.0]))])
    signs = torch.tensor([[1, 0], [-1, 1], [-1, -1]], dtype=torch.int8)
    rec.leaves[0] = [(signs[:2], None, None, None)]
    rec.trusted[0] = [signs[2:]]
    item = {"index": 0, "milp": "HiGHS MILP"}
    assert _MilpTrees(None, "", 0, rec, None).replace(0, item) == (True, {}) and item["milp"] is None
    rec.leaves[0] = [(signs[:1], None, None, None)]  # one phase of the second ReLU missing: the mark stays
    item = {"index": 0, "milp": "HiGHS MILP"}
    assert _MilpTrees(None, "", 0, rec, 0).replace(0, item) == (True, {}) and item["milp"] == "HiGHS MILP"


def test_the_lp_tree_refuses_what_its_lp_cannot_state():
    """Max-pooling (no exact LP) or a ReLU on the input: the tree is not tried, and its
    reason (which the trusted disjunct carries) says why."""
    from verifier.proof.milp_tree import lp_tree

    W = np.eye(4)
    pool = Network([Op("linear", W, abs_value=W), Op("relu"), Op("maxpool", np.array([[0, 1], [2, 3]]))], [4, 4, 4, 2])
    bounds = interval_bounds(pool, -np.ones((1, 4)), np.ones((1, 4)))
    found = lp_tree(pool, bounds, np.array([[1.0, -1.0]]), np.array([0.0]))
    assert found.arrays is None and found.nodes == 0 and "not maxpool" in found.reason
    first = Network([Op("relu"), Op("linear", W, abs_value=W)], [4, 4, 4])
    found = lp_tree(first, interval_bounds(first, -np.ones((1, 4)), np.ones((1, 4))), np.eye(4)[:1], np.zeros(1))
    assert found.arrays is None and "a ReLU on the input" in found.reason
