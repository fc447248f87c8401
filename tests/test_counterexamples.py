"""Counterexamples are accepted only as the spec is written (issue 11, classes 2 and 3).

- strict comparisons: ``(assert (> Y_0 0))`` is never answered ``sat`` with ``Y_0 = −0.0``;
  a strict row ``A y < b`` is refuted when ``lb(A y) ≥ b`` (case08: ``−ReLU ≤ 0``);
- precision: a box narrower than float32 spacing (case13) is answered ``sat`` with a float64
  point confirmed on the float64 copy of the model; a wider box with a float32 point;
- splitting stops at float resolution: an undecidable box at float resolution is ``unknown``,
  never an endless loop;
- result files are written atomically.

Data: ``tests/cases/field`` (right answers in ``tests/cases/README.md``).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch

import verifier
from verifier.attack import confirm, float64_session
from verifier.counterexample import write_result
from verifier.deadline import Deadline
from verifier.complete.input_split import BaBStats, input_split_bab
from verifier.fidelity import run_onnxruntime
from verifier.spec import read_vnnlib
from verifier.spec.model import Conjunction, InputRegion, Spec, refuted_rows
from verifier.verify import verify

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CASES = Path(__file__).resolve().parent / "cases" / "field"
CASE08 = CASES / "case08_neg_relu_strict_ineq"
CASE13 = CASES / "case13_narrow_box_float32_cex"
F64 = torch.float64
METHODS = ("auto", "input-split", "relu-split", "milp")


def _strict(spec: Spec) -> Spec:
    """The same spec with every output row strict (what the reader records for ``<``/``>``)."""
    for region in spec.regions:
        for conj in region.disjuncts:
            conj.strict = torch.ones(conj.A.shape[0], dtype=torch.bool)
    return spec


def _one_region(lo, hi, A, b, strict=None, lower_strict=None, upper_strict=None) -> Spec:
    region = InputRegion(torch.as_tensor(lo, dtype=F64), torch.as_tensor(hi, dtype=F64),
                         [Conjunction(torch.as_tensor(A, dtype=F64), torch.as_tensor(b, dtype=F64),
                                      None if strict is None else torch.as_tensor(strict))],
                         lower_strict, upper_strict)
    return Spec([region], len(lo), len(A[0]), "test")


@pytest.fixture(scope="module")
def case08():
    return verifier.load(CASE08 / "model.onnx")


@pytest.fixture(scope="module")
def case13():
    return verifier.load(CASE13 / "model.onnx")


# --- the refutation rule ------------------------------------------------------------------
def test_strict_rows_are_refuted_at_equality_closed_rows_need_the_margin():
    b = torch.tensor([0.0, 0.0, 1.0], dtype=F64)
    lb = torch.tensor([0.0, 0.0, 1.0 + 1e-9], dtype=F64)
    assert refuted_rows(lb, b).tolist() == [False, False, False]
    strict = torch.tensor([True, False, True])
    assert refuted_rows(lb, b, strict).tolist() == [True, False, True]
    # −0.0 counts as reaching 0; just below b does not
    assert refuted_rows(torch.tensor([-0.0, -1e-300], dtype=F64), torch.zeros(2, dtype=F64),
                        torch.tensor([True, True])).tolist() == [True, False]
    assert refuted_rows(lb + 1.0, b).tolist() == [True, True, True]


def test_nan_bounds_never_refute():
    b = torch.zeros(2, dtype=F64)
    nan = torch.full((3, 2), float("nan"), dtype=F64)
    assert not refuted_rows(nan, b).any()
    assert not refuted_rows(nan, b, torch.tensor([True, False])).any()


# --- case08: strictness -------------------------------------------------------------------
@pytest.mark.parametrize("domain", METHODS)
def test_case08_strict_and_closed(case08, domain):
    ge0 = read_vnnlib(CASE08 / "spec_ge0.vnnlib")
    result = verify(case08, ge0, domain=domain, timeout=30)
    assert result.status == "sat", result.notes
    assert float(result.counterexample.y[0]) >= 0.0  # −0.0 ≥ 0 holds: a genuine closed counterexample

    gt0 = _strict(read_vnnlib(CASE08 / "spec_gt0.vnnlib"))
    result = verify(case08, gt0, domain=domain, timeout=30)
    assert result.status == "unsat", (result.status, result.notes)

    result = verify(case08, read_vnnlib(CASE08 / "spec_leL.vnnlib"), domain=domain, timeout=30)
    assert result.status == "unsat", (result.status, result.notes)


def test_case08_confirm_rejects_negative_zero_for_a_strict_row(case08):
    """The attack's point (output −0.0) satisfies ``Y_0 ≥ 0`` but not ``Y_0 > 0``."""
    x = torch.tensor([[-0.5923700332641602]], dtype=F64)
    closed = read_vnnlib(CASE08 / "spec_ge0.vnnlib").regions[0]
    hit = confirm(case08, closed, x)
    assert hit is not None and float(hit.y[0]) == 0.0
    strict = _strict(read_vnnlib(CASE08 / "spec_gt0.vnnlib")).regions[0]
    assert confirm(case08, strict, x) is None


def test_case08_files_end_to_end(case08):
    """Once the VNN-LIB reader records ``>`` as strict, the files themselves give the right answers."""
    gt0 = read_vnnlib(CASE08 / "spec_gt0.vnnlib")
    if gt0.regions[0].disjuncts[0].strict is None:
        pytest.skip("the VNN-LIB reader does not record strict comparisons yet")
    assert verify(case08, gt0, timeout=30).status == "unsat"
    assert verify(case08, read_vnnlib(CASE08 / "spec_ge0.vnnlib"), timeout=30).status == "sat"


def test_strict_input_sides_are_open(case08):
    """``X_0 > −0.5`` keeps the counterexample off the box's open side."""
    A, b = [[-1.0]], [0.0]  # Y_0 ≥ 0: −ReLU(·) = 0 on about half the box
    lo, hi = [-1.0], [-0.5]
    spec = _one_region(lo, hi, A, b, upper_strict=torch.tensor([True]))
    result = verify(case08, spec, timeout=30)
    if result.status == "sat":
        assert float(result.counterexample.x[0]) < -0.5
    hit = confirm(case08, spec.regions[0], torch.tensor([[-0.5]], dtype=F64))
    assert hit is None or float(hit.x[0]) < -0.5


# --- case13: precision ----------------------------------------------------------------------
@pytest.mark.parametrize("domain", METHODS)
@pytest.mark.parametrize("attack", [True, False])
def test_case13_narrow_box_is_sat_in_float64(case13, domain, attack):
    spec = read_vnnlib(CASE13 / "spec.vnnlib")
    result = verify(case13, spec, domain=domain, timeout=60, attack=attack)
    assert result.status == "sat", (result.status, result.notes)
    cex = result.counterexample
    assert cex.x.dtype == np.float64  # no float32 value lies in [0.1, 0.100000001]
    region = spec.regions[0]
    x = torch.as_tensor(cex.x.reshape(1, -1))
    assert bool(region.contains(x)[0])
    sess = float64_session(case13)
    y = sess.run(None, {sess.get_inputs()[0].name: cex.x.reshape(1, 2)})[0].reshape(-1)
    np.testing.assert_array_equal(y, cex.y)
    assert bool(region.is_unsafe(torch.as_tensor(y)[None])[0])


def test_case13_control_is_sat_in_float32(case13):
    spec = read_vnnlib(CASE13 / "spec_wideX1_control.vnnlib")
    result = verify(case13, spec, timeout=60)
    assert result.status == "sat"
    cex = result.counterexample
    assert cex.x.dtype == np.float32
    assert bool(spec.regions[0].contains(torch.as_tensor(cex.x.astype(np.float64))[None])[0])
    y = run_onnxruntime(case13.graph, cex.x.reshape(1, 1, 2)).reshape(-1)
    np.testing.assert_array_equal(y, cex.y)


def test_float32_point_used_when_the_box_has_one(case13):
    """X_1 = 0.1 is no float32; the box [0.1, 0.2] holds float32 values, so the rounded-in
    point (0.1f = 0.10000000149…) is what runs and is reported."""
    spec = read_vnnlib(CASE13 / "spec_wideX1_control.vnnlib")
    hit = confirm(case13, spec.regions[0], torch.tensor([[0.0073524, 0.1]], dtype=F64))
    assert hit is not None and hit.x.dtype == np.float32
    assert float(hit.x[1]) >= 0.1


# --- float resolution ---------------------------------------------------------------------
def test_splitting_stops_at_float_resolution(case08):
    """A box two float64 values wide around the float32 point 0.75, with the strict row
    ``Y_0 < f(0.75)`` (onnxruntime's float32 value): float64 bounds cannot refute it (here
    they come out just below) and no point of the box is a counterexample; the answer is
    ``unknown`` (``unsat`` if the bounds happen to reach ``b``), at once, never a loop."""
    x0 = 0.75
    y = float(run_onnxruntime(case08.graph, np.array([[[x0]]], np.float32)).reshape(-1)[0])
    for hi in (x0, float(np.nextafter(x0, 1.0))):
        spec = _one_region([x0], [hi], [[1.0]], [y], strict=[True])
        stats = BaBStats()
        status, cex = input_split_bab(case08, spec.regions[0], Deadline(20), stats=stats)
        assert cex is None
        assert status == "unknown" and stats.exhausted == 1 or status == "unsat"
        start = time.monotonic()
        result = verify(case08, spec, domain="input-split", timeout=20)
        assert result.status in ("unknown", "unsat")
        assert time.monotonic() - start < 10


def test_write_result_is_atomic(tmp_path, case13):
    spec = read_vnnlib(CASE13 / "spec.vnnlib")
    result = verify(case13, spec, timeout=30)
    path = tmp_path / "out.txt"
    path.write_text("stale\n")
    write_result(path, "sat", result.counterexample)
    text = path.read_text()
    assert text.startswith("sat\n(") and text.endswith(")\n")
    values = dict(line.strip(" ()").split() for line in text.splitlines()[1:])
    x = torch.tensor([[float(values["X_0"]), float(values["X_1"])]], dtype=F64)
    assert bool(spec.regions[0].contains(x)[0])  # written with repr: the exact float64 point
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]  # no temporary left behind


def test_float16_model_counterexample_in_float16():
    """A float16 model is searched in float32 torch and confirmed by onnxruntime in float16: the
    reported point is float16 and lies in the box."""
    from verifier.errors import VerifierInputError

    path = Path(__file__).resolve().parent / "cases" / "models" / "small5x3_f16.onnx"
    try:
        model = verifier.load(path, check=False)
    except VerifierInputError as exc:
        pytest.skip(f"float16 models not loaded: {exc}")
    x = torch.rand(2000, 5, generator=torch.Generator().manual_seed(0), dtype=F64) * 2 - 1
    with torch.no_grad():
        top = float(model(x.float())[:, 0].max())
    spec = _one_region([-1.0] * 5, [1.0] * 5, [[-1.0, 0.0, 0.0]], [-(top - 0.05)])  # Y_0 ≥ top − 0.05
    result = verify(model, spec, timeout=30)
    assert result.status == "sat"
    cex = result.counterexample
    assert cex.x.dtype == np.float16
    assert bool(spec.regions[0].contains(torch.as_tensor(cex.x.astype(np.float64))[None])[0])
    assert bool(spec.regions[0].is_unsafe(torch.as_tensor(cex.y.astype(np.float64))[None])[0])
