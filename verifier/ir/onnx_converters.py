"""One converter per ONNX op type: ONNX node → IR node(s).

A converter reads its inputs from the :class:`~verifier.ir.onnx_import.ImportContext`
(``ctx.var`` for variable tensors, ``ctx.consts`` for constants) and emits IR nodes;
it raises :class:`Unsupported` with a reason when an attribute combination is outside
what the verifier handles, so that every such node can be reported at once.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import onnx
import onnx.helper

from .pads import conv_transpose_pads
from ..ops.spatial import ceil_extra_pads, resolve_pads


class Unsupported(Exception):
    """This node cannot be converted; the message says why."""


CONVERTERS: dict[str, Callable] = {}


def converter(*op_types: str):
    def register(fn):
        for op in op_types:
            CONVERTERS[op] = fn
        return fn

    return register


def attributes(node: onnx.NodeProto) -> dict[str, Any]:
    out = {}
    for a in node.attribute:
        value = onnx.helper.get_attribute_value(a)
        out[a.name] = value.decode() if isinstance(value, bytes) else value
    return out


def node_label(node: onnx.NodeProto) -> str:
    return node.name or node.output[0]


def variable_input(ctx, node: onnx.NodeProto, slot: int = 0) -> str:
    name = node.input[slot]
    if name not in ctx.var:
        raise Unsupported(f"input {slot} must depend on the model input")
    return ctx.var[name]


def bind_output(ctx, node: onnx.NodeProto, ir_id: str) -> None:
    """Bind the node's ONNX output name to the IR node that computes it."""
    ctx.var[node.output[0]] = ir_id


def reshape_to(ctx, src: str, shape: tuple[int, ...], node: onnx.NodeProto, name: str | None = None) -> str:
    if tuple(ctx.graph.nodes[src]["shape"]) == tuple(shape):
        return src
    return ctx.emit("reshape", [src], name=name, shape=tuple(int(s) for s in shape), source=node_label(node))


# --- no-ops -------------------------------------------------------------------------
@converter("Identity", "Dropout")
def convert_identity(ctx, node):
    bind_output(ctx, node, variable_input(ctx, node))


@converter("Cast")
def convert_cast(ctx, node):
    to = attributes(node)["to"]
    if to not in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16):
        raise Unsupported(f"cast of a variable tensor to {onnx.TensorProto.DataType.Name(to)}")
    bind_output(ctx, node, variable_input(ctx, node))


# --- matrix products ------------------------------------------------------------------
def _emit_linear(ctx, node, x: str, weight: np.ndarray, bias: np.ndarray | None, side: str) -> str:
    params = {"weight": ctx.tensor(weight)}
    if bias is not None and np.any(bias != 0):
        params["bias"] = ctx.tensor(bias)
    return ctx.emit("linear", [x], name=node.output[0], params=params, source=node_label(node), side=side)


def _swap_last_two(ctx, node, x: str) -> str:
    ndim = len(ctx.graph.nodes[x]["shape"])
    if ndim < 2:
        raise Unsupported("transposing a 1-D operand")
    perm = list(range(ndim - 2)) + [ndim - 1, ndim - 2]
    return ctx.emit("transpose", [x], source=node_label(node), perm=perm)


@converter("Gemm")
def convert_gemm(ctx, node):
    """``Y = α·A'·B' + β·C`` with exactly one of A, B variable."""
    a = attributes(node)
    alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
    c = ctx.const_or_none(node, 2)
    bias = None if c is None else beta * c.astype(np.float64)
    if node.input[0] in ctx.var and ctx.is_const(node.input[1]):
        x = variable_input(ctx, node, 0)
        if a.get("transA", 0):
            x = _swap_last_two(ctx, node, x)
        w = ctx.const(node.input[1]).astype(np.float64)
        w = w.T if a.get("transB", 0) else w
        bind_output(ctx, node, _emit_linear(ctx, node, x, alpha * w, bias, "right"))
    elif node.input[1] in ctx.var and ctx.is_const(node.input[0]):
        x = variable_input(ctx, node, 1)
        if a.get("transB", 0):
            x = _swap_last_two(ctx, node, x)
        w = ctx.const(node.input[0]).astype(np.float64)
        w = w.T if a.get("transA", 0) else w
        bind_output(ctx, node, _emit_linear(ctx, node, x, alpha * w, bias, "left"))
    else:
        raise Unsupported("product of two variable tensors is not affine")


@converter("MatMul")
def convert_matmul(ctx, node):
    """``x @ W`` or ``W @ x`` with a constant ``W`` of any rank (numpy ``matmul`` semantics:
    1-D operands are promoted and the promoted axis dropped; leading axes broadcast)."""
    if node.input[0] in ctx.var and ctx.is_const(node.input[1]):
        x, w, side = variable_input(ctx, node, 0), ctx.const(node.input[1]), "right"
    elif node.input[1] in ctx.var and ctx.is_const(node.input[0]):
        x, w, side = variable_input(ctx, node, 1), ctx.const(node.input[0]), "left"
    else:
        return onnx_bilinear_converters.convert_variable_matmul(ctx, node)
    if w.ndim == 0:
        raise Unsupported("MatMul with a scalar operand")
    w = w.astype(np.float64)
    if w.ndim > 2:
        bind_output(ctx, node, _batched_matmul(ctx, node, x, w, side))
        return
    if w.ndim == 2:
        bind_output(ctx, node, _emit_linear(ctx, node, x, w, None, side))
        return
    # 1-D constant: promote to a matrix, then drop the promoted axis as ONNX does.
    out = _emit_linear(ctx, node, x, w[:, None] if side == "right" else w[None, :], None, side)
    shape = ctx.graph.nodes[out]["shape"]
    drop = len(shape) - 1 if side == "right" else max(len(shape) - 2, 0)
    bind_output(ctx, node, reshape_to(ctx, out, shape[:drop] + shape[drop + 1 :], node, node.output[0]))


MAX_LOWERED_WEIGHT = 2 * 10**7  # entries of the block matrix a batched MatMul becomes


def _batched_matmul(ctx, node, x: str, w: np.ndarray, side: str) -> str:
    """A matrix product with a constant of rank ≥ 3, lowered to ``reshape``/``transpose``
    and one 2-D ``linear`` (exact in every domain).

    Right side, ``y = x @ W`` with ``x: (*bx, m, k)`` and ``W: (*bw, k, n)``: with ``bs``
    the broadcast of ``bx`` and ``bw`` (``nb`` entries) and ``nbx = prod(bx)``, ``x`` becomes
    ``X: (m, nbx·k)`` (batch slices side by side), ``Y = X M`` with ``M: (nbx·k, nb·n)``
    whose block (source slice of ``j``, ``j``) is ``W[slice of j]``, and ``Y`` goes back to
    ``(*bs, m, n)``. Left side, ``y = W @ x``, is the same with ``yᵀ = xᵀ Wᵀ``. When the block
    matrix would exceed ``MAX_LOWERED_WEIGHT`` entries, one ``einsum`` node instead.
    """
    xshape = tuple(ctx.graph.nodes[x]["shape"])
    if not xshape:
        raise Unsupported("MatMul with a scalar operand")
    squeeze = None
    if len(xshape) == 1:  # promoted: (k,) → (1, k) on the left of W, (k,) → (k, 1) on the right
        squeeze = -2 if side == "right" else -1
        xshape = (1, xshape[0]) if side == "right" else (xshape[0], 1)
        x = reshape_to(ctx, x, xshape, node)
    if side == "left":
        w = np.swapaxes(w, -1, -2)  # y = W x  ⇔  yᵀ = xᵀ Wᵀ
    bx, (m_or_k, k_or_n) = xshape[:-2], xshape[-2:]
    k = k_or_n if side == "right" else m_or_k
    p = m_or_k if side == "right" else k_or_n  # the free axis of x (rows of y, or columns)
    bw, (kw, q) = w.shape[:-2], w.shape[-2:]
    if kw != k:
        raise Unsupported(f"inner sizes differ: variable of shape {list(ctx.graph.nodes[x]['shape'])}, "
                          f"constant of shape {list(np.swapaxes(w, -1, -2).shape if side == 'left' else w.shape)}")
    try:
        bs = tuple(np.broadcast_shapes(bx, bw))
    except ValueError:
        raise Unsupported(f"batch axes {list(bx)} and {list(bw)} do not broadcast") from None
    nbx, nb = int(np.prod(bx, dtype=np.int64)), int(np.prod(bs, dtype=np.int64))
    out_shape = (*bs, p, q) if side == "right" else (*bs, q, p)
    if squeeze is not None:
        out_shape = out_shape[:len(out_shape) + squeeze] + out_shape[len(out_shape) + squeeze + 1:]
    if nbx * k * nb * q > MAX_LOWERED_WEIGHT:  # too large for a block matrix: one einsum node
        equation = "...ab,...bc->...ac" if side == "right" else "...bc,...ab->...ac"
        operands = [x, w if side == "right" else np.swapaxes(w, -1, -2)]
        from .onnx_contraction_converters import emit_einsum  # imports this module
        h = emit_einsum(ctx, node, equation, operands)
        return reshape_to(ctx, h, out_shape, node, node.output[0])
    # source slice of x and of W for every output batch index j
    out_index = np.arange(nb).reshape(bs) if bs else np.zeros((), dtype=np.int64)
    src_x = np.broadcast_to(np.arange(nbx).reshape(bx) if bx else np.zeros((), dtype=np.int64), bs).reshape(-1)
    w_slices = np.broadcast_to(w, (*bs, k, q)).reshape(nb, k, q)
    block = np.zeros((nbx * k, nb * q))
    for j in out_index.reshape(-1):
        block[src_x[j] * k:(src_x[j] + 1) * k, j * q:(j + 1) * q] = w_slices[j]
    label = node_label(node)
    # x → (nbx, a, b) → (p, nbx, k) → (p, nbx·k)
    h = reshape_to(ctx, x, (nbx, *xshape[-2:]), node)
    h = ctx.emit("transpose", [h], source=label, perm=[1, 0, 2] if side == "right" else [2, 0, 1])
    h = reshape_to(ctx, h, (p, nbx * k), node)
    h = _emit_linear(ctx, node, h, block, None, "right")  # (p, nb·q)
    h = reshape_to(ctx, h, (p, nb, q), node)
    # right: (m, nb, n) → (nb, m, n); left: (n, nb, m) → (nb, m, n)
    h = ctx.emit("transpose", [h], source=label, perm=[1, 0, 2] if side == "right" else [1, 2, 0])
    return reshape_to(ctx, h, out_shape, node, node.output[0])


# --- elementwise arithmetic -----------------------------------------------------------
def _scale_shift(ctx, node, x: str, scale, shift) -> str:
    """``a ⊙ x + b`` (ONNX broadcasting); when the constants add leading axes ``x`` is
    reshaped first, and when they expand ``x`` (``x: [1, 226, 1]``, ``b: [54]``) its entries
    are copied to the output's shape first (a ``select``)."""
    x_shape = tuple(ctx.graph.nodes[x]["shape"])
    scale = np.asarray(scale, dtype=np.float64)
    shift = np.asarray(shift, dtype=np.float64)
    out_shape = np.broadcast_shapes(x_shape, scale.shape, shift.shape)
    if out_shape != x_shape:
        if int(np.prod(out_shape)) != int(np.prod(x_shape)):  # the constant expands x: copy entries first
            n = int(np.prod(x_shape))
            codes = np.broadcast_to(np.arange(1, n + 1).reshape((1,) * (len(out_shape) - len(x_shape)) + x_shape),
                                    out_shape)
            x = onnx_index_converters.emit_select(ctx, node, [x], codes, None)
        else:
            x = reshape_to(ctx, x, out_shape, node)
    params = {"scale": ctx.tensor(scale), "shift": ctx.tensor(shift)}
    return ctx.emit("scale_shift", [x], name=node.output[0], params=params, source=node_label(node))


@converter("Add", "Sub", "Mul", "Div")
def convert_arithmetic(ctx, node):
    op = node.op_type
    left, right = node.input[0], node.input[1]
    lvar, rvar = left in ctx.var, right in ctx.var
    if lvar and rvar:
        if op in ("Mul", "Div"):
            return onnx_bilinear_converters.convert_variable_product(ctx, node)
        a, b = ctx.var[left], ctx.var[right]
        if op == "Sub":
            b = ctx.emit("scale_shift", [b], params={"scale": ctx.tensor(-1.0), "shift": ctx.tensor(0.0)},
                         source=node_label(node))
        shape = np.broadcast_shapes(ctx.graph.nodes[a]["shape"], ctx.graph.nodes[b]["shape"])
        bind_output(ctx, node, ctx.emit("add", [a, b], name=node.output[0], shape=tuple(shape), source=node_label(node)))
        return
    x = ctx.var[left] if lvar else ctx.var[right]
    c = ctx.const(right if lvar else left).astype(np.float64)
    if op == "Add":
        scale, shift = 1.0, c
    elif op == "Sub":
        scale, shift = (1.0, -c) if lvar else (-1.0, c)
    elif op == "Mul":
        scale, shift = c, 0.0
    else:
        if not lvar:
            raise Unsupported("division by a variable tensor is not affine")
        if np.any(c == 0):
            raise Unsupported("division by a constant that contains zero")
        scale, shift = 1.0 / c, 0.0
    bind_output(ctx, node, _scale_shift(ctx, node, x, scale, shift))


@converter("Neg")
def convert_neg(ctx, node):
    bind_output(ctx, node, _scale_shift(ctx, node, variable_input(ctx, node), -1.0, 0.0))


@converter("BatchNormalization")
def convert_batchnorm(ctx, node):
    """Inference BN: ``y = γ(x − μ)/√(σ² + ε) + β``, an elementwise affine map per channel."""
    a = attributes(node)
    if a.get("training_mode", 0):
        raise Unsupported("training_mode=1")
    if len([o for o in node.output if o]) > 1:
        raise Unsupported("running-statistics outputs are used")
    x = variable_input(ctx, node)
    gamma, beta, mean, var = (ctx.const_or_none(node, i).astype(np.float64) for i in range(1, 5))
    scale = gamma / np.sqrt(var + float(a.get("epsilon", 1e-5)))
    shift = beta - mean * scale
    trailing = len(ctx.graph.nodes[x]["shape"]) - 2
    view = (-1,) + (1,) * max(trailing, 0)
    bind_output(ctx, node, _scale_shift(ctx, node, x, scale.reshape(view), shift.reshape(view)))


# --- activations ------------------------------------------------------------------------
@converter("Relu", "Sigmoid", "Tanh")
def convert_activation(ctx, node):
    kind = {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh"}[node.op_type]
    bind_output(ctx, node, ctx.emit(kind, [variable_input(ctx, node)], name=node.output[0], source=node_label(node)))


@converter("Clip")
def convert_clip(ctx, node):
    """``y = min(max(x, lo), hi)`` with optional constant bounds (inputs 1 and 2 from opset
    11, attributes ``min``/``max`` before), lowered to the exact, monotone chain
    ``m = lo + relu(x − lo)``, ``y = hi − relu(hi − m)`` (only the half that is given).
    When ``lo > hi`` ONNX gives ``hi`` everywhere, and so does this chain."""
    x = variable_input(ctx, node)
    a = attributes(node)
    if "min" in a or "max" in a:
        lo = np.asarray(a.get("min", -np.inf), dtype=np.float64)
        hi = np.asarray(a.get("max", np.inf), dtype=np.float64)
    else:
        lo, hi = (ctx.const_or_none(node, slot) for slot in (1, 2))
        lo = np.asarray(-np.inf if lo is None else lo, dtype=np.float64)
        hi = np.asarray(np.inf if hi is None else hi, dtype=np.float64)
    for name, bound in (("min", lo), ("max", hi)):
        if bound.size != 1:
            raise Unsupported(f"{name} must be a scalar, got shape {list(bound.shape)}")
        if np.isnan(bound).any():
            raise Unsupported(f"{name} is NaN")
    lo, hi = float(lo.reshape(())), float(hi.reshape(()))
    label = node_label(node)
    h = x
    if lo != -np.inf:  # float limits of old opsets (±3.4e38) are kept: they are exact too
        h = ctx.emit("scale_shift", [h], params={"scale": ctx.tensor(1.0), "shift": ctx.tensor(-lo)}, source=label)
        h = ctx.emit("relu", [h], source=label)
        h = ctx.emit("scale_shift", [h], params={"scale": ctx.tensor(1.0), "shift": ctx.tensor(lo)}, source=label)
    if hi != np.inf:
        h = ctx.emit("scale_shift", [h], params={"scale": ctx.tensor(-1.0), "shift": ctx.tensor(hi)}, source=label)
        h = ctx.emit("relu", [h], source=label)
        h = ctx.emit("scale_shift", [h], params={"scale": ctx.tensor(-1.0), "shift": ctx.tensor(hi)}, source=label)
    bind_output(ctx, node, h)


@converter("LeakyRelu")
def convert_leaky_relu(ctx, node):
    alpha = float(attributes(node).get("alpha", 0.01))
    bind_output(ctx, node, ctx.emit("leaky_relu", [variable_input(ctx, node)], name=node.output[0], source=node_label(node),
                                  negative_slope=alpha))


# --- convolutions and pooling -------------------------------------------------------------
def _window_attrs(ctx, node, x: str, kernel: list[int]) -> dict:
    a = attributes(node)
    n = len(kernel)
    shape = ctx.graph.nodes[x]["shape"]
    if len(shape) != n + 2:
        raise Unsupported(f"input of rank {len(shape)} for a {n}-D window")
    strides = [int(s) for s in a.get("strides", [1] * n)]
    dilations = [int(d) for d in a.get("dilations", [1] * n)]
    pads = resolve_pads(a.get("auto_pad", "NOTSET"), a.get("pads"), shape[2:], kernel, strides, dilations)
    return {"kernel": kernel, "strides": strides, "dilations": dilations, "pads": pads, "spatial_in": list(shape[2:])}


@converter("Conv")
def convert_conv(ctx, node):
    x = variable_input(ctx, node)
    if not ctx.is_const(node.input[1]):
        raise Unsupported("variable convolution weights")
    w = ctx.const(node.input[1]).astype(np.float64)
    if w.ndim - 2 not in (1, 2, 3):
        raise Unsupported(f"{w.ndim - 2}-D convolution")
    win = _window_attrs(ctx, node, x, list(w.shape[2:]))
    params = {"weight": ctx.tensor(w)}
    bias = ctx.const_or_none(node, 2)
    if bias is not None:
        params["bias"] = ctx.tensor(bias)
    group = int(attributes(node).get("group", 1))
    out = ctx.emit("conv", [x], name=node.output[0], params=params, source=node_label(node),
                   strides=win["strides"], dilations=win["dilations"], pads=win["pads"], group=group)
    bind_output(ctx, node, out)


@converter("ConvTranspose")
def convert_conv_transpose(ctx, node):
    x = variable_input(ctx, node)
    if not ctx.is_const(node.input[1]):
        raise Unsupported("variable convolution weights")
    a = attributes(node)
    w = ctx.const(node.input[1]).astype(np.float64)
    n = w.ndim - 2
    if n not in (1, 2, 3):
        raise Unsupported(f"{n}-D transposed convolution")
    shape = ctx.graph.nodes[x]["shape"]
    strides = [int(s) for s in a.get("strides", [1] * n)]
    dilations = [int(d) for d in a.get("dilations", [1] * n)]
    output_padding = [int(p) for p in a.get("output_padding", [0] * n)]
    pads, output_padding = conv_transpose_pads(a, list(shape[2:]), list(w.shape[2:]), strides, dilations, output_padding)
    if any(p >= max(s, d) for p, s, d in zip(output_padding, strides, dilations)):
        raise Unsupported("output_padding must be smaller than the stride or dilation")
    params = {"weight": ctx.tensor(w)}
    bias = ctx.const_or_none(node, 2)
    if bias is not None:
        params["bias"] = ctx.tensor(bias)
    out = ctx.emit("conv_transpose", [x], name=node.output[0], params=params, source=node_label(node),
                   strides=strides, dilations=dilations, pads=pads, output_padding=output_padding,
                   group=int(a.get("group", 1)))
    bind_output(ctx, node, out)


def _pool_attrs(ctx, node, x: str) -> dict:
    a = attributes(node)
    kernel = [int(k) for k in a["kernel_shape"]]
    win = _window_attrs(ctx, node, x, kernel)
    if a.get("ceil_mode", 0):
        win["ceil_extra"] = ceil_extra_pads(win["spatial_in"], win["pads"], kernel, win["strides"], win["dilations"])
    else:
        win["ceil_extra"] = [0] * len(kernel)
    del win["spatial_in"]
    return win


@converter("MaxPool")
def convert_maxpool(ctx, node):
    if len(node.output) > 1 and node.output[1] in ctx.consumed:
        raise Unsupported("the Indices output is used")
    if attributes(node).get("storage_order", 0):
        raise Unsupported("storage_order=1")
    x = variable_input(ctx, node)
    out = ctx.emit("maxpool", [x], name=node.output[0], source=node_label(node), **_pool_attrs(ctx, node, x))
    bind_output(ctx, node, out)


@converter("AveragePool")
def convert_avgpool(ctx, node):
    x = variable_input(ctx, node)
    win = _pool_attrs(ctx, node, x)
    if any(d != 1 for d in win["dilations"]):
        raise Unsupported("dilated average pooling")
    win["count_include_pad"] = bool(attributes(node).get("count_include_pad", 0))
    bind_output(ctx, node, ctx.emit("avgpool", [x], name=node.output[0], source=node_label(node), **win))


@converter("GlobalAveragePool")
def convert_global_avgpool(ctx, node):
    x = variable_input(ctx, node)
    if len(ctx.graph.nodes[x]["shape"]) < 3:
        raise Unsupported("input without spatial axes")
    bind_output(ctx, node, ctx.emit("global_avgpool", [x], name=node.output[0], source=node_label(node)))


from . import onnx_shape_converters  # noqa: E402,F401  (Flatten, Reshape, Transpose, Concat, Slice, Pad, ...)
from . import onnx_index_converters, onnx_elementwise_converters, onnx_bilinear_converters  # noqa: E402,F401,I001
