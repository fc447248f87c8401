"""Every small input of ``tests/cases`` (copied from ``../shared/cases``) gets its right answer.

Each file stands for a class of fault (issue 11, ``tests/cases/README.md``); the classes
themselves are tested in the validation and fuzz suites. Here the files are run end to
end through the command line, as a user would: a verdict (exit 0, ``result:`` last) where
the README names one, otherwise exit 2 with exactly one ``error:`` line and no verdict.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from verifier.cli import main

CASES = Path(__file__).resolve().parent / "cases"
MNIST = Path(__file__).resolve().parent.parent / "models" / "mnist_small.onnx"
SMALL = CASES / "models" / "small5x3.onnx"
FIELD = CASES / "field"


def run(capsys, *argv):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def verdict(capsys, model, spec, *extra) -> str:
    code, out, err = run(capsys, "verify", model, spec, "--timeout", "120", *extra)
    assert code == 0, (code, out, err)
    last = out.strip().splitlines()[-1]
    assert last.startswith("result: "), out
    return last.split()[-1]


def refused(capsys, model, spec, *words) -> str:
    code, out, err = run(capsys, "verify", model, spec, "--timeout", "60")
    assert code == 2, (code, out, err)
    assert "result:" not in out
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("model, spec, words", [
    (SMALL, "s_lower_gt_upper.vnnlib", ["X_"]),
    (SMALL, "s_nan_input_bound2.vnnlib", [":"]),
    (SMALL, "s_nan_output.vnnlib", [":"]),
    (SMALL, "s_nan_coef.vnnlib", [":"]),
    (MNIST, "m_lower_gt_upper.vnnlib", ["X_"]),
    (MNIST, "m_nan_bound.vnnlib", ["NaN"]),
])
def test_bad_specs_are_refused(capsys, model, spec, words):
    refused(capsys, model, CASES / "spec" / spec, *words)


def test_good_spec_control_gets_a_verdict(capsys):
    assert verdict(capsys, SMALL, CASES / "spec" / "s_good.vnnlib") in ("sat", "unsat")


@pytest.mark.parametrize("model, words", [
    ("folded_inf.onnx", ["finite"]),
    ("opset99.onnx", ["99"]),
    ("irversion99.onnx", ["99"]),
])
def test_bad_models_are_refused(capsys, model, words):
    refused(capsys, CASES / "models" / model, CASES / "spec" / "s_good.vnnlib", *words)


def test_float16_model_verifies_like_its_float32_twin(capsys):
    spec = CASES / "spec" / "s_good.vnnlib"
    assert verdict(capsys, CASES / "models" / "small5x3_f16.onnx", spec) == verdict(capsys, SMALL, spec)


@pytest.mark.parametrize("case, model, spec, expected", [
    ("case04_matmul_3d_batched", "model_a.onnx", "spec_a_sat.vnnlib", "sat"),
    ("case04_matmul_3d_batched", "model_a.onnx", "spec_a_unsat.vnnlib", "unsat"),
    ("case04_matmul_3d_batched", "model_b.onnx", "spec_b_unsat.vnnlib", "unsat"),
    ("case08_neg_relu_strict_ineq", "model.onnx", "spec_ge0.vnnlib", "sat"),
    ("case08_neg_relu_strict_ineq", "model.onnx", "spec_gt0.vnnlib", "unsat"),
    ("case08_neg_relu_strict_ineq", "model.onnx", "spec_leL.vnnlib", "unsat"),
    ("case09_malformed_vnnlib", "model.onnx", "ok_contradiction.vnnlib", "unsat"),
    ("case13_narrow_box_float32_cex", "model.onnx", "spec.vnnlib", "sat"),
    ("case13_narrow_box_float32_cex", "model.onnx", "spec_wideX1_control.vnnlib", "sat"),
    ("case15_clip_optional_inputs", "model_a.onnx", "spec_a_sat.vnnlib", "sat"),
    ("case15_clip_optional_inputs", "model_b.onnx", "spec_b_unsat.vnnlib", "unsat"),
])
def test_field_cases_get_their_verdict(capsys, tmp_path, case, model, spec, expected):
    result_file = tmp_path / "result.txt"
    got = verdict(capsys, FIELD / case / model, FIELD / case / spec, "--result-file", result_file)
    assert got == expected
    assert result_file.read_text().splitlines()[0] == expected


@pytest.mark.parametrize("spec", sorted(p.name for p in (FIELD / "case09_malformed_vnnlib").glob("bad_*.vnnlib")))
def test_malformed_vnnlib_refused_with_its_line(capsys, spec):
    line = refused(capsys, FIELD / "case09_malformed_vnnlib" / "model.onnx", FIELD / "case09_malformed_vnnlib" / spec)
    assert spec in line  # the file (and, for syntax faults, its line: file:line)
