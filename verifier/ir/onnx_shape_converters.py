"""Converters of ONNX ops that move entries around: Flatten, Reshape, Squeeze,
Unsqueeze, Transpose, Concat, Slice, Pad. Shapes are per-sample (batch axis = 1)."""

from __future__ import annotations

import numpy as np

from .onnx_converters import Unsupported, attributes, bind_output, converter, node_label, reshape_to, variable_input
from .onnx_index_converters import convert_selection


def _axes(ctx, node, slot: int, attr: dict) -> list[int] | None:
    """Axes given as an attribute (old opsets) or as a constant input (new opsets)."""
    if "axes" in attr:
        return [int(a) for a in attr["axes"]]
    value = ctx.const_or_none(node, slot)
    return None if value is None else [int(a) for a in np.asarray(value).reshape(-1)]


@converter("Flatten")
def convert_flatten(ctx, node):
    x = variable_input(ctx, node)
    shape = ctx.shape(node.input[0])
    axis = int(attributes(node).get("axis", 1))
    axis = axis + len(shape) if axis < 0 else axis
    target = (int(np.prod(shape[:axis])), int(np.prod(shape[axis:])))
    bind_output(ctx, node, reshape_to(ctx, x, target, node, node.output[0]))


@converter("Reshape")
def convert_reshape(ctx, node):
    """ONNX Reshape: 0 copies the input's size (unless ``allowzero``), −1 is inferred."""
    x = variable_input(ctx, node)
    shape = ctx.shape(node.input[0])
    target = [int(t) for t in np.asarray(ctx.const_or_none(node, 1)).reshape(-1)]
    if not attributes(node).get("allowzero", 0):
        target = [shape[i] if t == 0 else t for i, t in enumerate(target)]
    try:
        resolved = np.empty(shape, dtype=np.int8).reshape(target).shape
    except ValueError:
        raise Unsupported(f"cannot reshape {list(shape)} to {target}") from None
    bind_output(ctx, node, reshape_to(ctx, x, resolved, node, node.output[0]))


@converter("Squeeze")
def convert_squeeze(ctx, node):
    x = variable_input(ctx, node)
    shape = ctx.shape(node.input[0])
    axes = _axes(ctx, node, 1, attributes(node))
    if axes is None:
        target = tuple(s for s in shape if s != 1)
    else:
        axes = {a + len(shape) if a < 0 else a for a in axes}
        if any(shape[a] != 1 for a in axes):
            raise Unsupported(f"squeezing an axis whose size is not 1 (shape {list(shape)}, axes {sorted(axes)})")
        target = tuple(s for i, s in enumerate(shape) if i not in axes)
    bind_output(ctx, node, reshape_to(ctx, x, target, node, node.output[0]))


@converter("Unsqueeze")
def convert_unsqueeze(ctx, node):
    x = variable_input(ctx, node)
    shape = list(ctx.shape(node.input[0]))
    axes = _axes(ctx, node, 1, attributes(node)) or []
    rank = len(shape) + len(axes)
    for a in sorted(a + rank if a < 0 else a for a in axes):
        shape.insert(a, 1)
    bind_output(ctx, node, reshape_to(ctx, x, tuple(shape), node, node.output[0]))


@converter("Transpose")
def convert_transpose(ctx, node):
    x = variable_input(ctx, node)
    ndim = len(ctx.shape(node.input[0]))
    perm = [int(p) for p in attributes(node).get("perm", list(reversed(range(ndim))))]
    if perm == list(range(ndim)):
        bind_output(ctx, node, x)
        return
    bind_output(ctx, node, ctx.emit("transpose", [x], name=node.output[0], source=node_label(node), perm=perm))


@converter("Concat")
def convert_concat(ctx, node):
    inputs = [ctx.var_or_constant(i, node_label(node)) for i in node.input if i]
    ndim = len(ctx.graph.nodes[inputs[0]]["shape"])
    axis = int(attributes(node)["axis"])
    axis = axis + ndim if axis < 0 else axis
    bind_output(ctx, node, ctx.emit("concat", inputs, name=node.output[0], source=node_label(node), axis=axis))


@converter("Slice")
def convert_slice(ctx, node):
    """Slice with ``starts``/``ends``/``axes``/``steps`` from attributes (opset < 10) or
    constant inputs; ONNX clamping equals Python's ``slice.indices``."""
    x = variable_input(ctx, node)
    shape = ctx.shape(node.input[0])
    a = attributes(node)
    if "starts" in a:
        starts, ends = a["starts"], a["ends"]
        axes, steps = a.get("axes"), None
    else:
        starts, ends = ctx.const_or_none(node, 1), ctx.const_or_none(node, 2)
        axes, steps = ctx.const_or_none(node, 3), ctx.const_or_none(node, 4)
    starts = [int(s) for s in np.asarray(starts).reshape(-1)]
    ends = [int(e) for e in np.asarray(ends).reshape(-1)]
    axes = list(range(len(starts))) if axes is None else [int(v) for v in np.asarray(axes).reshape(-1)]
    steps = [1] * len(starts) if steps is None else [int(v) for v in np.asarray(steps).reshape(-1)]
    indices = {}
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis = axis + len(shape) if axis < 0 else axis
        if step == 0:
            raise Unsupported("slice step 0")
        index = list(range(*slice(start, end, step).indices(shape[axis])))
        if index != list(range(shape[axis])):
            indices[axis] = index
    if not indices:
        bind_output(ctx, node, x)
        return
    bind_output(ctx, node, ctx.emit("slice", [x], name=node.output[0], source=node_label(node), indices=indices))


@converter("Pad")
def convert_pad(ctx, node):
    """Pad (opsets 1–19): mode ``constant`` (pads as attribute or input, optional ``axes``;
    negative pads crop) becomes a ``pad`` node; ``edge``, ``reflect`` and ``wrap`` a
    ``select`` whose index map onnxruntime computes."""
    a = attributes(node)
    mode = a.get("mode", "constant")
    x = variable_input(ctx, node)
    if mode != "constant":  # edge, reflect, wrap: every entry is a copy of an input entry
        convert_selection(ctx, node, (0,))
        return
    ndim = len(ctx.shape(node.input[0]))
    if "pads" in a:
        pads, value, axes = list(a["pads"]), float(a.get("value", 0.0)), None
    else:
        pads = [int(p) for p in np.asarray(ctx.const_or_none(node, 1)).reshape(-1)]
        v = ctx.const_or_none(node, 2)
        value = 0.0 if v is None or np.size(v) == 0 else float(np.asarray(v).reshape(-1)[0])
        axes = ctx.const_or_none(node, 3)
    if axes is not None:
        axes = [int(v) + ndim if int(v) < 0 else int(v) for v in np.asarray(axes).reshape(-1)]
        full = [0] * (2 * ndim)
        for i, axis in enumerate(axes):
            full[axis], full[axis + ndim] = pads[i], pads[i + len(axes)]
        pads = full
    if not any(pads):
        bind_output(ctx, node, x)
        return
    bind_output(ctx, node, ctx.emit("pad", [x], name=node.output[0], source=node_label(node), pads=[int(p) for p in pads], value=value))
