"""Patch-form backward passes through max-pooling, channels-last models and elementwise
chains.

* DeepPoly's max-pool rule on windows (:func:`verifier.domains.patch_steps.maxpool_step`):
  on random Conv → MaxPool → BatchNormalization → ReLU → Conv nets (kernels 2–3, strides
  1–3, dilation, pads, ceil mode), in float64, every intermediate and final bound of CROWN,
  and one α-CROWN pass with per-row slopes (values and gradients), equal the dense passes'
  to 1e-9 with the patch path taken through a max-pool; and they contain sampled values.
* Keras/Larq exports wrap each activation in an NCHW→NHWC→NCHW transpose pair; the
  importer cancels the pair (:func:`verifier.ir.passes.cancel_transpose_pairs`) without
  changing the model's values (onnxruntime), and a flattened channels-last convolution
  output is bounded in patch form (:func:`verifier.domains.patches.rearranged_patchable`).
* A pre-activation node that is an elementwise chain of a bounded one (Larq's
  ``sign(sign(x) + 0.1)``, a batch norm after a ReLU) takes the chain's image
  (:func:`verifier.domains.backward.elementwise_source`): sound, and never looser than
  its backward passes.
"""

from __future__ import annotations

import numpy as np
import onnx.helper as oh
import pytest
import torch

import verifier
import verifier.domains.backward as backward
import verifier.domains.patches as patches
import verifier.domains.patch_steps as patch_steps
from verifier.domains import get_domain
from verifier.engine import evaluate
from verifier.ir import topological_order
from onnx_builders import make_model, save_model
from patch_helpers import (assert_alpha_rows_match_dense, assert_bounds_match_dense, count_calls,  # noqa: F401
                           dense, random_box)  # (dense: a fixture)

F64 = torch.float64
TOL = 1e-9


def _conv(nodes, inits, rng, name, prev, c, co, k, s=1, p=0):
    inits[f"w{name}"] = rng.normal(0, 1.0 / np.sqrt(k * k * c), (co, c, k, k)).astype(np.float32)
    inits[f"b{name}"] = rng.normal(0, 0.1, co).astype(np.float32)
    nodes.append(oh.make_node("Conv", [prev, f"w{name}", f"b{name}"], [f"c{name}"], strides=[s, s], pads=[p] * 4))
    return f"c{name}"


def _batch_norm(nodes, inits, rng, name, prev, c):
    for key, value in (("g", rng.uniform(0.5, 1.5, c)), ("b", rng.normal(0, 0.2, c)),
                       ("m", rng.normal(0, 0.2, c)), ("v", rng.uniform(0.5, 2.0, c))):
        inits[f"bn{key}{name}"] = value.astype(np.float32)
    nodes.append(oh.make_node("BatchNormalization", [prev] + [f"bn{k}{name}" for k in "gbmv"], [f"bn{name}"]))
    return f"bn{name}"


def pool_net(tmp_path, rng, pool: dict, size: int = 9, channels: int = 2):
    """``x (N, channels, size, size)`` → Conv 3×3 → MaxPool(``pool``) → BatchNormalization
    → ReLU → Conv 2×2 → ReLU → Flatten → Gemm (3 outputs)."""
    nodes, inits = [], {}
    prev = _conv(nodes, inits, rng, 0, "x", channels, 3, 3, 1, 1)
    nodes.append(oh.make_node("MaxPool", [prev], ["mp"], **pool))
    prev = _batch_norm(nodes, inits, rng, 0, "mp", 3)
    nodes.append(oh.make_node("Relu", [prev], ["r0"]))
    prev = _conv(nodes, inits, rng, 1, "r0", 3, 4, 2)
    nodes.append(oh.make_node("Relu", [prev], ["r1"]))
    probe = verifier.load(save_model(make_model(nodes, ["N", channels, size, size], "r1", inits), tmp_path),
                          check=False)
    n = int(np.prod(probe.graph.nodes[probe.graph.graph["output"]]["shape"]))
    inits["wf"] = rng.normal(0, 1.0 / np.sqrt(n), (3, n)).astype(np.float32)
    inits["bf"] = rng.normal(0, 0.1, 3).astype(np.float32)
    nodes += [oh.make_node("Flatten", ["r1"], ["f"]), oh.make_node("Gemm", ["f", "wf", "bf"], ["y"], transB=1)]
    return verifier.load(save_model(make_model(nodes, ["N", channels, size, size], "y", inits), tmp_path))


POOLS = {
    "2x2-stride2": dict(kernel_shape=[2, 2], strides=[2, 2]),
    "3x3-stride1-pads": dict(kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1]),
    "3x3-stride2-ceil": dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),
    "2x2-dilated": dict(kernel_shape=[2, 2], strides=[1, 1], dilations=[2, 2]),
    "2x3-stride3-pads": dict(kernel_shape=[2, 3], strides=[3, 2], pads=[1, 0, 0, 1]),
}


@pytest.fixture
def pooled(monkeypatch):
    """The number of windows steps through a max-pool so far."""
    return count_calls(monkeypatch, patches, "maxpool_step", patch_steps.maxpool_step)


@pytest.mark.parametrize("name", list(POOLS))
def test_maxpool_patch_passes_equal_dense_passes(tmp_path, name, dense, pooled):
    rng = np.random.default_rng(len(name))
    model = pool_net(tmp_path, rng, POOLS[name])
    lower, upper = random_box(model, rng, 2, 0.6)
    graph, dom = model.graph_for("cpu", F64), get_domain("crown")
    assert_bounds_match_dense(dom, graph, lower, upper, dense, pooled, TOL, "no window crossed a max-pool")


@pytest.mark.parametrize("name", ["2x2-stride2", "3x3-stride1-pads"])
def test_maxpool_patch_pass_with_per_row_slopes_equals_dense(tmp_path, name, dense, pooled):
    rng = np.random.default_rng(7 + len(name))
    model = pool_net(tmp_path, rng, POOLS[name])
    lower, upper = random_box(model, rng, 2, 1.0)
    graph, dom = model.graph_for("cpu", F64), get_domain("alpha-crown")
    bounds = get_domain("crown").intermediate_bounds(graph, lower, upper)
    target = [n for n in backward.pre_activation_nodes(graph, dom) if patches.patchable(dom, graph, n)][-1]
    assert_alpha_rows_match_dense(dom, graph, target, lower, upper, bounds, 9, dense, pooled, TOL,
                                  "no window crossed a max-pool")


@pytest.mark.parametrize("name", list(POOLS))
def test_maxpool_patch_bounds_contain_sampled_values(tmp_path, name):
    rng = np.random.default_rng(3 + len(name))
    model = pool_net(tmp_path, rng, POOLS[name])
    lower, upper = random_box(model, rng, 1, 0.8)
    graph = model.graph_for("cpu", F64)
    bounds = get_domain("crown").intermediate_bounds(graph, lower, upper)
    xs = lower + (upper - lower) * torch.rand((500, *lower.shape[1:]), dtype=F64,
                                              generator=torch.Generator().manual_seed(0))
    values = evaluate(graph, xs, keep_all=True)
    for n, (l, u) in bounds.items():
        assert bool((values[n] >= l - 1e-9).all() and (values[n] <= u + 1e-9).all()), n


def channels_last_net(tmp_path, rng, activation: str):
    """A Keras/Larq-style export: ``x (N, 7, 7, 2)`` NHWC → Transpose → Conv 3×3 →
    Transpose(NHWC) → [activation chain] → Transpose(NCHW) → Conv 2×2 → Transpose(NHWC)
    → Flatten → ``activation`` → MatMul. ``activation``: ``"sign"`` (Larq's
    ``Sign(Sign(x) + 0.1)``) or ``"relu"`` (ReLU then a per-channel scale on the NHWC
    layout, whose constant the pass must permute)."""
    nodes, inits = [], {}
    nodes.append(oh.make_node("Transpose", ["x"], ["t0"], perm=[0, 3, 1, 2]))
    prev = _conv(nodes, inits, rng, 0, "t0", 2, 3, 3)
    nodes.append(oh.make_node("Transpose", [prev], ["t1"], perm=[0, 2, 3, 1]))

    def chain(src, tag):
        if activation == "sign":
            inits[f"h{tag}"] = np.array(0.1, dtype=np.float32)
            nodes.extend([oh.make_node("Sign", [src], [f"s{tag}"]), oh.make_node("Add", [f"s{tag}", f"h{tag}"], [f"a{tag}"]),
                          oh.make_node("Sign", [f"a{tag}"], [f"o{tag}"])])
        else:
            inits[f"h{tag}"] = rng.uniform(0.5, 1.5, 3 if tag == 0 else 1).astype(np.float32)
            nodes.extend([oh.make_node("Relu", [src], [f"s{tag}"]), oh.make_node("Mul", [f"s{tag}", f"h{tag}"], [f"a{tag}"]),
                          oh.make_node("Relu", [f"a{tag}"], [f"o{tag}"])])
        return f"o{tag}"

    prev = chain("t1", 0)
    nodes.append(oh.make_node("Transpose", [prev], ["t2"], perm=[0, 3, 1, 2]))
    prev = _conv(nodes, inits, rng, 1, "t2", 3, 4, 2)
    nodes.append(oh.make_node("Transpose", [prev], ["t3"], perm=[0, 2, 3, 1]))
    inits["shape"] = np.array([-1, 4 * 4 * 4], dtype=np.int64)
    nodes.append(oh.make_node("Reshape", ["t3", "shape"], ["flat"]))
    prev = chain("flat", 1)
    inits["wf"] = rng.normal(0, 0.2, (64, 3)).astype(np.float32)
    nodes.append(oh.make_node("MatMul", [prev, "wf"], ["y"]))
    return verifier.load(save_model(make_model(nodes, ["N", 7, 7, 2], "y", inits), tmp_path))


@pytest.mark.parametrize("activation", ["sign", "relu"])
def test_channels_last_transpose_pairs_cancel_and_values_match_onnxruntime(tmp_path, activation):
    """``verifier.load`` runs its onnxruntime fidelity check; the IR keeps only the input's
    transpose and the one before the flatten, and the activations run on NCHW."""
    model = channels_last_net(tmp_path, np.random.default_rng(1), activation)
    kinds = [model.graph.nodes[n]["kind"] for n in topological_order(model.graph)]
    assert kinds.count("transpose") == 2, kinds
    first_activation = next(n for n in topological_order(model.graph)
                            if model.graph.nodes[n]["kind"] == activation)
    assert tuple(model.graph.nodes[first_activation]["shape"]) == (1, 3, 5, 5)


@pytest.mark.parametrize("activation", ["sign", "relu"])
def test_channels_last_rows_go_in_patch_form_with_the_dense_bounds(tmp_path, activation, dense, monkeypatch):
    """Bounds equal to the dense passes' (every pass dense, no rearrangement) and sound;
    the rows of the flattened convolution output start in patch form."""
    started = count_calls(monkeypatch, patches, "_walk", patches._walk)
    rng = np.random.default_rng(2)
    model = channels_last_net(tmp_path, rng, activation)
    lower, upper = random_box(model, rng, 2, 0.8)
    graph, dom = model.graph_for("cpu", F64), get_domain("crown")
    flat = next(n for n in graph.nodes if graph.nodes[n]["kind"] == "reshape")
    assert patches.rearranged_patchable(dom, graph, flat) is not None
    _, fast_out = assert_bounds_match_dense(
        dom, graph, lower, upper, dense, started, TOL, "no pass went in patch form",
        also_off=lambda: monkeypatch.setattr(backward, "rearranged_patchable", lambda *a: None))
    xs = lower[:1] + (upper[:1] - lower[:1]) * torch.rand((300, *lower.shape[1:]), dtype=F64,
                                                          generator=torch.Generator().manual_seed(0))
    y = evaluate(graph, xs)
    assert bool((y >= fast_out[0][:1] - 1e-9).all() and (y <= fast_out[1][:1] + 1e-9).all())


@pytest.mark.parametrize("activation", ["sign", "relu"])
def test_elementwise_chain_takes_the_image_never_looser_than_its_passes(tmp_path, activation, monkeypatch):
    """CROWN: the chain's image of the bounded node's interval replaces the backward passes
    of ``Sign(x) + 0.1`` and ``ReLU(x)·a``; every bound equal or tighter, and sound."""
    rng = np.random.default_rng(4)
    model = channels_last_net(tmp_path, rng, activation)
    lower, upper = random_box(model, rng, 2, 0.8)
    graph, dom = model.graph_for("cpu", F64), get_domain("crown")
    need = backward.pre_activation_nodes(graph, dom)
    chained = [n for n in need if backward.elementwise_source(graph, n, need)]
    assert len(chained) == 2, chained
    targets = []
    real = backward.BackwardDomain.bound_rows

    def recording(self, graph, node_id, *args):
        targets.append(node_id)
        return real(self, graph, node_id, *args)

    monkeypatch.setattr(backward.BackwardDomain, "bound_rows", recording)
    fast = dom.intermediate_bounds(graph, lower, upper)
    assert targets and not set(chained) & set(targets), "a chained node had its own backward passes"
    monkeypatch.setattr(backward, "elementwise_source", lambda *a: None)
    slow = dom.intermediate_bounds(graph, lower, upper)
    assert set(chained) <= set(targets)
    for n in slow:
        assert bool((fast[n][0] >= slow[n][0] - 1e-9).all() and (fast[n][1] <= slow[n][1] + 1e-9).all()), n
    _assert_contains_samples(graph, lower, upper, fast)


def _assert_contains_samples(graph, lower, upper, bounds):
    xs = lower[:1] + (upper[:1] - lower[:1]) * torch.rand((300, *lower.shape[1:]), dtype=F64,
                                                          generator=torch.Generator().manual_seed(1))
    values = evaluate(graph, xs, keep_all=True)
    for n, (l, u) in bounds.items():
        assert bool((values[n] >= l[:1] - 1e-9).all() and (values[n] <= u[:1] + 1e-9).all()), n


@pytest.mark.parametrize("activation", ["sign", "relu"])
def test_alpha_crown_with_elementwise_chains_is_sound_and_not_looser_than_crown(tmp_path, activation):
    """α-CROWN skips the chained targets' slopes and passes: its intermediate bounds
    contain sampled values and its final bounds are at least CROWN's."""
    rng = np.random.default_rng(4)
    model = channels_last_net(tmp_path, rng, activation)
    lower, upper = random_box(model, rng, 2, 0.8)
    graph, dom = model.graph_for("cpu", F64), get_domain("alpha-crown")
    lam = dom.spec_rows(graph, lower, None)
    best, tightest = dom.optimise(graph, lower, upper, torch.cat([lam, -lam], 1))
    _assert_contains_samples(graph, lower, upper, tightest)
    crown_lb, crown_ub = get_domain("crown").bound(graph, lower, upper)
    assert bool((best[:, :3] >= crown_lb - 1e-9).all() and (-best[:, 3:] <= crown_ub + 1e-9).all())
