"""Float overflow over the spec's box is refused, never answered (issue: fresh-eyes C).

The verifier bounds the model's real-arithmetic function; onnxruntime runs it in float32
(or float16). Where a value can leave the type's finite range over the box, the two part
(``3e38·0.95 + 3e38·0.95`` is ``inf`` in float32, 5.7e38 in real arithmetic), so an
``unsat`` proven in real arithmetic can be a wrong verdict for the model as it runs. Such
boxes are refused (exit 2, one ``error:`` line naming the node), on every region, whether or
not the fidelity check runs; a model whose values stay in range is not affected."""

from __future__ import annotations

import numpy as np
import onnx.helper as oh
import pytest
import torch

import verifier
from verifier.cli import main
from verifier.errors import FidelityError
from verifier.fidelity import check_fidelity, overflow_risk

from onnx_builders import DOUBLE, make_model, save_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

HEADER = "".join(f"(declare-const X_{i} Real)\n" for i in range(2)) + \
    "".join(f"(declare-const Y_{j} Real)\n" for j in range(2))


def _gemm_relu(tmp_path, weight, elem_type=None):
    weight = np.asarray(weight)
    kwargs = {} if elem_type is None else {"elem_type": elem_type}
    model = make_model([oh.make_node("Gemm", ["x", "W", "B"], ["h"]), oh.make_node("Relu", ["h"], ["y"])],
                       [1, weight.shape[0]], "y", {"W": weight, "B": np.zeros(weight.shape[1], weight.dtype)},
                       **kwargs)
    return str(save_model(model, tmp_path, "overflow"))


def _spec(tmp_path, body, name="spec.vnnlib"):
    path = tmp_path / name
    path.write_text(HEADER + body)
    return str(path)


BOX = "(assert (>= X_0 0.9))\n(assert (<= X_0 1))\n(assert (>= X_1 0.9))\n(assert (<= X_1 1))\n"
HUGE = np.full((2, 2), 3e38, np.float32)


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_refused(capsys, *argv):
    code, out, err = run(capsys, *argv)
    lines = err.strip().splitlines()
    assert code == 2, (code, out, err)
    assert "result:" not in out
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "'h'" in lines[0] and "float32" in lines[0] and "overflow" in lines[0], lines[0]


@pytest.mark.parametrize("extra", [(), ("--no-fidelity-check",), ("--domain", "crown"), ("--domain", "milp")])
def test_unsat_in_real_arithmetic_but_inf_in_float32_is_refused(tmp_path, capsys, extra):
    """The reproducer: Y_0 ≥ 7e38 never holds in real arithmetic (Y_0 ≤ 6e38) but onnxruntime
    gives Y_0 = inf on the whole box. Before the fix: ``result: unsat``."""
    model = _gemm_relu(tmp_path, HUGE)
    spec = _spec(tmp_path, BOX + "(assert (>= Y_0 7e38))\n")
    assert_refused(capsys, "verify", model, spec, "--timeout", "60", *extra)


def test_every_region_is_checked_not_only_the_first(tmp_path, capsys):
    """The fidelity check samples the first region only; a later region whose box overflows
    is refused too (here the first box stays far from overflow)."""
    weight = np.full((2, 2), 1e37, np.float32)  # 2e37 at most on [0,1]²; 2e38 on [9,10]²
    model = _gemm_relu(tmp_path, weight)
    body = ("(assert (or (and (>= X_0 0) (<= X_0 1) (>= X_1 0) (<= X_1 1))\n"
            "            (and (>= X_0 9) (<= X_0 10) (>= X_1 9) (<= X_1 10))))\n"
            "(assert (>= Y_0 3e38))\n")
    spec = _spec(tmp_path, body)
    assert_refused(capsys, "verify", model, spec, "--timeout", "60")


def test_cancelling_partial_sums_that_overflow_are_refused(tmp_path):
    """``2e38·x_0 + 2e38·x_1 − 2e38·x_2 − 2e38·x_3`` stays near 0 in real arithmetic, but its
    partial sums reach 4e38: float32 can meet ``inf`` on the way (the output bound alone would
    not show it)."""
    weight = np.array([[2e38], [2e38], [-2e38], [-2e38]], np.float32)
    model = verifier.load(_gemm_relu(tmp_path, weight), check=False)
    lo, hi = torch.full((1, 4), 0.9, dtype=torch.float64), torch.ones(1, 4, dtype=torch.float64)
    risk = overflow_risk(model.graph, lo, hi)
    assert risk is not None and "partial sums" in risk
    with pytest.raises(FidelityError):
        check_fidelity(model.graph, lo, hi)


def test_values_in_range_are_not_refused(tmp_path, capsys):
    """The same net over a box where nothing comes near float32's range verifies as before."""
    weight = np.full((2, 2), 1e30, np.float32)
    model = _gemm_relu(tmp_path, weight)
    spec = _spec(tmp_path, BOX + "(assert (>= Y_0 7e30))\n")
    code, out, err = run(capsys, "verify", model, spec, "--timeout", "60")
    assert code == 0 and out.strip().splitlines()[-1] == "result: unsat", (out, err)
    spec = _spec(tmp_path, BOX + "(assert (>= Y_0 1e30))\n", "sat.vnnlib")
    code, out, err = run(capsys, "verify", model, spec, "--timeout", "60")
    assert code == 0 and "result: sat" in out, (out, err)


def test_float64_models_are_checked_against_float64s_range(tmp_path, capsys):
    """float32's overflow is nothing in float64 (6e38 ≪ 9e307): not refused. Two layers of
    1e200 weights reach inf in float64 too; before, a property that holds in real arithmetic
    (``Y_0 ≤ −1`` on [0, 1]², where Y_0 ≥ 0) left ±inf bounds on every subdomain and the search
    without a timeout never ended: now refused, naming the node."""
    model = verifier.load(_gemm_relu(tmp_path, HUGE.astype(np.float64), DOUBLE), check=False)
    lo, hi = torch.full((1, 2), 0.9, dtype=torch.float64), torch.ones(1, 2, dtype=torch.float64)
    assert overflow_risk(model.graph, lo, hi) is None
    two = make_model([oh.make_node("MatMul", ["x", "W1"], ["h"]), oh.make_node("MatMul", ["h", "W2"], ["y"])],
                     [1, 2], "y", {"W1": np.full((2, 2), 1e200), "W2": np.full((2, 2), 1e200)}, elem_type=DOUBLE)
    path = str(save_model(two, tmp_path, "overflow64"))
    spec = _spec(tmp_path, "(assert (>= X_0 0))\n(assert (<= X_0 1))\n(assert (>= X_1 0))\n(assert (<= X_1 1))\n"
                           "(assert (<= Y_0 -1))\n", "holds.vnnlib")
    code, out, err = run(capsys, "verify", path, spec)  # no --timeout: it must answer at once
    lines = err.strip().splitlines()
    assert code == 2 and "result:" not in out and len(lines) == 1, (code, out, err)
    assert "'y'" in lines[0] and "float64" in lines[0] and "overflow" in lines[0], lines[0]


def test_check_without_a_box_warns_but_does_not_fail(tmp_path, capsys):
    """``verifier check`` samples the arbitrary box [−1, 1]: the risk is reported, the exit code
    still says whether the IR agrees with onnxruntime."""
    code, out, err = run(capsys, "check", _gemm_relu(tmp_path, HUGE))
    assert code == 0, err
    assert "warning:" in out and "overflow" in out


def test_average_pool_window_sums_that_overflow_are_refused(tmp_path):
    """GlobalAveragePool sums its window before dividing: 64 values near 1e37 sum past
    float32's range (onnxruntime gives inf) though their average is 1e37."""
    from verifier.fidelity import run_onnxruntime

    model = make_model([oh.make_node("GlobalAveragePool", ["x"], ["p"]), oh.make_node("Flatten", ["p"], ["y"])],
                       [1, 1, 8, 8], "y")
    model = verifier.load(str(save_model(model, tmp_path, "gap")), check=False)
    lo, hi = torch.full((1, 1, 8, 8), 9e36, dtype=torch.float64), torch.full((1, 1, 8, 8), 1e37, dtype=torch.float64)
    risk = overflow_risk(model.graph, lo, hi)
    assert risk is not None and "partial sums" in risk
    assert np.isinf(run_onnxruntime(model.graph, hi.numpy()[None])).all()  # the overflow is real
    small = overflow_risk(model.graph, lo / 1e6, hi / 1e6)
    assert small is None
