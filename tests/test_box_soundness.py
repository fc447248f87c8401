"""Property tests: Box (IBP) bounds are sound for every supported ONNX op.

For each op (and each notable attribute combination) a small random ONNX model is
built with :mod:`onnx.helper`, imported with ``verifier.load`` (fidelity check on),
and bounded with ``verifier.compute_bounds(..., domain="box")`` in float64 over random
boxes drawn by hypothesis. Then ≥ 1000 points sampled uniformly inside each box (plus
its centre, and its corners for low-dimensional inputs) are evaluated with onnxruntime,
the reference, on the float32 model; every output must lie in
``[lb − tol, ub + tol]`` with ``tol = 1e-5·(1 + |bound|)``.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import verifier
from verifier.errors import UnsupportedModelError
from onnx_builders import (
    FLOAT,
    GraphBuilder,
    Reference,
    random_box,
    sample_box,
    save_model,
)

from box_cases import (
    BOXES,
    Built,
    CASES,
    N,
    SAMPLES,
    assert_within,
    bounds_and_samples,
    build_acas_vector,
    build_gemm_mlp,
    build_matmul_xw_3d,
    check_box_soundness,
)

SETTINGS = settings(max_examples=5, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# A box: (seed for the weights, the box and the samples; centre; maximal width).
box_params = st.tuples(
    st.integers(0, 2**32 - 1),
    st.floats(-2.0, 2.0, allow_nan=False),
    st.one_of(st.just(0.0), st.floats(1e-3, 4.0, allow_nan=False)),
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("box_soundness")


CASE_PARAMS = [pytest.param(name, marks=marks, id=name) for name, (_, marks) in CASES.items()]


# --- a node that reads one variable tensor twice (x + x, concat(x, x)) -------------------
@pytest.mark.parametrize("op", ["Add", "Concat", "Sub"])
def test_node_reading_one_tensor_twice(op, workdir):
    g = GraphBuilder(np.random.default_rng(0), (N, 2, 3))
    r = g.op("Relu", g.x)
    y = g.op(op, r, r, **({"axis": 1} if op == "Concat" else {}))
    built = Built(g.model(y))
    check_box_soundness(save_model(built.model, workdir, "twice"), built, (0, 0.5, 1.0))


@pytest.mark.parametrize("name", CASE_PARAMS)
@given(box=box_params)
@SETTINGS
def test_box_bounds_contain_onnxruntime_outputs(name, box, workdir):
    fn, _ = CASES[name]
    built = fn(np.random.default_rng(box[0]))
    path = save_model(built.model, workdir, "case")
    check_box_soundness(path, built, box)


def test_maxpool_with_unused_indices_output(workdir):
    g = GraphBuilder(np.random.default_rng(0), (N, 2, 4, 4))
    y, _indices = g.op("MaxPool", g.x, outputs=2, kernel_shape=[2, 2], strides=[2, 2])
    built = Built(g.model(y))
    check_box_soundness(save_model(built.model, workdir, "indices"), built, (0, 0.0, 2.0))


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER"])
@pytest.mark.parametrize("kernel,stride", [(1, 2), (2, 3)])
def test_convtranspose_same_padding_kernel_smaller_than_stride(auto_pad, kernel, stride, workdir):
    g = GraphBuilder(np.random.default_rng(0), (N, 2, 5, 5))
    y = g.op("ConvTranspose", g.x, g.weight(2, 3, kernel, kernel), strides=[stride, stride], auto_pad=auto_pad)
    built = Built(g.model(y))
    check_box_soundness(save_model(built.model, workdir, "convt_same"), built, (0, 0.0, 2.0))


def test_empty_output_is_a_clean_error(workdir):
    g = GraphBuilder(np.random.default_rng(0), (N, 2, 4, 4))
    y = g.op("MaxPool", g.x, kernel_shape=[3, 3], dilations=[2, 2])  # (2·2+1 = 5) > 4: output 0×0
    path = save_model(g.model(y), workdir, "empty")
    with pytest.raises(verifier.VerifierInputError):
        verifier.load(path)


# --- batch axis written as 0 ----------------------------------------------------------------
def _batch0_pair(rng, workdir):
    """The same MLP twice: input batch axis written 0, and written 'N' (the reference)."""
    paths = []
    for batch in (0, N):
        g = GraphBuilder(np.random.default_rng(rng), (batch, 4))
        h = g.op("Relu", g.op("Gemm", g.x, g.weight(4, 5), g.rand(5)))
        model = g.model(g.op("Gemm", h, g.weight(5, 2), g.rand(2)), check=batch != 0)
        paths.append(save_model(model, workdir, f"batch{batch}"))
    return paths


@given(box=box_params)
@settings(SETTINGS, max_examples=3)
def test_batch_axis_written_0_without_fidelity_check(box, workdir):
    """onnxruntime refuses any input for a batch axis written 0; the IR treats it as 1.
    Check its bounds against onnxruntime on the same model with a symbolic batch axis."""
    path0, path_n = _batch0_pair(box[0], workdir)
    model = verifier.load(path0, check=False)
    assert model.input_shape == (1, 4)
    rng = np.random.default_rng(box[0])
    lo, hi = random_box(rng, model.input_shape, box[1], box[2], batch=BOXES)
    lb, ub = verifier.compute_bounds(model, torch.from_numpy(lo), torch.from_numpy(hi))
    ref = Reference(path_n)
    for b in range(BOXES):
        assert_within(ref.run(sample_box(rng, lo[b], hi[b], SAMPLES)), lb[b].numpy(), ub[b].numpy())


def test_batch_axis_written_0_with_fidelity_check(workdir):
    path0, _ = _batch0_pair(0, workdir)
    model = verifier.load(path0, check=True)
    assert model.input_shape == (1, 4)


# --- spec matrices C ----------------------------------------------------------------------
C_MODELS = {
    "ends-in-gemm (C folded into the last weight)": lambda rng: build_gemm_mlp(rng),
    "ends-in-matmul-add": lambda rng: CASES["matmul-add-bias (fused)"][0](rng),
    "ends-in-relu": lambda rng: CASES["residual-add"][0](rng),
    "ends-in-gemm-weight-first": lambda rng: CASES["gemm-weight-first-transB"][0](rng),
    "ends-in-matmul-2d-output": lambda rng: build_matmul_xw_3d(rng),
    "ends-in-conv": lambda rng: CASES["conv-stride2-pad1"][0](rng),
    "acas-vector-no-batch-axis": lambda rng: build_acas_vector(rng),
}


@pytest.mark.parametrize("name", list(C_MODELS))
@given(box=box_params, k=st.integers(1, 4), c_form=st.sampled_from(["k,n", "B,k,n", "1,k,n"]))
@settings(SETTINGS, max_examples=6)
def test_spec_matrix_bounds_contain_onnxruntime_outputs(name, box, k, c_form, workdir):
    built = C_MODELS[name](np.random.default_rng(box[0]))
    path = save_model(built.model, workdir, "spec")
    model, lo, hi, rng, per_box = bounds_and_samples(path, built, box)
    n = model.output_size
    C = rng.normal(size=(BOXES if c_form == "B,k,n" else 1, k, n))
    C[..., rng.random(C.shape[-1]) < 0.3] = 0.0  # some outputs unused
    C_arg = torch.from_numpy(C[0] if c_form == "k,n" else C)
    lb, ub = verifier.compute_bounds(model, lo, hi, domain="box", C=C_arg)
    assert lb.shape == ub.shape == (BOXES, k)
    lb, ub = lb.numpy(), ub.numpy()
    assert np.all(lb <= ub)
    plain_lb, plain_ub = (t.numpy() for t in verifier.compute_bounds(model, lo, hi, domain="box"))
    for b, _, ys in per_box():
        Cb = C[b if c_form == "B,k,n" else 0]
        assert_within(ys @ Cb.T, lb[b], ub[b], what="C·y")
        # Never looser than interval arithmetic on the plain output bounds.
        centre, radius = (plain_ub[b] + plain_lb[b]) / 2, (plain_ub[b] - plain_lb[b]) / 2
        ia_lb, ia_ub = Cb @ centre - np.abs(Cb) @ radius, Cb @ centre + np.abs(Cb) @ radius
        assert np.all(lb[b] >= ia_lb - 1e-9 * (1 + np.abs(ia_lb)))
        assert np.all(ub[b] <= ia_ub + 1e-9 * (1 + np.abs(ia_ub)))


# --- unsupported models -------------------------------------------------------------------
@pytest.mark.parametrize("chained", [False, True], ids=["independent", "chained"])
def test_every_unsupported_node_is_reported_at_once(chained, workdir):
    g = GraphBuilder(np.random.default_rng(0), (N, 4))
    prod = g.op("Hardmax", g.x, axis=1)  # ops without a converter
    soft = g.op("LpNormalization", prod if chained else g.x, axis=1)
    y = g.op("Add", g.op("Gemm", prod, g.weight(4, 4), g.rand(4)), soft)
    path = save_model(g.model(y), workdir, "unsupported")
    with pytest.raises(UnsupportedModelError) as info:
        verifier.load(path)
    ops = sorted(op for op, _, _ in info.value.problems)
    assert ops == ["Hardmax", "LpNormalization"], info.value.problems
    names = {name for _, name, _ in info.value.problems}
    assert names == {prod + "_node", soft + "_node"}
    assert "Hardmax" in str(info.value) and "LpNormalization" in str(info.value)


UNSUPPORTED = {  # name: (the op that must be reported, builder)
    "gemm-two-variables": ("Gemm", lambda g: g.op("Gemm", g.op("Flatten", g.x), g.op("Transpose", g.op("Flatten", g.x)))),
    "div-by-variable": ("Div", lambda g: g.op("Div", g.rand(1), g.x)),
    "div-by-zero-constant": ("Div", lambda g: g.op("Div", g.x, g.const(np.array([1.0, 0.0]).reshape(2, 1, 1)))),
    "maxpool-storage-order": ("MaxPool", lambda g: g.op("MaxPool", g.x, kernel_shape=[2, 2], storage_order=1)),
    "batchnorm-training-mode": ("BatchNormalization", lambda g: g.op(
        "BatchNormalization", g.x, g.rand(2), g.rand(2), g.rand(2), g.rand(2, low=0.1), training_mode=1, outputs=3)[0]),
    "cast-to-int": ("Cast", lambda g: g.op("Cast", g.op("Cast", g.x, to=onnx.TensorProto.INT64), to=FLOAT)),
    "hardmax": ("Hardmax", lambda g: g.op("Hardmax", g.x, axis=1)),
    "conv-variable-weight": ("Conv", lambda g: g.op("Conv", g.x, g.op("Relu", g.x))),
}


@pytest.mark.parametrize("name", list(UNSUPPORTED))
def test_unsupported_constructs_raise_unsupported_model_error(name, workdir):
    op, build = UNSUPPORTED[name]
    g = GraphBuilder(np.random.default_rng(1), (N, 2, 4, 4), opset=15)
    path = save_model(g.model(build(g)), workdir, "unsupported")
    with pytest.raises(UnsupportedModelError) as info:
        verifier.load(path)
    assert op in [p[0] for p in info.value.problems], info.value.problems


def test_case_registry_covers_every_converter():
    """Every ONNX op with a converter is exercised by at least one soundness case: a case
    of :mod:`box_cases`' registry, or a case of the per-op-family soundness files
    (``test_ops_*.py``, ``index_cases.py``), which name the op types they build."""
    import ast
    from pathlib import Path

    from verifier.ir.onnx_converters import CONVERTERS

    used = set()
    for name, (fn, _) in CASES.items():
        used.update(n.op_type for n in fn(np.random.default_rng(0)).model.graph.node)
    here = Path(__file__).parent
    for path in sorted(here.glob("test_ops_*.py")) + [here / "index_cases.py"]:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        used.update(n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str))
    assert set(CONVERTERS) - used == set()


@pytest.mark.parametrize("width", [3, 600])  # the one-product path for small layers, the midpoint path for wide ones
def test_infinite_interval_through_a_linear_layer_gives_infinite_bounds_not_nan(workdir, width):
    """``∞ − ∞`` and ``0·∞`` in interval arithmetic are NaN, which a bound check passes
    silently; an unbounded input entry must give sound (here infinite) bounds instead."""
    from verifier.domains.box import BoxDomain
    from verifier.engine import propagate
    from verifier.ir.graph import output_node

    g = GraphBuilder(np.random.default_rng(0), ["N", width], elem_type=onnx.TensorProto.DOUBLE)
    weight = np.zeros((2, width))
    weight[0, 0], weight[1, 1] = 1.0, -2.0  # output 0 reads the unbounded input, output 1 does not
    path = save_model(g.model(g.op("Gemm", g.x, g.const(weight), transB=1)), workdir)
    model = verifier.load(path)
    lower, upper = -torch.ones(1, 1, width, dtype=torch.float64), torch.ones(1, 1, width, dtype=torch.float64)
    upper[0, 0, 0] = torch.inf
    out = propagate(model.graph, BoxDomain(), lower, upper, keep=True)[output_node(model.graph)]
    lb, ub = out.lower.reshape(-1), out.upper.reshape(-1)
    assert not bool(torch.isnan(lb).any() or torch.isnan(ub).any())
    assert float(ub[0]) == np.inf and float(lb[0]) <= -1.0
    assert float(lb[1]) <= -2.0 and float(ub[1]) >= 2.0


@pytest.mark.parametrize("op", ["Sub", "Gemm"])
def test_huge_centre_and_small_shift_keep_the_shift(workdir, op):
    """``x ∈ [0, 4.4e18]`` minus 9800.97 (ml4acopf's 300-bus proxy): the midpoint form
    ``(c − 9800.97) ∓ r`` cancels to a multiple of 256 (−9728, above every real value) unless
    the rounding error of the sums is added; the lower bound must stay ≤ −9800.97."""
    g = GraphBuilder(np.random.default_rng(0), ["N", 3], elem_type=onnx.TensorProto.DOUBLE)
    shift = np.array([9800.97, 1.5, 0.25])
    if op == "Sub":
        y = g.op("Sub", g.x, g.const(shift))
    else:
        y = g.op("Gemm", g.x, g.const(np.eye(3)), g.const(-shift))
    model = verifier.load(save_model(g.model(y), workdir), check=False)
    lower = torch.zeros(1, 1, 3, dtype=torch.float64)
    upper = torch.tensor([[[4.3633e18, 1.0, 6.8e16]]], dtype=torch.float64)
    lb, ub = verifier.compute_bounds(model, lower, upper, domain="box")
    assert bool((lb.reshape(-1) <= torch.as_tensor(-shift)).all()), lb
    assert bool((ub.reshape(-1) >= upper.reshape(-1) - torch.as_tensor(shift)).all())
