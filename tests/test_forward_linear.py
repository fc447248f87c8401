"""Forward linear intermediate bounds (:mod:`verifier.complete.forward_linear`): on random
small networks (ReLU / sigmoid / tanh MLPs; a transposed-convolution generator with a
convolution after it) every sampled point of the box lies inside every node's bounds, for
narrow and wide boxes; on the generator they are tighter than IBP; and input splitting,
which uses them, decides a small generator property like brute force."""

from __future__ import annotations

import numpy as np
import onnx.helper as oh
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

import verifier
from onnx_builders import make_model, save_model
from test_refine import KINDS, mixed_mlp
from verifier.complete.forward_linear import forward_linear_bounds
from verifier.domains.crown import CrownDomain
from verifier.engine import evaluate

pytestmark = pytest.mark.usefixtures("one_torch_thread")

F64 = torch.float64


def generator(path, seed: int, act: str = "Relu"):
    """``x (1, 3) → Gemm → (1, 4, 2, 2) → ConvTranspose (stride 2, pads 1) → act → Conv → act → Gemm → 2``."""
    rng = np.random.default_rng(seed)
    inits = {"W0": rng.normal(size=(16, 3)).astype(np.float32), "shape": np.array([1, 4, 2, 2], np.int64),
             "Wt": (rng.normal(size=(4, 3, 4, 4)) * 0.5).astype(np.float32), "bt": rng.normal(size=3).astype(np.float32),
             "Wc": (rng.normal(size=(2, 3, 3, 3)) * 0.5).astype(np.float32), "flat": np.array([1, -1], np.int64),
             "Wo": rng.normal(size=(2, 2 * 2 * 2)).astype(np.float32)}
    nodes = [oh.make_node("Gemm", ["x", "W0"], ["h"], transB=1), oh.make_node("Reshape", ["h", "shape"], ["r"]),
             oh.make_node("ConvTranspose", ["r", "Wt", "bt"], ["t"], strides=[2, 2], pads=[1, 1, 1, 1]),
             oh.make_node(act, ["t"], ["a"]),
             oh.make_node("Conv", ["a", "Wc"], ["c"], strides=[2, 2], pads=[1, 1, 1, 1]),
             oh.make_node(act, ["c"], ["a2"]), oh.make_node("Reshape", ["a2", "flat"], ["f"]),
             oh.make_node("Gemm", ["f", "Wo"], ["y"], transB=1)]
    return verifier.load(save_model(make_model(nodes, [1, 3], "y", inits), path))


def assert_contains_samples(model, lower, upper, samples: int = 3000, seed: int = 0):
    graph = model.graph_for("cpu", F64)
    bounds = forward_linear_bounds(graph, lower, upper)
    gen = torch.Generator().manual_seed(seed)
    x = lower + (upper - lower) * torch.rand(samples, *lower.shape[1:], generator=gen, dtype=F64)
    values = evaluate(graph, torch.cat([x, lower, upper]), keep_all=True)
    for v, (l, u) in bounds.items():
        s = values[v]
        tol = 1e-9 * (1 + s.abs())
        assert bool(((s >= l - tol) & (s <= u + tol)).all()), f"node {v}: a sampled value lies outside"
    return bounds


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(acts=st.lists(st.sampled_from(KINDS), min_size=1, max_size=3), seed=st.integers(0, 10_000),
       width=st.sampled_from([1e-3, 0.1, 1.0, 4.0]))
def test_forward_bounds_contain_sampled_points_of_random_mlps(tmp_path_factory, acts, seed, width):
    model = mixed_mlp(tmp_path_factory.mktemp("fwd"), acts, seed)
    centre = torch.as_tensor(np.random.default_rng(seed).uniform(-1, 1, size=2), dtype=F64)
    lower, upper = model.as_batch(centre - width), model.as_batch(centre + width)
    assert_contains_samples(model, lower, upper, seed=seed)


@pytest.mark.parametrize("act", ["Relu", "Sigmoid", "Tanh"])
@pytest.mark.parametrize("seed", [0, 1])
def test_forward_bounds_on_a_generator_are_sound_and_tighter_than_ibp(tmp_path, act, seed):
    model = generator(tmp_path, seed, act)
    graph = model.graph_for("cpu", F64)
    centre = torch.tensor([0.3, -0.2, 0.1], dtype=F64)
    lower, upper = model.as_batch(centre - 0.05), model.as_batch(centre + 0.05)
    bounds = assert_contains_samples(model, lower, upper, seed=seed)
    ibp = CrownDomain("ibp").intermediate_bounds(graph, lower, upper)
    last = list(bounds)[-1]
    width = float((bounds[last][1] - bounds[last][0]).sum())
    assert width < float((ibp[last][1] - ibp[last][0]).sum())


def test_batched_boxes_are_bounded_independently(tmp_path):
    """Two boxes in one call get the bounds each gets alone (chunking and batching agree)."""
    model = generator(tmp_path, 2)
    graph = model.graph_for("cpu", F64)
    lo = torch.tensor([[-0.1, 0.0, 0.2], [0.4, -0.3, 0.0]], dtype=F64).reshape(2, *model.as_batch(torch.zeros(3)).shape[1:])
    both = forward_linear_bounds(graph, lo, lo + 0.1)
    for i in range(2):
        alone = forward_linear_bounds(graph, lo[i:i + 1], lo[i:i + 1] + 0.1)
        for v in both:
            assert torch.allclose(both[v][0][i:i + 1], alone[v][0]) and torch.allclose(both[v][1][i:i + 1], alone[v][1])
