"""The checker's own reading of an ONNX model: a chain of affine maps and ReLUs.

The proof checker does not use the verifier's importer or IR. It reads the ONNX graph
with ``onnx`` and ``onnx.numpy_helper`` only, and accepts a *chain*: every node takes the
previous node's output as its one data input (its other inputs are initializers or
``Constant`` nodes), the first takes the graph input and the last gives the graph output.
Op kinds (opset semantics of the ONNX operator reference):

* ``Gemm`` (``transA = 0``, ``alpha = beta = 1``), ``MatMul`` by a constant matrix on the
  right → ``linear`` (``y = W x``, ``W`` ``(out, in)``) and, for Gemm's ``C``, ``shift``;
* ``Conv`` (2-D, any pads, strides, dilations and groups) → ``linear`` with the dense
  matrix of the convolution on the row-major ``(C, H, W)`` vector, and its bias → ``shift``;
* ``Add``/``Sub`` of a constant (either side for Add; ``x − c`` for Sub) → ``shift``;
* ``Mul``/``Div`` by a constant → ``scale``/``div`` (elementwise, broadcast);
* ``Relu`` → ``relu``; ``Flatten``, ``Reshape``, ``Identity``, ``Dropout`` (inference) →
  nothing (the flattened row-major vector is unchanged);
* ``MaxPool`` (2-D, any kernel, strides, pads, dilations; ``ceil_mode = 0``) of any input
  → ``maxpool`` with ``windows`` ``(n_out, K)``: each output's window as flat input
  indices in the kernel's row-major order, ``−1`` for padding (ONNX pads with −∞). Its
  relaxation's term is bounded for any bounds of its input
  (:mod:`~verifier.proofcheck.pool`); the crossing entries of its input are tightened by
  CROWN passes as a ReLU's input is (:func:`~verifier.proofcheck.bounds.crown_bounds`),
  as the verifier's CROWN does (none for a ReLU's output, ``l ≥ 0``).

Every other op kind raises :class:`UnsupportedModel` naming it: the checker certifies
nothing it cannot re-derive. Weights are kept as float64 (exact copies of float32 ones).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

PASS_THROUGH = frozenset({"Flatten", "Reshape", "Identity", "Dropout"})
SUPPORTED = frozenset({"Gemm", "MatMul", "Conv", "Add", "Sub", "Mul", "Div", "Relu", "MaxPool"}) | PASS_THROUGH
MAX_DENSE = 1 << 25  # entries of a convolution's dense matrix (256 MiB in float64)


class UnsupportedModel(ValueError):
    """The model is not a chain of the op kinds the checker re-derives (the message names
    the first node and kind that is not)."""


@dataclass
class Op:
    """One step ``v_{i+1} = op(v_i)`` on flattened vectors: ``kind`` in ``linear`` (``W``
    ``(out, in)``), ``shift`` (``+ c``), ``scale`` (``· c``), ``div`` (``/ c``), ``relu``,
    ``maxpool`` (``value``: the windows ``(n_out, K)``, flat input indices, ``−1`` padding)."""

    kind: str
    value: np.ndarray | None = None
    source: str = ""
    abs_value: np.ndarray | None = field(default=None, repr=False)


@dataclass
class Network:
    """A chain of :class:`Op` s; ``sizes[i]`` is the length of ``v_i`` (``sizes[0]``
    inputs, ``sizes[-1]`` outputs)."""

    ops: list[Op]
    sizes: list[int]

    @property
    def pools(self) -> list[int]:
        """Indices ``i`` of the ``maxpool`` steps ``v_{i+1} = maxpool(v_i)``, in order."""
        return [i for i, op in enumerate(self.ops) if op.kind == "maxpool"]

    @property
    def relu_inputs(self) -> list[int]:
        """Indices ``i`` of the nodes ``v_i`` that feed a ReLU (the pre-activations), in order."""
        return [i for i, op in enumerate(self.ops) if op.kind == "relu"]


def file_sha256(path: str) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            attr = {a.name: a for a in node.attribute}
            if "value" not in attr:
                raise UnsupportedModel(f"Constant node '{node.name or node.output[0]}' without a tensor 'value'")
            values[node.output[0]] = numpy_helper.to_array(attr["value"].t)
    return values


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _broadcast(c: np.ndarray, shape: tuple[int, ...], where: str) -> np.ndarray:
    try:
        out = np.broadcast_shapes(c.shape, shape)
    except ValueError:
        raise UnsupportedModel(f"{where}: constant of shape {c.shape} does not broadcast to {shape}") from None
    if tuple(out) != tuple(shape):
        raise UnsupportedModel(f"{where}: constant of shape {c.shape} changes the shape {shape}")
    return np.broadcast_to(c.astype(np.float64), shape).reshape(-1).copy()


def load_network(path: str) -> Network:
    """The chain of ``path`` (module docstring); :class:`UnsupportedModel` otherwise
    (and for a missing or unreadable file, with the reason)."""
    try:
        model = onnx.load(path)
    except Exception as exc:  # onnx raises DecodeError, OSError, ...
        raise UnsupportedModel(f"cannot read the ONNX model {path}: {exc}") from None
    graph = model.graph
    consts = _constants(graph)
    inputs = [i for i in graph.input if i.name not in consts]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise UnsupportedModel("the checker needs one graph input and one output")
    dims = [d.dim_value if d.HasField("dim_value") else 1 for d in inputs[0].type.tensor_type.shape.dim]
    shape = tuple(dims) or (1,)
    current, ops, sizes = inputs[0].name, [], [math.prod(shape)]
    for node in graph.node:
        if node.op_type == "Constant":
            continue
        where = f"node '{node.name or node.output[0]}' ({node.op_type})"
        if node.op_type not in SUPPORTED:
            raise UnsupportedModel(f"{where}: the checker cannot certify op kind '{node.op_type}'")
        data = [x for x in node.input if x and x not in consts]
        if data != [current] or node.input[0] == "":
            raise UnsupportedModel(f"{where}: not a chain (its data input is not the previous node's output)")
        kind, attrs = node.op_type, _attrs(node)
        if kind in PASS_THROUGH:
            shape = _passed_shape(kind, node, attrs, shape, consts, where)
        elif kind == "Relu":
            ops.append(Op("relu", None, where))
        elif kind in ("Gemm", "MatMul"):
            shape = _linear(kind, node, attrs, shape, consts, ops, where)
        elif kind == "Conv":
            shape = _conv(node, attrs, shape, consts, ops, where)
        elif kind == "MaxPool":
            shape = _maxpool(attrs, shape, ops, where)
        else:
            pos = 0 if node.input[0] == current else 1
            c = consts[node.input[1 - pos]]
            if kind == "Sub" and pos == 1:
                raise UnsupportedModel(f"{where}: constant − x is not supported (x − constant is)")
            value = _broadcast(np.asarray(c), shape, where)
            if kind in ("Add", "Sub"):
                ops.append(Op("shift", value if kind == "Add" else -value, where))
            elif kind == "Mul":
                ops.append(Op("scale", value, where))
            else:
                if pos == 1 or not np.all(value != 0):
                    raise UnsupportedModel(f"{where}: only x / nonzero constant is supported")
                ops.append(Op("div", value, where))
        current = node.output[0]
        sizes += [math.prod(shape)] * (len(ops) + 1 - len(sizes))
    if current != graph.output[0].name:
        raise UnsupportedModel("the chain does not end at the graph output")
    for op in ops:
        if op.kind == "linear":
            op.abs_value = np.abs(op.value)
        if op.value is not None and not np.all(np.isfinite(op.value)):
            raise UnsupportedModel(f"{op.source}: non-finite constants")
    return Network(ops, sizes)


def _passed_shape(kind, node, attrs, shape, consts, where) -> tuple[int, ...]:
    if kind == "Flatten":
        axis = attrs.get("axis", 1) % max(1, len(shape))
        return (math.prod(shape[:axis]), math.prod(shape[axis:]))
    if kind == "Reshape":
        target = [int(v) for v in consts[node.input[1]].reshape(-1)]
        target = [shape[i] if v == 0 and i < len(shape) else v for i, v in enumerate(target)]
        if -1 in target:
            known = math.prod(v for v in target if v != -1)
            target[target.index(-1)] = math.prod(shape) // max(1, known)
        if math.prod(target) != math.prod(shape):
            raise UnsupportedModel(f"{where}: reshape to {target} from {shape}")
        return tuple(target)
    return shape


def _linear(kind, node, attrs, shape, consts, ops, where) -> tuple[int, ...]:
    rows = math.prod(shape[:-1])
    if rows != 1:
        raise UnsupportedModel(f"{where}: the checker handles one input vector (shape {shape})")
    if kind == "MatMul":
        if node.input[0] not in consts and node.input[1] in consts:
            W = np.asarray(consts[node.input[1]], dtype=np.float64)
            if W.ndim != 2 or W.shape[0] != shape[-1]:
                raise UnsupportedModel(f"{where}: weight of shape {W.shape} for input {shape}")
            ops.append(Op("linear", W.T.copy(), where))
            return (*shape[:-1], W.shape[1])
        raise UnsupportedModel(f"{where}: only x @ constant is supported")
    if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
        raise UnsupportedModel(f"{where}: Gemm with transA, alpha or beta ≠ 1 is not supported")
    W = np.asarray(consts[node.input[1]], dtype=np.float64)
    W = W if attrs.get("transB", 0) else W.T
    if W.ndim != 2 or W.shape[1] != shape[-1]:
        raise UnsupportedModel(f"{where}: weight of shape {W.shape} for input {shape}")
    ops.append(Op("linear", W.copy(), where))
    if len(node.input) > 2 and node.input[2]:
        ops.append(Op("shift", _broadcast(np.asarray(consts[node.input[2]]), (1, W.shape[0]), where), where))
    return (1, W.shape[0])


def _conv(node, attrs, shape, consts, ops, where) -> tuple[int, ...]:
    """A 2-D ``Conv`` as the dense matrix of its linear map (ONNX Conv semantics: output
    ``[m, oh, ow] = Σ_{c, i, j} w[m, c, i, j] · x[g·C_g + c, oh·s_h − p_top + i·d_h, ow·s_w − p_left + j·d_w]``
    over in-range input positions, ``g`` the output channel's group)."""
    if len(shape) != 4 or shape[0] != 1:
        raise UnsupportedModel(f"{where}: the checker handles 2-D convolutions of one image (shape {shape})")
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise UnsupportedModel(f"{where}: auto_pad is not supported (explicit pads are)")
    w = np.asarray(consts[node.input[1]], dtype=np.float64)
    _, C, H, W = shape
    M, Cg, kh, kw = w.shape
    group = int(attrs.get("group", 1))
    sh, sw = attrs.get("strides", [1, 1])
    dh, dw = attrs.get("dilations", [1, 1])
    pt, pl, pb, pr = attrs.get("pads", [0, 0, 0, 0])
    if Cg * group != C or M % group:
        raise UnsupportedModel(f"{where}: weight of shape {w.shape} for input {shape} and group {group}")
    OH = (H + pt + pb - dh * (kh - 1) - 1) // sh + 1
    OW = (W + pl + pr - dw * (kw - 1) - 1) // sw + 1
    if M * OH * OW * C * H * W > MAX_DENSE:
        raise UnsupportedModel(f"{where}: the convolution's dense matrix ({M * OH * OW} × {C * H * W}) is too large "
                               f"for the checker")
    dense = np.zeros((M * OH * OW, C * H * W))
    oh, ow = np.meshgrid(np.arange(OH), np.arange(OW), indexing="ij")
    channels = np.arange(Cg)[:, None]
    for i in range(kh):
        for j in range(kw):
            ih, iw = oh * sh - pt + i * dh, ow * sw - pl + j * dw
            ok = (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            out_pos, in_pos = (oh * OW + ow)[ok], (ih * W + iw)[ok]
            for m in range(M):
                first = (m // (M // group)) * Cg  # the group's first input channel
                rows = np.broadcast_to(m * OH * OW + out_pos, (Cg, len(out_pos)))
                cols = (first + channels) * H * W + in_pos[None, :]
                dense[rows, cols] = w[m, :, i, j][:, None]
    ops.append(Op("linear", dense, where))
    if len(node.input) > 2 and node.input[2]:
        bias = np.asarray(consts[node.input[2]], dtype=np.float64)
        ops.append(Op("shift", np.repeat(bias, OH * OW), where))
    return (1, M, OH, OW)


def _maxpool(attrs, shape, ops, where) -> tuple[int, ...]:
    """A 2-D ``MaxPool`` as its windows (ONNX MaxPool semantics: output ``[c, oh, ow]`` is
    the max of ``x[c, oh·s_h − p_top + i·d_h, ow·s_w − p_left + j·d_w]`` over the kernel,
    out-of-range positions being −∞)."""
    if len(shape) != 4 or shape[0] != 1:
        raise UnsupportedModel(f"{where}: the checker handles 2-D max-pooling of one image (shape {shape})")
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET") or attrs.get("ceil_mode", 0):
        raise UnsupportedModel(f"{where}: auto_pad and ceil_mode are not supported (explicit pads are)")
    kernel = list(attrs.get("kernel_shape", []))
    if len(kernel) != 2:
        raise UnsupportedModel(f"{where}: kernel_shape {kernel} is not 2-D")
    _, C, H, W = shape
    kh, kw = kernel
    sh, sw = attrs.get("strides", [1, 1])
    dh, dw = attrs.get("dilations", [1, 1])
    pt, pl, pb, pr = attrs.get("pads", [0, 0, 0, 0])
    OH = (H + pt + pb - dh * (kh - 1) - 1) // sh + 1
    OW = (W + pl + pr - dw * (kw - 1) - 1) // sw + 1
    if OH < 1 or OW < 1:
        raise UnsupportedModel(f"{where}: the kernel does not fit the input {shape}")
    oh, ow = np.meshgrid(np.arange(OH), np.arange(OW), indexing="ij")
    i, j = np.meshgrid(np.arange(kh), np.arange(kw), indexing="ij")
    ih = oh.reshape(-1, 1) * sh - pt + i.reshape(1, -1) * dh  # (OH·OW, kh·kw)
    iw = ow.reshape(-1, 1) * sw - pl + j.reshape(1, -1) * dw
    ok = (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
    if not ok.any(1).all():
        raise UnsupportedModel(f"{where}: a window lies wholly in the padding")
    position = np.where(ok, ih * W + iw, -1)
    channel = np.arange(C).reshape(-1, 1, 1) * (H * W)
    windows = np.where(position[None] >= 0, position[None] + channel, -1).reshape(C * OH * OW, kh * kw)
    ops.append(Op("maxpool", windows.astype(np.int64), where))
    return (1, C, OH, OW)
