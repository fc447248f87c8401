"""``verify``'s text output shows the counterexample of a ``sat`` verdict, as peer verifiers
do: the input (listed, or summarised for large inputs), onnxruntime's outputs and the
disjunct of the unsafe set they satisfy, each row with its value; the values agree with
the VNN-COMP result file, and ``result:`` stays the last line."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from verifier.attack import Counterexample
from verifier.counterexample import describe_counterexample
from verifier.spec.model import Conjunction, InputRegion

from cli_helpers import run

ROOT = Path(__file__).resolve().parent.parent
MNIST = ROOT / "models" / "mnist_small.onnx"
SAT_SPEC = ROOT / "models" / "properties" / "mnist_5_eps0.3.vnnlib"
F64 = torch.float64


def result_values(path: Path) -> dict[str, float]:
    """``{"X_0": v, …, "Y_9": v}`` of a VNN-COMP ``sat`` result file."""
    text = path.read_text()
    assert text.startswith("sat\n")
    return {name: float(v) for name, v in re.findall(r"\((\w+_\d+) (\S+?)\)", text)}


def test_sat_verdict_prints_the_counterexample_that_the_result_file_holds(tmp_path, capsys):
    result_file = tmp_path / "r.txt"
    code, out, err = run(capsys, "verify", MNIST, SAT_SPEC, "--result-file", result_file, "--timeout", "120")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[-1] == "result: sat" and lines[-2].startswith("time: ")
    values = result_values(result_file)
    x = np.array([values[f"X_{i}"] for i in range(784)])
    (inputs,) = [line for line in lines if line.startswith("counterexample input: ")]
    low, high = (float(v) for v in re.search(r"in \[(\S+), (\S+)\]", inputs).groups())
    assert inputs.startswith("counterexample input: 784 values X_0..X_783")
    assert (low, high) == (float(f"{x.min():.6g}"), float(f"{x.max():.6g}"))
    (outputs,) = [line for line in lines if line.startswith("counterexample output (onnxruntime): ")]
    shown = {name: float(v) for name, v in re.findall(r"(Y_\d+) = (\S+?)(?:,|$)", outputs)}
    assert sorted(shown) == sorted(f"Y_{j}" for j in range(10))
    for name, v in shown.items():
        assert v == float(f"{values[name]:.9g}"), name
    (unsafe,) = [line for line in lines if line.startswith("unsafe outputs (disjunct ")]
    a, b, value = re.search(r"holds\): Y_(\d) - Y_(\d) = (\S+) >= 0$", unsafe).groups()
    assert b == "1"  # the label of image 5: the unsafe set is "some Y_j >= Y_1"
    assert float(value) >= 0
    assert float(value) == float(f"{values[f'Y_{a}'] - values['Y_1']:.9g}")


def test_unsat_verdict_prints_no_counterexample(capsys):
    cases = ROOT / "tests" / "cases"
    code, out, err = run(capsys, "verify", cases / "models" / "small5x3.onnx", cases / "spec" / "s_good.vnnlib")
    assert code == 0, err
    assert "counterexample" not in out and out.strip().splitlines()[-1] == "result: unsat"


def region_of(*disjuncts: Conjunction, n: int = 3) -> InputRegion:
    return InputRegion(torch.zeros(n, dtype=F64), torch.ones(n, dtype=F64), list(disjuncts))


def test_small_inputs_are_listed_and_the_first_satisfied_disjunct_is_shown():
    first = Conjunction(torch.tensor([[1.0, 0.0]], dtype=F64), torch.tensor([-5.0], dtype=F64))  # Y_0 <= -5: fails
    second = Conjunction(torch.tensor([[-2.0, 1.0], [0.0, 1.0]], dtype=F64), torch.tensor([0.5, 3.0], dtype=F64),
                         strict=torch.tensor([False, True]))
    cex = Counterexample(np.array([0.25, 1.0, 0.0], dtype=np.float32), np.array([1.5, 2.0], dtype=np.float32), 0)
    assert describe_counterexample(cex, region_of(first, second)) == [
        "counterexample input: X_0 = 0.25, X_1 = 1, X_2 = 0",
        "counterexample output (onnxruntime): Y_0 = 1.5, Y_1 = 2",
        "unsafe outputs (disjunct 1 of 2 holds): 2·Y_0 - Y_1 = 1 >= -0.5; Y_1 = 2 < 3",
    ]


def test_large_inputs_are_summarised_and_only_the_disjuncts_outputs_listed():
    n, m = 20, 12
    x = np.full(n, 0.5)
    x[3], x[7] = 0.0, 0.9  # one on a face of [0, 1], the farthest 0.5 from the centre
    y = np.arange(m, dtype=np.float64)
    row = torch.zeros(1, m, dtype=F64)
    row[0, 4], row[0, 11] = 1.0, -1.0  # Y_4 - Y_11 <= 0 holds (4 - 11 = -7)
    region = region_of(Conjunction(row, torch.zeros(1, dtype=F64)), n=n)
    lines = describe_counterexample(Counterexample(x, y, 0), region)
    assert lines[0].startswith("counterexample input: 20 values X_0..X_19 in [0, 0.9], at most 0.5 from the box "
                               "centre (L∞), 1 on a face of the box")
    assert lines[1] == "counterexample output (onnxruntime): Y_4 = 4, Y_11 = 11 (2 of 12 outputs)"
    assert lines[2] == "unsafe outputs (disjunct 0 of 1 holds): Y_4 - Y_11 = -7 <= 0"


def test_no_satisfied_disjunct_is_said_not_invented():
    region = region_of(Conjunction(torch.tensor([[1.0]], dtype=F64), torch.tensor([0.0], dtype=F64)))
    lines = describe_counterexample(Counterexample(np.zeros(3), np.array([1.0]), 0), region)
    assert lines[-1] == "unsafe outputs: no disjunct of the spec holds for these outputs in float64"


def test_a_spec_without_output_constraints_says_every_output_is_unsafe():
    """A VNN-LIB file with no output assertion reads as one disjunct ``0·y ≤ 0``: every
    output is unsafe, and the text says so instead of printing ``0 = 0 <= 0``."""
    region = region_of(Conjunction(torch.zeros(1, 12, dtype=F64), torch.zeros(1, dtype=F64)))
    lines = describe_counterexample(Counterexample(np.zeros(3), np.arange(12.0), 0), region)
    assert lines[1].endswith("Y_9 = 9 (first 10 of 12 outputs)")
    assert lines[-1] == "unsafe outputs (disjunct 0 of 1 holds): it constrains no output, so every output is unsafe"
