"""Checks on an ONNX file before any conversion work: the file itself, the IR and opset
versions onnxruntime can run, the input's element type and declared shape.

Every failure is a :class:`~verifier.errors.ModelError` whose message names the file and
says what would be valid.
"""

from __future__ import annotations

import functools
import math
import os
import stat

import numpy as np
import onnx
import onnx.helper
import onnx.numpy_helper
import torch

from ..errors import ModelError

#: Input element types the verifier accepts: ONNX type → the torch dtype recorded as the
#: graph's ``model_dtype`` (the type onnxruntime is fed; the IR itself evaluates in
#: float32 for float16 models, see ``IR_DTYPES``).
INPUT_TYPES = {
    onnx.TensorProto.FLOAT: torch.float32,
    onnx.TensorProto.DOUBLE: torch.float64,
    onnx.TensorProto.FLOAT16: torch.float16,
}
#: The dtype the IR's parameters and own evaluation use for each ``model_dtype``.
IR_DTYPES = {torch.float32: torch.float32, torch.float64: torch.float64, torch.float16: torch.float32}

#: Largest number of values one input sample (or any intermediate tensor) may hold.
MAX_TENSOR_ELEMENTS = 10**8


def printable(text: str) -> str:
    """``text`` with control characters (a newline in a tensor name, say) escaped, so that an
    error message stays on one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of ``exc``'s message (``'parse error'`` when it has none), at most
    ``limit`` characters: a longer one is cut after its last whole word, ending in ``…``."""
    text = (str(exc).splitlines() or [""])[0]
    if not text:
        return "parse error"
    if len(text) <= limit:
        return text
    cut = text[:limit]
    return (cut[: cut.rfind(" ") + 1] if " " in cut else cut) + "…"


def _type_name(elem: int) -> str:
    try:
        return onnx.TensorProto.DataType.Name(elem)
    except ValueError:
        return f"unknown type {elem}"


def load_model_proto(path: str | os.PathLike) -> onnx.ModelProto:
    """Read and parse the file; error (naming ``path``) when it is missing, a folder,
    empty, unreadable, or not an ONNX model with at least one node."""
    path = os.fspath(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise ModelError(f"model file not found: {path}") from None
    except OSError as exc:  # a symlink loop, a path through a file, no permission on a folder
        raise ModelError(f"cannot read model file {path}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(mode):
        raise ModelError(f"model path is a directory, not an ONNX file: {path}")
    if not stat.S_ISREG(mode):  # a pipe (`<(cat m.onnx)`), FIFO or device: read twice (hash, import) it is gone
        raise ModelError(f"model file {path} is not a regular file (a pipe, FIFO or device); give the path of "
                         f"the .onnx file")
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as handle:
            head = handle.read(1)
    except OSError as exc:
        raise ModelError(f"cannot read model file {path}: {exc.strerror or exc}") from None
    if size == 0 or not head:
        raise ModelError(f"model file {path} is empty (expected an ONNX model)")
    try:
        model = onnx.load(path)
    except Exception as exc:  # protobuf and the external-data loader raise several unrelated types
        raise ModelError(f"cannot read ONNX model {path}: not a valid ONNX file "
                         f"({type(exc).__name__}: {first_line(exc)})") from None
    if not model.HasField("graph") or len(model.graph.node) == 0:
        raise ModelError(f"ONNX model {path} has no nodes (corrupt, truncated or not an ONNX file)")
    return model


def _probe(ir_version: int, opset: int) -> bool:
    """Whether onnxruntime accepts an Identity model with these versions."""
    import onnxruntime as ort

    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "probe", [x], [y])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)])
    model.ir_version = ir_version
    options = ort.SessionOptions()
    options.log_severity_level = 4
    try:
        ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception:
        return False
    return True


def _largest(accepts, low: int, high: int) -> int:
    """Largest ``v`` in ``[low, high]`` with ``accepts(v)`` (monotone), ``low − 1`` if none."""
    if not accepts(low):
        return low - 1
    while low < high:
        mid = (low + high + 1) // 2
        if accepts(mid):
            low = mid
        else:
            high = mid - 1
    return low


@functools.lru_cache(maxsize=None)
def runtime_limits() -> tuple[int, int]:
    """``(max IR version, max ai.onnx opset)`` that the installed onnxruntime loads, found
    once per process by offering it tiny models (cheap: a few milliseconds)."""
    max_ir = _largest(lambda v: _probe(v, 7), 3, 64)
    max_opset = _largest(lambda v: _probe(min(max_ir, onnx.IR_VERSION), v), 1, 256)
    return max_ir, max_opset


MIN_IR_VERSION = 1  # 0 means "not set"


def check_versions(model: onnx.ModelProto, path: str) -> None:
    """The model's IR version and default-domain opset must be ones onnxruntime runs."""
    max_ir, max_opset = runtime_limits()
    if not MIN_IR_VERSION <= model.ir_version <= max_ir:
        raise ModelError(f"ONNX model {path} has IR version {model.ir_version}; the installed onnxruntime "
                         f"supports IR versions {MIN_IR_VERSION} to {max_ir}")
    for op in model.opset_import:
        if op.domain in ("", "ai.onnx") and not 1 <= op.version <= max_opset:
            raise ModelError(f"ONNX model {path} imports opset {op.version} of the default (ai.onnx) domain; "
                             f"the installed onnxruntime supports opsets 1 to {max_opset}")


def input_dtype(value_info: onnx.ValueInfoProto, path: str) -> torch.dtype:
    """The torch dtype of a graph input's declared element type (float32/float64/float16)."""
    ttype = value_info.type
    if ttype.WhichOneof("value") != "tensor_type":
        raise ModelError(f"input '{value_info.name}' of {path} is not a tensor; a single float tensor input is supported")
    elem = ttype.tensor_type.elem_type
    if elem not in INPUT_TYPES:
        raise ModelError(f"input '{value_info.name}' of {path} has element type {_type_name(elem)}; "
                         f"supported input types are FLOAT, DOUBLE and FLOAT16")
    return INPUT_TYPES[elem]


def input_shape(value_info: onnx.ValueInfoProto, path: str) -> tuple[int, ...]:
    """Per-sample input shape: the first axis, if 0 or symbolic, becomes 1. Every other
    axis must have a fixed positive size, and the sample at most ``MAX_TENSOR_ELEMENTS``
    values (checked before anything is allocated)."""
    ttype = value_info.type.tensor_type
    if not ttype.HasField("shape"):
        raise ModelError(f"input '{value_info.name}' of {path} has no declared shape")
    declared = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in ttype.shape.dim]
    dims = []
    for axis, dim in enumerate(ttype.shape.dim):
        if dim.HasField("dim_value") and dim.dim_value > 0:
            dims.append(int(dim.dim_value))
        elif dim.HasField("dim_value") and dim.dim_value < 0:
            raise ModelError(f"input '{value_info.name}' of {path} declares shape {declared}: "
                             f"axis {axis} has negative size {dim.dim_value}; sizes must be positive")
        elif axis == 0:
            dims.append(1)
        else:
            raise ModelError(f"input '{value_info.name}' of {path} declares shape {declared}: axis {axis} has no "
                             f"fixed size; only the first (batch) axis may be symbolic or 0")
    if math.prod(dims) > MAX_TENSOR_ELEMENTS:
        raise ModelError(f"input '{value_info.name}' of {path} declares shape {declared}: "
                         f"{math.prod(dims):.3g} values per sample, more than the {MAX_TENSOR_ELEMENTS:.0e} supported")
    return tuple(dims)


def non_finite(array: np.ndarray) -> int:
    """Number of NaN or infinite entries of a floating-point array (0 for other dtypes)."""
    if array.dtype.kind not in "fc":
        return 0
    return int(np.size(array) - np.count_nonzero(np.isfinite(array)))


def _non_finite_attribute(attr: onnx.AttributeProto) -> str | None:
    """The offending value (as text) of a float, floats or tensor attribute holding NaN or
    ±inf, else ``None``."""
    kind = attr.type
    if kind == onnx.AttributeProto.FLOAT:
        return None if math.isfinite(attr.f) else repr(attr.f)
    if kind == onnx.AttributeProto.FLOATS:
        bad = [v for v in attr.floats if not math.isfinite(v)]
        return f"{len(bad)} of {len(attr.floats)} values NaN or infinite (first {bad[0]!r})" if bad else None
    if kind == onnx.AttributeProto.TENSOR:
        try:
            array = onnx.numpy_helper.to_array(attr.t)
        except Exception:  # unreadable tensors are reported where the value is used
            return None
        bad = non_finite(array)
        return f"a tensor with {bad} NaN or infinite value(s)" if bad else None
    return None


def check_attributes(graph: onnx.GraphProto, path: str) -> None:
    """Every float attribute of every node (``alpha`` of LeakyRelu/Elu/Gemm, ``epsilon`` of
    BatchNormalization, ``min``/``max`` of an opset-6 Clip, a ``value`` tensor, …) must be
    finite, as initializers must: a NaN or infinite attribute makes the op's semantics
    undefined or degenerate, and bounds derived from it are not sound. The first offending
    attribute is named with its node. ``Constant`` nodes are left to the importer, which
    checks their value (used or not) with the same rule."""
    for node in graph.node:
        if node.op_type == "Constant":
            continue
        for attr in node.attribute:
            bad = _non_finite_attribute(attr)
            if bad is not None:
                label = node.name or (node.output[0] if node.output else node.op_type)
                raise ModelError(f"{path}: node '{label}' ({node.op_type}) has attribute '{attr.name}' = {bad}; "
                                 f"float attributes must be finite numbers")
