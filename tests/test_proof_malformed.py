"""A structurally malformed certificate (index.json keys missing or of the wrong type, an
array missing or of the wrong dtype or shape, a count of the index that disagrees with
its arrays, a truncated archive) is bad input:
``check-proof`` refuses it with one ``error:`` line naming the file and what is wrong,
exit 2; a well-formed certificate whose bound fails is ``proof invalid``, exit 1."""

from __future__ import annotations

import numpy as np
import pytest

from cli_helpers import assert_refused, run
from proof_helpers import certify, read_archive, relu_net, robustness_spec, write_archive


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    """A one-leaf Box certificate and a ReLU-splitting one (8 inputs, two layers of 12)."""
    work = tmp_path_factory.mktemp("malformed")
    small = relu_net(work, 0, 2, [4])
    small_spec = robustness_spec(work / "small.vnnlib", small, 0, 2, 0.01)
    assert certify(small, small_spec, str(work / "box.proof"), "box")[0] == "unsat"
    model = relu_net(work, 4, 8, [20, 20])
    spec = robustness_spec(work / "relu.vnnlib", model, 4, 8, 0.15)
    assert certify(model, spec, str(work / "relu.proof"), "relu-split")[0] == "unsat"
    return work, (small, small_spec, str(work / "box.proof")), (model, spec, str(work / "relu.proof"))


def _disjunct(index: dict) -> dict:
    return index["regions"][0]["disjuncts"][0]


def _leaf_key(arrays: dict) -> str:
    return next(k for k in arrays if k.endswith(".d0.signs") or k.endswith(".d1.signs")).rsplit(".", 1)[0]


INDEX_FAULTS = {
    "model hash missing": (lambda i, a: i["model"].pop("sha256"), "model.sha256 is None, not a string"),
    "result a number": (lambda i, a: i.update(result=1), "result is 1, not a string"),
    "certified a string": (lambda i, a: i.update(certified="yes"), "certified is 'yes', not true or false"),
    "regions an object": (lambda i, a: i.update(regions={}), "regions is {}, not a list"),
    "region kind unknown": (lambda i, a: i["regions"][0].update(kind="cloud"), "regions[0].kind is 'cloud'"),
    "leaf count a string": (lambda i, a: _disjunct(i).update(leaves="3"), "regions[0].disjuncts[0].leaves is '3'"),
    "leaf count negative": (lambda i, a: _disjunct(i).update(lp_leaves=-1), "disjuncts[0].lp_leaves is -1"),
    "relus not a list": (lambda i, a: i["regions"][0].update(relus=20), "regions[0].relus is 20, not a list"),
    "milp a number": (lambda i, a: _disjunct(i).update(milp=3), "disjuncts[0].milp is 3, not null or a string"),
    "two regions 0": (lambda i, a: i["regions"].append(dict(i["regions"][0])), "distinct indices"),
}

ARRAY_FAULTS = {
    "an array missing": (lambda i, a: a.pop(f"{_leaf_key(a)}.alpha"), "is missing"),
    "split signs as floats": (lambda i, a: a.update({f"{_leaf_key(a)}.signs": a[f"{_leaf_key(a)}.signs"] * 1.0}),
                              "holds float64 values, not integers"),
    "slopes as integers": (lambda i, a: a.update({"r0.final.alpha0": a["r0.final.alpha0"].astype(np.int64)}),
                           "holds int64 values, not floats"),
    "slopes of the wrong shape": (lambda i, a: a.update({f"{_leaf_key(a)}.beta": a[f"{_leaf_key(a)}.beta"][:, :, 1:]}),
                                  "leaf arrays of the wrong shape"),
    "root bounds of the wrong shape": (lambda i, a: a.update({"r0.claims.l0": a["r0.claims.l0"][1:]}),
                                       "claimed bounds of ReLU 0 have the wrong shape"),
}


@pytest.mark.parametrize("name", sorted(INDEX_FAULTS) + sorted(ARRAY_FAULTS))
def test_a_malformed_certificate_is_refused_naming_what_is_wrong(certificates, capsys, name):
    work, _, (model, spec, proof) = certificates
    change, words = {**INDEX_FAULTS, **ARRAY_FAULTS}[name]
    index, arrays = read_archive(proof)
    change(index, arrays)
    bad = write_archive(str(work / f"{name.replace(' ', '_')}.proof"), index, arrays)
    code, out, err = run(capsys, "check-proof", model, spec, bad)
    assert_refused(code, out, err, bad, "malformed certificate", words, "give the certificate verify --proof wrote")
    if name in INDEX_FAULTS:
        assert "index.json: " in err


def test_a_truncated_archive_is_refused(certificates, capsys):
    work, (model, spec, proof), _ = certificates
    data = open(proof, "rb").read()
    cut = work / "cut.proof"
    cut.write_bytes(data[: len(data) // 2])
    code, out, err = run(capsys, "check-proof", model, spec, cut)
    assert_refused(code, out, err, str(cut), "not a proof certificate")


def test_a_well_formed_certificate_whose_bound_fails_stays_exit_1(certificates, capsys):
    work, _, (model, spec, proof) = certificates
    index, arrays = read_archive(proof)
    key = f"{_leaf_key(arrays)}.lower"
    lower = arrays[key].copy()
    lower[0, 0] += 1.0
    arrays[key] = lower
    bad = write_archive(str(work / "raised.proof"), index, arrays)
    code, out, err = run(capsys, "check-proof", model, spec, bad)
    assert code == 1 and out.strip().splitlines()[-1].startswith("proof invalid: region 0") and not err, (out, err)
    code, out, err = run(capsys, "check-proof", model, spec, proof)
    assert code == 0 and out.strip().endswith("proof valid"), (out, err)


def test_a_split_index_of_the_wrong_type_is_refused(certificates, capsys):
    """The bisection tree's split inputs as floats (was 'proof invalid', exit 1)."""
    work, (model, spec, proof), _ = certificates
    index, arrays = read_archive(proof)
    arrays["r0.tree.dim"] = arrays["r0.tree.dim"].astype(np.float64)
    bad = write_archive(str(work / "dim.proof"), index, arrays)
    assert_refused(*run(capsys, "check-proof", model, spec, bad), "array 'r0.tree.dim' holds float64 values, not integers")


def _tree(n: int) -> dict:
    return {"nodes": n, "covered": 0, "seconds": 0.5}


# A count (or list) of the index that disagrees with the arrays stored: (certificate, change, words).
COUNT_FAULTS = {
    "tree nodes 5, one stored": ("box", lambda i, a: i["regions"][0].update(nodes=5),
                                 "regions[0].nodes is 5, but array 'r0.tree.dim' has 1 rows"),
    "one leaf more than stored": ("relu", lambda i, a: _disjunct(i).update(leaves=_disjunct(i)["leaves"] + 1),
                                  "regions[0].disjuncts[0].leaves is 470, but array 'r0.d0.signs' has 469 rows"),
    "slopes of one leaf fewer": ("relu", lambda i, a: a.update({"r0.d0.alpha": a["r0.d0.alpha"][1:]}),
                                 "regions[0].disjuncts[0].leaves is 469, but array 'r0.d0.alpha' has 468 rows"),
    "leaves 0, leaves stored": ("relu", lambda i, a: _disjunct(i).update(leaves=0),
                                "regions[0].disjuncts[0].leaves is 0, but array 'r0.d0.signs' has 469 rows"),
    "lp leaves not stored": ("relu", lambda i, a: _disjunct(i).update(lp_leaves=2),
                             "regions[0].disjuncts[0].lp_leaves is 2, but array 'r0.d0.lp.signs' is missing"),
    "trusted leaves fewer than stored": (
        "relu", lambda i, a: (_disjunct(i).update(trusted_leaves=1), a.update({"r0.d0.trusted": a["r0.d0.signs"][:3]})),
        "regions[0].disjuncts[0].trusted_leaves is 1, but array 'r0.d0.trusted' has 3 rows"),
    "trusted array, count 0": ("relu", lambda i, a: a.update({"r0.d0.trusted": a["r0.d0.signs"][:3]}),
                               "regions[0].disjuncts[0].trusted_leaves is 0, but array 'r0.d0.trusted' has 3 rows"),
    "intermediate pass not listed": ("relu", lambda i, a: i["regions"][0].update(intermediate=[]),
                                     "regions[0].intermediate is [], but array 'r0.inter1."),
    "a ReLU more than listed": ("relu", lambda i, a: a.update({"r0.claims.l2": a["r0.claims.l1"]}),
                                "regions[0].relus is [20, 20], but array 'r0.claims.l2' is stored"),
    "a max-pool not listed": ("relu", lambda i, a: a.update({"r0.pool0.sel": np.zeros(4, np.int64)}),
                              "regions[0].pools is [], but array 'r0.pool0.sel' is stored"),
    "arrays of a region not listed": ("box", lambda i, a: a.update({"r1.tree.dim": a["r0.tree.dim"]}),
                                      "regions has no region 1, but array 'r1.tree.dim' is stored"),
    "a region the spec lacks": ("box", lambda i, a: (i["regions"].append(dict(i["regions"][0], index=1)),
                                                     a.update({f"r1.tree.{k}": a[f"r0.tree.{k}"] for k in
                                                               ("dim", "mid", "left", "right", "claims")})),
                                "regions[1].index is 1, but the spec has 1 region(s)"),
    "a disjunct the spec lacks": ("relu", lambda i, a: i["regions"][0]["disjuncts"].append(
        dict(_disjunct(i), index=5, leaves=0)), "regions[0].disjuncts[1].index is 5, but region 0 of the spec has 2"),
    "two disjuncts 0": ("relu", lambda i, a: i["regions"][0]["disjuncts"].append(dict(_disjunct(i))),
                        "regions[0].disjuncts is [0, 0], not disjuncts of distinct indices"),
    "lp_tree covers nothing, leaves kept": ("relu", lambda i, a: _disjunct(i).update(lp_tree=_tree(4)),
                                            "regions[0].disjuncts[0].leaves is 469, not 0"),
    "lp_tree fewer LPs than LP leaves": (
        "relu", lambda i, a: (_disjunct(i).update(leaves=0, lp_leaves=3, lp_tree=_tree(2)),
                              [a.pop(f"r0.d0.{k}") for k in ("signs", "alpha", "beta", "lower")]),
        "regions[0].disjuncts[0].lp_leaves is 3, not from 1 to its lp_tree.nodes 2"),
    "lp_tree nodes a string": ("relu", lambda i, a: _disjunct(i).update(lp_tree={**_tree(1), "nodes": "1"}),
                               "regions[0].disjuncts[0].lp_tree.nodes is '1', not an integer ≥ 0"),
    "an array of no known name": ("relu", lambda i, a: a.update({"r0.extra": a["r0.final.lower"]}),
                                  "regions[0] calls for no array of that name, but array 'r0.extra' is stored"),
}


@pytest.mark.parametrize("name", sorted(COUNT_FAULTS))
def test_a_count_that_disagrees_with_the_stored_arrays_is_refused(certificates, capsys, name):
    """Was 'proof valid' for a tree of 1 node whose index said 5 nodes, and for leaf counts
    or lists of passes, ReLUs, regions and disjuncts that the stored arrays contradict."""
    work, box, relu = certificates
    which, change, words = COUNT_FAULTS[name]
    model, spec, proof = box if which == "box" else relu
    index, arrays = read_archive(proof)
    change(index, arrays)
    bad = write_archive(str(work / f"count_{name.replace(' ', '_').replace(',', '')}.proof"), index, arrays)
    code, out, err = run(capsys, "check-proof", model, spec, bad)
    assert_refused(code, out, err, bad, "malformed certificate", f"index.json: {words}",
                   "give the certificate verify --proof wrote")
