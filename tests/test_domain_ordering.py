"""Relations between domains on small random ReLU networks (seed 003 / 004 claims):
dual LP ≤ LP optimum ≤ true minimum, α-CROWN ≥ CROWN, and the dual LP bound equals the
Wong–Kolter formula J computed independently from the paper's equations."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.helper as oh
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import verifier
from onnx_builders import gemm_relu_model
from verifier.domains import get_domain


def relu_mlp(path, rng, widths):
    """An ONNX MLP ``x → (Gemm → Relu)* → Gemm`` with random weights; returns the weights."""
    layers = []
    for a, b in zip(widths[:-1], widths[1:]):
        w = (rng.normal(size=(b, a)) / np.sqrt(a)).astype(np.float32)
        bias = (rng.normal(size=b) * 0.3).astype(np.float32)
        layers.append((w.astype(np.float64), bias.astype(np.float64)))
    onnx.save(gemm_relu_model(layers), path)
    return layers


def sampled_extremes(model, lo, hi, C, count=20000, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = lo + (hi - lo) * torch.rand((count, lo.shape[-1]), generator=gen, dtype=torch.float64)
    x = torch.cat([x, lo, hi])
    y = model(x) @ C.T
    return y.min(0).values, y.max(0).values


def random_net_and_box(tmp_path_factory, params, boxes=1):
    """The MLP, its layers and ``boxes`` random input boxes of half-width ``eps``."""
    seed, widths, eps = params
    rng = np.random.default_rng(seed)
    path = tmp_path_factory.mktemp("ord") / "m.onnx"
    layers = relu_mlp(path, rng, widths)
    model = verifier.load(path)
    centre = torch.as_tensor(rng.uniform(-1, 1, size=(boxes, widths[0])))
    return rng, model, layers, centre - eps, centre + eps


NETS = st.tuples(st.integers(0, 10_000), st.sampled_from([(3, 8, 8, 3), (4, 10, 6, 2), (2, 12, 12, 12, 3)]),
                 st.floats(0.05, 0.6))


@given(NETS)
@settings(max_examples=8, deadline=None)
def test_dual_lp_below_lp_below_true_minimum(tmp_path_factory, params):
    widths = params[1]
    rng, model, _, lo, hi = random_net_and_box(tmp_path_factory, params)
    C = torch.as_tensor(rng.normal(size=(3, widths[-1])))
    dual_lb, dual_ub = verifier.compute_bounds(model, lo, hi, domain="dual-lp", C=C)
    lp_lb, lp_ub = verifier.compute_bounds(model, lo, hi, domain="lp", C=C, intermediate="dual-lp")
    best_lb, best_ub = verifier.compute_bounds(model, lo, hi, domain="lp", C=C)  # tighter intermediate bounds
    true_min, true_max = sampled_extremes(model, lo, hi, C)
    tol = 1e-6
    assert bool((dual_lb[0] <= lp_lb[0] + tol).all()) and bool((lp_lb[0] <= true_min + tol).all())
    assert bool((dual_ub[0] >= lp_ub[0] - tol).all()) and bool((lp_ub[0] >= true_max - tol).all())
    assert bool((best_lb[0] >= lp_lb[0] - tol).all()) and bool((best_lb[0] <= true_min + tol).all())
    assert bool((best_ub[0] <= lp_ub[0] + tol).all()) and bool((best_ub[0] >= true_max - tol).all())


@given(NETS)
@settings(max_examples=8, deadline=None)
def test_alpha_crown_never_looser_than_crown(tmp_path_factory, params):
    widths = params[1]
    _, model, _, lo, hi = random_net_and_box(tmp_path_factory, params, boxes=2)
    c_lb, c_ub = verifier.compute_bounds(model, lo, hi, domain="crown")
    a_lb, a_ub = verifier.compute_bounds(model, lo, hi, domain="alpha-crown", iterations=15)
    assert bool((a_lb >= c_lb - 1e-9).all()) and bool((a_ub <= c_ub + 1e-9).all())
    x = lo + (hi - lo) * torch.rand(4000, 2, widths[0], dtype=torch.float64)
    y = model(x.reshape(-1, widths[0])).reshape(4000, 2, -1)
    assert bool((y >= a_lb - 1e-9).all()) and bool((y <= a_ub + 1e-9).all())


def wong_kolter_J(layers, bounds, x0, eps, c):
    """Seed 003, eq. 7, written directly from the paper for a dense ReLU MLP:
    ν_K = −c, ν̂_i = W_iᵀ ν_{i+1}, ν_i = D_i ν̂_i,
    J = −Σ ν_{i+1}ᵀ b_i − x₀ᵀ ν̂₁ − ε‖ν̂₁‖₁ + Σ_{crossing} ℓ_ij [ν_ij]₊."""
    nu = -c
    J = 0.0
    for i in reversed(range(len(layers))):
        w, b = layers[i]
        J -= nu @ b
        nu_hat = w.T @ nu
        if i == 0:
            return J - x0 @ nu_hat - eps * np.abs(nu_hat).sum()
        l, u = bounds[i - 1]
        d = np.where(l >= 0, 1.0, np.where(u <= 0, 0.0, u / np.where(u > l, u - l, 1.0)))
        crossing = (l < 0) & (u > 0)
        nu = d * nu_hat
        J += np.sum(np.where(crossing, l * np.maximum(nu, 0), 0.0))
    raise AssertionError("unreachable")


@given(NETS)
@settings(max_examples=8, deadline=None)
def test_dual_lp_equals_the_wong_kolter_formula(tmp_path_factory, params):
    widths, eps = params[1], params[2]
    rng, model, layers, lo, hi = random_net_and_box(tmp_path_factory, params)
    x0 = ((lo + hi) / 2)[0].numpy()
    dual = get_domain("dual-lp")
    graph = model.graph_for("cpu", torch.float64)
    inter = dual.intermediate_bounds(graph, lo, hi)
    pre = [n for n in inter]  # pre-activations in layer order
    bounds = [(inter[n][0][0].reshape(-1).numpy(), inter[n][1][0].reshape(-1).numpy()) for n in pre]
    c = rng.normal(size=widths[-1])
    lb, _ = verifier.compute_bounds(model, lo, hi, domain="dual-lp", C=torch.as_tensor(c)[None])
    assert lb[0, 0].item() == pytest.approx(wong_kolter_J(layers, bounds, x0, eps, c), rel=1e-9, abs=1e-9)


def test_dual_lp_refuses_non_relu_networks(tmp_path):
    nodes = [oh.make_node("Gemm", ["x", "W", "b"], ["z"], transB=1), oh.make_node("Sigmoid", ["z"], ["y"])]
    graph = oh.make_graph(nodes, "s", [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 2])],
                          [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 2])],
                          [onnx.numpy_helper.from_array(np.eye(2, dtype=np.float32), "W"),
                           onnx.numpy_helper.from_array(np.zeros(2, dtype=np.float32), "b")])
    onnx.save(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 13)], ir_version=8), tmp_path / "s.onnx")
    model = verifier.load(tmp_path / "s.onnx")
    with pytest.raises(verifier.VerifierInputError, match="sigmoid"):
        verifier.compute_bounds(model, torch.zeros(1, 2), torch.ones(1, 2), domain="dual-lp")


def test_cauchy_projections_estimate_the_dual_bound_and_verify_refuses_them(tmp_path):
    """The projected dual estimates the (unprojected) zonotope-form dual; with many projections
    the median estimate is close. It is not sound, so `verify` must refuse it."""
    from verifier.spec import linf_robustness_spec
    from verifier.verify import verify

    rng = np.random.default_rng(11)
    relu_mlp(tmp_path / "m.onnx", rng, (6, 32, 32, 4))
    model = verifier.load(tmp_path / "m.onnx")
    centre = torch.as_tensor(rng.uniform(-1, 1, size=(1, 6)))
    lo, hi = centre - 0.1, centre + 0.1
    exact_lb, exact_ub = verifier.compute_bounds(model, lo, hi, domain="deepz")  # same parallel relaxation
    est_lb, est_ub = verifier.compute_bounds(model, lo, hi, domain="dual-lp", projections=4000, seed=0)
    width = (exact_ub - exact_lb).mean()
    assert torch.allclose(est_lb, exact_lb, atol=float(0.1 * width))
    assert torch.allclose(est_ub, exact_ub, atol=float(0.1 * width))
    spec = linf_robustness_spec(centre[0], 0, 0.1, 4, clip=None)
    with pytest.raises(verifier.VerifierInputError, match="not sound"):
        verify(model, spec, domain="dual-lp", domain_options={"projections": 50})


@pytest.mark.parametrize("domain", ["crown", "alpha-crown", "crown-ibp", "dual-lp"])
def test_l2_ball_bounds_contain_samples_and_beat_the_box(tmp_path, domain):
    """The domains' own ℓ2 mode (constructed directly: the public boundary, which only
    takes boxes, refuses norm=2, see tests/test_boundary_faults.py) bounds the ball."""
    rng = np.random.default_rng(7)
    relu_mlp(tmp_path / "m.onnx", rng, (5, 16, 16, 3))
    model = verifier.load(tmp_path / "m.onnx")
    centre = torch.as_tensor(rng.uniform(-1, 1, size=(1, 5)))
    eps = 0.4
    graph = model.graph_for("cpu", torch.float64)
    lb2, ub2 = get_domain(domain, norm=2).bound(graph, model.as_batch(centre - eps), model.as_batch(centre + eps))
    lbi, ubi = verifier.compute_bounds(model, centre - eps, centre + eps, domain=domain)
    direction = torch.randn(20000, 5, dtype=torch.float64)
    radius = eps * torch.rand(20000, 1, dtype=torch.float64) ** (1 / 5)
    x = centre + radius * direction / direction.norm(dim=1, keepdim=True)
    y = model(x)
    assert bool((y >= lb2 - 1e-9).all() and (y <= ub2 + 1e-9).all())
    assert bool((lb2 >= lbi - 1e-9).all() and (ub2 <= ubi + 1e-9).all())  # the ℓ2 ball lies inside the box


def test_alpha_crown_optimises_sigmoid_tangents(tmp_path):
    """On a sigmoid network α-CROWN (tangent points optimised) is never looser than CROWN
    and still contains every sampled output."""
    rng = np.random.default_rng(0)
    w1 = rng.normal(size=(16, 4)).astype(np.float32)
    w2 = rng.normal(size=(3, 16)).astype(np.float32)
    nodes = [oh.make_node("Gemm", ["x", "W1"], ["h"], transB=1), oh.make_node("Sigmoid", ["h"], ["s"]),
             oh.make_node("Gemm", ["s", "W2"], ["y"], transB=1)]
    graph = oh.make_graph(nodes, "sig", [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 4])],
                          [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 3])],
                          [onnx.numpy_helper.from_array(w1, "W1"), onnx.numpy_helper.from_array(w2, "W2")])
    onnx.save(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 13)], ir_version=8), tmp_path / "s.onnx")
    model = verifier.load(tmp_path / "s.onnx")
    centre = torch.as_tensor(rng.uniform(-2, 2, size=(2, 4)))
    lo, hi = centre - 0.3, centre + 0.3
    c_lb, c_ub = verifier.compute_bounds(model, lo, hi, domain="crown")
    a_lb, a_ub = verifier.compute_bounds(model, lo, hi, domain="alpha-crown")
    assert bool((a_lb >= c_lb - 1e-9).all() and (a_ub <= c_ub + 1e-9).all())
    assert float((a_ub - a_lb).sum()) < float((c_ub - c_lb).sum())  # the tangents moved
    x = lo + (hi - lo) * torch.rand(20000, 2, 4, dtype=torch.float64)
    y = model(x.reshape(-1, 4)).reshape(20000, 2, 3)
    assert bool((y >= a_lb - 1e-9).all() and (y <= a_ub + 1e-9).all())
