"""Build small ONNX models with :mod:`onnx.helper` and evaluate them with onnxruntime.

Used by the property tests (``test_box_soundness.py``): every builder writes a valid,
checked ONNX file (IR version 8, which onnxruntime accepts) whose first input axis is,
by default, the symbolic batch dimension ``'N'`` so that onnxruntime can evaluate a
whole batch of samples in one call.
"""

from __future__ import annotations

import itertools
import math
import uuid
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import onnx
import onnx.helper as oh
import onnx.numpy_helper as onh
import onnxruntime as ort

FLOAT = onnx.TensorProto.FLOAT
DOUBLE = onnx.TensorProto.DOUBLE
INT64_MAX = np.iinfo(np.int64).max
INT64_MIN = np.iinfo(np.int64).min

_NP_OF = {FLOAT: np.float32, DOUBLE: np.float64}


def _as_initializer(name: str, value) -> onnx.TensorProto:
    if isinstance(value, onnx.TensorProto):
        return value
    return onh.from_array(np.asarray(value), name=name)


def make_model(
    nodes: Sequence[onnx.NodeProto],
    input_shape: Sequence[int | str],
    output_name: str,
    initializers: dict[str, np.ndarray] | Iterable[onnx.TensorProto] = (),
    opset: int = 13,
    *,
    input_name: str = "x",
    elem_type: int = FLOAT,
    initializers_as_inputs: bool = False,
    output_shape: Sequence[int | str] | None = None,
    check: bool = True,
) -> onnx.ModelProto:
    """A one-input, one-output ONNX model (``ir_version=8``).

    ``input_shape`` is the full ONNX input shape, batch axis included (``'N'`` for a
    symbolic batch, or a number). ``initializers`` maps names to numpy arrays (their
    dtype is kept: use float32 for weights, int64 for shapes and axes). With
    ``initializers_as_inputs`` they are also listed as graph inputs (IR-3 style, as
    old exporters do). ``output_shape`` declares the output's shape (by default
    it is left to shape inference). With ``check``, shapes are inferred (strict) and the model is
    validated by ``onnx.checker`` with ``full_check``, so a test never runs on an
    invalid model.
    """
    if isinstance(initializers, dict):
        inits = [_as_initializer(k, v) for k, v in initializers.items()]
    else:
        inits = list(initializers)
    inputs = [oh.make_tensor_value_info(input_name, elem_type, list(input_shape))]
    if initializers_as_inputs:
        inputs += [oh.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in inits]
    outputs = [oh.make_tensor_value_info(output_name, elem_type, None if output_shape is None else list(output_shape))]
    graph = oh.make_graph(list(nodes), "test_model", inputs, outputs, initializer=inits)
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", opset)], ir_version=8,
                          producer_name="verifier-tests")
    if check:
        model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        onnx.checker.check_model(model, full_check=True)
    return model


def gemm_relu_model(layers: Sequence[tuple[np.ndarray, np.ndarray]]) -> onnx.ModelProto:
    """The MLP ``x → (Gemm → Relu)* → Gemm`` with float32 weights ``W`` ``(out, in)`` and biases
    ``b`` ``(out,)`` of ``layers`` (``transB=1``: ``z = x Wᵀ + b``), batch axis ``'N'``."""
    nodes, inits, prev = [], {}, "x"
    for i, (w, b) in enumerate(layers):
        inits[f"W{i}"], inits[f"b{i}"] = np.asarray(w, dtype=np.float32), np.asarray(b, dtype=np.float32)
        nodes.append(oh.make_node("Gemm", [prev, f"W{i}", f"b{i}"], [f"z{i}"], transB=1))
        prev = f"z{i}"
        if i < len(layers) - 1:
            nodes.append(oh.make_node("Relu", [prev], [f"a{i}"]))
            prev = f"a{i}"
    return make_model(nodes, ["N", inits["W0"].shape[1]], prev, inits)


def save_model(model: onnx.ModelProto, directory: str | Path, stem: str = "model") -> Path:
    """Write ``model`` under ``directory`` with a unique file name; return the path."""
    path = Path(directory) / f"{stem}-{uuid.uuid4().hex[:12]}.onnx"
    onnx.save(model, str(path))
    return path


class GraphBuilder:
    """Accumulate nodes and initializers with automatic names.

    ``g = GraphBuilder(rng, ("N", 3, 8, 8))``; ``g.x`` is the input's name;
    ``h = g.op("Conv", g.x, g.weight(4, 3, 3, 3), pads=[1, 1, 1, 1])``;
    ``model = g.model(h)``.
    """

    def __init__(self, rng: np.random.Generator, input_shape: Sequence[int | str], opset: int = 13,
                 elem_type: int = FLOAT, input_name: str = "x"):
        self.rng = rng
        self.input_shape = tuple(input_shape)
        self.opset = opset
        self.elem_type = elem_type
        self.x = input_name
        self.nodes: list[onnx.NodeProto] = []
        self.inits: dict[str, np.ndarray] = {}
        self._count = itertools.count()

    @property
    def float_dtype(self):
        return _NP_OF[self.elem_type]

    def _name(self, prefix: str) -> str:
        return f"{prefix}_{next(self._count)}"

    # --- constants ---------------------------------------------------------------
    def const(self, value, name: str | None = None, dtype=None) -> str:
        """An initializer; floats are stored in the model's float type, ints as int64."""
        arr = np.asarray(value)
        if dtype is None:
            dtype = np.int64 if arr.dtype.kind in "iub" else self.float_dtype
        name = name or self._name("c")
        self.inits[name] = np.asarray(arr, dtype=dtype)
        return name

    def ints(self, values) -> str:
        return self.const(np.asarray(values, dtype=np.int64))

    def constant_node(self, value) -> str:
        """The same as :meth:`const`, but through an ONNX ``Constant`` node."""
        arr = np.asarray(value)
        arr = arr.astype(np.int64 if arr.dtype.kind in "iub" else self.float_dtype)
        out = self._name("k")
        self.nodes.append(oh.make_node("Constant", [], [out], value=onh.from_array(arr, name=out)))
        return out

    def rand(self, *shape: int, scale: float = 1.0, low: float | None = None) -> str:
        """Random normal constant of ``shape`` (or uniform in ``[low, scale]``)."""
        if low is None:
            value = self.rng.normal(0.0, scale, size=shape)
        else:
            value = self.rng.uniform(low, scale, size=shape)
        return self.const(value)

    def weight(self, *shape: int, fan_in: int | None = None) -> str:
        """He-style random weight: normal with std ``1/sqrt(fan_in)`` (fan-in from
        ``shape[1:]`` unless given)."""
        fan = fan_in or max(1, math.prod(shape[1:]) if len(shape) > 1 else shape[0])
        return self.rand(*shape, scale=1.0 / math.sqrt(fan))

    # --- nodes -------------------------------------------------------------------
    def op(self, op_type: str, *inputs: str, outputs: int = 1, **attrs):
        """Append a node; return its output name (or a list when ``outputs > 1``)."""
        outs = [self._name(op_type.lower()) for _ in range(outputs)]
        self.nodes.append(oh.make_node(op_type, list(inputs), outs, name=outs[0] + "_node", **attrs))
        return outs[0] if outputs == 1 else outs

    def model(self, output: str, check: bool = True, **kwargs) -> onnx.ModelProto:
        return make_model(self.nodes, self.input_shape, output, self.inits, self.opset,
                          input_name=self.x, elem_type=self.elem_type, check=check, **kwargs)


class Reference:
    """onnxruntime as the reference implementation of a model file.

    ``run(x)`` evaluates a batch ``x`` of per-sample inputs ``(B, *sample_shape)`` and
    returns ``(B, n)`` float64 outputs, flattened per sample (a per-sample input has
    the verifier's shape, batch axis 1, or any shape of the same size). With ``per_sample`` the
    model is run once per sample, with ``x[i]`` reshaped to the model's fixed input
    shape (for models whose batch axis is written 1, or that have none). Otherwise the
    whole batch goes in at once and ``batch_axis`` says where the batch axis of the
    output lies (a model may move it, e.g. ``Gemm(W, x, transB=1)``).
    """

    def __init__(self, path: str | Path, per_sample: bool = False, batch_axis: int = 0):
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        info = self.session.get_inputs()[0]
        self.input_name = info.name
        self.input_shape = info.shape
        self.dtype = np.float64 if info.type == "tensor(double)" else np.float32
        self.per_sample = per_sample
        self.batch_axis = batch_axis

    def run(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=self.dtype)
        batch = x.shape[0]
        if self.per_sample:
            fixed = [int(d) for d in self.input_shape]
            outs = [self.session.run(None, {self.input_name: s.reshape(fixed)})[0] for s in x]
            return np.stack([np.asarray(o, dtype=np.float64).reshape(-1) for o in outs])
        rest = [int(d) for d in self.input_shape[1:]]
        (out,) = self.session.run(None, {self.input_name: x.reshape(batch, *rest)})
        out = np.moveaxis(np.asarray(out, dtype=np.float64), self.batch_axis, 0)
        return out.reshape(batch, -1)


# --- sampling ------------------------------------------------------------------------
def float32_box(lower: np.ndarray, upper: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Round a box outward to float32-representable endpoints, so that float32 samples
    can lie exactly inside it."""
    lo = np.asarray(lower, dtype=np.float64)
    hi = np.asarray(upper, dtype=np.float64)
    lo32 = lo.astype(np.float32)
    hi32 = hi.astype(np.float32)
    lo32 = np.where(lo32.astype(np.float64) > lo, np.nextafter(lo32, np.float32(-np.inf)), lo32)
    hi32 = np.where(hi32.astype(np.float64) < hi, np.nextafter(hi32, np.float32(np.inf)), hi32)
    return lo32.astype(np.float64), hi32.astype(np.float64)


def sample_box(rng: np.random.Generator, lower: np.ndarray, upper: np.ndarray, n: int,
               corners_up_to: int = 10) -> np.ndarray:
    """``n`` points uniform in the box ``[lower, upper]`` (any shape), plus its centre,
    plus all its corners when it has at most ``corners_up_to`` entries. The points are
    float32 values clipped into the box (so exactly inside it when the box is float32)."""
    lo = np.asarray(lower, dtype=np.float64)
    hi = np.asarray(upper, dtype=np.float64)
    pts = [lo + (hi - lo) * rng.random((n, *lo.shape)), ((lo + hi) / 2)[None]]
    if lo.size <= corners_up_to:
        bits = np.array(list(itertools.product((0.0, 1.0), repeat=lo.size))).reshape(-1, *lo.shape)
        pts.append(lo + (hi - lo) * bits)
    x = np.concatenate(pts).astype(np.float32)
    return np.clip(x, lo.astype(np.float32), hi.astype(np.float32))


def random_box(rng: np.random.Generator, shape: Sequence[int], centre: float, width: float,
               batch: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """A batch of random boxes ``(batch, *shape)``: centres scattered around ``centre``,
    per-entry widths uniform in ``[0, width]`` (some entries exactly 0), rounded outward
    to float32 endpoints."""
    c = centre + rng.normal(0.0, 0.5, size=(batch, *shape))
    w = width * rng.random((batch, *shape))
    w = np.where(rng.random((batch, *shape)) < 0.1, 0.0, w)
    return float32_box(c - w / 2, c + w / 2)
