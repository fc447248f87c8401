"""Per-subdomain intermediate-bound refinement (:mod:`verifier.complete.refine`) in
activation-split branch-and-bound: on random small networks mixing ReLU, sigmoid and tanh,
the refined bounds of a subdomain (IBP ∩ inherited, then CROWN) contain every sampled
point of the subdomain's set ``X_D`` at every node; a split behind a ReLU tightens the
next layer's interval as interval arithmetic says it must; and the search's verdicts with
and without the CROWN refinement agree with a dense grid."""

from __future__ import annotations

import numpy as np
import onnx.helper as oh
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

import verifier
from onnx_builders import make_model, save_model
from test_activation_split import grid_margin, region
from verifier.complete.activation_split import IntervalBetaCrown, activation_split_bab, activation_inputs
from verifier.complete.refine import SubdomainRefiner, intersect
from verifier.complete.relu_split import SplitBaBStats, root_intermediate_bounds
from verifier.deadline import Deadline, Timeout
from verifier.engine import evaluate
from verifier.spec.model import Conjunction, InputRegion

pytestmark = pytest.mark.usefixtures("one_torch_thread")

F64 = torch.float64
KINDS = ("Relu", "Sigmoid", "Tanh")


def mixed_mlp(path, acts: list[str], seed: int, hidden: int = 6, n_in: int = 2, scale: float = 1.5):
    """``n_in → (Gemm, act_i) for each act → 2`` with random float32 weights."""
    rng = np.random.default_rng(seed)
    nodes, inits, prev, width = [], {}, "x", n_in
    for i, act in enumerate(acts):
        inits[f"W{i}"] = (rng.normal(size=(hidden, width)) * scale).astype(np.float32)
        inits[f"b{i}"] = (rng.normal(size=hidden) * 0.5).astype(np.float32)
        nodes += [oh.make_node("Gemm", [prev, f"W{i}", f"b{i}"], [f"h{i}"], transB=1),
                  oh.make_node(act, [f"h{i}"], [f"a{i}"])]
        prev, width = f"a{i}", hidden
    inits["Wo"] = rng.normal(size=(2, width)).astype(np.float32)
    nodes.append(oh.make_node("Gemm", [prev, "Wo"], ["y"], transB=1))
    return verifier.load(save_model(make_model(nodes, ["N", n_in], "y", inits), path))


def box_region(n_in: int = 2) -> InputRegion:
    return InputRegion(-torch.ones(n_in, dtype=F64), torch.ones(n_in, dtype=F64),
                       [Conjunction(torch.tensor([[1.0, -1.0]], dtype=F64), torch.zeros(1, dtype=F64))])


def narrowed_subdomains(root, split_nodes, values, rng, count: int):
    """``count`` subdomains (node → ``(l, u)`` each ``(count, *S)``): on each split node a
    random sub-interval of the root's, around the value at a random sampled input (so the
    subdomain's set is not empty); other nodes keep the root's bounds."""
    pick = torch.as_tensor(rng.integers(0, len(next(iter(values.values()))), size=count))
    out = {}
    for z, (l, u) in root.items():
        l, u = l.expand(count, *l.shape[1:]).clone(), u.expand(count, *u.shape[1:]).clone()
        if z in split_nodes:
            v = values[z][pick].reshape(l.shape)
            a = torch.as_tensor(rng.uniform(0, 1, size=tuple(l.shape)), dtype=F64)
            b = torch.as_tensor(rng.uniform(0, 1, size=tuple(l.shape)), dtype=F64)
            keep = torch.as_tensor(rng.uniform(0, 1, size=tuple(l.shape)) < 0.5)  # narrow about half the entries
            l = torch.where(keep, l, torch.minimum(v, l + a * (v - l)))
            u = torch.where(keep, u, torch.maximum(v, u - b * (u - v)))
        out[z] = (l, u)
    return out


def members(bounds, values, narrowed) -> torch.Tensor:
    """``(count, samples)``: which sampled inputs lie in each subdomain's set."""
    inside = None
    for z in narrowed:
        l, u = bounds[z]
        v = values[z].reshape(1, len(values[z]), -1)
        ok = ((v >= l.reshape(l.shape[0], 1, -1)) & (v <= u.reshape(u.shape[0], 1, -1))).all(dim=2)
        inside = ok if inside is None else inside & ok
    return inside


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(acts=st.lists(st.sampled_from(KINDS), min_size=2, max_size=3), seed=st.integers(0, 10_000))
def test_refined_bounds_contain_every_sampled_point_of_the_subdomain(tmp_path_factory, acts, seed):
    model = mixed_mlp(tmp_path_factory.mktemp("refine"), acts, seed)
    reg = box_region()
    graph = model.graph_for("cpu", F64)
    root, _ = root_intermediate_bounds(model, reg, "cpu", F64)
    split_nodes = list(activation_inputs(graph))
    gen = torch.Generator().manual_seed(seed)
    lower, upper = model.as_batch(reg.lower), model.as_batch(reg.upper)
    x = (torch.rand(4000, *lower.shape[1:], generator=gen, dtype=F64) * 2 - 1)
    values = evaluate(graph, x, keep_all=True)
    rng = np.random.default_rng(seed)
    refiner = SubdomainRefiner(graph, lower, upper, root, split_nodes)
    dom = narrowed_subdomains(root, split_nodes, values, rng, count=6)
    inside = members(dom, values, split_nodes)
    assert bool(inside.any(dim=1).all())  # every subdomain holds at least its own sample
    boxed = refiner.box(dom)
    crowned = refiner.crown(boxed, torch.ones(6, dtype=torch.bool))
    for refined in (boxed, crowned):
        for n, (l, u) in refined.items():
            assert bool((l >= dom[n][0]).all() and (u <= dom[n][1]).all()), n  # never looser than inherited
            v = values[n].reshape(1, len(x), -1)
            lo, hi = l.reshape(6, 1, -1), u.reshape(6, 1, -1)
            tol = 1e-9 * (1 + v.abs())
            outside = ((v < lo - tol) | (v > hi + tol)).any(dim=2) & inside
            assert not bool(outside.any()), f"node {n}: a point of the subdomain lies outside its refined bounds"


def test_a_split_behind_a_relu_tightens_the_next_layer(tmp_path):
    """``h0 = x``, ``a0 = relu(h0)``, ``h1 = 2·a0 + 1``, ``y = sigmoid(h1)`` on ``x ∈ [−1, 1]``:
    the root interval of ``h1`` is ``[1, 3]``; on the subdomain ``h0 ≤ 0`` the ReLU is 0, so
    ``h1 = 1`` exactly, which the IBP refinement finds; on ``h0 ∈ [0.5, 1]`` it is ``[2, 3]``."""
    inits = {"W0": np.ones((1, 1), np.float32), "W1": np.full((1, 1), 2.0, np.float32),
             "b1": np.ones(1, np.float32)}
    nodes = [oh.make_node("Gemm", ["x", "W0"], ["h0"], transB=1), oh.make_node("Relu", ["h0"], ["a0"]),
             oh.make_node("Gemm", ["a0", "W1", "b1"], ["h1"], transB=1), oh.make_node("Sigmoid", ["h1"], ["y"])]
    model = verifier.load(save_model(make_model(nodes, ["N", 1], "y", inits), tmp_path))
    graph = model.graph_for("cpu", F64)
    reg = InputRegion(-torch.ones(1, dtype=F64), torch.ones(1, dtype=F64),
                      [Conjunction(torch.ones(1, 1, dtype=F64), torch.zeros(1, dtype=F64))])
    root, _ = root_intermediate_bounds(model, reg, "cpu", F64)
    h0, h1 = list(activation_inputs(graph))
    assert torch.allclose(root[h1][0].reshape(-1), torch.tensor([1.0], dtype=F64))
    assert torch.allclose(root[h1][1].reshape(-1), torch.tensor([3.0], dtype=F64))
    refiner = SubdomainRefiner(graph, model.as_batch(reg.lower), model.as_batch(reg.upper), root, [h0, h1])
    shape = root[h0][0].shape[1:]
    dom = {h0: (torch.tensor([-1.0, 0.5], dtype=F64).reshape(2, *shape),
                torch.tensor([0.0, 1.0], dtype=F64).reshape(2, *shape)),
           h1: (root[h1][0].expand(2, *shape), root[h1][1].expand(2, *shape))}
    l, u = refiner.box(dom)[h1]
    assert torch.allclose(l.reshape(-1), torch.tensor([1.0, 2.0], dtype=F64))
    assert torch.allclose(u.reshape(-1), torch.tensor([1.0, 3.0], dtype=F64))


def test_intersect_reads_nan_as_unbounded():
    nan = float("nan")
    lo, hi = intersect((torch.tensor([nan, 0.0]), torch.tensor([1.0, nan])), (torch.tensor([-2.0, nan]),
                                                                            torch.tensor([nan, 5.0])))
    assert lo.tolist() == [-2.0, 0.0] and hi.tolist() == [1.0, 5.0]


def test_bound_keeps_the_refined_intervals_for_the_children(tmp_path):
    """The engine's bound of a subdomain returns its intervals tightened (children inherit them)."""
    model = mixed_mlp(tmp_path, ["Relu", "Sigmoid"], seed=3)
    reg = box_region()
    graph = model.graph_for("cpu", F64)
    root, _ = root_intermediate_bounds(model, reg, "cpu", F64)
    lower, upper = model.as_batch(reg.lower), model.as_batch(reg.upper)
    out_shape = tuple(graph.nodes[graph.graph["output"]]["shape"])
    engine = IntervalBetaCrown(graph, lower, upper, torch.tensor([1.0, -1.0], dtype=F64).reshape(1, 1, *out_shape),
                               root, iterations=1)
    dom = engine.root_subdomain()
    z0, z1 = list(engine.users)
    s = dom.splits[z0].clone()
    s[:, 1] = torch.minimum(s[:, 1], torch.zeros_like(s[:, 1]))  # every first-layer ReLU inactive
    dom.splits[z0] = s
    dom.depth = dom.depth + 1
    out, _ = engine.bound(dom)
    width = out.splits[z1][:, 1] - out.splits[z1][:, 0]
    assert bool((width <= 1e-9).all())  # the second layer is its bias alone: a point


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(acts=st.lists(st.sampled_from(KINDS), min_size=2, max_size=2), seed=st.integers(0, 10_000),
       quantile=st.sampled_from([-0.2, 0.0, 0.3]), refine_depth=st.sampled_from([0, 4]))
def test_verdicts_agree_with_a_dense_grid(tmp_path_factory, acts, seed, quantile, refine_depth):
    model = mixed_mlp(tmp_path_factory.mktemp("verdict"), acts, seed)
    low, error = grid_margin(model, points=201)
    threshold = low - quantile * (abs(low) + 1)  # below, at or above the grid minimum
    try:
        status, cex = activation_split_bab(model, region(threshold), Deadline(20), dtype=F64,
                                           stats=SplitBaBStats(), refine_depth=refine_depth)
    except Timeout:
        return
    if status == "unsat":
        assert low > threshold, "unsat although a grid point violates"
    if status == "sat":
        assert cex is not None and low - error <= threshold
    if low - error > threshold + 1e-3:
        assert status != "sat"
