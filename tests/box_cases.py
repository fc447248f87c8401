"""The op cases of the soundness property tests, and the check they share.

``CASES``: name → ``(fn(rng) -> Built, pytest marks)``, one small random ONNX model per op
(and per notable attribute combination), built with :mod:`onnx_builders`;
:func:`check_box_soundness` bounds a model with Box over random boxes and checks that
onnxruntime's outputs on ≥ ``SAMPLES`` points of each box lie inside (``tol = RTOL·(1 + |bound|)``).
Used by ``test_box_soundness.py`` (Box), ``test_domain_soundness.py`` (every other domain),
``index_cases.py`` and ``test_ops_bilinear.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import torch

import verifier
from onnx_builders import (
    DOUBLE,
    FLOAT,
    INT64_MAX,
    INT64_MIN,
    GraphBuilder,
    Reference,
    random_box,
    sample_box,
)


N = "N"  # the symbolic batch dimension
SAMPLES = 1000  # per box, besides the centre and (for small inputs) the corners
BOXES = 2  # boxes bounded together in one compute_bounds call
RTOL = 1e-5

@dataclass
class Built:
    """A model to test and how onnxruntime evaluates it (see :class:`Reference`)."""

    model: onnx.ModelProto
    per_sample: bool = False
    batch_axis: int = 0



# --- checking ------------------------------------------------------------------------
def assert_within(ys: np.ndarray, lb: np.ndarray, ub: np.ndarray, what: str = "output") -> None:
    """Every row of ``ys`` lies in ``[lb − tol, ub + tol]``, ``tol = RTOL·(1 + |bound|)``."""
    assert ys.shape[1:] == lb.shape == ub.shape, (ys.shape, lb.shape, ub.shape)
    low = ys < lb - RTOL * (1 + np.abs(lb))
    high = ys > ub + RTOL * (1 + np.abs(ub))
    if low.any() or high.any():
        bad = np.argwhere(low | high)
        s, j = bad[0]
        raise AssertionError(
            f"{len(bad)} sampled {what} value(s) outside the bounds; e.g. sample {s}, entry {j}: "
            f"{ys[s, j]!r} not in [{lb[j]!r}, {ub[j]!r}]")


def bounds_and_samples(path, built: Built, box, samples: int = SAMPLES):
    """Load ``path`` (fidelity check on) and draw ``BOXES`` random float64 boxes.

    Returns ``(model, lower, upper, rng, per_box)``; ``per_box()`` yields ``(b, xs, ys)``:
    ``≥ samples`` points ``xs`` inside box ``b`` and onnxruntime's outputs ``ys`` on them,
    ``(len(xs), output_size)``."""
    model = verifier.load(path, check=True)
    assert model.fidelity is not None and model.fidelity.ok
    seed, centre, width = box
    rng = np.random.default_rng(seed)
    lo, hi = random_box(rng, model.input_shape, centre, width, batch=BOXES)
    ref = Reference(path, per_sample=built.per_sample, batch_axis=built.batch_axis)

    def per_box():
        for b in range(BOXES):
            xs = sample_box(rng, lo[b], hi[b], samples)
            assert np.all(xs >= lo[b]) and np.all(xs <= hi[b])
            ys = ref.run(xs)
            assert ys.shape == (len(xs), model.output_size), (ys.shape, model.output_size)
            yield b, xs, ys

    return model, torch.from_numpy(lo), torch.from_numpy(hi), rng, per_box


def check_box_soundness(path, built: Built, box, samples: int = SAMPLES) -> None:
    model, lo, hi, _, per_box = bounds_and_samples(path, built, box, samples)
    lb, ub = verifier.compute_bounds(model, lo, hi, domain="box")
    assert lb.dtype == torch.float64 and ub.dtype == torch.float64
    assert lb.shape == ub.shape == (BOXES, model.output_size)
    lb, ub = lb.numpy(), ub.numpy()
    assert np.all(np.isfinite(lb)) and np.all(np.isfinite(ub))
    assert np.all(lb <= ub)
    for b, _, ys in per_box():
        assert_within(ys, lb[b], ub[b])


# --- the models ----------------------------------------------------------------------
CASES: dict[str, tuple] = {}


def case(name: str, *marks):
    """Register ``fn(rng) -> Built`` as test case ``name`` (with optional pytest marks)."""

    def register(fn):
        assert name not in CASES, name
        CASES[name] = (fn, marks)
        return fn

    return register


def cases(names_and_kwargs: dict, *marks):
    """Register one builder under several names with different keyword arguments."""

    def register(fn):
        for name, kwargs in names_and_kwargs.items():
            case(name, *marks)(lambda rng, _fn=fn, _kw=kwargs: _fn(rng, **_kw))
        return fn

    return register


# Gemm ------------------------------------------------------------------------------------
def _gemm_bias(g: GraphBuilder, kind: str, m: int) -> list[str]:
    shapes = {"none": None, "vec": (m,), "row": (1, m), "col": (m, 1), "scalar": (), "one": (1,)}
    shape = shapes[kind]
    return [] if shape is None else [g.rand(*shape)]


@cases({
    "gemm": {},
    "gemm-transB-alpha-beta": dict(trans_b=1, alpha=0.7, beta=-1.3, bias="row"),
    "gemm-no-bias-negative-alpha": dict(alpha=-2.0, bias="none"),
    "gemm-scalar-bias": dict(beta=0.5, bias="scalar"),
    "gemm-beta-zero": dict(beta=0.0, bias="vec"),
    "gemm-transA-variable": dict(transpose_input=True, trans_a=1, trans_b=1, bias="one"),
    "gemm-weight-first-transB": dict(weight_first=True, bias="col"),
    "gemm-weight-first-transA-transB": dict(weight_first=True, trans_a=1, alpha=1.5, beta=0.5, bias="scalar"),
    "gemm-weight-first-transposed-input": dict(weight_first=True, transpose_input=True, bias="col"),
    "gemm-weight-first-no-bias": dict(weight_first=True, trans_a=1, bias="none", alpha=-0.5),
})
def build_gemm(rng, trans_a=0, trans_b=0, alpha=1.0, beta=1.0, bias="vec", weight_first=False,
               transpose_input=False):
    k, m = 4, 3
    g = GraphBuilder(rng, (N, k))
    x = g.op("Transpose", g.x, perm=[1, 0]) if transpose_input else g.x  # (k, N)
    attrs = dict(alpha=alpha, beta=beta, transA=trans_a, transB=trans_b)
    if not weight_first:
        w = g.weight(*((m, k) if trans_b else (k, m)))
        y = g.op("Gemm", x, w, *_gemm_bias(g, bias, m), **attrs)
        return Built(g.model(y))
    # Y = A'·B' with constant A: the variable B' = x^T is (k, N), Y is (m, N).
    w = g.weight(*((k, m) if trans_a else (m, k)), fan_in=k)
    attrs["transB"] = 0 if transpose_input else 1
    y = g.op("Gemm", w, x, *_gemm_bias(g, bias, m), **attrs)
    return Built(g.model(y), batch_axis=1)


@case("gemm-mlp")
def build_gemm_mlp(rng):
    g = GraphBuilder(rng, (N, 5))
    h = g.op("Relu", g.op("Gemm", g.x, g.weight(8, 5), g.rand(8), transB=1))
    h = g.op("Relu", g.op("Gemm", h, g.weight(8, 8), g.rand(8)))
    return Built(g.model(g.op("Gemm", h, g.weight(8, 3), g.rand(3))))


@case("double-precision-model")
def build_double(rng):
    g = GraphBuilder(rng, (N, 4), elem_type=DOUBLE)
    h = g.op("Tanh", g.op("Gemm", g.x, g.weight(4, 6), g.rand(6)))
    return Built(g.model(g.op("Gemm", h, g.weight(6, 2), g.rand(2))))


# MatMul ----------------------------------------------------------------------------------
@case("matmul-xW")
def build_matmul_xw(rng):
    g = GraphBuilder(rng, (N, 5))
    return Built(g.model(g.op("MatMul", g.x, g.weight(5, 3, fan_in=5))))


@case("matmul-xW-3d-input")
def build_matmul_xw_3d(rng):
    g = GraphBuilder(rng, (N, 2, 5))
    return Built(g.model(g.op("MatMul", g.x, g.weight(5, 3, fan_in=5))))


@case("matmul-xw-1d-weight")
def build_matmul_xw_1d(rng):
    g = GraphBuilder(rng, (N, 5))
    return Built(g.model(g.op("MatMul", g.x, g.weight(5))))


@case("matmul-Wx-column-input")
def build_matmul_wx_column(rng):
    g = GraphBuilder(rng, (N, 5, 1))  # per sample a column vector: W @ x is (4, 1)
    h = g.op("Relu", g.op("Add", g.op("MatMul", g.weight(4, 5), g.x), g.rand(4, 1)))
    return Built(g.model(g.op("MatMul", g.weight(3, 4), h)))


@case("matmul-wx-1d-weight-column-input")
def build_matmul_wx_1d(rng):
    g = GraphBuilder(rng, (N, 5, 1))
    return Built(g.model(g.op("MatMul", g.weight(5), g.x)))


@case("matmul-Wx-acas-vector-no-batch-axis")
def build_acas_vector(rng):
    """ACAS Xu written weight-first: the input is a plain vector (5,), no batch axis."""
    g = GraphBuilder(rng, (5,))
    h = g.op("Relu", g.op("Add", g.op("MatMul", g.weight(12, 5), g.x), g.rand(12)))
    h = g.op("Relu", g.op("Add", g.op("MatMul", g.weight(12, 12), h), g.rand(12)))
    return Built(g.model(g.op("Add", g.op("MatMul", g.weight(5, 12), h), g.rand(5))), per_sample=True)


@case("matmul-Wx-acas-column-no-batch-axis")
def build_acas_column(rng):
    g = GraphBuilder(rng, (5, 1))
    h = g.op("Relu", g.op("Add", g.op("MatMul", g.weight(12, 5), g.x), g.rand(12, 1)))
    return Built(g.model(g.op("Add", g.op("MatMul", g.weight(5, 12), h), g.rand(5, 1))), per_sample=True)


@case("matmul-batched-rank3-constant")
def build_matmul_batched(rng):
    """A rank-3 constant right operand: one matrix per leading index (batched, still affine)."""
    g = GraphBuilder(rng, (N, 2, 1, 3))
    h = g.op("Relu", g.op("MatMul", g.x, g.weight(2, 3, 4, fan_in=3)))
    return Built(g.model(g.op("MatMul", h, g.weight(2, 4, 2, fan_in=4))))


@case("clip-min-only-max-only-both")
def build_clip(rng):
    """Clip with only max, only min (optional inputs left empty) and both."""
    g = GraphBuilder(rng, (N, 5))
    h = g.op("Clip", g.op("MatMul", g.x, g.weight(5, 4, fan_in=5)), "", g.const(np.float32(0.3)))
    h = g.op("Clip", g.op("MatMul", h, g.weight(4, 4, fan_in=4)), g.const(np.float32(-0.2)))
    return Built(g.model(g.op("Clip", h, g.const(np.float32(-0.1)), g.const(np.float32(0.1)))))


@case("acas-vnncomp-style")
def build_acas_vnncomp(rng):
    """Like VNN-COMP's ACAS Xu files: input (1,1,1,5), Sub/Div normalisation, Flatten,
    x@W MatMul + Add, constants also listed as graph inputs (IR-3 style)."""
    g = GraphBuilder(rng, (1, 1, 1, 5))
    h = g.op("Div", g.op("Sub", g.x, g.rand(1, 1, 1, 5)), g.rand(1, 1, 1, 5, low=0.5, scale=2.0))
    h = g.op("Flatten", h)
    h = g.op("Relu", g.op("Add", g.op("MatMul", h, g.weight(5, 10, fan_in=5)), g.rand(10)))
    h = g.op("Relu", g.op("Add", g.op("MatMul", h, g.weight(10, 10, fan_in=10)), g.rand(10)))
    y = g.op("Add", g.op("MatMul", h, g.weight(10, 5, fan_in=10)), g.rand(5))
    return Built(g.model(y, initializers_as_inputs=True), per_sample=True)


# Elementwise arithmetic with constants ---------------------------------------------------
def _const_value(rng, op: str, shape):
    if op == "Div":
        return rng.choice([-1.0, 1.0], size=shape) * rng.uniform(0.5, 2.0, size=shape)
    return rng.normal(0.0, 1.0, size=shape)


@cases({
    "add-const-right": dict(op="Add", shape=(3, 1, 1)),
    "add-const-left": dict(op="Add", shape=(3, 1, 1), const_first=True),
    "add-scalar": dict(op="Add", shape=()),
    "add-const-constant-node": dict(op="Add", shape=(2,), constant_node=True),
    "sub-const-right": dict(op="Sub", shape=(3, 1, 1)),
    "sub-const-left": dict(op="Sub", shape=(3, 1, 1), const_first=True),
    "sub-const-extra-leading-axis": dict(op="Sub", shape=(1, 1, 3, 2, 2), const_first=True),
    "mul-const-right": dict(op="Mul", shape=(3, 1, 1)),
    "mul-const-left": dict(op="Mul", shape=(3, 1, 1), const_first=True),
    "mul-full-shape": dict(op="Mul", shape=(1, 3, 2, 2)),
    "mul-scalar-left": dict(op="Mul", shape=(), const_first=True),
    "mul-last-axis-extra-leading-axis": dict(op="Mul", shape=(1, 1, 1, 1, 2)),
    "div-const-channel": dict(op="Div", shape=(3, 1, 1)),
    "div-scalar": dict(op="Div", shape=()),
})
def build_arith_const(rng, op, shape, const_first=False, constant_node=False):
    g = GraphBuilder(rng, (N, 3, 2, 2))
    value = _const_value(rng, op, shape)
    c = g.constant_node(value) if constant_node else g.const(value)
    y = g.op(op, c, g.x) if const_first else g.op(op, g.x, c)
    # A constant of rank 5 broadcasts the rank-4 input: ONNX's batch axis becomes axis 1.
    return Built(g.model(y), batch_axis=1 if len(shape) == 5 else 0)


@case("mul-const-with-zeros")
def build_mul_zeros(rng):
    g = GraphBuilder(rng, (N, 6))
    c = rng.normal(size=6)
    c[::2] = 0.0
    return Built(g.model(g.op("Mul", g.x, g.const(c))))


@cases({
    "matmul-add-bias (fused)": dict(op="Add"),
    "matmul-add-bias-left (fused)": dict(op="Add", const_first=True),
    "matmul-sub-bias (fused)": dict(op="Sub"),
    "matmul-sub-from-const": dict(op="Sub", const_first=True),
    "matmul-add-bias-shared-product": dict(op="Add", shared=True),
})
def build_matmul_bias(rng, op, const_first=False, shared=False):
    g = GraphBuilder(rng, (N, 4))
    p = g.op("MatMul", g.x, g.weight(4, 3, fan_in=4))
    b = g.rand(3)
    y = g.op(op, b, p) if const_first else g.op(op, p, b)
    if shared:  # the product has a second consumer, so the bias cannot be fused
        y = g.op("Add", y, g.op("Relu", p))
    return Built(g.model(y))


# Add / Sub of two variable tensors --------------------------------------------------------
@cases({
    "residual-add": dict(op="Add"),
    "residual-add-swapped": dict(op="Add", swap=True),
    "residual-sub": dict(op="Sub"),
    "residual-sub-swapped": dict(op="Sub", swap=True),
})
def build_residual(rng, op, swap=False):
    g = GraphBuilder(rng, (N, 4))
    r = g.op("Relu", g.op("Gemm", g.x, g.weight(4, 4), g.rand(4)))
    return Built(g.model(g.op(op, r, g.x) if swap else g.op(op, g.x, r)))


@case("add-variables-broadcast")
def build_add_broadcast(rng):
    g = GraphBuilder(rng, (N, 4))
    s = g.op("MatMul", g.x, g.weight(4, 1, fan_in=4))  # (N, 1)
    return Built(g.model(g.op("Sub", g.op("Relu", s), g.op("Tanh", g.x))))


@case("sub-same-tensor")
def build_sub_same(rng):
    g = GraphBuilder(rng, (N, 2, 3))
    return Built(g.model(g.op("Sub", g.x, g.x)))


@case("residual-conv")
def build_residual_conv(rng):
    g = GraphBuilder(rng, (N, 2, 4, 4))
    h = g.op("Relu", g.op("Conv", g.x, g.weight(2, 2, 3, 3), g.rand(2), pads=[1, 1, 1, 1]))
    h = g.op("Conv", h, g.weight(2, 2, 3, 3), pads=[1, 1, 1, 1])
    return Built(g.model(g.op("Relu", g.op("Add", h, g.x))))


# Neg ----------------------------------------------------------------------------------------
@case("neg")
def build_neg(rng):
    g = GraphBuilder(rng, (N, 2, 3))
    return Built(g.model(g.op("Neg", g.x)))


@case("neg-in-network")
def build_neg_net(rng):
    g = GraphBuilder(rng, (N, 4))
    h = g.op("Relu", g.op("Neg", g.op("Gemm", g.x, g.weight(4, 5), g.rand(5))))
    return Built(g.model(g.op("Gemm", h, g.weight(5, 2), g.rand(2))))


# Conv ----------------------------------------------------------------------------------------
@cases({
    "conv": dict(),
    "conv-stride2-pad1": dict(attrs=dict(strides=[2, 2], pads=[1, 1, 1, 1])),
    "conv-asymmetric-pads": dict(kernel=(2, 3), attrs=dict(pads=[0, 1, 2, 0])),
    "conv-dilation2": dict(attrs=dict(dilations=[2, 2], pads=[1, 2, 0, 1])),
    "conv-groups2": dict(c=4, m=6, attrs=dict(group=2, pads=[1, 1, 1, 1])),
    "conv-depthwise-rect-stride": dict(c=3, m=3, attrs=dict(group=3, strides=[2, 1])),
    "conv-no-bias": dict(bias=False, attrs=dict(strides=[1, 2])),
    "conv-auto-pad-same-upper": dict(hw=(6, 6), attrs=dict(auto_pad="SAME_UPPER", strides=[2, 2])),
    "conv-auto-pad-same-lower": dict(kernel=(2, 2), attrs=dict(auto_pad="SAME_LOWER", strides=[2, 2])),
    "conv-auto-pad-valid": dict(attrs=dict(auto_pad="VALID")),
    "conv-1d": dict(hw=(7,), kernel=(3,), attrs=dict(strides=[2], pads=[1, 2])),
    "conv-3d": dict(hw=(3, 4, 4), kernel=(2, 2, 2), attrs=dict(pads=[1, 0, 0, 0, 1, 1])),
})
def build_conv(rng, c=2, m=3, hw=(5, 5), kernel=(3, 3), bias=True, attrs=None):
    attrs = dict(attrs or {})
    g = GraphBuilder(rng, (N, c, *hw))
    w = g.weight(m, c // attrs.get("group", 1), *kernel)
    return Built(g.model(g.op("Conv", g.x, w, *([g.rand(m)] if bias else []), **attrs)))


@cases({
    "conv-then-add-bias (fused)": dict(shape=(3, 1, 1)),
    "conv-then-add-4d-const": dict(shape=(1, 3, 1, 1)),
    "conv-then-sub-scalar (fused)": dict(shape=(), op="Sub"),
    "convtranspose-then-add-bias (fused)": dict(shape=(3, 1, 1), transpose=True),
    "convtranspose-with-bias-then-add-bias (fused)": dict(shape=(1, 1, 1), transpose=True, bias=True),
})
def build_conv_add(rng, shape, op="Add", transpose=False, bias=False):
    g = GraphBuilder(rng, (N, 2, 4, 4))
    b = [g.rand(3)] if bias else []
    if transpose:
        h = g.op("ConvTranspose", g.x, g.weight(2, 3, 3, 3), *b, strides=[2, 2], pads=[1, 1, 1, 1])
    else:
        h = g.op("Conv", g.x, g.weight(3, 2, 3, 3), *b, pads=[1, 1, 1, 1])
    return Built(g.model(g.op(op, h, g.rand(*shape))))


# ConvTranspose ---------------------------------------------------------------------------
@cases({
    "convtranspose": dict(),
    "convtranspose-stride2-pads": dict(attrs=dict(strides=[2, 2], pads=[1, 1, 1, 1])),
    "convtranspose-output-padding": dict(attrs=dict(strides=[2, 2], pads=[1, 0, 0, 1], output_padding=[1, 1])),
    "convtranspose-output-padding-rect": dict(attrs=dict(strides=[3, 2], output_padding=[2, 0])),
    "convtranspose-dilation2": dict(attrs=dict(dilations=[2, 2], pads=[1, 1, 1, 1])),
    "convtranspose-groups2": dict(c=4, m=4, attrs=dict(group=2, strides=[2, 2])),
    "convtranspose-no-bias": dict(bias=False, kernel=(2, 3), attrs=dict(strides=[2, 1])),
    "convtranspose-output-shape": dict(attrs=dict(strides=[2, 2], output_shape=[10, 12])),
    "convtranspose-auto-pad-same-upper": dict(attrs=dict(strides=[2, 2], auto_pad="SAME_UPPER")),
    "convtranspose-auto-pad-same-lower": dict(kernel=(4, 4), attrs=dict(strides=[2, 2], auto_pad="SAME_LOWER")),
    "convtranspose-kernel1-stride2": dict(kernel=(1, 1), attrs=dict(strides=[2, 2])),
    "convtranspose-1d": dict(hw=(5,), kernel=(4,), attrs=dict(strides=[3], pads=[1, 2], output_padding=[2])),
})
def build_conv_transpose(rng, c=2, m=3, hw=(4, 5), kernel=(3, 3), bias=True, attrs=None):
    attrs = dict(attrs or {})
    g = GraphBuilder(rng, (N, c, *hw))
    w = g.weight(c, m // attrs.get("group", 1), *kernel, fan_in=c * int(np.prod(kernel)))
    return Built(g.model(g.op("ConvTranspose", g.x, w, *([g.rand(m)] if bias else []), **attrs)))


# Activations -------------------------------------------------------------------------------
@cases({
    "relu": dict(op="Relu"),
    "leakyrelu-default-alpha": dict(op="LeakyRelu"),
    "leakyrelu-alpha-0.2": dict(op="LeakyRelu", alpha=0.2),
    "leakyrelu-alpha-1.7": dict(op="LeakyRelu", alpha=1.7),
    "leakyrelu-alpha-0": dict(op="LeakyRelu", alpha=0.0),
    "leakyrelu-alpha-negative-0.5": dict(op="LeakyRelu", alpha=-0.5),
    "leakyrelu-alpha-negative-2": dict(op="LeakyRelu", alpha=-2.0),
    "sigmoid": dict(op="Sigmoid"),
    "tanh": dict(op="Tanh"),
})
def build_activation(rng, op, alpha=None):
    g = GraphBuilder(rng, (N, 6))
    h = g.op("Gemm", g.x, g.weight(6, 6), g.rand(6))
    attrs = {} if alpha is None else {"alpha": alpha}
    y = g.op("Concat", g.op(op, h, **attrs), g.op(op, g.x, **attrs), axis=1)
    return Built(g.model(y))


# Pooling -------------------------------------------------------------------------------------
@cases({
    "maxpool-k2s2": dict(attrs=dict(kernel_shape=[2, 2], strides=[2, 2])),
    "maxpool-k3-pads1": dict(attrs=dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])),
    "maxpool-asymmetric-pads": dict(attrs=dict(kernel_shape=[2, 3], pads=[0, 1, 1, 2], strides=[1, 2])),
    "maxpool-ceil": dict(hw=(5, 5), attrs=dict(kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1)),
    "maxpool-ceil-pads": dict(attrs=dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1)),
    "maxpool-ceil-stride3": dict(hw=(7, 8), attrs=dict(kernel_shape=[2, 2], strides=[3, 3], pads=[1, 0, 1, 1], ceil_mode=1)),
    "maxpool-dilation2": dict(attrs=dict(kernel_shape=[2, 2], dilations=[2, 2], pads=[1, 0, 0, 1])),
    "maxpool-auto-pad-same-upper": dict(hw=(5, 5), attrs=dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER")),
    "maxpool-1d": dict(hw=(7,), attrs=dict(kernel_shape=[3], strides=[2], pads=[1, 1], ceil_mode=1)),
})
def build_maxpool(rng, hw=(6, 6), attrs=None):
    g = GraphBuilder(rng, (N, 2, *hw), opset=13)
    return Built(g.model(g.op("MaxPool", g.x, **attrs)))


@cases({
    "averagepool-k2s2": dict(attrs=dict(kernel_shape=[2, 2], strides=[2, 2])),
    "averagepool-pads-count-include-pad-0": dict(attrs=dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])),
    "averagepool-pads-count-include-pad-1": dict(attrs=dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=1)),
    "averagepool-asymmetric-pads-cip1": dict(attrs=dict(kernel_shape=[2, 3], pads=[0, 1, 1, 2], count_include_pad=1)),
    "averagepool-asymmetric-pads-cip0": dict(attrs=dict(kernel_shape=[2, 3], pads=[0, 1, 1, 2], strides=[2, 1])),
    "averagepool-ceil": dict(hw=(5, 5), attrs=dict(kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1)),
    "averagepool-ceil-pads-cip0": dict(attrs=dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1)),
    "averagepool-ceil-pads-cip1": dict(attrs=dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1,
                                                   count_include_pad=1)),
    "averagepool-auto-pad-same-upper": dict(hw=(5, 5), attrs=dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER")),
    "averagepool-1d": dict(hw=(7,), attrs=dict(kernel_shape=[3], strides=[2], pads=[1, 1], count_include_pad=1)),
})
def build_avgpool(rng, hw=(6, 6), attrs=None):
    g = GraphBuilder(rng, (N, 2, *hw))
    return Built(g.model(g.op("AveragePool", g.x, **attrs)))


@cases({
    "globalaveragepool-2d": dict(hw=(4, 5)),
    "globalaveragepool-1d": dict(hw=(5,)),
    "globalaveragepool-3d": dict(hw=(2, 3, 3)),
})
def build_global_avgpool(rng, hw):
    g = GraphBuilder(rng, (N, 3, *hw))
    return Built(g.model(g.op("GlobalAveragePool", g.x)))


# BatchNormalization ---------------------------------------------------------------------
@cases({
    "batchnorm-4d": dict(shape=(3, 4, 4)),
    "batchnorm-2d-input": dict(shape=(3,)),
    "batchnorm-3d-input-epsilon": dict(shape=(3, 5), epsilon=1e-2),
    "batchnorm-after-conv": dict(shape=(2, 4, 4), conv=True),
})
def build_batchnorm(rng, shape, epsilon=None, conv=False):
    g = GraphBuilder(rng, (N, *shape))
    h = g.op("Conv", g.x, g.weight(3, 2, 3, 3), pads=[1, 1, 1, 1]) if conv else g.x
    c = 3
    params = [g.rand(c, scale=2.0), g.rand(c), g.rand(c), g.rand(c, low=0.05, scale=2.0)]
    attrs = {} if epsilon is None else {"epsilon": epsilon}
    return Built(g.model(g.op("BatchNormalization", h, *params, **attrs)))


# Shape ops ---------------------------------------------------------------------------------
@cases({
    "flatten-axis1": dict(axis=1),
    "flatten-axis2": dict(axis=2),
    "flatten-axis-negative": dict(axis=-1),
    "flatten-axis0": dict(axis=0),
})
def build_flatten(rng, axis):
    g = GraphBuilder(rng, (N, 2, 3, 2))
    h = g.op("Flatten", g.op("Relu", g.x), axis=axis)
    return Built(g.model(h))


@cases({
    "reshape-0-minus1": dict(target=[0, -1]),
    "reshape-0-3-minus1": dict(target=[0, 3, -1]),
    "reshape-0-0-6": dict(target=[0, 0, 6]),
    "reshape-minus1-4 (batch folded)": dict(target=[-1, 4]),
    "reshape-constant-node": dict(target=[0, 12, 1], constant_node=True),
    "reshape-opset14-allowzero-0": dict(target=[0, 2, -1], opset=14, allowzero=0),
})
def build_reshape(rng, target, constant_node=False, opset=13, allowzero=None):
    g = GraphBuilder(rng, (N, 2, 3, 2), opset=opset)
    shape = g.constant_node(np.array(target, dtype=np.int64)) if constant_node else g.ints(target)
    attrs = {} if allowzero is None else {"allowzero": allowzero}
    return Built(g.model(g.op("Reshape", g.x, shape, **attrs)))


@cases({
    "transpose-perm-0213": dict(perm=[0, 2, 1, 3]),
    "transpose-perm-0312": dict(perm=[0, 3, 1, 2]),
    "transpose-default-reverse": dict(perm=None, batch_axis=-1),
    "transpose-moves-batch-axis": dict(perm=[1, 0, 2, 3], batch_axis=1),
    "transpose-identity-perm": dict(perm=[0, 1, 2, 3]),
})
def build_transpose(rng, perm, batch_axis=0):
    g = GraphBuilder(rng, (N, 2, 3, 4))
    attrs = {} if perm is None else {"perm": perm}
    return Built(g.model(g.op("Transpose", g.x, **attrs)), batch_axis=batch_axis)


@cases({
    "squeeze-axis": dict(axes=[2]),
    "squeeze-negative-axis": dict(axes=[-2]),
    "squeeze-no-axes": dict(axes=None),
    "squeeze-opset11-attribute": dict(axes=[2], opset=11),
})
def build_squeeze(rng, axes, opset=13):
    g = GraphBuilder(rng, (N, 3, 1, 4), opset=opset)
    if axes is None:
        # Shape inference cannot tell which axes a symbolic batch squeezes: declare the output.
        h = g.op("Squeeze", g.x)
        y = g.op("MatMul", h, g.weight(4, 2, fan_in=4))
        return Built(g.model(y, output_shape=[N, 3, 2]))
    elif opset >= 13:
        h = g.op("Squeeze", g.x, g.ints(axes))
    else:
        h = g.op("Squeeze", g.x, axes=axes)
    return Built(g.model(g.op("MatMul", h, g.weight(4, 2, fan_in=4))))


@cases({
    "unsqueeze-axis1": dict(axes=[1]),
    "unsqueeze-negative-axis": dict(axes=[-1]),
    "unsqueeze-two-axes": dict(axes=[1, 4]),
    "unsqueeze-opset11-attribute": dict(axes=[2], opset=11),
})
def build_unsqueeze(rng, axes, opset=13):
    g = GraphBuilder(rng, (N, 3, 4), opset=opset)
    h = g.op("Unsqueeze", g.x, g.ints(axes)) if opset >= 13 else g.op("Unsqueeze", g.x, axes=axes)
    return Built(g.model(g.op("Relu", h)))


@cases({
    "concat-two-branches": dict(axis=1),
    "concat-two-branches-negative-axis": dict(axis=-1),
})
def build_concat_branches(rng, axis):
    g = GraphBuilder(rng, (N, 4))
    a = g.op("Relu", g.x)
    b = g.op("Gemm", g.x, g.weight(4, 3), g.rand(3))
    return Built(g.model(g.op("Concat", a, b, g.x, axis=axis)))


@case("concat-conv-branches-spatial-axis")
def build_concat_conv(rng):
    g = GraphBuilder(rng, (N, 2, 3, 3))
    a = g.op("Conv", g.x, g.weight(2, 2, 3, 3), g.rand(2), pads=[1, 1, 1, 1])
    return Built(g.model(g.op("Concat", g.op("Sigmoid", a), g.x, axis=2)))


@cases({
    "concat-variable-and-constant (batch 1)": dict(),
    "concat-constant-and-variable (batch 1)": dict(const_first=True),
})
def build_concat_const(rng, const_first=False):
    g = GraphBuilder(rng, (1, 4))  # fixed batch of 1: onnxruntime runs per sample
    h = g.op("Gemm", g.x, g.weight(4, 3), g.rand(3))
    c = g.rand(1, 2)
    y = g.op("Concat", c, h, axis=1) if const_first else g.op("Concat", h, c, axis=1)
    return Built(g.model(g.op("Tanh", y)), per_sample=True)


@case("concat-variable-and-expanded-constant")
def build_concat_expand(rng):
    """A constant broadcast to the batch with Shape → Slice → Concat → Expand."""
    g = GraphBuilder(rng, (N, 4))
    batch = g.op("Slice", g.op("Shape", g.x), g.ints([0]), g.ints([1]))
    target = g.op("Concat", batch, g.ints([2]), axis=0)
    c = g.op("Expand", g.rand(1, 2), target)
    return Built(g.model(g.op("Concat", g.x, c, axis=1)))


@cases({
    "slice-basic": dict(starts=[1], ends=[-1], axes=[1]),
    "slice-negative-step": dict(starts=[-1], ends=[INT64_MIN], axes=[1], steps=[-1]),
    "slice-negative-steps-two-axes": dict(starts=[4, -1], ends=[0, -6], axes=[1, 2], steps=[-2, -1]),
    "slice-negative-axis-step2": dict(starts=[-4], ends=[INT64_MAX], axes=[-1], steps=[2]),
    "slice-negative-start-end": dict(starts=[-5, -4], ends=[-2, -1], axes=[2, 1]),
    "slice-no-axes-input": dict(starts=[0, 1, 1], ends=[INT64_MAX, 5, 4]),
    "slice-opset9-attributes": dict(starts=[1, -3], ends=[5, 100], axes=[1, 2], opset=9),
})
def build_slice(rng, starts, ends, axes=None, steps=None, opset=13):
    g = GraphBuilder(rng, (N, 6, 5), opset=opset)
    x = g.op("Mul", g.x, g.rand(6, 5))  # distinct entries scale differently
    if opset < 10:
        h = g.op("Slice", x, starts=starts, ends=ends, **({} if axes is None else {"axes": axes}))
    else:
        ins = [g.ints(starts), g.ints(ends)]
        if axes is not None:
            ins.append(g.ints(axes))
        if steps is not None:
            ins.append(g.ints(steps))
        h = g.op("Slice", x, *ins)
    return Built(g.model(h))


@cases({
    "pad-constant-value": dict(pads=[0, 0, 1, 2, 0, 0, 2, 1], value=0.5),
    "pad-negative-pads-crop": dict(pads=[0, 0, -1, 1, 0, 0, 1, -1], value=-1.5),
    "pad-default-value-opset11": dict(pads=[0, 0, 0, 1, 0, 0, 2, 0], value=None, opset=11),
    "pad-opset18-axes-input": dict(pads=[1, 0, 0, 2], value=2.0, axes=[2, -1], opset=18),
    "pad-opset10-attributes": dict(pads=[0, 0, 1, 1, 0, 0, 0, 2], value=-0.75, opset=10),
})
def build_pad(rng, pads, value, axes=None, opset=13):
    g = GraphBuilder(rng, (N, 2, 3, 3), opset=opset)
    if opset < 11:
        h = g.op("Pad", g.x, mode="constant", pads=pads, value=value)
    else:
        ins = [g.ints(pads)]
        if value is not None or axes is not None:
            ins.append(g.const(np.float32(0.0 if value is None else value)))
        if axes is not None:
            ins.append(g.ints(axes))
        h = g.op("Pad", g.x, *ins, mode="constant")
    return Built(g.model(g.op("Conv", h, g.weight(2, 2, 2, 2), g.rand(2))))


# No-ops -----------------------------------------------------------------------------------
@cases({
    "dropout": dict(opset=13),
    "dropout-with-mask-output": dict(opset=13, mask=True),
    "dropout-opset12-ratio-input": dict(opset=12, ratio=True),
    "dropout-opset10-ratio-attribute": dict(opset=10),
})
def build_dropout(rng, opset, mask=False, ratio=False):
    g = GraphBuilder(rng, (N, 5), opset=opset)
    h = g.op("Gemm", g.x, g.weight(5, 4), g.rand(4))
    if opset < 12:
        d = g.op("Dropout", h, ratio=0.3)
    elif ratio:
        d = g.op("Dropout", h, g.const(np.float32(0.4)))
    else:
        d = g.op("Dropout", h, outputs=2 if mask else 1)
        d = d[0] if mask else d
    return Built(g.model(g.op("Relu", d)))


@case("identity")
def build_identity(rng):
    g = GraphBuilder(rng, (N, 5))
    return Built(g.model(g.op("Identity", g.op("Relu", g.op("Identity", g.x)))))


@cases({
    "cast-float-to-float": dict(chain=False),
    "cast-float-double-float": dict(chain=True),
})
def build_cast(rng, chain):
    g = GraphBuilder(rng, (N, 5))
    h = g.op("Gemm", g.x, g.weight(5, 4), g.rand(4))
    if chain:
        h = g.op("Cast", g.op("Relu", g.op("Cast", h, to=DOUBLE)), to=FLOAT)
    else:
        h = g.op("Relu", g.op("Cast", h, to=FLOAT))
    return Built(g.model(h))


# Folded shape subgraphs, layouts, batch axes -------------------------------------------------
@case("shape-gather-concat-reshape")
def build_shape_subgraph(rng):
    g = GraphBuilder(rng, (N, 2, 3, 4))
    batch = g.op("Unsqueeze", g.op("Gather", g.op("Shape", g.x), g.ints(0), axis=0), g.ints([0]))
    target = g.op("Concat", batch, g.ints([-1]), axis=0)
    h = g.op("Reshape", g.op("Relu", g.x), target)
    return Built(g.model(g.op("Gemm", h, g.weight(24, 3), g.rand(3))))


@case("shape-start-end-reduceprod-reshape")
def build_shape_subgraph_opset15(rng):
    g = GraphBuilder(rng, (N, 2, 3, 4), opset=15)
    batch = g.op("Shape", g.x, end=1)
    rest = g.op("ReduceProd", g.op("Shape", g.x, start=1), keepdims=1)
    h = g.op("Reshape", g.x, g.op("Concat", batch, rest, axis=0))
    return Built(g.model(g.op("Gemm", h, g.weight(24, 3), g.rand(3))))


@case("nhwc-input-transpose-conv")
def build_nhwc(rng):
    g = GraphBuilder(rng, (N, 5, 5, 2))
    h = g.op("Transpose", g.x, perm=[0, 3, 1, 2])
    h = g.op("Relu", g.op("Conv", h, g.weight(3, 2, 3, 3), g.rand(3), pads=[1, 1, 1, 1], strides=[2, 2]))
    return Built(g.model(g.op("Transpose", h, perm=[0, 2, 3, 1])))


@case("fixed-batch-1-cnn")
def build_batch1(rng):
    g = GraphBuilder(rng, (1, 2, 4, 4))
    h = g.op("Relu", g.op("Conv", g.x, g.weight(3, 2, 3, 3), g.rand(3), pads=[1, 1, 1, 1]))
    h = g.op("Flatten", g.op("MaxPool", h, kernel_shape=[2, 2], strides=[2, 2]))
    return Built(g.model(g.op("Gemm", h, g.weight(12, 3), g.rand(3))), per_sample=True)


@case("cnn-composite")
def build_cnn(rng):
    g = GraphBuilder(rng, (N, 1, 8, 8))
    h = g.op("Conv", g.x, g.weight(4, 1, 3, 3), g.rand(4), pads=[1, 1, 1, 1])
    h = g.op("BatchNormalization", h, g.rand(4), g.rand(4), g.rand(4), g.rand(4, low=0.1, scale=1.0))
    h = g.op("MaxPool", g.op("Relu", h), kernel_shape=[2, 2], strides=[2, 2])
    h = g.op("LeakyRelu", g.op("Conv", h, g.weight(4, 2, 3, 3), pads=[1, 1, 1, 1], group=2), alpha=-0.3)
    h = g.op("Flatten", g.op("AveragePool", h, kernel_shape=[2, 2], strides=[2, 2]))
    h = g.op("Tanh", g.op("Gemm", h, g.weight(16, 8), g.rand(8)))
    return Built(g.model(g.op("Gemm", h, g.weight(8, 3), g.rand(3))))


@case("resnet-block-composite")
def build_resnet(rng):
    g = GraphBuilder(rng, (N, 2, 5, 5))
    h = g.op("Relu", g.op("Conv", g.x, g.weight(2, 2, 3, 3), g.rand(2), pads=[1, 1, 1, 1]))
    h = g.op("ConvTranspose", h, g.weight(2, 2, 3, 3), g.rand(2), pads=[1, 1, 1, 1])
    h = g.op("Relu", g.op("Add", g.x, h))
    h = g.op("Flatten", g.op("GlobalAveragePool", h))
    return Built(g.model(g.op("Sigmoid", g.op("Gemm", h, g.weight(2, 3), g.rand(3)))))
