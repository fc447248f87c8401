"""Elementwise nonlinear ops (Exp, Log, Sqrt, Reciprocal, Pow, Sin, Cos, Softplus, Erf,
Gelu, Elu, Selu, Abs, Sign, Floor, Ceil, Round, HardSigmoid, HardSwish) and Softmax /
LogSoftmax: one IR kind each with a relaxation entry in ``verifier/ops/``, or an exact
lowering to such kinds and affine maps."""

from __future__ import annotations

import math

import numpy as np

from .onnx_converters import Unsupported, attributes, bind_output, converter, node_label, reshape_to, variable_input

UNARY = {"Exp": "exp", "Log": "log", "Sqrt": "sqrt", "Reciprocal": "reciprocal", "Sin": "sin", "Cos": "cos",
         "Softplus": "softplus", "Erf": "erf", "Abs": "abs", "Sign": "sign", "Floor": "floor", "Ceil": "ceil",
         "Round": "round", "HardSwish": "hard_swish"}
SELU_ALPHA, SELU_GAMMA = 1.67326319217681884765625, 1.05070102214813232421875
MAX_SOFTMAX_WEIGHTS = 2 * 10**7  # coefficients of a softmax's linear bounds per sample (rows · n²)


def _unary(ctx, node, kind: str, x: str | None = None, **attrs) -> str:
    x = variable_input(ctx, node) if x is None else x
    return ctx.emit(kind, [x], name=node.output[0], source=node_label(node), **attrs)


def _affine(ctx, node, x: str, scale: float, shift: float) -> str:
    """``scale·x + shift`` (one ``scale_shift`` node)."""
    params = {"scale": ctx.tensor(scale), "shift": ctx.tensor(shift)}
    return ctx.emit("scale_shift", [x], params=params, source=node_label(node))


@converter(*UNARY)
def convert_unary(ctx, node):
    """``y = f(x)`` for one of the kinds of :data:`UNARY`."""
    bind_output(ctx, node, _unary(ctx, node, UNARY[node.op_type]))


@converter("Gelu")
def convert_gelu(ctx, node):
    """``y = ½x(1 + erf(x/√2))`` (``approximate="none"`` only)."""
    approximate = attributes(node).get("approximate", "none")
    if approximate != "none":
        raise Unsupported(f"approximate='{approximate}' (only 'none' is supported)")
    bind_output(ctx, node, _unary(ctx, node, "gelu"))


@converter("Elu", "Selu")
def convert_elu(ctx, node):
    """Elu ``α(eᕽ − 1)`` / ``x``; Selu the same scaled by ``γ`` (kind ``elu``); ``α ≥ 0``, ``γ > 0``."""
    a = attributes(node)
    if node.op_type == "Elu":
        alpha, gamma = float(a.get("alpha", 1.0)), 1.0
    else:
        alpha, gamma = float(a.get("alpha", SELU_ALPHA)), float(a.get("gamma", SELU_GAMMA))
    if not (alpha >= 0 and math.isfinite(alpha)) or not (gamma > 0 and math.isfinite(gamma)):
        raise Unsupported(f"alpha={alpha}, gamma={gamma} (needs alpha ≥ 0 and gamma > 0: a non-decreasing op)")
    bind_output(ctx, node, _unary(ctx, node, "elu", alpha=alpha, gamma=gamma))


@converter("HardSigmoid")
def convert_hard_sigmoid(ctx, node):
    """``y = max(0, min(1, αx + β))``, lowered exactly to ``h = αx + β``,
    ``m = relu(h)``, ``y = 1 − relu(1 − m)`` (as Clip is)."""
    a = attributes(node)
    alpha, beta = float(a.get("alpha", 0.2)), float(a.get("beta", 0.5))
    if not (math.isfinite(alpha) and math.isfinite(beta)):
        raise Unsupported(f"alpha={alpha}, beta={beta} must be finite")
    label = node_label(node)
    h = ctx.emit("relu", [_affine(ctx, node, variable_input(ctx, node), alpha, beta)], source=label)
    h = ctx.emit("relu", [_affine(ctx, node, h, -1.0, 1.0)], source=label)
    bind_output(ctx, node, _affine(ctx, node, h, -1.0, 1.0))


@converter("Pow")
def convert_pow(ctx, node):
    """``xᵖ`` with a constant scalar ``p`` (kinds ``sqrt``, ``reciprocal``, ``pow``; ``p = 1``
    the identity, ``p = 0`` the constant 1), or ``cˣ = exp(x·ln c)`` for a constant ``c > 0``."""
    base_var, exp_var = node.input[0] in ctx.var, node.input[1] in ctx.var
    if base_var and exp_var:
        raise Unsupported("both the base and the exponent depend on the model input")
    if exp_var:
        c = np.unique(np.asarray(ctx.const(node.input[0]), dtype=np.float64))
        if c.size != 1 or not (c[0] > 0 and np.isfinite(c[0])):
            raise Unsupported("a variable exponent needs a constant base that is one positive number")
        x = variable_input(ctx, node, 1)
        bind_output(ctx, node, _unary(ctx, node, "exp", _affine(ctx, node, x, math.log(float(c[0])), 0.0)))
        return
    x = variable_input(ctx, node, 0)
    values = np.unique(np.asarray(ctx.const(node.input[1]), dtype=np.float64))
    if values.size != 1 or not np.isfinite(values[0]):
        raise Unsupported("the exponent must be one finite constant")
    if np.asarray(ctx.const(node.input[1])).size > 1 and \
            np.broadcast_shapes(ctx.graph.nodes[x]["shape"], ctx.const(node.input[1]).shape) != \
            tuple(ctx.graph.nodes[x]["shape"]):
        raise Unsupported("the exponent's shape would expand the base")
    p = float(values[0])
    if p == 1.0:
        bind_output(ctx, node, x)
    elif p == 0.0:
        bind_output(ctx, node, _affine(ctx, node, x, 0.0, 1.0))
    elif p == 0.5:
        bind_output(ctx, node, _unary(ctx, node, "sqrt", x))
    elif p == -1.0:
        bind_output(ctx, node, _unary(ctx, node, "reciprocal", x))
    else:
        bind_output(ctx, node, _unary(ctx, node, "pow", x, exponent=p))


def _opset(ctx) -> int:
    return max((int(o.version) for o in ctx.opsets), default=13)


@converter("Softmax", "LogSoftmax")
def convert_softmax(ctx, node):
    """One ``softmax`` / ``log_softmax`` node over the last axis (:mod:`verifier.ops.softmax`)
    on the input with ONNX's ``axis`` moved last: from opset 13 one axis (default −1), moved
    there by a ``transpose`` and back; before, the axes from ``axis`` on (default 1),
    flattened into one by a ``reshape``."""
    x = variable_input(ctx, node)
    shape = tuple(ctx.graph.nodes[x]["shape"])
    rank = len(shape)
    new = _opset(ctx) >= 13
    axis = int(attributes(node).get("axis", -1 if new else 1))
    if not -rank <= axis < max(rank, 1):
        raise Unsupported(f"axis {axis} out of range for rank {rank}")
    axis %= max(rank, 1)
    label = node_label(node)
    if rank == 0:
        raise Unsupported("softmax of a scalar")
    kind = "softmax" if node.op_type == "Softmax" else "log_softmax"
    n = shape[axis] if new else math.prod(shape[axis:])
    rows = math.prod(shape) // max(n, 1)
    if rows * n * n > MAX_SOFTMAX_WEIGHTS:
        raise Unsupported(f"softmax over {rows} rows of {n} entries: its linear bounds need {rows * n * n:.3g} "
                          f"coefficients per sample (at most {MAX_SOFTMAX_WEIGHTS:.0e})")
    if new:
        perm = None if axis == rank - 1 else [d for d in range(rank) if d != axis] + [axis]
        h = x if perm is None else ctx.emit("transpose", [x], source=label, perm=perm)
        h = ctx.emit(kind, [h], source=label, **({} if perm else {"name": node.output[0]}))
        if perm:
            h = ctx.emit("transpose", [h], name=node.output[0], source=label, perm=[perm.index(d) for d in range(rank)])
        bind_output(ctx, node, h)
        return
    h = reshape_to(ctx, x, (math.prod(shape[:axis]), n), node)
    h = ctx.emit(kind, [h], source=label)
    bind_output(ctx, node, reshape_to(ctx, h, shape, node, node.output[0]))
