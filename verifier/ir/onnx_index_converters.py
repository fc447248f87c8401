"""Converters of the ONNX ops that copy, select, sum or contract entries with constant
indices, each lowered to affine IR nodes (exact in every domain).

Selection ops (Gather, GatherElements, GatherND, Expand, Tile, Where with a constant
condition, ScatterND/ScatterElements with constant indices, Compress, Trilu, DepthToSpace,
SpaceToDepth, CenterCropPad, nearest Resize/Upsample, edge/reflect/wrap Pad) become one
``select`` node whose index map onnxruntime itself computes: the node is run once on
*codes* (``1 + position`` of every variable entry, ``0`` in every constant data operand)
and, where a code 0 comes out, once more on the constants with the variables zeroed, to
read the constant entries. So every attribute, opset and index rule means exactly what
the runtime says it means. Split becomes one ``slice`` per output; ReduceSum and
ReduceMean ``reduce_sum`` (and a scale); linear/cubic Resize and Einsum with one variable
operand an ``einsum`` (:mod:`verifier.ops.index`).
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import onnx.helper
import onnx.numpy_helper

from .onnx_validate import MAX_TENSOR_ELEMENTS
from .onnx_converters import Unsupported, attributes, bind_output, converter, node_label, reshape_to, variable_input

#: element types tried, in order, for the codes (the first the op's kernel accepts; floats
#: hold integers exactly up to 2^53 and 2^24)
_CODE_TYPES = ((np.int64, 2**62), (np.float64, 2**53), (np.int32, 2**31 - 1), (np.float32, 2**24))


def run_node(node: onnx.NodeProto, feeds: list, opsets: list, drop_attributes: tuple = (),
             add_attributes: dict | None = None) -> list[np.ndarray]:
    """Run a copy of ``node`` with onnxruntime on the arrays ``feeds`` (one per input slot,
    ``None`` for an absent one), without the attributes ``drop_attributes`` and with
    ``add_attributes`` set; return its outputs. Raises :class:`Unsupported` with the
    runtime's message when it refuses."""
    import onnxruntime as ort

    names = [f"in{i}" if f is not None else "" for i, f in enumerate(feeds)]
    outputs = [f"out{i}" for i, o in enumerate(node.output) if o]
    attrs = [a for a in node.attribute if a.name not in drop_attributes and a.name not in (add_attributes or {})]
    copy = onnx.helper.make_node(node.op_type, names, outputs, domain=node.domain)
    copy.attribute.extend(attrs)
    copy.attribute.extend(onnx.helper.make_attribute(k, v) for k, v in (add_attributes or {}).items())
    inits = [onnx.numpy_helper.from_array(np.asarray(f), n) for n, f in zip(names, feeds) if f is not None]
    graph = onnx.helper.make_graph([copy], "run", [], [onnx.helper.make_value_info(o, onnx.TypeProto()) for o in outputs],
                                   initializer=inits)  # constants, as in the model (an empty input means absent)
    model = onnx.helper.make_model(graph, opset_imports=opsets, ir_version=8)
    options = ort.SessionOptions()
    options.log_severity_level = 4
    try:
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        return session.run(None, {})
    except Exception as exc:
        raise Unsupported(f"onnxruntime cannot evaluate it: {str(exc).splitlines()[0][:200]}") from None


def emit_select(ctx, node, inputs: list[str], codes: np.ndarray, fill: np.ndarray | None, name: str | None = None) -> str:
    """Emit ``y[j] = v[codes[j] − 1]`` (``v``: the inputs' flat values, concatenated) where
    ``codes[j] > 0``, else ``fill[j]``; ``codes``/``fill`` have the output's shape. A plain
    copy or reshape of one input becomes a ``reshape`` (or nothing)."""
    codes = np.asarray(codes, dtype=np.int64)
    shape = tuple(int(s) for s in codes.shape)
    if any(s == 0 for s in shape):
        raise Unsupported(f"produces an empty tensor of shape {list(shape)}")
    total = sum(math.prod(ctx.graph.nodes[i]["shape"]) for i in inputs)
    if len(inputs) == 1 and codes.size == total and np.array_equal(codes.reshape(-1), np.arange(1, total + 1)):
        return reshape_to(ctx, inputs[0], shape, node, name)
    index = codes - 1
    params = {}
    constant = codes == 0
    if constant.any():
        index[constant] = total + np.arange(int(constant.sum()))
        params["fill"] = ctx.tensor(np.asarray(fill)[constant])
    return ctx.emit("select", inputs, name=name, params=params, shape=shape, source=node_label(node), index=index)


def _feeds(ctx, node, data_slots: tuple, variable_value, constant_value) -> list:
    """One feed per input slot: ``variable_value(slot, shape)`` for a variable data slot,
    ``constant_value(array)`` for a constant data slot, the constant itself otherwise."""
    feeds: list = []
    for slot, name in enumerate(node.input):
        if name == "":
            feeds.append(None)
        elif slot in data_slots and name in ctx.var:
            feeds.append(variable_value(slot, tuple(ctx.shape(name))))
        elif slot in data_slots:
            feeds.append(constant_value(np.asarray(ctx.const(name))))
        else:
            feeds.append(np.asarray(ctx.const_or_none(node, slot)))
    return feeds


def selection_maps(ctx, node, data_slots: tuple, **run_options) -> tuple[list[str], list[np.ndarray], list]:
    """Run ``node`` on codes (see the module docstring). Returns the IR ids of its variable
    data inputs, the codes of each output, and each output's constant values (``None``
    where every entry is a copy). ``run_options`` go to :func:`run_node`."""
    variables = [s for s in data_slots if s < len(node.input) and node.input[s] in ctx.var]
    if not variables:
        raise Unsupported("no data input depends on the model input")
    sizes = [math.prod(ctx.shape(node.input[s])) for s in variables]
    offsets = dict(zip(variables, np.cumsum([0, *sizes[:-1]]).tolist()))
    error = None
    for dtype, limit in _CODE_TYPES:
        if sum(sizes) >= limit:
            continue

        def codes_of(slot, shape, dtype=dtype):
            return (1 + offsets[slot] + np.arange(math.prod(shape))).reshape(shape).astype(dtype)

        try:
            outs = run_node(node, _feeds(ctx, node, data_slots, codes_of, lambda c, dtype=dtype: np.zeros(c.shape, dtype)),
                            ctx.opsets, **run_options)
            break
        except Unsupported as exc:
            error = exc
    else:
        raise error or Unsupported("too many entries to index")
    codes = [np.rint(np.asarray(o, dtype=np.float64)).astype(np.int64) for o in outs]
    fills: list = [None] * len(codes)
    if any((c == 0).any() for c in codes):
        consts = [np.asarray(ctx.const(node.input[s])).dtype for s in data_slots
                  if s < len(node.input) and node.input[s] and node.input[s] not in ctx.var]
        ftype = consts[0] if consts else np.dtype(np.float32)
        fills = run_node(node, _feeds(ctx, node, data_slots, lambda slot, shape: np.zeros(shape, ftype), lambda c: c),
                         ctx.opsets, **run_options)
    return [ctx.var[node.input[s]] for s in variables], codes, fills


def convert_selection(ctx, node, data_slots: tuple = (0,), **run_options) -> None:
    """Lower a selection op (first output only) to one ``select`` node."""
    inputs, codes, fills = selection_maps(ctx, node, data_slots, **run_options)
    bind_output(ctx, node, emit_select(ctx, node, inputs, codes[0], fills[0], node.output[0]))


@converter("Gather", "GatherElements", "GatherND", "Expand", "Tile", "Compress", "Trilu", "DepthToSpace",
           "SpaceToDepth", "CenterCropPad")
def convert_gather_like(ctx, node):
    """Ops whose output copies entries of input 0, the other inputs (indices, shapes,
    repeats, conditions) being constants."""
    if node.input[0] not in ctx.var:
        raise Unsupported("only input 0 may depend on the model input (indices, shapes, repeats and conditions "
                          "computed from it are not affine)")
    shape = ctx.shape(node.input[0])
    if node.op_type in ("Expand", "Tile"):  # the ops that make a tensor larger: check before running them
        arg = [int(v) for v in np.asarray(ctx.const_or_none(node, 1)).reshape(-1)]
        try:
            size = math.prod(np.broadcast_shapes(tuple(shape), tuple(arg)) if node.op_type == "Expand" else
                             [d * r for d, r in zip(shape, arg)])
        except ValueError:
            raise Unsupported(f"cannot {node.op_type.lower()} shape {list(shape)} by {arg}") from None
        if size > MAX_TENSOR_ELEMENTS:
            raise Unsupported(f"would make a tensor of {size:.3g} values (at most {MAX_TENSOR_ELEMENTS:.0e})")
    convert_selection(ctx, node, (0,))


@converter("Where")
def convert_where(ctx, node):
    """``Where(c, a, b)`` with a constant condition ``c``: each entry is a copy of ``a`` or
    of ``b`` (either or both variable; broadcasting as ONNX does)."""
    if node.input[0] in ctx.var:
        raise Unsupported("the condition must be a constant (a choice by a variable condition is not affine)")
    convert_selection(ctx, node, (1, 2))


@converter("ScatterND", "ScatterElements", "Scatter")
def convert_scatter(ctx, node):
    """Scatter with constant indices: the output copies the data (input 0) except where the
    updates (input 2) are written; either may be variable. Only ``reduction='none'``."""
    reduction = attributes(node).get("reduction", "none")
    if reduction != "none":
        raise Unsupported(f"reduction '{reduction}' (only 'none' is supported)")
    if node.input[1] in ctx.var:
        raise Unsupported("the indices must be constants")
    convert_selection(ctx, node, (0, 2))


@converter("Split")
def convert_split(ctx, node):
    """Split (sizes as attribute or input, or ``num_outputs``; opsets 1–18): one ``slice``
    per output along the split axis."""
    x = variable_input(ctx, node, 0)
    shape = ctx.shape(node.input[0])
    axis = int(attributes(node).get("axis", 0))
    axis = axis + len(shape) if axis < 0 else axis
    _, codes, _ = selection_maps(ctx, node, (0,))
    start = 0
    for name, part in zip([o for o in node.output if o], codes):
        size = part.shape[axis]
        index = list(range(start, start + size))
        start += size
        if name not in ctx.consumed:
            continue
        if size == 0:
            raise Unsupported(f"output '{name}' is empty")
        ir = x if size == shape[axis] else ctx.emit("slice", [x], name=name, source=node_label(node),
                                                    indices={axis: index})
        ctx.var[name] = ir


@converter("ReduceSum", "ReduceMean")
def convert_reduce(ctx, node):
    """Sum (or mean) over ``axes`` (attribute before opset 13/18, input after; none: all
    axes, or none at all with ``noop_with_empty_axes``), with ``keepdims``: a ``reduce_sum``
    node, then a scale by ``1/count`` for the mean (the order onnxruntime sums in)."""
    x = variable_input(ctx, node, 0)
    shape = ctx.shape(node.input[0])
    a = attributes(node)
    axes = a.get("axes")
    if axes is None:
        given = ctx.const_or_none(node, 1)
        axes = None if given is None else np.asarray(given).reshape(-1).tolist()
    if not axes:
        if a.get("noop_with_empty_axes", 0):
            bind_output(ctx, node, x)
            return
        axes = list(range(len(shape)))
    axes = sorted({int(v) + len(shape) if int(v) < 0 else int(v) for v in axes})
    if any(not 0 <= v < len(shape) for v in axes):
        raise Unsupported(f"axes {axes} out of range for shape {list(shape)}")
    mean = node.op_type == "ReduceMean"
    out = ctx.emit("reduce_sum", [x], name=None if mean else node.output[0], source=node_label(node), axes=axes,
                   keepdims=bool(a.get("keepdims", 1)))
    if mean:
        count = math.prod(shape[v] for v in axes)
        out = ctx.emit("scale_shift", [out], name=node.output[0], source=node_label(node),
                       params={"scale": ctx.tensor(1.0 / count), "shift": ctx.tensor(0.0)})
    bind_output(ctx, node, out)


from . import onnx_contraction_converters  # noqa: E402,F401  (Resize/Upsample, Einsum)
