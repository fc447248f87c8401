"""Converters of the ONNX ops that become an ``einsum`` IR node (a contraction of one
variable tensor with constants, :mod:`verifier.ops.index`): Einsum with one variable
operand, linear and cubic Resize/Upsample (one interpolation matrix per resized axis,
computed by onnxruntime itself), and MatMul with a large batched constant.
"""

from __future__ import annotations

import string

import numpy as np

from .onnx_converters import Unsupported, attributes, bind_output, converter, node_label, reshape_to
from .onnx_index_converters import convert_selection, run_node


def _expand_ellipsis(equation: str, ranks: list[int]) -> tuple[list[str], str]:
    """ONNX/numpy einsum equation → one explicit term per operand and the output term,
    each ``...`` replaced by letters of its own (right-aligned, as broadcasting aligns)."""
    equation = equation.replace(" ", "")
    lhs, arrow, rhs = equation.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(ranks):
        raise Unsupported(f"equation '{equation}' has {len(terms)} operand terms for {len(ranks)} inputs")
    pool = [c for c in string.ascii_letters if c not in equation]
    dims = [rank - (len(t) - 3) if "..." in t else 0 for t, rank in zip(terms, ranks)]
    ell = "".join(pool[:max(dims, default=0)])
    terms = [t.replace("...", ell[len(ell) - d:] if d else "") for t, d in zip(terms, dims)]
    for t, rank in zip(terms, ranks):
        if len(t) != rank or not all(c in string.ascii_letters for c in t):
            raise Unsupported(f"equation '{equation}' does not match operands of ranks {ranks}")
    if arrow:
        out = rhs.replace("...", ell)
    else:
        letters = "".join(t for t in terms)
        out = ell + "".join(sorted(c for c in set(letters) - set(ell) if letters.count(c) == 1))
    return terms, out


def emit_einsum(ctx, node, equation: str, operands: list, name: str | None = None) -> str:
    """Emit ``einsum(equation, *operands)`` where exactly one operand is an IR node id (the
    variable) and the others are numpy constants; numpy/ONNX semantics (``...``, implicit
    output, broadcasting of size-1 axes). The constants are contracted into one, over every
    letter that neither the variable nor the output carries (each alone where it can be),
    so that every letter of a constant is the variable's or the output's and the node's linear part
    with ``|W|`` is exact (see :mod:`verifier.ops.index`)."""
    variable = [i for i, op in enumerate(operands) if isinstance(op, str)]
    if len(variable) != 1:
        raise Unsupported(f"{len(variable)} variable operands (exactly one keeps the product affine)")
    (v,) = variable
    shapes = [tuple(ctx.graph.nodes[op]["shape"]) if i == v else np.shape(op) for i, op in enumerate(operands)]
    terms, out = _expand_ellipsis(equation, [len(s) for s in shapes])
    sizes: dict[str, set] = {}
    for t, s in zip(terms, shapes):
        for c, n in zip(t, s):
            sizes.setdefault(c, set()).add(int(n))
    for c, found in sizes.items():
        if len(found - {1}) > 1:
            raise Unsupported(f"label '{c}' has sizes {sorted(found)} in equation '{equation}'")
    # a size-1 axis broadcast against a larger one is dropped from its operand
    keep_axis = [[not (n == 1 and max(sizes[c]) > 1) for c, n in zip(t, s)] for t, s in zip(terms, shapes)]
    terms = ["".join(c for c, k in zip(t, ks) if k) for t, ks in zip(terms, keep_axis)]
    x = operands[v]
    x_shape = tuple(n for n, k in zip(shapes[v], keep_axis[v]) if k)
    x = reshape_to(ctx, x, x_shape, node)
    consts = [np.asarray(op, dtype=np.float64).reshape([n for n, k in zip(shapes[i], keep_axis[i]) if k])
              for i, op in enumerate(operands) if i != v]
    const_terms = [t for i, t in enumerate(terms) if i != v]
    free = set(terms[v] + out)
    for i, t in enumerate(const_terms):  # sum out the letters only this constant has; take diagonals
        others = set(terms[v] + out + "".join(const_terms[:i] + const_terms[i + 1:]))
        needed = "".join(dict.fromkeys(c for c in t if c in others))
        consts[i], const_terms[i] = np.einsum(f"{t}->{needed}", consts[i]), needed
    if any(set(t) - free for t in const_terms):  # a letter summed across constants: contract them
        needed = "".join(dict.fromkeys(c for t in const_terms for c in t if c in free))
        consts, const_terms = [np.einsum(",".join(const_terms) + "->" + needed, *consts)], [needed]
    params = {f"w{i}": ctx.tensor(w) for i, w in enumerate(consts)}
    lhs = ",".join([terms[v], *const_terms])
    unused = [c for c in string.ascii_letters if c not in lhs + out]
    if not unused:
        raise Unsupported("the equation uses every letter")
    if not consts and terms[v] == out:
        return reshape_to(ctx, x, x_shape, node, name)
    return ctx.emit("einsum", [x], name=name, params=params, source=node_label(node), equation=f"{lhs}->{out}",
                    batch=unused[0])


@converter("Einsum")
def convert_einsum(ctx, node):
    """Einsum with exactly one operand that depends on the model input (linear in it)."""
    operands = [ctx.var[i] if i in ctx.var else ctx.const(i) for i in node.input]
    bind_output(ctx, node, emit_einsum(ctx, node, attributes(node)["equation"], operands, node.output[0]))


def _resize_targets(ctx, node, shape: tuple) -> tuple[list[float] | None, list[int] | None]:
    """Per-axis scales (or sizes) of a Resize/Upsample node, all axes listed."""
    a = attributes(node)
    if node.op_type == "Upsample":
        scales = a.get("scales")
        scales = ctx.const_or_none(node, 1) if scales is None else scales
        return [float(s) for s in np.asarray(scales).reshape(-1)], None
    if len(node.input) == 2:  # opset 10: (X, scales)
        return [float(s) for s in np.asarray(ctx.const_or_none(node, 1)).reshape(-1)], None
    scales, sizes = ctx.const_or_none(node, 2), ctx.const_or_none(node, 3)
    axes = [int(v) % len(shape) for v in a.get("axes", range(len(shape)))]
    if sizes is not None and np.size(sizes):
        policy = a.get("keep_aspect_ratio_policy", "stretch")
        if policy != "stretch":
            raise Unsupported(f"keep_aspect_ratio_policy '{policy}' (only 'stretch' is supported)")
        full = list(shape)
        for axis, n in zip(axes, np.asarray(sizes).reshape(-1)):
            full[axis] = int(n)
        return None, full
    full_scales = [1.0] * len(shape)
    for axis, s in zip(axes, np.asarray(scales).reshape(-1)):
        full_scales[axis] = float(s)
    return full_scales, None


def _axis_matrix(ctx, node, n: int, scale: float | None, size: int | None) -> np.ndarray:
    """The ``(out, n)`` interpolation matrix of one axis of size ``n``: onnxruntime resizes
    the ``n`` unit vectors (a ``(n, 1, n, 1)`` tensor, only axis 2 resized)."""
    eye = np.eye(n, dtype=np.float32).reshape(n, 1, n, 1)
    vec = np.array([1.0, 1.0, scale, 1.0], dtype=np.float32) if size is None else None
    extra: dict = {}
    if node.op_type == "Upsample" and "scales" in attributes(node):
        feeds, extra = [eye], {"scales": [float(v) for v in vec]}
    elif node.op_type == "Upsample" or len(node.input) == 2:
        feeds = [eye, vec]
    else:
        empty = np.zeros(0, dtype=np.float32)
        opset = max((o.version for o in ctx.opsets), default=13)
        no_scales = None if opset >= 13 else empty  # optional from opset 13 (and then must be absent)
        sizes = None if size is None else np.array([n, 1, size, 1], dtype=np.int64)
        feeds = [eye, empty, no_scales if vec is None else vec, sizes]
    (out,) = run_node(node, feeds, ctx.opsets, drop_attributes=("axes", "scales"), add_attributes=extra)
    return np.asarray(out, dtype=np.float64)[:, 0, :, 0].T


@converter("Resize", "Upsample")
def convert_resize(ctx, node):
    """Resize (opsets 10–19) and Upsample (7–9) with constant scales or sizes: ``nearest``
    becomes a ``select``; ``linear`` and ``cubic`` (every coordinate transformation mode
    but ``tf_crop_and_resize``, antialias too) an ``einsum`` with one matrix per resized
    axis."""
    a = attributes(node)
    x = ctx.var.get(node.input[0])
    if x is None:
        raise Unsupported("input 0 must depend on the model input")
    mode = a.get("mode", "nearest")
    transform = a.get("coordinate_transformation_mode", "half_pixel")
    if transform == "tf_crop_and_resize":
        raise Unsupported("coordinate_transformation_mode 'tf_crop_and_resize' (a crop that extrapolates "
                          "with a constant) is not supported")
    if mode == "nearest":
        convert_selection(ctx, node, (0,))
        return
    if mode not in ("linear", "bilinear", "cubic"):
        raise Unsupported(f"mode '{mode}' (nearest, linear and cubic are supported)")
    shape = tuple(ctx.shape(node.input[0]))
    scales, sizes = _resize_targets(ctx, node, shape)
    if len(scales or sizes) != len(shape):
        raise Unsupported(f"{len(scales or sizes)} scales or sizes for an input of rank {len(shape)}")
    letters = string.ascii_letters
    x_term, out, matrices, terms = letters[:len(shape)], list(letters[:len(shape)]), [], []
    for axis, n in enumerate(shape):
        m = _axis_matrix(ctx, node, n, None if scales is None else scales[axis], None if sizes is None else sizes[axis])
        if m.shape == (n, n) and np.array_equal(m, np.eye(n)):
            continue
        out[axis] = letters[len(shape) + len(matrices)]
        terms.append(out[axis] + x_term[axis])
        matrices.append(m)
    if not matrices:
        bind_output(ctx, node, x)
        return
    equation = ",".join([x_term, *terms]) + "->" + "".join(out)
    bind_output(ctx, node, emit_einsum(ctx, node, equation, [x, *matrices], node.output[0]))
