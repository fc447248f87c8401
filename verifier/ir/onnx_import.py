"""ONNX → IR: load, check, fold constants, convert every node, prune.

The importer evaluates the ONNX graph with every batch dimension set to 1 ("per-sample
semantics"); the IR adds its own batch axis in front (see :mod:`verifier.ops`).
Subgraphs that depend only on constants and on static shapes (``Shape`` → ``Gather`` →
``Concat`` chains, say) are folded to constants with onnxruntime itself, so they mean
exactly what the runtime says they mean.
"""

from __future__ import annotations

import math
import os
from typing import Any

import networkx as nx
import numpy as np
import onnx
import onnx.helper
import onnx.numpy_helper
import torch

from ..errors import ModelError, UnsupportedModelError
from ..ops import FORWARD
from .onnx_converters import CONVERTERS, Unsupported
from .graph import add_input_edge
from .onnx_validate import (IR_DTYPES, MAX_TENSOR_ELEMENTS, check_attributes, check_versions, input_dtype,
                            input_shape, load_model_proto, non_finite, printable)
from .passes import cancel_transpose_pairs, fuse_bias_adds



class ImportContext:
    """State shared by the per-op converters while one model is imported."""

    def __init__(self, dtype: torch.dtype, opsets: list):
        self.graph = nx.DiGraph()
        self.dtype = dtype
        self.opsets = opsets
        self.consts: dict[str, np.ndarray] = {}
        self.var: dict[str, str] = {}  # ONNX tensor name → IR node id
        self.consumed: set[str] = set()  # ONNX tensor names read by some node or the graph output
        self._counter = 0

    # --- reading inputs -------------------------------------------------------------
    def is_const(self, name: str) -> bool:
        return name == "" or name in self.consts

    def const(self, name: str) -> np.ndarray:
        return self.consts[name]

    def const_or_none(self, node: onnx.NodeProto, slot: int) -> np.ndarray | None:
        """The constant at input ``slot``, or ``None`` when the slot is absent."""
        if slot >= len(node.input) or node.input[slot] == "":
            return None
        name = node.input[slot]
        if name not in self.consts:
            raise Unsupported(f"input {slot} ('{name}') must be a constant")
        return self.consts[name]

    def shape(self, name: str) -> tuple[int, ...]:
        return self.graph.nodes[self.var[name]]["shape"]

    def tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(array, dtype=np.float64)).to(self.dtype)

    # --- writing nodes --------------------------------------------------------------
    def emit(
        self,
        kind: str,
        inputs: list[str],
        name: str | None = None,
        params: dict[str, torch.Tensor] | None = None,
        shape: tuple[int, ...] | None = None,
        source: str = "",
        **attrs: Any,
    ) -> str:
        """Add an IR node fed by IR nodes ``inputs``; return its id.

        Without an explicit ``shape`` the output shape is found by evaluating the op on
        zeros, so a node's recorded shape always equals what its forward produces.
        """
        if name is None or name in self.graph:
            self._counter += 1
            name = f"{name or kind}#{self._counter}"
        data = {"kind": kind, "params": params or {}, "attrs": attrs, "shape": shape, "source": source}
        if shape is None:
            shapes = [tuple(self.graph.nodes[i]["shape"]) for i in inputs]
            if any(math.prod(s) > MAX_TENSOR_ELEMENTS for s in shapes):
                raise Unsupported(f"inputs of shapes {[list(s) for s in shapes]} exceed {MAX_TENSOR_ELEMENTS:.0e} values")
            dummies = [torch.zeros((1, *s), dtype=self.dtype) for s in shapes]
            try:
                with torch.no_grad():
                    data["shape"] = tuple(FORWARD[kind](data, *dummies).shape[1:])
            except (RuntimeError, IndexError, ValueError, TypeError) as exc:
                raise Unsupported(f"cannot be evaluated on inputs of shape "
                                  f"{[list(d.shape[1:]) for d in dummies]} ({str(exc).splitlines()[0][:160]})") from None
            if any(d == 0 for d in data["shape"]):
                raise Unsupported(f"produces an empty tensor of shape {list(data['shape'])}")
        self.graph.add_node(name, **data)
        for slot, src in enumerate(inputs):
            add_input_edge(self.graph, src, name, slot)
        return name

    def emit_constant(self, array: np.ndarray, source: str = "") -> str:
        """A constant node (for a constant operand of concat or add)."""
        value = self.tensor(array)
        return self.emit("constant", [], params={"value": value}, shape=tuple(value.shape), source=source)

    def var_or_constant(self, name: str, source: str = "") -> str:
        return self.var[name] if name in self.var else self.emit_constant(self.consts[name], source)


def _check_finite(name: str, array: np.ndarray, where: str, note: str = "") -> None:
    bad = non_finite(array)
    if bad:
        raise ModelError(f"{where} '{name}'{note} holds {bad} NaN or infinite value(s); the model cannot be verified")


def _sorted_nodes(graph: onnx.GraphProto, known: set[str]) -> list[onnx.NodeProto]:
    """ONNX nodes in a topological order (Kahn); error on cycles or dangling inputs."""
    pending = list(graph.node)
    available = set(known) | {""}
    order: list[onnx.NodeProto] = []
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:
            node = pending[0]
            missing = [i for i in node.input if i not in available]
            raise ModelError(f"node '{node.name or node.op_type}' reads undefined tensor(s) {missing}")
        ready_ids = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in ready_ids]
        for n in ready:
            order.append(n)
            available.update(n.output)
    return order


def _constant_node_value(node: onnx.NodeProto) -> np.ndarray:
    attr = node.attribute[0]
    value = onnx.helper.get_attribute_value(attr)
    if isinstance(value, onnx.TensorProto):
        return onnx.numpy_helper.to_array(value)
    return np.asarray(value)


def _folded_size(node: onnx.NodeProto, values: list) -> int | None:
    """Number of values of the output of the ops that make a constant larger than their
    inputs, from their (constant) inputs; ``None`` for other ops or when it cannot be told."""
    try:
        op = node.op_type
        if op == "ConstantOfShape":
            return math.prod(int(d) for d in np.asarray(values[0]).reshape(-1))
        if op == "Expand":
            target = tuple(int(d) for d in np.asarray(values[1]).reshape(-1))
            rank = max(len(target), values[0].ndim)
            data = (1,) * (rank - values[0].ndim) + values[0].shape
            target = (1,) * (rank - len(target)) + target
            return math.prod(max(a, b) for a, b in zip(data, target))
        if op == "Tile":
            return math.prod(int(d) * int(r) for d, r in zip(values[0].shape, np.asarray(values[1]).reshape(-1)))
        if op == "Range":
            start, limit, delta = (float(np.asarray(v).reshape(-1)[0]) for v in values[:3])
            return max(0, math.ceil((limit - start) / delta)) if delta else None
    except (IndexError, TypeError, ValueError, OverflowError, AttributeError):
        return None
    return None


def _fold_with_onnxruntime(node: onnx.NodeProto, ctx: ImportContext) -> list[np.ndarray]:
    """Evaluate a node whose inputs are all constants with onnxruntime."""
    import onnxruntime as ort

    inputs = [i for i in node.input if i]
    feeds = {i: ctx.consts[i] for i in inputs}
    size = _folded_size(node, [ctx.consts[i] if i else None for i in node.input])
    if size is not None and size > MAX_TENSOR_ELEMENTS:
        raise Unsupported(f"would make a constant of {size:.3g} values (at most {MAX_TENSOR_ELEMENTS:.0e} are supported)")
    infos = [
        onnx.helper.make_tensor_value_info(i, onnx.helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
        for i, a in feeds.items()
    ]
    outs = [onnx.helper.make_value_info(o, onnx.TypeProto()) for o in node.output if o]
    graph = onnx.helper.make_graph([node], "fold", infos, outs)
    model = onnx.helper.make_model(graph, opset_imports=ctx.opsets, ir_version=8)
    options = ort.SessionOptions()
    options.log_severity_level = 4  # the error comes back as an exception; print nothing
    try:
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        return session.run(None, feeds)
    except Exception as exc:
        raise Unsupported(f"constant subgraph could not be evaluated: {str(exc).splitlines()[0][:200]}") from None


def _fold(node: onnx.NodeProto, ctx: ImportContext, label: str, path: str) -> None:
    """Fold a node whose inputs are all constants; its outputs must be finite."""
    for out, value in zip(node.output, _fold_with_onnxruntime(node, ctx)):
        bad = non_finite(value)
        if bad:
            raise ModelError(f"{path}: constant '{out}' computed by node '{label}' ({node.op_type}) from "
                             f"{[i for i in node.input if i]} holds {bad} NaN or infinite value(s); "
                             f"the model's parameters must be finite")
        ctx.consts[out] = value


def _check_parameters(ir: nx.DiGraph, path: str) -> None:
    """Every parameter of every IR node is finite (a converter may compute one, e.g. a
    BatchNormalization scale from a negative variance)."""
    for node_id, data in ir.nodes(data=True):
        for key, value in data["params"].items():
            bad = int((~torch.isfinite(value)).sum())
            if bad:
                raise ModelError(f"{path}: parameter '{key}' of node '{data['source'] or node_id}' "
                                 f"({data['kind']}) holds {bad} NaN or infinite value(s); the model cannot be verified")


def import_onnx(path: str | os.PathLike, dtype: torch.dtype | None = None) -> nx.DiGraph:
    """Load an ONNX file into the IR (see module docstring).

    Before any conversion the file, its IR/opset versions (those the installed
    onnxruntime runs), its single input's element type (float32, float64 or float16) and
    declared shape (at most ``MAX_TENSOR_ELEMENTS`` values) and the finiteness of every
    initializer are checked. ``graph.graph["model_dtype"]`` is the input's declared type;
    the IR's parameters are in ``dtype`` (default: the model's type, float32 for float16
    models), recorded as ``graph.graph["ir_dtype"]``.

    Raises :class:`ModelError` (naming the file and the tensor or node) for unreadable,
    malformed or non-finite models and :class:`UnsupportedModelError` listing *every*
    unsupported node at once.
    """
    try:
        return _import(path, dtype)
    except ModelError as exc:  # names from the file may hold newlines: keep the message one line
        exc.args = tuple(printable(a) if isinstance(a, str) else a for a in exc.args)
        raise


def _import(path: str | os.PathLike, dtype: torch.dtype | None) -> nx.DiGraph:
    path = os.fspath(path)
    model = load_model_proto(path)
    check_versions(model, path)
    graph = model.graph
    if len(graph.output) != 1:
        raise ModelError(f"the model {path} has {len(graph.output)} outputs; exactly one output tensor is supported")
    initializer_names = {init.name for init in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializer_names]
    if len(inputs) != 1:
        raise ModelError(f"the model {path} has {len(inputs)} inputs {[i.name for i in inputs]}; "
                         f"exactly one input tensor is supported")
    model_dtype = input_dtype(inputs[0], path)
    in_shape = input_shape(inputs[0], path)
    check_attributes(graph, path)

    initializers = {}
    for init in graph.initializer:
        if math.prod(init.dims) > 16 * MAX_TENSOR_ELEMENTS or any(d < 0 for d in init.dims):
            raise ModelError(f"{path}: initializer '{init.name}' declares shape {list(init.dims)}; "
                             f"sizes must be non-negative and hold at most {16 * MAX_TENSOR_ELEMENTS:.1e} values")
        try:
            initializers[init.name] = onnx.numpy_helper.to_array(init, base_dir=os.path.dirname(path))
        except Exception as exc:
            raise ModelError(f"{path}: initializer '{init.name}' cannot be read "
                             f"({type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''})") from None
        if non_finite(initializers[init.name]):
            users = [n.name or n.op_type for n in graph.node if init.name in n.input]
            _check_finite(init.name, initializers[init.name], f"{path}: initializer",
                          f" (read by node(s) {users})" if users else "")

    opsets = [o for o in model.opset_import if o.domain in ("", "ai.onnx")] or [onnx.helper.make_opsetid("", 13)]
    ctx = ImportContext(dtype or IR_DTYPES[model_dtype], list(opsets))
    ctx.consts.update(initializers)
    ctx.consumed = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    in_name = inputs[0].name
    ctx.var[in_name] = ctx.emit("input", [], name=in_name, shape=in_shape, source=in_name)

    problems: list[tuple[str, str, str]] = []
    poisoned: set[str] = set()
    onnx_ops: list[str] = []
    with np.errstate(all="ignore"):
        for node in _sorted_nodes(graph, set(initializers) | {in_name}):
            label = node.name or (node.output[0] if node.output else node.op_type)
            onnx_ops.append(node.op_type)
            if node.domain not in ("", "ai.onnx"):
                problems.append((f"{node.domain}.{node.op_type}", label, "custom op domain"))
                poisoned.update(node.output)
                continue
            if any(i in poisoned for i in node.input):
                poisoned.update(node.output)
                if node.op_type not in CONVERTERS and node.op_type not in ("Constant", "Shape"):
                    problems.append((node.op_type, label, ""))
                continue
            try:
                if node.op_type == "Constant":
                    value = _constant_node_value(node)
                    _check_finite(node.output[0], value, f"{path}: Constant node '{label}' output")
                    ctx.consts[node.output[0]] = value
                elif node.op_type == "Shape" and node.input[0] in ctx.var:
                    shape = np.array(ctx.shape(node.input[0]), dtype=np.int64)
                    start, end = 0, None
                    for a in node.attribute:
                        if a.name == "start":
                            start = a.i
                        elif a.name == "end":
                            end = a.i
                    ctx.consts[node.output[0]] = shape[start:end]
                elif all(ctx.is_const(i) for i in node.input):
                    _fold(node, ctx, label, path)
                elif node.op_type not in CONVERTERS:
                    raise Unsupported("")
                else:
                    CONVERTERS[node.op_type](ctx, node)
            except Unsupported as exc:
                problems.append((node.op_type, label, str(exc)))
                poisoned.update(node.output)
    if problems:
        raise UnsupportedModelError(problems)

    out_name = graph.output[0].name
    if out_name not in ctx.var:
        raise ModelError(f"output '{out_name}' of {path} does not depend on the input (a constant model cannot be verified)")
    ir = ctx.graph
    out_id = ctx.var[out_name]
    keep = nx.ancestors(ir, out_id) | {out_id}
    ir.remove_nodes_from([n for n in list(ir.nodes) if n not in keep])
    if ctx.var[in_name] not in ir:
        raise ModelError(f"the output of {path} does not depend on its input")
    _check_parameters(ir, path)
    ir.graph.update(
        input=ctx.var[in_name],
        output=out_id,
        input_name=in_name,
        output_name=out_name,
        onnx_ops=onnx_ops,
        onnx_to_ir={k: v for k, v in ctx.var.items() if v in ir},
        model_dtype=model_dtype,
        ir_dtype=ctx.dtype,
        path=path,
    )
    return cancel_transpose_pairs(fuse_bias_adds(ir))
