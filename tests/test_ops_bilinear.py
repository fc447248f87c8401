"""Bilinear ops (``mul``, ``matmul`` of two variables) and the exact lowering of Min/Max/
ReduceMax/ReduceMin: the McCormick planes and interval products themselves, then small
ONNX models (a gated MLP, broadcasting products, an attention block, max/min layers) that
load with the fidelity check and whose bounds, in every domain, contain onnxruntime's
outputs on ≥ 1000 sampled points and on PGD-attacked points of random boxes; α-CROWN is
never looser than CROWN; the LP and the dual LP refuse bilinear ops by name.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import verifier
from verifier.domains import DOMAINS
from verifier.domains.backward import pre_activation_nodes
from verifier.errors import UnsupportedModelError, VerifierInputError
from verifier.ir.onnx_converters import CONVERTERS
from verifier.ops import FORWARD
from verifier.ops.bilinear import BILINEAR, LOWER_CORNERS, UPPER_CORNERS, product_range, tangent_plane

from onnx_builders import GraphBuilder, Reference, random_box, sample_box, save_model
from box_cases import Built
from test_domain_soundness import assert_contains, pgd_points

N = "N"
SAMPLES = 1000
BOXES = 2
ALPHA = {"iterations": 5}
DOMAINS_TESTED = {"box": {}, "deepz": {}, "crown": {}, "crown-ibp": {}, "alpha-crown": ALPHA}

pytestmark = pytest.mark.usefixtures("one_torch_thread")

floats = st.floats(-5.0, 5.0, allow_nan=False)


# --- the maths ------------------------------------------------------------------------------
@given(st.integers(0, 2**32 - 1), floats, floats, floats, floats)
@settings(max_examples=50, deadline=None)
def test_mccormick_planes_are_sound(seed_, a, b, c, d):
    """On a random box, every convex combination of the two lower (upper) tangent planes
    lies below (above) ``x·y`` at sampled points and at the corners."""
    rng = np.random.default_rng(seed_)
    lx, ux = sorted((a, b))
    ly, uy = sorted((c, d))
    t = torch.from_numpy(rng.random((2, 2000)))
    x = torch.cat([lx + (ux - lx) * t[0], torch.tensor([lx, lx, ux, ux], dtype=torch.float64)])
    y = torch.cat([ly + (uy - ly) * t[1], torch.tensor([ly, uy, ly, uy], dtype=torch.float64)])
    ends = {"l": (lx, ly), "u": (ux, uy)}

    def plane(corner):
        xc, yc = ends[corner[0]][0], ends[corner[1]][1]
        return tangent_plane(x, y, torch.tensor(xc, dtype=torch.float64), torch.tensor(yc, dtype=torch.float64))

    for w in rng.random(5).tolist() + [0.0, 1.0]:
        lower = w * plane(LOWER_CORNERS[0]) + (1 - w) * plane(LOWER_CORNERS[1])
        upper = w * plane(UPPER_CORNERS[0]) + (1 - w) * plane(UPPER_CORNERS[1])
        tol = 1e-9 * (1 + (x * y).abs())
        assert bool((lower <= x * y + tol).all()) and bool((upper >= x * y - tol).all())


@given(floats, floats, floats, floats)
@settings(max_examples=50, deadline=None)
def test_product_range_is_exact(a, b, c, d):
    lx, ux = sorted((a, b))
    ly, uy = sorted((c, d))
    xs = torch.linspace(lx, ux, 41, dtype=torch.float64)
    ys = torch.linspace(ly, uy, 41, dtype=torch.float64)
    grid = xs[:, None] * ys[None, :]
    lo, hi = product_range(*(torch.tensor(v, dtype=torch.float64) for v in (lx, ux, ly, uy)))
    assert float(lo) == pytest.approx(float(grid.min()), abs=1e-12)
    assert float(hi) == pytest.approx(float(grid.max()), abs=1e-12)


def test_zero_times_infinity_is_zero():
    zero, inf = torch.zeros(1), torch.full((1,), float("inf"))
    lo, hi = product_range(zero, zero, -inf, inf)
    assert float(lo) == 0.0 and float(hi) == 0.0


def test_interval_matmul_sums_exact_term_ranges(monkeypatch):
    """The chunked interval matmul equals the brute-force sum of per-term corner ranges."""
    import verifier.ops.bilinear as bilinear

    g = torch.Generator().manual_seed(0)
    lx = torch.randn(2, 3, 5, 4, generator=g, dtype=torch.float64)
    ly = torch.randn(2, 1, 4, 6, generator=g, dtype=torch.float64)
    ux, uy = lx + torch.rand(lx.shape, generator=g, dtype=torch.float64), ly + torch.rand(ly.shape, generator=g, dtype=torch.float64)
    lo_ref, hi_ref = product_range(lx[..., None], ux[..., None], ly[..., None, :, :], uy[..., None, :, :])
    monkeypatch.setattr(bilinear, "MAX_TERMS", 50)  # several row chunks
    lo, hi = BILINEAR["matmul"].interval(lx, ux, ly, uy)
    torch.testing.assert_close(lo, lo_ref.sum(-2))
    torch.testing.assert_close(hi, hi_ref.sum(-2))


# --- models -----------------------------------------------------------------------------------
def gated_mlp(rng) -> Built:
    """x → Gemm → (a, b) → Mul(a, b) → Gemm."""
    g = GraphBuilder(rng, (N, 4))
    a = g.op("Gemm", g.x, g.weight(5, 4), g.rand(5), transB=1)
    b = g.op("Gemm", g.x, g.weight(5, 4), g.rand(5), transB=1)
    return Built(g.model(g.op("Gemm", g.op("Relu", g.op("Mul", a, b)), g.weight(3, 5), transB=1)))


def broadcast_products(rng) -> Built:
    """An outer product by broadcasting ((3, 1) ⊙ (1, 4)), a square, a rank-1 ⊙ rank-3 product."""
    g = GraphBuilder(rng, (N, 4))
    a = g.op("Reshape", g.op("Gemm", g.x, g.weight(3, 4), transB=1), g.ints([-1, 3, 1]))
    b = g.op("Reshape", g.op("Gemm", g.x, g.weight(4, 4), g.rand(4), transB=1), g.ints([-1, 1, 4]))
    outer = g.op("Mul", a, b)  # (N, 3, 4)
    square = g.op("Mul", outer, outer)
    row = g.op("Reshape", g.op("Gemm", g.x, g.weight(4, 4), transB=1), g.ints([-1, 1, 4]))
    scaled = g.op("Mul", g.op("Add", square, outer), row)
    flat = g.op("Flatten", scaled)
    return Built(g.model(g.op("Gemm", flat, g.weight(2, 12), transB=1)))


def attention(rng, heads: int = 1, softmax: bool = False) -> Built:
    """One attention block on 5 tokens of width 4: ``Q, K, V = xW``, ``S = QKᵀ`` (per head),
    ReLU (or Softmax) of ``S``, ``O = S·V``, then a dense head."""
    tokens, width, dk = 5, 4, 2 * heads
    g = GraphBuilder(rng, (N, tokens, width))

    def project():
        h = g.op("MatMul", g.x, g.weight(width, dk))
        if heads == 1:
            return h
        h = g.op("Reshape", h, g.ints([-1, tokens, heads, 2]))
        return g.op("Transpose", h, perm=[0, 2, 1, 3])  # (N, heads, tokens, 2)

    q, k, v = project(), project(), project()
    kt = g.op("Transpose", k, perm=[0, 1, 3, 2] if heads > 1 else [0, 2, 1])
    scores = g.op("MatMul", q, kt)
    scores = g.op("Softmax", scores, axis=-1) if softmax else g.op("Relu", scores)
    out = g.op("MatMul", scores, v)
    flat = g.op("Flatten", out)
    return Built(g.model(g.op("Gemm", flat, g.weight(3, tokens * dk), transB=1)))


def vector_matmul(rng) -> Built:
    """1-D operands: ``a (3,) @ C (3, 2)`` and ``C (3, 2)ᵀ``-side ``C @ w (2,)`` on a model without a batch axis."""
    g = GraphBuilder(rng, (4,))
    a = g.op("MatMul", g.x, g.weight(4, 3))
    c = g.op("Reshape", g.op("MatMul", g.x, g.weight(4, 6)), g.ints([3, 2]))
    w = g.op("MatMul", g.x, g.weight(4, 2))
    left = g.op("MatMul", a, c)  # (2,)
    right = g.op("MatMul", c, w)  # (3,)
    return Built(g.model(g.op("Concat", left, right, axis=0)), per_sample=True)


def max_min(rng) -> Built:
    """Max/Min of variables (broadcast, three operands) and with constants."""
    g = GraphBuilder(rng, (N, 4))
    a = g.op("Reshape", g.op("Gemm", g.x, g.weight(3, 4), g.rand(3), transB=1), g.ints([-1, 1, 3]))
    b = g.op("Reshape", g.op("Gemm", g.x, g.weight(6, 4), transB=1), g.ints([-1, 2, 3]))
    hi = g.op("Max", a, b, g.rand(1, 3))  # (N, 2, 3)
    lo = g.op("Min", a, g.rand(3, scale=0.3))
    lo2 = g.op("Min", b, a)
    total = g.op("Add", g.op("Add", hi, lo), lo2)
    return Built(g.model(g.op("Gemm", g.op("Flatten", total), g.weight(2, 6), transB=1)))


def reduce_extremes(rng) -> Built:
    """ReduceMax over an odd axis (keepdims=0), ReduceMin over two axes (keepdims=1)."""
    g = GraphBuilder(rng, (N, 4))
    h = g.op("Reshape", g.op("Gemm", g.x, g.weight(15, 4), g.rand(15), transB=1), g.ints([-1, 5, 3]))
    top = g.op("ReduceMax", h, axes=[1], keepdims=0)  # (N, 3)
    low = g.op("ReduceMin", h, axes=[-1, 1], keepdims=1)  # (N, 1, 1)
    both = g.op("Concat", top, g.op("Flatten", low), axis=1)
    return Built(g.model(both))


def division(rng) -> Built:
    g = GraphBuilder(rng, (N, 3))
    a = g.op("Gemm", g.x, g.weight(3, 3), transB=1)
    b = g.op("Add", g.op("Relu", g.op("Gemm", g.x, g.weight(3, 3), transB=1)), g.const(np.full(3, 2.0)))
    return Built(g.model(g.op("Div", a, b)))


MODELS = {"gated_mlp": gated_mlp, "broadcast_products": broadcast_products, "attention": attention,
          "attention_2_heads": lambda rng: attention(rng, heads=2), "vector_matmul": vector_matmul,
          "max_min": max_min, "reduce_extremes": reduce_extremes}
if "Softmax" in CONVERTERS:
    MODELS["attention_softmax"] = lambda rng: attention(rng, softmax=True)
# Sound refusals: Softmax's lowering divides by a sum of exponentials whose relaxed range
# may reach 0 on wide boxes (then the ``reciprocal`` op refuses, naming itself).
REFUSALS = {"attention_softmax": "'reciprocal'"}
BILINEAR_MODELS = {"gated_mlp", "broadcast_products", "attention", "attention_2_heads", "vector_matmul",
                   "attention_softmax"}

box_params = st.tuples(st.integers(0, 2**32 - 1), st.floats(-1.0, 1.0, allow_nan=False),
                       st.one_of(st.floats(0.05, 2.0, allow_nan=False), st.just(0.0)))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("bilinear")


def _evidence(built: Built, path, model, rng, lo, hi, C):
    """Per box: the extremes of onnxruntime's outputs and of ``C·y`` over ≥ 1000 samples and PGD points."""
    ref = Reference(path, per_sample=built.per_sample)
    n = model.output_size
    dirs = np.broadcast_to(np.concatenate([np.eye(n), -np.eye(n), C, -C]), (BOXES, 2 * (n + len(C)), n))
    attacked = pgd_points(model, lo, hi, np.ascontiguousarray(dirs), rng)
    seen = []
    for b in range(BOXES):
        for kind, y in (("sampled", ref.run(sample_box(rng, lo[b], hi[b], SAMPLES))), ("PGD", ref.run(attacked[b]))):
            seen.append((b, kind, y))
    return seen


@pytest.mark.parametrize("name", list(MODELS))
@given(box=box_params)
@settings(max_examples=3, deadline=None, database=None)
def test_every_domain_contains_onnxruntime_outputs(name, box, workdir):
    seed_, centre, width = box
    rng = np.random.default_rng(seed_)
    built = MODELS[name](rng)
    path = save_model(built.model, workdir, name)
    model = verifier.load(path, check=True)
    assert model.fidelity is not None and model.fidelity.ok
    lo, hi = random_box(rng, model.input_shape, centre, width, batch=BOXES)
    C = rng.normal(size=(2, model.output_size))
    seen = _evidence(built, path, model, rng, lo, hi, C)
    lo_t, hi_t, C_t = torch.from_numpy(lo), torch.from_numpy(hi), torch.from_numpy(C)
    found = {}
    for domain, options in DOMAINS_TESTED.items():
        try:
            lb, ub = verifier.compute_bounds(model, lo_t, hi_t, domain=domain, **options)
            clb, cub = verifier.compute_bounds(model, lo_t, hi_t, domain=domain, C=C_t, **options)
        except VerifierInputError as error:  # softmax's reciprocal refuses a sum range that reaches 0
            assert name in REFUSALS and REFUSALS[name] in str(error), error
            continue
        found[domain] = (lb, ub, clb, cub)
        for b, kind, y in seen:
            assert_contains(y.min(0), y.max(0), lb[b].numpy(), ub[b].numpy(), f"{domain} {name} box {b} {kind}")
            cy = y @ C.T
            assert_contains(cy.min(0), cy.max(0), clb[b].numpy(), cub[b].numpy(), f"{domain} {name} C·y box {b} {kind}")
    pairs = zip(found["alpha-crown"], found["crown"]) if {"alpha-crown", "crown"} <= set(found) else []
    for i, (alpha, base) in enumerate(pairs):  # never looser than CROWN
        tighter = alpha - base if i % 2 == 0 else base - alpha  # lower bounds rise, upper bounds fall
        assert bool((tighter >= -1e-9 * (1 + base.abs())).all()), (name, i, alpha, base)
    for domain in ("lp", "dual-lp"):
        if name in BILINEAR_MODELS:
            refused = DOMAINS[domain]().supports(model.graph)
            assert any("mul" in reason or "matmul" in reason for _, reason in refused), refused
            with pytest.raises(VerifierInputError, match="mul"):
                verifier.compute_bounds(model, lo_t, hi_t, domain=domain)
    if name not in BILINEAR_MODELS:  # piecewise linear: the exact LP handles it too
        lb, ub = verifier.compute_bounds(model, lo_t, hi_t, domain="lp")
        for b, kind, y in seen:
            assert_contains(y.min(0), y.max(0), lb[b].numpy(), ub[b].numpy(), f"lp {name} box {b} {kind}")


def test_max_min_lower_to_relu_and_affine_ops(workdir):
    model = verifier.load(save_model(max_min(np.random.default_rng(0)).model, workdir, "mm"))
    kinds = {d["kind"] for _, d in model.graph.nodes(data=True)}
    assert "relu" in kinds and not kinds & {"mul", "matmul"}


def test_both_inputs_of_a_product_are_bounded(workdir):
    model = verifier.load(save_model(gated_mlp(np.random.default_rng(0)).model, workdir, "g"))
    graph = model.graph_for("cpu", torch.float64)
    (mul,) = [n for n, d in graph.nodes(data=True) if d["kind"] == "mul"]
    need = pre_activation_nodes(graph)
    assert set(graph.predecessors(mul)) <= set(need)
    alpha = DOMAINS["alpha-crown"]()
    assert mul in alpha.optimisable(graph)
    lo = torch.full((3, *model.input_shape), -1.0, dtype=torch.float64)
    bounds = alpha.intermediate_bounds(graph, lo, lo + 2)
    assert alpha.alpha_init(graph, mul, bounds).shape == (3, 2, *graph.nodes[mul]["shape"])


def test_division_by_a_variable(workdir):
    path = save_model(division(np.random.default_rng(0)).model, workdir, "div")
    if "reciprocal" not in FORWARD:
        with pytest.raises(UnsupportedModelError, match="reciprocal"):
            verifier.load(path)
        return
    model = verifier.load(path, check=True)
    assert model.fidelity.ok and "mul" in {d["kind"] for _, d in model.graph.nodes(data=True)}


def test_square_of_one_variable_is_a_power_not_a_product(tmp_path):
    """``Mul(x, x)`` (ml4acopf's ``Mulpow`` nodes) is ``x²``: every domain knows it is ≥ 0,
    where McCormick's planes of a product of two independent factors reach ``l·u < 0``."""
    g = GraphBuilder(np.random.default_rng(0), ["N", 3], elem_type=onnx_double())
    h = g.op("Gemm", g.x, g.weight(4, 3), transB=1)
    path = save_model(g.model(g.op("Mul", h, h)), tmp_path)
    model = verifier.load(path)
    assert "mul" not in {d["kind"] for _, d in model.graph.nodes(data=True)}
    lo, hi = -torch.ones(1, 1, 3, dtype=torch.float64), torch.ones(1, 1, 3, dtype=torch.float64)
    x = (lo + (hi - lo) * torch.rand(4000, 1, 3, dtype=torch.float64)).numpy()
    ys = Reference(path).run(x.reshape(-1, 3))
    for domain in ("box", "deepz", "crown", "alpha-crown", "lp"):
        lb, ub = verifier.compute_bounds(model, lo, hi, domain=domain)
        assert bool((lb >= -1e-9).all()), domain
        assert (ys >= lb.numpy().reshape(1, -1) - 1e-9).all() and (ys <= ub.numpy().reshape(1, -1) + 1e-9).all()


def onnx_double() -> int:
    import onnx

    return onnx.TensorProto.DOUBLE
