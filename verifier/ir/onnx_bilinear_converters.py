"""Ops of several variable inputs that are not affine (Mul and MatMul of two variables, Min/Max and ReduceMax/ReduceMin): bilinear and piecewise-linear IR nodes.

* ``Mul(x, y)`` of two variables → ``mul`` (operands reshaped to a common rank);
  ``Mul(x, x)`` → ``pow`` with exponent 2 (its convex relaxation, not McCormick's planes);
  ``Div(x, y)`` → ``mul(x, reciprocal(y))`` where the ``reciprocal`` kind is available.
* ``MatMul(x, y)`` of two variables → ``matmul``: 1-D operands promoted (``(k,)`` →
  ``(1, k)`` on the left, ``(k, 1)`` on the right) and the promoted axis dropped after,
  leading axes aligned to a common rank (numpy ``matmul`` semantics).
* ``Max``/``Min`` (any number of operands, broadcast) are lowered exactly to affine ops and
  ReLU, pairwise: ``max(x, y) = y + relu(x − y)``, ``min(x, y) = x − relu(x − y)``; with a
  constant ``c`` the variable appears once, ``max(x, c) = c + relu(x − c)`` and
  ``min(x, c) = c − relu(c − x)`` (as Clip's chain).
* ``ReduceMax``/``ReduceMin`` over axes: per axis a balanced tree of pairwise maxima of
  its two halves (slices), an odd last entry carried along by ``concat``; exact, and so
  handled by every domain that handles ReLU, the MILP included.
"""

from __future__ import annotations

import numpy as np

from ..ops import FORWARD
from .onnx_converters import Unsupported, attributes, bind_output, converter, node_label, reshape_to, variable_input


def _shape(ctx, x: str) -> tuple[int, ...]:
    return tuple(ctx.graph.nodes[x]["shape"])


def _to_rank(ctx, node, x: str, rank: int) -> str:
    """``x`` with leading axes of size 1 up to ``rank`` (ONNX's right-aligned broadcasting)."""
    shape = _shape(ctx, x)
    return reshape_to(ctx, x, (1,) * (rank - len(shape)) + shape, node)


def _broadcast(ctx, node, a: str, b: str) -> tuple[str, str]:
    """``a`` and ``b`` at a common rank, after checking that they broadcast."""
    try:
        np.broadcast_shapes(_shape(ctx, a), _shape(ctx, b))
    except ValueError:
        raise Unsupported(f"operands of shapes {list(_shape(ctx, a))} and {list(_shape(ctx, b))} "
                          f"do not broadcast") from None
    rank = max(len(_shape(ctx, a)), len(_shape(ctx, b)))
    return _to_rank(ctx, node, a, rank), _to_rank(ctx, node, b, rank)


# --- products --------------------------------------------------------------------------
def convert_variable_product(ctx, node) -> None:
    """``Mul``/``Div`` of two variable tensors (called by ``convert_arithmetic``)."""
    a, b = variable_input(ctx, node, 0), variable_input(ctx, node, 1)
    label = node_label(node)
    if a == b and node.op_type == "Mul" and "pow" in FORWARD:  # x·x = x², convex: tighter than McCormick
        bind_output(ctx, node, ctx.emit("pow", [a], name=node.output[0], source=label, exponent=2.0))
        return
    if node.op_type == "Div":
        if "reciprocal" not in FORWARD:
            raise Unsupported("Div of two variable tensors needs the elementwise op 'reciprocal', "
                              "which this build does not have")
        b = ctx.emit("reciprocal", [b], source=label)
    a, b = _broadcast(ctx, node, a, b)
    bind_output(ctx, node, ctx.emit("mul", [a, b], name=node.output[0], source=label))


def convert_variable_matmul(ctx, node) -> None:
    """``MatMul`` of two variable tensors (called by ``convert_matmul``)."""
    a, b = variable_input(ctx, node, 0), variable_input(ctx, node, 1)
    sa, sb = _shape(ctx, a), _shape(ctx, b)
    if not sa or not sb:
        raise Unsupported("MatMul with a scalar operand")
    drop = []  # promoted axes, counted from the end of the output
    if len(sa) == 1:
        a, sa = reshape_to(ctx, a, (1, sa[0]), node), (1, sa[0])
        drop.append(2)
    if len(sb) == 1:
        b, sb = reshape_to(ctx, b, (sb[0], 1), node), (sb[0], 1)
        drop.append(1)
    if sa[-1] != sb[-2]:
        raise Unsupported(f"inner sizes differ: operands of shapes {list(sa)} and {list(sb)}")
    try:
        np.broadcast_shapes(sa[:-2], sb[:-2])
    except ValueError:
        raise Unsupported(f"batch axes {list(sa[:-2])} and {list(sb[:-2])} do not broadcast") from None
    rank = max(len(sa), len(sb))
    a, b = _to_rank(ctx, node, a, rank), _to_rank(ctx, node, b, rank)
    out = ctx.emit("matmul", [a, b], name=None if drop else node.output[0], source=node_label(node))
    shape = _shape(ctx, out)
    final = tuple(s for i, s in enumerate(shape) if len(shape) - i not in drop)
    bind_output(ctx, node, reshape_to(ctx, out, final, node, node.output[0]))


# --- Max / Min ---------------------------------------------------------------------------
def _scaled(ctx, node, x: str, scale: float) -> str:
    if scale == 1.0:
        return x
    return ctx.emit("scale_shift", [x], params={"scale": ctx.tensor(scale), "shift": ctx.tensor(0.0)},
                    source=node_label(node))


def _add(ctx, node, a: str, b: str) -> str:
    """``a + b`` of two IR nodes (either may be a constant node), broadcast."""
    shape = np.broadcast_shapes(_shape(ctx, a), _shape(ctx, b))
    return ctx.emit("add", [a, b], shape=tuple(int(s) for s in shape), source=node_label(node))


def _affine(ctx, node, x: str, scale: float, shift: np.ndarray) -> str:
    """``scale·x + shift`` for a constant ``shift`` of any broadcastable shape: one
    ``scale_shift`` when ``shift`` does not enlarge ``x``, else an ``add`` of a constant."""
    shape = _shape(ctx, x)
    try:
        out = np.broadcast_shapes(shape, shift.shape)
    except ValueError:
        raise Unsupported(f"operands of shapes {list(shape)} and {list(shift.shape)} do not broadcast") from None
    if int(np.prod(out)) == int(np.prod(shape)):
        x = reshape_to(ctx, x, tuple(out), node)
        return ctx.emit("scale_shift", [x], params={"scale": ctx.tensor(scale), "shift": ctx.tensor(shift)},
                        source=node_label(node))
    return _add(ctx, node, _scaled(ctx, node, x, scale), ctx.emit_constant(shift, node_label(node)))


def _relu(ctx, node, x: str) -> str:
    return ctx.emit("relu", [x], source=node_label(node))


def _extreme(ctx, node, a, b, largest: bool):
    """``max(a, b)`` (or ``min``) of two operands, each an IR node id (variable) or a
    numpy array (constant); at least one is variable."""
    sign = 1.0 if largest else -1.0
    if isinstance(a, np.ndarray):
        a, b = b, a
    if isinstance(b, np.ndarray):  # max(x, c) = c + relu(x − c); min(x, c) = c − relu(c − x)
        return _affine(ctx, node, _relu(ctx, node, _affine(ctx, node, a, sign, -sign * b)), sign, b)
    # max(x, y) = y + relu(x − y); min(x, y) = x − relu(x − y)
    gap = _relu(ctx, node, _add(ctx, node, a, _scaled(ctx, node, b, -1.0)))
    return _add(ctx, node, b, gap) if largest else _add(ctx, node, a, _scaled(ctx, node, gap, -1.0))


@converter("Max", "Min")
def convert_min_max(ctx, node):
    """Elementwise max/min of any number of broadcast operands (module docstring)."""
    operands = [ctx.var[i] if i in ctx.var else ctx.const(i).astype(np.float64) for i in node.input if i]
    if not any(isinstance(o, str) for o in operands):
        raise Unsupported("no operand depends on the model input")
    largest = node.op_type == "Max"
    constants = [o for o in operands if not isinstance(o, str)]
    acc = [o for o in operands if isinstance(o, str)][0]
    if constants:  # constants first combined among themselves (exactly, in float64)
        acc = _extreme(ctx, node, acc, (np.maximum if largest else np.minimum).reduce(constants), largest)
    for o in [o for o in operands if isinstance(o, str)][1:]:
        acc = _extreme(ctx, node, acc, o, largest)
    bind_output(ctx, node, acc)


# --- ReduceMax / ReduceMin -----------------------------------------------------------------
def _reduce_axes(ctx, node) -> list[int] | None:
    """The axes from the attribute (opset < 18) or the optional input 1; ``None``: all."""
    a = attributes(node)
    if "axes" in a:
        return [int(v) for v in a["axes"]]
    value = ctx.const_or_none(node, 1)
    if value is None or np.size(value) == 0:
        return None
    return [int(v) for v in np.asarray(value).reshape(-1)]


def _tree(ctx, node, x: str, axis: int, largest: bool) -> str:
    """Max (min) over ``axis``, kept with size 1: pairwise over the two halves until one entry."""
    label = node_label(node)
    while (n := _shape(ctx, x)[axis]) > 1:
        half = n // 2
        low = ctx.emit("slice", [x], source=label, indices={axis: list(range(half))})
        high = ctx.emit("slice", [x], source=label, indices={axis: list(range(half, 2 * half))})
        best = _extreme(ctx, node, low, high, largest)
        if n % 2:
            rest = ctx.emit("slice", [x], source=label, indices={axis: [n - 1]})
            best = ctx.emit("concat", [best, rest], source=label, axis=axis)
        x = best
    return x


@converter("ReduceMax", "ReduceMin")
def convert_reduce_extreme(ctx, node):
    """Max/min over ``axes`` (all when absent, none when empty with
    ``noop_with_empty_axes``), ``keepdims`` as ONNX (default 1)."""
    x = variable_input(ctx, node)
    shape = _shape(ctx, x)
    attrs = attributes(node)
    axes = _reduce_axes(ctx, node)
    if axes is None:
        if attrs.get("noop_with_empty_axes", 0):
            bind_output(ctx, node, x)
            return
        axes = list(range(len(shape)))
    axes = sorted({a + len(shape) if a < 0 else a for a in axes})
    if any(not 0 <= a < len(shape) for a in axes):
        raise Unsupported(f"axes {axes} out of range for rank {len(shape)}")
    for axis in axes:
        x = _tree(ctx, node, x, axis, node.op_type == "ReduceMax")
    keep = attrs.get("keepdims", 1)
    final = tuple(1 if i in axes else s for i, s in enumerate(shape) if keep or i not in axes)
    bind_output(ctx, node, reshape_to(ctx, x, final, node, node.output[0]))
