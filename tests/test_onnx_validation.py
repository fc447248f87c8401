"""The ONNX loader boundary (issue 11): every bad model is a ModelError naming the file and
the tensor or node; float16 models load and verify; batched MatMul and Clip with optional
bounds import exactly.

Shapes: per-sample shapes throughout (the IR's batch axis comes first in tensors).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnx.helper as oh
import onnx.numpy_helper as onh
import pytest
import torch

import verifier
from verifier.cli import main
from verifier.errors import FidelityError, ModelError, UnsupportedModelError, VerifierInputError
from verifier.fidelity import input_numpy_dtype, run_onnxruntime
from verifier.ir.onnx_validate import MAX_TENSOR_ELEMENTS, runtime_limits

from onnx_builders import FLOAT, GraphBuilder, Reference, make_model, save_model

CASES = Path(__file__).resolve().parent / "cases"
MODELS = CASES / "models"
FIELD = CASES / "field"
SMALL = MODELS / "small5x3.onnx"


@pytest.fixture(autouse=True)
def _single_thread(one_torch_thread):
    yield


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_cli_error(capsys, *argv, words=()):
    code, out, err = run_cli(capsys, *argv)
    lines = err.strip().splitlines()
    assert code == 2, err
    assert "result:" not in out
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def verdict(capsys, model, spec):
    code, out, err = run_cli(capsys, "verify", model, spec, "--timeout", "60")
    assert code == 0, err
    return out.strip().splitlines()[-1]


def small_proto() -> onnx.ModelProto:
    return onnx.load(str(SMALL))


def load_error(path) -> str:
    """The message of the ModelError that verifier.load raises for ``path``; no numpy warnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ModelError) as info:
            verifier.load(path)
    message = str(info.value)
    assert message and "\n" not in message
    return message


# --- versions --------------------------------------------------------------------------
def test_opset_and_ir_version_beyond_onnxruntime():
    max_ir, max_opset = runtime_limits()
    message = load_error(MODELS / "opset99.onnx")
    assert "opset 99" in message and str(max_opset) in message and "opset99.onnx" in message
    message = load_error(MODELS / "irversion99.onnx")
    assert "IR version 99" in message and str(max_ir) in message and "irversion99.onnx" in message


def test_runtime_limits_are_what_onnxruntime_accepts(tmp_path):
    max_ir, max_opset = runtime_limits()
    model = small_proto()
    model.ir_version = max_ir
    model.opset_import[0].version = 13
    verifier.load(save_model(model, tmp_path))  # the largest accepted version loads
    model.ir_version = 0
    assert "IR version 0" in load_error(save_model(model, tmp_path))


def test_version_cli(capsys):
    assert_cli_error(capsys, "check", MODELS / "opset99.onnx", words=("opset 99",))
    assert_cli_error(capsys, "verify", MODELS / "irversion99.onnx", CASES / "spec" / "s_good.vnnlib",
                     words=("IR version 99",))


# --- unreadable files --------------------------------------------------------------------
@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.5, 0.9, 0.99])
def test_truncated(tmp_path, fraction):
    data = SMALL.read_bytes()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: int(len(data) * fraction)])
    assert str(path) in load_error(path)


def test_empty_folder_missing_and_not_onnx(tmp_path):
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    assert "empty" in load_error(empty) and str(empty) in load_error(empty)
    assert "directory" in load_error(tmp_path)
    assert "not found" in load_error(tmp_path / "missing.onnx")
    text = tmp_path / "text.onnx"
    text.write_text("(declare-const X_0 Real)\n")
    assert str(text) in load_error(text)
    noise = tmp_path / "noise.onnx"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    assert str(noise) in load_error(noise)


def test_cli_corrupt_model(tmp_path, capsys):
    path = tmp_path / "cut.onnx"
    path.write_bytes(SMALL.read_bytes()[:40])
    assert_cli_error(capsys, "check", path, words=(str(path),))


# --- float16 and other input types -------------------------------------------------------
def test_float16_model_loads_and_agrees():
    model = verifier.load(MODELS / "small5x3_f16.onnx")
    graph = model.graph
    assert graph.graph["model_dtype"] == torch.float16 and graph.graph["ir_dtype"] == torch.float32
    assert model.fidelity.ok and model.fidelity.rtol == 1e-2
    assert input_numpy_dtype(graph) == np.float16
    x = np.random.default_rng(1).uniform(-1, 1, (6, *model.input_shape))
    y = run_onnxruntime(graph, x)
    assert y.dtype == np.float16 and y.shape == (6, *model.output_shape)
    ours = model(torch.as_tensor(x.astype(np.float16).astype(np.float32))).numpy()
    assert np.allclose(ours, y.reshape(6, -1).astype(np.float64), rtol=1e-2, atol=1e-2)
    lo, hi = -torch.ones(1, 5, dtype=torch.float64), torch.ones(1, 5, dtype=torch.float64)
    for domain in ("box", "crown"):
        lb, ub = verifier.compute_bounds(model, lo, hi, domain=domain)
        assert np.all(lb.numpy() - 1e-2 <= ours.min(0)) and np.all(ours.max(0) <= ub.numpy() + 1e-2)


def test_float16_model_verifies(capsys):
    assert verdict(capsys, MODELS / "small5x3_f16.onnx", CASES / "spec" / "s_good.vnnlib").startswith("result: ")


def _typed_model(tmp_path, elem_type) -> Path:
    x = oh.make_tensor_value_info("x", elem_type, [1, 3])
    y = oh.make_tensor_value_info("y", elem_type, [1, 3])
    graph = oh.make_graph([oh.make_node("Relu", ["x"], ["y"])], "t", [x], [y])
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 14)], ir_version=8)
    return save_model(model, tmp_path)


@pytest.mark.parametrize("elem", [onnx.TensorProto.INT64, onnx.TensorProto.INT32, onnx.TensorProto.BOOL,
                                  onnx.TensorProto.BFLOAT16, onnx.TensorProto.UINT8])
def test_unsupported_input_types(tmp_path, elem):
    message = load_error(_typed_model(tmp_path, elem))
    assert "'x'" in message and onnx.TensorProto.DataType.Name(elem) in message and "FLOAT16" in message


def test_double_model(tmp_path):
    model = verifier.load(_typed_model(tmp_path, onnx.TensorProto.DOUBLE))
    assert model.graph.graph["model_dtype"] == torch.float64 and model.fidelity.ok


# --- declared shapes ----------------------------------------------------------------------
@pytest.mark.parametrize("dims, word", [([1, 2**62], "4.61e+18"), ([1, 40000, 40000], "1.6e+09"),
                                        ([1, -3], "negative"), ([1, "n"], "no fixed size")])
def test_absurd_input_shapes(tmp_path, dims, word):
    g = GraphBuilder(np.random.default_rng(0), dims)
    model = g.model(g.op("Relu", g.x), check=False)
    message = load_error(save_model(model, tmp_path))
    assert "input 'x'" in message and word in message


def test_symbolic_batch_axis(tmp_path):
    g = GraphBuilder(np.random.default_rng(0), ("N", 4))
    model = verifier.load(save_model(g.model(g.op("Relu", g.x)), tmp_path))
    assert model.input_shape == (1, 4)
    assert MAX_TENSOR_ELEMENTS >= 10**8


# --- non-finite parameters (class 9) ------------------------------------------------------
def test_folded_inf_names_parameter_and_node(capsys):
    message = load_error(MODELS / "folded_inf.onnx")
    assert "'Wd'" in message and "'div'" in message and "NaN or infinite" in message
    assert not isinstance(ModelError(message), FidelityError)
    line = assert_cli_error(capsys, "check", MODELS / "folded_inf.onnx", words=("'Wd'",))
    assert "onnxruntime" not in line


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_initializer(tmp_path, value):
    g = GraphBuilder(np.random.default_rng(0), (1, 3))
    w = np.ones((3, 2), dtype=np.float32)
    w[1, 0] = value
    g.inits["W"] = w
    h = g.op("MatMul", g.x, "W")
    message = load_error(save_model(g.model(h), tmp_path))
    assert "initializer 'W'" in message and h + "_node" in message


def test_non_finite_constant_node_and_derived_parameter(tmp_path):
    g = GraphBuilder(np.random.default_rng(0), (1, 3))
    k = g.constant_node(np.array([1.0, np.inf, 0.0]))
    message = load_error(save_model(g.model(g.op("Add", g.x, k)), tmp_path))
    assert f"'{k}'" in message
    # BatchNormalization with a negative variance: the folded scale is NaN
    g = GraphBuilder(np.random.default_rng(0), (1, 2, 3, 3))
    y = g.op("BatchNormalization", g.x, g.const([1.0, 1.0]), g.const([0.0, 0.0]), g.const([0.0, 0.0]),
             g.const([1.0, -5.0]))
    message = load_error(save_model(g.model(y), tmp_path))
    assert "NaN or infinite" in message and y in message


def test_overflowing_fold(tmp_path):
    """A finite constant subgraph whose value overflows to inf (Exp of 1000)."""
    g = GraphBuilder(np.random.default_rng(0), (1, 3))
    big = g.op("Exp", g.const([1.0, 1000.0, 2.0]))
    message = load_error(save_model(g.model(g.op("Mul", g.x, big)), tmp_path))
    assert f"'{big}'" in message and "Exp" in message


# --- MatMul with a constant of rank ≥ 3 (field case 04) -----------------------------------
def test_case04_bounds_contain_exact_extremes():
    oracle = json.loads((FIELD / "case04_matmul_3d_batched" / "oracle.json").read_text())
    lo, hi = (torch.tensor(b, dtype=torch.float64) for b in oracle["boxes"][0])
    for stem in ("a", "b"):
        model = verifier.load(FIELD / "case04_matmul_3d_batched" / f"model_{stem}.onnx", lower=lo, upper=hi)
        assert model.fidelity.ok
        exact_min, exact_max = np.array(oracle[f"exact_min_{stem}"]), np.array(oracle[f"exact_max_{stem}"])
        for domain in ("box", "deepz", "crown"):
            lb, ub = verifier.compute_bounds(model, lo, hi, domain=domain)
            assert np.all(lb.numpy()[0] <= exact_min + 1e-9) and np.all(exact_max <= ub.numpy()[0] + 1e-9)


def test_case04_verdicts(capsys):
    case = FIELD / "case04_matmul_3d_batched"
    assert verdict(capsys, case / "model_a.onnx", case / "spec_a_sat.vnnlib") == "result: sat"
    assert verdict(capsys, case / "model_a.onnx", case / "spec_a_unsat.vnnlib") == "result: unsat"
    assert verdict(capsys, case / "model_b.onnx", case / "spec_b_unsat.vnnlib") == "result: unsat"


MATMUL_SHAPES = [  # (variable per-sample shape, constant shape, constant on the right)
    ((2, 1, 3), (2, 3, 4), True),
    ((1, 3), (2, 3, 4), True),
    ((3,), (2, 3, 4), True),
    ((3, 1, 2, 3), (2, 3, 2), True),
    ((2, 3, 4), (1, 4, 2), True),
    ((2, 3, 2), (2, 4, 3), False),
    ((3,), (2, 2, 4, 3), False),
    ((1, 3, 2), (3, 1, 4, 3), False),
]


def _check_against_onnxruntime(path, input_shape, seed=0, n=5):
    """The IR agrees with onnxruntime and box/CROWN bounds contain the samples."""
    model = verifier.load(path)
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (n, *input_shape)).astype(np.float32)
    ref = Reference(path, per_sample=True).run(x)
    ours = model(torch.as_tensor(x, dtype=torch.float64)).numpy()
    assert np.allclose(ours, ref, rtol=1e-5, atol=1e-5)
    lo, hi = torch.full((1, *input_shape), -1.0, dtype=torch.float64), torch.full((1, *input_shape), 1.0, dtype=torch.float64)
    for domain in ("box", "crown"):
        lb, ub = verifier.compute_bounds(model, lo, hi, domain=domain)
        assert np.all(lb.numpy() <= ref.min(0) + 1e-5) and np.all(ref.max(0) <= ub.numpy() + 1e-5)
    return model


@pytest.mark.parametrize("xshape, wshape, right", MATMUL_SHAPES)
def test_batched_matmul_matches_onnxruntime(tmp_path, xshape, wshape, right):
    g = GraphBuilder(np.random.default_rng(3), xshape)
    w = g.rand(*wshape)
    y = g.op("MatMul", g.x, w) if right else g.op("MatMul", w, g.x)
    model = _check_against_onnxruntime(save_model(g.model(g.op("Relu", y)), tmp_path), xshape)
    kinds = {d["kind"] for _, d in model.graph.nodes(data=True)}
    assert "linear" in kinds and all(d["params"].get("weight", torch.zeros(1, 1)).dim() <= 2
                                     for _, d in model.graph.nodes(data=True))


def test_batched_matmul_inner_mismatch_is_reported(tmp_path):
    g = GraphBuilder(np.random.default_rng(3), (2, 1, 3))
    y = g.op("MatMul", g.x, g.rand(2, 5, 4))
    with pytest.raises(ModelError):
        verifier.load(save_model(g.model(y, check=False), tmp_path))


# --- Clip with optional bounds (field case 15) ---------------------------------------------
def test_case15_verdicts(capsys):
    case = FIELD / "case15_clip_optional_inputs"
    assert verdict(capsys, case / "model_a.onnx", case / "spec_a_sat.vnnlib") == "result: sat"
    assert verdict(capsys, case / "model_b.onnx", case / "spec_b_unsat.vnnlib") == "result: unsat"


def test_case15_bounds_contain_exact_extremes():
    case = FIELD / "case15_clip_optional_inputs"
    oracle = json.loads((case / "oracle.json").read_text())
    lo, hi = (torch.tensor(b, dtype=torch.float64) for b in oracle["boxes"][0])
    model = verifier.load(case / "model_b.onnx", lower=lo, upper=hi)
    for domain in ("box", "deepz", "crown"):
        lb, ub = verifier.compute_bounds(model, lo, hi, domain=domain)
        assert np.all(lb.numpy()[0] <= np.array(oracle["b_exact_min"]) + 1e-9)
        assert np.all(np.array(oracle["b_exact_max"]) <= ub.numpy()[0] + 1e-9)


@pytest.mark.parametrize("lo, hi", [(None, 0.3), (-0.2, None), (-0.5, 0.4), (None, None), (0.5, -0.5)])
def test_clip_inputs(tmp_path, lo, hi):
    g = GraphBuilder(np.random.default_rng(4), (1, 6))
    h = g.op("Gemm", g.x, g.rand(6, 6))
    ins = [h, "" if lo is None else g.const(np.float32(lo)), "" if hi is None else g.const(np.float32(hi))]
    while ins[-1] == "":
        ins.pop()
    y = g.op("Gemm", g.op("Clip", *ins), g.rand(6, 3))
    _check_against_onnxruntime(save_model(g.model(y), tmp_path), (1, 6))


@pytest.mark.parametrize("attrs", [{"min": -0.2}, {"max": 0.1}, {"min": -0.3, "max": 0.6}, {}])
def test_clip_opset6_attributes(tmp_path, attrs):
    g = GraphBuilder(np.random.default_rng(5), (1, 4), opset=10)  # Clip-6 (attributes) up to opset 10
    y = g.op("Gemm", g.op("Clip", g.op("Gemm", g.x, g.rand(4, 4), g.rand(4)), **attrs), g.rand(4, 2), g.rand(2))
    _check_against_onnxruntime(save_model(g.model(y), tmp_path), (1, 4))


def test_clip_variable_bound_is_unsupported(tmp_path):
    g = GraphBuilder(np.random.default_rng(5), (1, 4))
    bound = g.op("Squeeze", g.op("MatMul", g.x, g.rand(4)), g.ints([0]))  # a variable scalar
    y = g.op("Clip", g.x, bound)
    with pytest.raises(UnsupportedModelError, match="Clip"):
        verifier.load(save_model(g.model(y, check=False), tmp_path))


def test_errors_are_input_errors():
    assert issubclass(ModelError, VerifierInputError) and issubclass(UnsupportedModelError, ModelError)


def test_messages_stay_on_one_line(tmp_path, capsys):
    """A tensor name holding a newline is escaped in the message."""
    g = GraphBuilder(np.random.default_rng(0), (1, 3))
    g.nodes.append(oh.make_node("Relu", ["x"], ["h"], name="bad\nname"))
    g.nodes.append(oh.make_node("Foo", ["h"], ["y"], name="evil\nnode"))
    path = save_model(g.model("y", check=False), tmp_path)
    message = load_error(path)
    assert "evil\\nnode" in message
    assert_cli_error(capsys, "check", path, words=("evil\\nnode",))


@pytest.mark.parametrize("op", ["ConstantOfShape", "Expand", "Tile", "Range"])
def test_folding_a_huge_constant_is_refused_before_allocating(tmp_path, capfd, op):
    g = GraphBuilder(np.random.default_rng(0), (1, 3))
    big = {"ConstantOfShape": lambda: g.op("ConstantOfShape", g.ints([2**40])),
           "Expand": lambda: g.op("Expand", g.const([1.0]), g.ints([2**20, 2**20])),
           "Tile": lambda: g.op("Tile", g.const([[1.0]]), g.ints([2**20, 2**20])),
           "Range": lambda: g.op("Range", g.const(np.float32(0)), g.const(np.float32(1e12)), g.const(np.float32(1)))}[op]()
    y = g.op("Add", g.x, g.op("ReduceSum", big, keepdims=1))
    path = save_model(g.model(y, check=False), tmp_path)
    message = load_error(path)
    assert op in message and "values" in message
    code = main(["check", str(path)])
    out, err = capfd.readouterr()
    assert code == 2 and len(err.strip().splitlines()) == 1, err  # nothing from onnxruntime's own log


def test_a_symlink_loop_or_a_pipe_as_model_is_named_as_such(tmp_path):
    """A symlink loop was reported as 'not found' and a pipe (``verify <(cat m.onnx) …``) as
    'empty' (its size is 0 and the probe read consumed a byte); a FIFO is never opened."""
    import os

    from verifier.errors import ModelError

    (tmp_path / "a.onnx").symlink_to(tmp_path / "b.onnx")
    (tmp_path / "b.onnx").symlink_to(tmp_path / "a.onnx")
    with pytest.raises(ModelError, match="symbolic links"):
        verifier.load(tmp_path / "a.onnx")
    os.mkfifo(tmp_path / "fifo.onnx")  # nothing writes to it: opening it would block
    with pytest.raises(ModelError, match="not a regular file"):
        verifier.load(tmp_path / "fifo.onnx")
