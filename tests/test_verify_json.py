"""``verify --json``: one JSON object that validates against the documented schema and says
the same as the text output; ``bounds --json`` keeps its shape; the CLI hides library
warnings; which stage decided each region is read correctly from the notes."""

from __future__ import annotations

import json
import re
import warnings

import numpy as np
import onnx
import onnx.helper as oh
import pytest
import torch

import verifier.cli as cli
from verifier.records import (ATTACK, BOUNDS_SCHEMA, FORMAT, VERIFY_SCHEMA, overall_decider, region_outcomes)
from verifier.spec import read_vnnlib

from cli_helpers import assert_refused, run
from conftest import DEFAULT_MODEL, PROPERTIES, REPO

jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is in the test extra: pip install -e '.[test]'")

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROBUST = PROPERTIES / "mnist_0_eps0.05.vnnlib"
NOT_ROBUST = PROPERTIES / "mnist_5_eps0.3.vnnlib"
DOC = REPO / "docs" / "outputs.md"


def validate(record: dict, schema: dict = VERIFY_SCHEMA) -> None:
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(record)


def verify_json(capsys, *argv) -> dict:
    """Run ``verify --json``; stdout must be exactly one line holding one JSON object."""
    code, out, err = run(capsys, "verify", *argv, "--json")
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 1, out
    record = json.loads(lines[0])
    validate(record)
    return record


def tiny_model(path):
    """``y = relu(x @ ones(3, 2))``: both outputs are ``relu(x0 + x1 + x2)``."""
    nodes = [oh.make_node("MatMul", ["x", "W"], ["h"]), oh.make_node("Relu", ["h"], ["y"])]
    graph = oh.make_graph(nodes, "tiny", [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3])],
                          [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 2])],
                          [onnx.numpy_helper.from_array(np.ones((3, 2), dtype=np.float32), "W")])
    onnx.save(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 13)], ir_version=8), path)
    return path


def two_region_spec(path, threshold: float):
    """Region 0: x ∈ [0, 0.1]³ with Y_0 ≥ 1 (empty: Y_0 ≤ 0.3); region 1: x ∈ [0, 1]³ with
    Y_0 ≥ ``threshold`` (non-empty for a threshold ≤ 3)."""
    decl = [f"(declare-const X_{i} Real)" for i in range(3)] + [f"(declare-const Y_{j} Real)" for j in range(2)]
    box = lambda hi: " ".join(f"(>= X_{i} 0) (<= X_{i} {hi})" for i in range(3))  # noqa: E731
    path.write_text("\n".join(decl) + f"\n(assert (or (and {box(0.1)} (>= Y_0 1)) "
                                      f"(and {box(1)} (>= Y_0 {threshold}))))\n")
    return path


def test_unsat_record_matches_the_text_output(capsys, tmp_path):
    out_file = tmp_path / "result.txt"
    record = verify_json(capsys, DEFAULT_MODEL, ROBUST, "--result-file", out_file, "--seed", "7")
    code, text, _ = run(capsys, "verify", DEFAULT_MODEL, ROBUST, "--seed", "7")
    lines = text.strip().splitlines()
    assert lines[-1] == f"result: {record['result']}" == "result: unsat"
    assert record["notes"] == lines[:-2]  # the text's note lines, in order
    assert record["format"] == FORMAT
    assert (record["model"], record["spec"]) == (str(DEFAULT_MODEL), str(ROBUST))
    assert record["domain"] == "auto" and record["decided_by"] == "box"
    assert record["regions"] == [{"index": 0, "decided_by": "box", "notes": ["9/9 disjuncts refuted by box"]}]
    assert record["counterexample"] is None
    assert record["result_file"] == str(out_file) and out_file.read_text() == "unsat\n"
    assert record["options"] == {"attack": True, "seed": 7, "device": "cpu", "dtype": "float64",
                                 "domain_options": {}, "fidelity_check": True}
    t = record["time"]
    assert 0 < t["load"] <= t["total"] and t["verify"] == pytest.approx(t["total"] - t["load"])
    assert t["timeout"] is None


def test_sat_record_carries_a_counterexample_onnxruntime_confirms(capsys):
    record = verify_json(capsys, DEFAULT_MODEL, NOT_ROBUST, "--timeout", "60")
    assert record["result"] == "sat" and record["decided_by"] == ATTACK
    assert record["time"]["timeout"] == 60
    cex = record["counterexample"]
    region = read_vnnlib(NOT_ROBUST).regions[cex["region"]]
    x = np.array(cex["x"], dtype=np.float32)
    assert x.shape == (784,) and len(cex["y"]) == 10
    assert bool(region.contains(torch.as_tensor(x, dtype=torch.float64)[None])[0])
    import onnxruntime as ort

    session = ort.InferenceSession(str(DEFAULT_MODEL), providers=["CPUExecutionProvider"])
    y = session.run(None, {"image": x.reshape(1, 1, 28, 28)})[0].reshape(-1)
    assert np.array_equal(y, np.array(cex["y"], dtype=np.float32))  # the exact values, no rounding
    assert bool(region.is_unsafe(torch.as_tensor(y, dtype=torch.float64)[None])[0])
    assert record["regions"][cex["region"]]["decided_by"] == ATTACK


def test_sat_by_branch_and_bound_names_the_method_per_region(capsys, tmp_path):
    model, spec = tiny_model(tmp_path / "m.onnx"), two_region_spec(tmp_path / "p.vnnlib", 2.5)
    record = verify_json(capsys, model, spec, "--no-attack")
    assert record["result"] == "sat" and record["decided_by"] == "input-split"
    assert record["options"]["attack"] is False
    assert [r["decided_by"] for r in record["regions"]] == ["crown", "input-split"]  # region 0: the batched CROWN screen
    assert record["regions"][1]["notes"][-1].startswith("input-split branch-and-bound")
    cex = record["counterexample"]
    assert cex["region"] == 1 and cex["y"][0] >= 2.5 and all(0 <= v <= 1 for v in cex["x"])


def test_unknown_and_timeout_records_name_no_decider(capsys, tmp_path):
    model, spec = tiny_model(tmp_path / "m.onnx"), two_region_spec(tmp_path / "p.vnnlib", 2.5)
    record = verify_json(capsys, model, spec, "--no-attack", "--domain", "box")
    assert record["result"] == "unknown" and record["decided_by"] is None
    assert [r["decided_by"] for r in record["regions"]] == ["box", None]  # region 0 refuted, region 1 not
    record = verify_json(capsys, DEFAULT_MODEL, ROBUST, "--timeout", "1e-9")
    assert record["result"] == "timeout" and record["decided_by"] is None and record["counterexample"] is None
    assert record["time"]["timeout"] == 1e-9


def test_json_bad_input_is_one_error_line_and_no_json(capsys, tmp_path):
    for argv, words in (([DEFAULT_MODEL, tmp_path / "none.vnnlib"], ["none.vnnlib"]),
                        ([DEFAULT_MODEL, ROBUST, "--result-file", tmp_path / "no" / "r.txt"], ["--result-file"]),
                        ([DEFAULT_MODEL, ROBUST, "--timeout", "-1"], ["--timeout"])):
        code, out, err = run(capsys, "verify", *argv, "--json")
        assert_refused(code, out, err, *words)
        assert out == ""  # nothing a pipeline could mistake for a record


def json_blocks(text: str) -> list[dict]:
    return [json.loads(block) for block in re.findall(r"```json\n(.*?)\n```", text, re.S)]


def test_the_documented_schemas_are_the_code_constants_and_the_example_validates():
    blocks = json_blocks(DOC.read_text(encoding="utf-8"))
    assert VERIFY_SCHEMA in blocks and BOUNDS_SCHEMA in blocks
    examples = [b for b in blocks if b.get("format") == FORMAT]
    assert examples, "docs/outputs.md shows an example verify record"
    for example in examples:
        validate(example)


def test_the_schema_rejects_records_pipelines_could_not_trust(capsys):
    record = verify_json(capsys, DEFAULT_MODEL, ROBUST)
    for broken in ({**record, "result": "holds"}, {k: v for k, v in record.items() if k != "time"},
                   {**record, "extra": 1}, {**record, "time": {**record["time"], "load": -1}},
                   {**record, "counterexample": {"region": 0, "x": [], "y": [1.0]}}):
        with pytest.raises(jsonschema.ValidationError):
            validate(broken)


def test_bounds_json_keeps_its_shape_and_validates(capsys):
    code, out, _ = run(capsys, "bounds", DEFAULT_MODEL, ROBUST, "--json")
    assert code == 0 and len(out.splitlines()) == 1
    data = json.loads(out)
    validate(data, BOUNDS_SCHEMA)
    spec = read_vnnlib(ROBUST)
    assert len(data["lower"]) == len(data["upper"]) == len(spec.regions)
    assert all(len(lo) == len(hi) == 10 and all(a <= b for a, b in zip(lo, hi))
               for lo, hi in zip(data["lower"], data["upper"]))


# --- which stage decided: read from the notes ------------------------------------------

@pytest.mark.parametrize("status, notes, cex_region, regions, overall", [
    ("unsat", ["region 0: 3/3 disjuncts refuted by box"], None, ["box"], "box"),
    ("unsat", ["region 0: 2/3 disjuncts refuted by box", "region 0: 3/3 disjuncts refuted by crown"], None,
     ["crown"], "crown"),
    ("unsat", ["region 0: 3/3 disjuncts refuted by box", "region 1: 0/3 disjuncts refuted by box",
               "region 1: 1/3 disjuncts refuted by alpha-crown",
               "region 1: relu-split branch-and-bound bounded 12 subdomains (depth ≤ 3, frontier ≤ 4)"],
     None, ["box", "relu-split"], "box+relu-split"),
    ("unsat", ["region 0: 1/2 disjuncts refuted by alpha-crown", "region 0: MILP with 4 binary ReLUs on 1 disjuncts"],
     None, ["milp"], "milp"),
    ("unknown", ["region 0: 3/3 disjuncts refuted by box",
                 "region 1: activation-split branch-and-bound bounded 9 subdomains (depth ≤ 2, frontier ≤ 3)"],
     None, ["box", None], None),
    ("unknown", ["region 0: 0/1 disjuncts refuted by crown", "region 0: no complete method applies; undecided"],
     None, [None], None),
    ("timeout", ["region 0: 0/1 disjuncts refuted by box"], None, [None], None),
    ("sat", ["counterexample in region 1"], 1, [None, ATTACK], ATTACK),
    ("sat", ["region 0: 0/1 disjuncts refuted by box", "region 0: input-split branch-and-bound bounded 5 boxes",
             "counterexample in region 0"], 0, ["input-split"], "input-split"),
])
def test_region_outcomes_name_the_decider(status, notes, cex_region, regions, overall):
    outcomes, general = region_outcomes(status, notes, len(regions), cex_region)
    assert [o.decided_by for o in outcomes] == regions
    assert overall_decider(status, outcomes) == overall
    assert general == [n for n in notes if not n.startswith("region ")]
    assert sum(len(o.notes) for o in outcomes) + len(general) == len(notes)


def test_a_note_about_a_region_the_spec_lacks_is_an_error():
    with pytest.raises(ValueError, match="region 2"):
        region_outcomes("unsat", ["region 2: 1/1 disjuncts refuted by box"], 2)


# --- clean output ------------------------------------------------------------------------

def test_library_warnings_are_hidden_unless_asked_for(capsys, monkeypatch):
    seen: list[int] = []

    def noisy(args):
        with warnings.catch_warnings(record=True) as caught:
            warnings.warn("a library's UserWarning", UserWarning)
        seen.append(len(caught))
        return 0

    monkeypatch.setattr(cli, "cmd_ops", noisy)
    monkeypatch.setattr(cli.sys, "warnoptions", [])
    before = list(warnings.filters)
    assert cli.main(["ops"]) == 0
    assert warnings.filters == before  # the caller's filters are restored
    assert cli.main(["--debug", "ops"]) == 0
    monkeypatch.setattr(cli.sys, "warnoptions", ["default"])  # python -W default / PYTHONWARNINGS
    assert cli.main(["ops"]) == 0
    assert seen == [0, 1, 1]
    assert "UserWarning" not in capsys.readouterr().err
