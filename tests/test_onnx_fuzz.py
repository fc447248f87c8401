"""Fuzzing the ONNX loader (issue 11): mutated bytes and protos of small valid models.

Property: ``verifier.load`` either raises a :class:`VerifierInputError` with a one-line,
non-empty message, or returns a model whose IR agrees with onnxruntime (the fidelity
check at load, plus fresh random inputs here). Never another exception type, never a
numpy RuntimeWarning.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper as onh
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

import verifier
from verifier.errors import VerifierInputError
from verifier.fidelity import run_onnxruntime

from onnx_builders import GraphBuilder

CASES = Path(__file__).resolve().parent / "cases"
FUZZ = settings(max_examples=int(__import__("os").environ.get("ONNX_FUZZ_EXAMPLES", 40)), deadline=None,
                 suppress_health_check=[HealthCheck.too_slow], derandomize="ONNX_FUZZ_EXAMPLES" not in __import__("os").environ)


def _richer_model() -> onnx.ModelProto:
    """x (N, 2, 3) → batched MatMul → Relu → Reshape → Gemm → Clip → Div: the converters
    the boundary work touched, in one small model."""
    g = GraphBuilder(np.random.default_rng(7), ("N", 2, 3))
    h = g.op("Relu", g.op("MatMul", g.x, g.rand(2, 3, 4)))
    h = g.op("Reshape", h, g.ints([-1, 8]))
    h = g.op("Gemm", h, g.rand(8, 5), g.rand(5))
    h = g.op("Clip", h, g.const(np.float32(-0.5)), g.const(np.float32(0.7)))
    return g.model(g.op("Div", h, g.const(np.full(5, 2.0))))


BASES = {
    "small5x3": (CASES / "models" / "small5x3.onnx").read_bytes(),
    "small5x3_f16": (CASES / "models" / "small5x3_f16.onnx").read_bytes(),
    "richer": _richer_model().SerializeToString(),
}


@pytest.fixture(scope="module", autouse=True)
def _single_thread(one_torch_thread):
    yield


def check_load(data: bytes) -> None:
    """Write ``data`` to a file and assert the property of the module docstring."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "mutated.onnx"
        path.write_bytes(data)
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            try:
                model = verifier.load(path)
            except VerifierInputError as exc:
                message = str(exc)
                assert message.strip() and "\n" not in message, repr(message)
                return
            # loaded: the IR must agree with onnxruntime on fresh inputs too
            x = np.random.default_rng(0).uniform(-1, 1, (3, *model.input_shape))
            dtype = model.graph.graph["model_dtype"]
            xq = torch.as_tensor(x).to(dtype).to(torch.float64)
            ref = run_onnxruntime(model.graph, xq.numpy()).reshape(3, -1).astype(np.float64)
            ours = model(xq).numpy()
            tol = 2e-2 if dtype == torch.float16 else 1e-4
            scale = max(1.0, float(np.abs(ref).max())) if np.isfinite(ref).all() else 1.0
            assert np.allclose(ours, ref, rtol=tol, atol=tol * scale, equal_nan=True), (ours, ref)


base_names = st.sampled_from(sorted(BASES))


@FUZZ
@given(base=base_names, cut=st.floats(0.0, 1.0, exclude_max=True))
def test_truncation(base, cut):
    data = BASES[base]
    check_load(data[: int(len(data) * cut)])


@FUZZ
@given(base=base_names, flips=st.lists(st.tuples(st.floats(0.0, 1.0, exclude_max=True), st.integers(0, 255)),
                                       min_size=1, max_size=6))
def test_byte_flips(base, flips):
    data = bytearray(BASES[base])
    for where, value in flips:
        data[int(where * len(data))] = value
    check_load(bytes(data))


def _proto(base: str) -> onnx.ModelProto:
    model = onnx.ModelProto()
    model.ParseFromString(BASES[base])
    return model


@FUZZ
@given(base=base_names, ir=st.one_of(st.integers(-3, 20), st.integers(-2**63, 2**63 - 1)),
       opset=st.one_of(st.integers(-3, 40), st.integers(-2**63, 2**63 - 1)))
def test_versions(base, ir, opset):
    model = _proto(base)
    model.ir_version = ir
    model.opset_import[0].version = opset
    check_load(model.SerializeToString())


ELEM_TYPES = st.integers(0, 25)


@FUZZ
@given(base=base_names, elem=ELEM_TYPES, init_elem=ELEM_TYPES, which=st.integers(0, 10), target=st.sampled_from(["input", "initializer", "output"]))
def test_dtype_changes(base, elem, init_elem, which, target):
    model = _proto(base)
    if target == "input":
        model.graph.input[0].type.tensor_type.elem_type = elem
    elif target == "output":
        model.graph.output[0].type.tensor_type.elem_type = elem
    else:
        init = model.graph.initializer[which % len(model.graph.initializer)]
        init.data_type = init_elem
    check_load(model.SerializeToString())


DIMS = st.one_of(st.integers(-5, 6), st.sampled_from([2**31, 2**40, 2**62, 2**63 - 1, -(2**63)]),
                 st.text(alphabet="abN", min_size=1, max_size=2))


@FUZZ
@given(base=base_names, dims=st.lists(DIMS, min_size=0, max_size=5))
def test_declared_shapes(base, dims):
    model = _proto(base)
    shape = model.graph.input[0].type.tensor_type.shape
    del shape.dim[:]
    for d in dims:
        dim = shape.dim.add()
        if isinstance(d, str):
            dim.dim_param = d
        else:
            dim.dim_value = d
    check_load(model.SerializeToString())


@FUZZ
@given(base=base_names, which=st.integers(0, 10), where=st.floats(0.0, 1.0, exclude_max=True),
       value=st.sampled_from([np.nan, np.inf, -np.inf, 1e30, -1e38, 0.0]))
def test_parameter_values(base, which, where, value):
    model = _proto(base)
    floats = [t for t in model.graph.initializer if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)]
    init = floats[which % len(floats)]
    array = onh.to_array(init).copy()
    with np.errstate(over="ignore"):  # 1e38 overflows to inf in a float16 model: also a case
        array.reshape(-1)[int(where * array.size)] = value
    init.CopyFrom(onh.from_array(array.astype(array.dtype), init.name))
    check_load(model.SerializeToString())


@FUZZ
@given(base=base_names, which=st.integers(0, 10), node=st.integers(0, 10))
def test_removals(base, which, node):
    model = _proto(base)
    if which % 2:
        del model.graph.initializer[which % len(model.graph.initializer)]
    else:
        del model.graph.node[node % len(model.graph.node)]
    check_load(model.SerializeToString())


def test_bases_load():
    for data in BASES.values():
        check_load(data)
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "m.onnx"
            path.write_bytes(data)
            assert verifier.load(path).fidelity.ok


@FUZZ
@given(base=base_names, which=st.integers(0, 10), text=st.text(max_size=8),
       field=st.sampled_from(["node_name", "op_type", "input_name", "init_name", "attribute"]))
def test_names(base, which, text, field):
    """Arbitrary text (newlines, NUL, unicode) in names and op types."""
    model = _proto(base)
    node = model.graph.node[which % len(model.graph.node)]
    if field == "node_name":
        node.name = text
    elif field == "op_type":
        node.op_type = text
    elif field == "input_name":
        old = model.graph.input[0].name
        model.graph.input[0].name = text
        for n in model.graph.node:
            n.input[:] = [text if i == old else i for i in n.input]
    elif field == "init_name":
        model.graph.initializer[which % len(model.graph.initializer)].name = text
    else:
        node.attribute.add().CopyFrom(onnx.helper.make_attribute(text or "a", which - 3))
    check_load(model.SerializeToString())
