"""The VNN-LIB reader's input contract (issue 11, classes 1, 2, 4, 10): bad specs are a
SpecError naming file:line, never a verdict, a traceback or an empty spec; strict
comparisons are recorded; deep nesting parses; huge specs stop early."""

from __future__ import annotations

import gzip
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from verifier.cli import main
from verifier.errors import SpecError, VerifierInputError
from verifier.spec import linf_robustness_spec, parse_vnnlib, read_vnnlib
from verifier.spec import vnnlib_parser

CASES = Path(__file__).resolve().parent / "cases"
SPECS = CASES / "spec"
CASE09 = CASES / "field" / "case09_malformed_vnnlib"
CASE08 = CASES / "field" / "case08_neg_relu_strict_ineq"
SMALL = CASES / "models" / "small5x3.onnx"
MNIST = Path(__file__).resolve().parent.parent / "models" / "mnist_small.onnx"
LINE = re.compile(r"\.vnnlib:(\d+): ")

HEADER = "(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n"
BOX = "(assert (>= X_0 0))\n(assert (<= X_0 1))\n(assert (>= X_1 0))\n(assert (<= X_1 1))\n"  # lines 5-8


def parse(body: str, header: str = HEADER):
    return parse_vnnlib(header + body, "p.vnnlib")


def error(body: str, header: str = HEADER) -> str:
    with pytest.raises(SpecError) as info:
        parse(body, header)
    return str(info.value)


# --- the shared bad cases ------------------------------------------------------------------

BAD_SPECS = sorted(p.name for p in SPECS.glob("*.vnnlib") if p.name != "s_good.vnnlib")
BAD_CASE09 = sorted(p.name for p in CASE09.glob("bad_*.vnnlib") if p.name != "bad_too_many_outputs.vnnlib")


@pytest.mark.parametrize("name", BAD_SPECS)
def test_shared_bad_specs_are_errors_with_a_line(name):
    with pytest.raises(SpecError) as info:
        read_vnnlib(SPECS / name)
    message = str(info.value)
    m = LINE.search(message)
    assert m and name in message, message
    if "nan" in name:
        assert re.search("nan", message, re.I) and "not a finite number" in message
    if "lower_gt_upper" in name:
        assert "empty range" in message


@pytest.mark.parametrize("name", BAD_CASE09)
def test_case09_bad_files_are_errors_with_a_line(name):
    with pytest.raises(SpecError) as info:
        read_vnnlib(CASE09 / name)
    assert LINE.search(str(info.value)), str(info.value)


def test_case09_too_many_outputs_is_a_size_error_and_contradiction_parses():
    spec = read_vnnlib(CASE09 / "bad_too_many_outputs.vnnlib")
    with pytest.raises(SpecError, match=r"bad_too_many_outputs.vnnlib:4: declares 2 output variables \(Y_0 to Y_1\) "
                                        r"but the model has 1 output \(Y_0\)"):
        spec.check_model(2, 1)
    spec = read_vnnlib(CASE09 / "ok_contradiction.vnnlib")  # legal: unsat later
    (region,) = spec.regions
    (conj,) = region.disjuncts
    assert conj.A.tolist() == [[1.0], [-1.0]] and conj.b.tolist() == [0.0, -1.0]
    assert not bool(conj.holds(torch.tensor([[0.0], [1.0], [0.5]], dtype=torch.float64)).any())


def test_good_specs_parse_and_validate():
    for path in [SPECS / "s_good.vnnlib", *CASE08.glob("*.vnnlib"), *(CASES / "field").glob("case1*/*.vnnlib")]:
        spec = read_vnnlib(path)
        spec.validate()
        assert spec.regions


def cli(capsys, model, spec):
    code = main(["bounds", str(model), str(spec)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("model, spec", [
    (SMALL, SPECS / "s_lower_gt_upper.vnnlib"),
    (SMALL, SPECS / "s_nan_input_bound2.vnnlib"),
    (SMALL, SPECS / "s_nan_output.vnnlib"),
    (SMALL, SPECS / "s_nan_coef.vnnlib"),
    (MNIST, SPECS / "m_lower_gt_upper.vnnlib"),
    (MNIST, SPECS / "m_nan_bound.vnnlib"),
    *[(CASE09 / "model.onnx", CASE09 / name) for name in [*BAD_CASE09, "bad_too_many_outputs.vnnlib"]],
])
def test_cli_bad_spec_is_one_error_line(capsys, model, spec):
    code, out, err = cli(capsys, model, spec)
    lines = err.strip().splitlines()
    assert code == 2 and "result:" not in out and out.strip() == "", (code, out, err)
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in err, err


def test_cli_subprocess_exit_2_one_line():
    for spec in (SPECS / "s_lower_gt_upper.vnnlib", CASE09 / "bad_number_two_dots.vnnlib"):
        model = SMALL if spec.parent == SPECS else CASE09 / "model.onnx"
        run = subprocess.run([sys.executable, "-m", "verifier.cli", "bounds", str(model), str(spec)],
                             capture_output=True, text=True, timeout=120)
        lines = run.stderr.strip().splitlines()
        assert run.returncode == 2 and "result:" not in run.stdout, (run.returncode, run.stdout, run.stderr)
        assert len(lines) == 1 and lines[0].startswith("error:") and LINE.search(lines[0]), run.stderr


# --- class 1: empty and non-finite boxes, no empty spec ------------------------------------

def test_lower_above_upper_names_variable_and_both_lines():
    message = error("(assert (>= X_0 2))\n(assert (<= X_0 1))\n(assert (>= X_1 0))\n(assert (<= X_1 1))\n"
                    "(assert (>= Y_0 0))\n")
    assert "p.vnnlib:6:" in message and "X_0" in message and "line 5" in message and "empty range" in message


def test_lower_above_upper_inside_an_or_branch_is_an_error_not_a_dropped_disjunct():
    message = error(BOX + "(assert (or (and (>= X_1 0.5) (<= Y_0 0))\n"
                          "            (and (<= X_1 -1) (<= Y_1 0))))\n")
    assert "p.vnnlib:10:" in message and "X_1" in message and "empty range" in message
    # branch bound against a top-level bound
    message = error(BOX + "(assert (or (and (>= X_0 0.5) (<= Y_0 0))\n            (and (>= X_1 2) (<= Y_1 0))))\n")
    assert "p.vnnlib:10:" in message and "X_1" in message and "at line 8" in message


def test_strict_bound_at_a_point_is_empty():
    message = error("(assert (> X_0 1))\n(assert (<= X_0 1))\n(assert (>= X_1 0))\n(assert (<= X_1 1))\n")
    assert "X_0" in message and "(> X_0 1.0)" in message


@pytest.mark.parametrize("word", ["nan", "NaN", "inf", "-inf", "+Infinity", "infinity", "1e999", "-1e400"])
@pytest.mark.parametrize("where", ["(assert (<= X_0 {w}))", "(assert (<= Y_0 {w}))", "(assert (<= (* {w} Y_0) 1))",
                                   "(assert (or (and (<= X_0 {w}) (<= Y_0 0)) (and (<= Y_1 0))))"])
def test_non_finite_numbers_are_errors_with_line(word, where):
    message = error(BOX + where.format(w=word) + "\n")
    assert "p.vnnlib:9:" in message and word in message


def test_nan_bound_names_the_variable():
    assert "constraint on X_0" in error(BOX + "(assert (<= X_0 (+ nan 0)))\n")


def test_overflowing_arithmetic_is_an_error():
    assert "overflow" in error(BOX + "(assert (<= (* 1e300 1e300 Y_0) 1))\n")
    assert "overflow" in error(BOX + "(assert (<= (* 1e-300 X_0) 1e300))\n")


def test_missing_bound_is_an_error_and_spec_never_empty():
    assert "not bounded" in error("(assert (>= X_0 0))\n(assert (<= X_0 1))\n(assert (>= X_1 0))\n")
    assert "not bounded" in error("")
    spec = parse(BOX + "(assert (<= 1 0))\n")  # a false constant comparison: the row 0 <= -1
    assert spec.regions and spec.regions[0].disjuncts[0].b.tolist() == [-1.0]
    spec.validate()


# --- class 2: strictness ---------------------------------------------------------------

def test_strict_output_rows_are_recorded():
    spec = parse(BOX + "(assert (or (and (> Y_0 0) (<= Y_1 2)) (and (< Y_1 Y_0)) (and (= Y_0 1))))\n")
    (region,) = spec.regions
    assert [d.strict.tolist() for d in region.disjuncts] == [[True, False], [True], [False, False]]
    assert region.disjuncts[1].A.tolist() == [[-1.0, 1.0]] and region.disjuncts[1].b.tolist() == [0.0]
    y = torch.tensor([[0.0, 0.0], [1e-9, 0.0]], dtype=torch.float64)
    assert region.disjuncts[0].holds(y).tolist() == [False, True]


def test_strict_input_sides_come_from_the_tightest_bound():
    spec = parse("(assert (> X_0 0))\n(assert (>= X_0 -1))\n(assert (< X_0 1))\n(assert (<= X_0 1))\n"
                 "(assert (>= X_1 0))\n(assert (< X_1 2))\n(assert (<= X_1 1))\n(assert (<= Y_0 0))\n")
    (region,) = spec.regions
    assert region.lower.tolist() == [0.0, 0.0] and region.upper.tolist() == [1.0, 1.0]
    assert region.lower_strict.tolist() == [True, False]
    assert region.upper_strict.tolist() == [True, False]
    x = torch.tensor([[0.0, 0.5], [0.5, 1.0], [1.0, 0.5]], dtype=torch.float64)
    assert region.contains(x).tolist() == [False, True, False]


def test_strict_flags_are_part_of_the_grouping_key():
    spec = parse("(assert (or (and (>= X_0 0) (<= X_0 1) (>= X_1 0) (<= X_1 1) (<= Y_0 0))\n"
                 "            (and (>= X_0 0) (<= X_0 1) (>= X_1 0) (<= X_1 1) (<= Y_1 0))\n"
                 "            (and (> X_0 0) (<= X_0 1) (>= X_1 0) (<= X_1 1) (<= Y_1 0))))\n")
    assert [len(r.disjuncts) for r in spec.regions] == [2, 1]
    assert [r.lower_strict.tolist() for r in spec.regions] == [[False, False], [True, False]]


def test_case08_strict_spec_is_recorded():
    (region,) = read_vnnlib(CASE08 / "spec_gt0.vnnlib").regions
    assert region.disjuncts[0].strict.tolist() == [True]
    assert not bool(region.is_unsafe(torch.tensor([[-0.0], [0.0]], dtype=torch.float64)).any())


# --- class 4: numbers and nesting -------------------------------------------------------

@pytest.mark.parametrize("word, value", [
    ("1", 1.0), ("-1", -1.0), ("+2", 2.0), ("0.25", 0.25), ("-0.5", -0.5), ("1e-05", 1e-05),
    ("1.5E+3", 1500.0), ("-2.5e-3", -0.0025), ("5.", 5.0), (".5", 0.5), ("007", 7.0), ("1E2", 100.0),
])
def test_numbers_accepted(word, value):
    spec = parse(f"(assert (>= X_0 -10000))\n(assert (<= X_0 {word}))\n(assert (>= X_1 -10000))\n"
                 f"(assert (<= X_1 (+ 0 {word})))\n(assert (<= Y_0 {word}))\n")
    region = spec.regions[0]
    assert region.upper.tolist() == [value, value] and region.disjuncts[0].b.tolist() == [value]


@pytest.mark.parametrize("word", ["1.2.3", ".", "-", "+", "e5", "1e", "1e+", "1_000", "0x10", "#x10", "#b101",
                                  "1,5", "1/2", "--1", "1..2", "١", "½", "True", "0.5f", "X_", "Z_0"])
def test_numbers_rejected_with_line(word):
    for body in (f"(assert (<= X_0 {word}))\n", f"(assert (or (and (<= X_0 {word})) (and (<= Y_0 0))))\n",
                 f"(assert (<= Y_0 (+ 1 {word})))\n"):
        message = error(BOX + body)
        assert "p.vnnlib:9:" in message


def test_deep_and_nesting_parses():
    depth = 100_000
    text = HEADER + BOX + "(assert " + "(and " * depth + "(>= Y_0 1000)" + ")" * depth + ")\n"
    (region,) = parse_vnnlib(text, "deep.vnnlib").regions
    assert region.disjuncts[0].A.tolist() == [[-1.0, 0.0]] and region.disjuncts[0].b.tolist() == [-1000.0]


def test_deep_term_nesting_parses():
    depth = 100_000
    text = HEADER + BOX + "(assert (>= " + "(+ " * depth + "Y_0" + ")" * depth + " 1000))\n"
    (region,) = parse_vnnlib(text, "deep.vnnlib").regions
    assert region.disjuncts[0].A.tolist() == [[-1.0, 0.0]]


def test_deep_or_nesting_and_unbalanced_deep_text():
    depth = 20_000
    spec = parse(BOX + "(assert " + "(or (<= Y_1 0) " * depth + "(<= Y_0 0)" + ")" * depth + ")\n")
    assert len(spec.regions[0].disjuncts) == depth + 1
    message = error(BOX + "(assert " + "(and " * depth + "(>= Y_0 1)" + ")" * (depth - 1) + "\n")
    assert "never closed" in message


@pytest.mark.parametrize("body, words", [
    ("(assert (<= X_0 1)))\n", "unmatched"),
    ("(assert)\n", "exactly one formula"),
    ("(assert (<= Y_0 0) (<= Y_1 0))\n", "exactly one formula"),
    ("(assert ())\n", "empty"),
    ("(assert (and))\n", "at least one"),
    ("(assert (or))\n", "at least one"),
    ("(assert (<= Y_0))\n", "exactly two"),
    ("(assert (<= Y_0 1 2))\n", "exactly two"),
    ("(assert (<= (+) 1))\n", "needs arguments"),
    ("(assert (<= (/ Y_0 0) 1))\n", "division by zero"),
    ("(assert (<= (/ 1 Y_0) 1))\n", "not linear"),
    ("(assert true)\n", "expected a formula"),
    ("(assert (not (<= Y_0 0)))\n", "unsupported operator 'not'"),
    ("(assert (<= (abs Y_0) 0))\n", "unsupported term operator 'abs'"),
    ("(declare-fun Y_2 () Real)\n", "unsupported command"),
    ("(declare-const Y_2 Int)\n", "sort 'Int'"),
    ("(declare-const Z_0 Real)\n", "X_i (input) or Y_j"),
    ("(declare-const X_99999999999 Real)\n", "too large"),
    ("(assert (<= X_0 (- X_1 Y_0)))\n", "mixing"),
    ("stray\n", "outside parentheses"),
])
def test_malformed_structure_is_an_error_with_line(body, words):
    message = error(BOX + body)
    assert "p.vnnlib:9:" in message and words in message, message


def test_division_and_unary_minus_terms():
    spec = parse(BOX + "(assert (<= (/ (- Y_0) 4) (- 0.5)))\n")
    assert spec.regions[0].disjuncts[0].A.tolist() == [[-0.25, 0.0]]
    assert spec.regions[0].disjuncts[0].b.tolist() == [-0.5]


# --- class 10: huge specs ---------------------------------------------------------------

def acas_style(boxes: int, inputs: int, outputs: int = 3) -> str:
    lines = [f"(declare-const X_{i} Real)" for i in range(inputs)]
    lines += [f"(declare-const Y_{j} Real)" for j in range(outputs)]
    lines.append("(assert (or")
    for b in range(boxes):
        lines.append("  (and")
        for i in range(inputs):
            lines += [f"    (>= X_{i} {b + i / 10:.6f})", f"    (<= X_{i} {b + i / 10 + 0.5:.6f})"]
        lines += [f"    (<= Y_0 Y_{j})" for j in range(1, outputs)]
        lines.append("  )")
    lines.append("))")
    return "\n".join(lines) + "\n"


def test_acas_style_layout_keeps_every_box():
    spec = parse_vnnlib(acas_style(30, 7), "acas.vnnlib")
    assert len(spec.regions) == 30
    for b, region in enumerate(spec.regions):
        assert region.lower.tolist() == pytest.approx([b + i / 10 for i in range(7)])
        assert region.upper.tolist() == pytest.approx([b + i / 10 + 0.5 for i in range(7)])
        (conj,) = region.disjuncts
        assert conj.A.tolist() == [[1.0, -1.0, 0.0], [1.0, 0.0, -1.0]] and conj.b.tolist() == [0.0, 0.0]


def test_too_many_disjuncts_stops_while_reading(monkeypatch):
    monkeypatch.setattr(vnnlib_parser, "MAX_DISJUNCTS", 1000)
    lines = HEADER + BOX + "(assert (or\n" + "(and (<= Y_0 1))\n" * 5000 + "))\n"
    message = error_text(lines)
    assert "more than 1000 disjuncts" in message and "p.vnnlib:1010:" in message
    # the product of several asserts, and of an 'and' over 'or's
    ors = "(assert (or " + "(<= Y_0 1) " * 40 + "))\n"
    assert "more than 1000" in error_text(HEADER + BOX + ors + ors)
    assert "more than 1000" in error_text(HEADER + BOX + "(assert (and " + ors[8:-2] * 2 + "))\n")


def error_text(text: str) -> str:
    with pytest.raises(SpecError) as info:
        parse_vnnlib(text, "p.vnnlib")
    return str(info.value)


# --- reading files ------------------------------------------------------------------------

def test_read_vnnlib_file_errors(tmp_path):
    with pytest.raises(SpecError, match="not found"):
        read_vnnlib(tmp_path / "missing.vnnlib")
    with pytest.raises(SpecError, match="is a folder"):
        read_vnnlib(tmp_path)
    bad = tmp_path / "latin1.vnnlib"
    bad.write_bytes((HEADER + BOX + "; caf\xe9\n").encode("latin-1"))
    with pytest.raises(SpecError, match=r"latin1.vnnlib:9: .*not UTF-8"):
        read_vnnlib(bad)
    notgz = tmp_path / "plain.vnnlib.gz"
    notgz.write_text(HEADER + BOX)
    with pytest.raises(SpecError, match="plain.vnnlib.gz"):
        read_vnnlib(notgz)


def test_read_vnnlib_gz(tmp_path):
    path = tmp_path / "prop.vnnlib.gz"
    with gzip.open(path, "wt") as fh:
        fh.write(HEADER + BOX + "(assert (< Y_0 0))\n")
    (region,) = read_vnnlib(path).regions
    assert region.disjuncts[0].strict.tolist() == [True]
    broken = tmp_path / "broken.vnnlib.gz"
    broken.write_bytes(path.read_bytes()[:-12])
    with pytest.raises(SpecError, match="broken.vnnlib.gz"):
        read_vnnlib(broken)
    data = bytearray(gzip.compress((HEADER + BOX * 50).encode()))
    data[len(data) // 2: len(data) // 2 + 8] = b"\xff" * 8  # a corrupt deflate stream (zlib.error)
    broken.write_bytes(bytes(data))
    with pytest.raises(SpecError, match="broken.vnnlib.gz"):
        read_vnnlib(broken)


# --- the L-infinity spec ------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, words", [
    (dict(eps=float("nan")), "eps"), (dict(eps=float("inf")), "eps"), (dict(eps=-0.1), "eps"), (dict(eps="0.1"), "eps"),
    (dict(label=3), "label"), (dict(label=-1), "label"), (dict(label=1.5), "label"), (dict(label=True), "label"),
    (dict(num_classes=1, label=0), "num_classes"), (dict(num_classes=2.0), "num_classes"),
    (dict(x=torch.tensor([0.0, float("nan"), 1.0])), "non-finite"), (dict(x=torch.tensor([])), "empty"),
    (dict(clip=(1.0, 0.0)), "clip"), (dict(clip=(0.0, float("inf"))), "clip"),
])
def test_linf_arguments_are_validated(kwargs, words):
    args = dict(x=torch.tensor([0.0, 0.5, 1.0]), label=1, eps=0.1, num_classes=3)
    args.update(kwargs)
    with pytest.raises(SpecError, match=words):
        linf_robustness_spec(**args)
    assert issubclass(SpecError, VerifierInputError)


def test_linf_accepts_integer_like_labels():
    x = torch.tensor([0.0, 0.5, 1.0])
    for label in (1, torch.tensor(1), __import__("numpy").int64(1)):
        spec = linf_robustness_spec(x, label, 0.0, 3)
        assert len(spec.regions[0].disjuncts) == 2


def test_a_line_too_long_for_memory_is_refused_before_it_is_read(tmp_path, monkeypatch):
    """A multi-gigabyte file without a newline exhausted the machine's memory; each line is
    now read with a limit from the free memory (here made 32 MiB: lines up to 2 MiB)."""
    import verifier.resources
    from verifier.spec import read_vnnlib
    from verifier.errors import SpecError

    monkeypatch.setattr(verifier.resources, "available_bytes", lambda device: 32 << 20)
    path = tmp_path / "long.vnnlib"
    path.write_text("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (<= X_0 1))(assert (>= X_0 0))"
                    + "(assert (<= Y_0 1))" * 200_000 + "\n")
    with pytest.raises(SpecError, match=r"long\.vnnlib:3: a line longer than"):
        read_vnnlib(path)
    path.write_text("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (<= X_0 1))(assert (>= X_0 0))\n"
                    + "(assert (<= Y_0 1))\n" * 2000)  # as many characters in short lines: read
    assert len(read_vnnlib(path).regions) == 1
