"""Patch-form backward passes (:mod:`verifier.domains.patches`) through transposed
convolutions and per-channel scales (a GAN generator's ConvTranspose → BatchNormalization
→ ReLU layers, then a discriminator's convolutions) give the bounds of the dense passes.

The windows of a row cross a stride-``s`` transposed convolution as ``s`` phases; where
``s`` does not divide the windows' stride their origins are kept per window
(:attr:`~verifier.domains.patch_rows.Rows.origins`). On small random generator-like nets
(strides 1–3, pads, output padding, kernels 2–4, batch norms), in float64, every
intermediate bound and the final bound of CROWN and of the dual LP, and one α-CROWN
pass with per-row slopes (values and gradients), must equal the dense passes' to 1e-9
with the patch path taken through a transposed convolution."""

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
from onnx_builders import make_model, save_model
from patch_helpers import (assert_alpha_rows_match_dense, assert_bounds_match_dense, count_calls,  # noqa: F401
                           dense, random_box)  # (dense: a fixture)

F64 = torch.float64
TOL = 1e-9


def generator_net(tmp_path, rng, layers, convs=(), channels=2, size=3, batch_norm=True, head=True):
    """``x (N, channels, size, size)`` → [ConvTranspose → (BatchNormalization) → ReLU]* →
    [Conv → ReLU]* → (Flatten → Gemm). ``layers``: ``(out_channels, kernel, stride, pads,
    output_padding)`` per transposed convolution (``pads`` = begin, end); ``convs``:
    ``(out_channels, kernel, stride, pad)`` per convolution."""
    nodes, inits, prev, c = [], {}, "x", channels
    for i, (co, k, s, (pb, pe), op) in enumerate(layers):
        inits[f"t{i}"] = rng.normal(0, 1.0 / np.sqrt(k * c), (c, co, k, k)).astype(np.float32)
        inits[f"tb{i}"] = rng.normal(0, 0.1, co).astype(np.float32)
        nodes.append(oh.make_node("ConvTranspose", [prev, f"t{i}", f"tb{i}"], [f"ct{i}"], strides=[s, s],
                                  pads=[pb, pb, pe, pe], output_padding=[op, op]))
        prev, c = f"ct{i}", co
        if batch_norm:
            for name, value in (("g", rng.uniform(0.5, 1.5, co)), ("b", rng.normal(0, 0.2, co)),
                                ("m", rng.normal(0, 0.2, co)), ("v", rng.uniform(0.5, 2.0, co))):
                inits[f"bn{name}{i}"] = value.astype(np.float32)
            nodes.append(oh.make_node("BatchNormalization", [prev] + [f"bn{n}{i}" for n in "gbmv"], [f"bn{i}"]))
            prev = f"bn{i}"
        nodes.append(oh.make_node("Relu", [prev], [f"r{i}"]))
        prev = f"r{i}"
    for i, (co, k, s, p) in enumerate(convs):
        inits[f"w{i}"] = rng.normal(0, 1.0 / np.sqrt(k * k * c), (co, c, k, k)).astype(np.float32)
        inits[f"b{i}"] = rng.normal(0, 0.1, co).astype(np.float32)
        nodes += [oh.make_node("Conv", [prev, f"w{i}", f"b{i}"], [f"c{i}"], strides=[s, s], pads=[p] * 4),
                  oh.make_node("Relu", [f"c{i}"], [f"a{i}"])]
        prev, c = f"a{i}", co
    if head:
        probe = verifier.load(save_model(make_model(nodes, ["N", channels, size, size], prev, inits), tmp_path),
                              check=False)
        n = int(np.prod(probe.graph.nodes[probe.graph.graph["output"]]["shape"]))
        inits["wf"] = rng.normal(0, 1.0 / np.sqrt(n), (3, n)).astype(np.float32)
        inits["bf"] = rng.normal(0, 0.1, 3).astype(np.float32)
        nodes += [oh.make_node("Flatten", [prev], ["f"]), oh.make_node("Gemm", ["f", "wf", "bf"], ["y"], transB=1)]
        prev = "y"
    return verifier.load(save_model(make_model(nodes, ["N", channels, size, size], prev, inits), tmp_path))


NETS = {  # stride 2 after stride 2 (per-window origins), a stride-1 last layer, a discriminator
    "gan": ([(4, 4, 2, (1, 1), 0), (3, 4, 2, (0, 0), 0), (2, 3, 1, (0, 0), 0)], [(3, 3, 2, 1), (4, 3, 2, 1)]),
    "pads-output-padding": ([(3, 3, 2, (1, 0), 1), (2, 2, 3, (0, 1), 2)], [(3, 3, 3, 1)]),
    "stride3-then-2": ([(3, 3, 3, (0, 0), 0), (2, 4, 2, (1, 1), 1)], []),
    "no-batch-norm": ([(3, 4, 2, (1, 1), 0), (2, 4, 2, (1, 1), 0)], [(2, 3, 2, 0)]),
}


def _box(model, rng, batch=2, width=0.5):
    return random_box(model, rng, batch, width)


@pytest.fixture
def crossed(monkeypatch):
    """The number of windows steps through a transposed convolution so far."""
    return count_calls(monkeypatch, patches, "conv_transpose_step", patch_steps.conv_transpose_step)


def _model(tmp_path, name, seed=0):
    layers, convs = NETS[name]
    rng = np.random.default_rng(seed + len(name))
    model = generator_net(tmp_path, rng, layers, convs, batch_norm=name != "no-batch-norm")
    return model, rng


@pytest.mark.parametrize("name", list(NETS))
@pytest.mark.parametrize("domain", ["crown", "dual-lp"])
def test_transposed_patch_passes_equal_dense_passes(tmp_path, name, domain, dense, crossed):
    model, rng = _model(tmp_path, name)
    lower, upper = _box(model, rng)
    graph, dom = model.graph_for("cpu", F64), get_domain(domain)
    assert_bounds_match_dense(dom, graph, lower, upper, dense, crossed, TOL, "no window crossed a transposed convolution")


@pytest.mark.parametrize("name", ["gan", "pads-output-padding"])
def test_transposed_patch_pass_with_per_row_slopes_equals_dense(tmp_path, name, dense, crossed):
    """α-CROWN's intermediate passes from the last pre-activation node that a transposed
    convolution or batch norm feeds: equal bounds and gradients with respect to the slopes."""
    model, rng = _model(tmp_path, name, seed=5)
    lower, upper = _box(model, rng, width=1.0)
    graph, dom = model.graph_for("cpu", F64), get_domain("alpha-crown")
    bounds = get_domain("crown").intermediate_bounds(graph, lower, upper)
    target = [n for n in backward.pre_activation_nodes(graph, dom) if patches.patchable(dom, graph, n)][-1]
    assert_alpha_rows_match_dense(dom, graph, target, lower, upper, bounds, 9, dense, crossed, TOL,
                                  "no window crossed a transposed convolution")


def test_transposed_patch_bounds_contain_onnxruntime_outputs(tmp_path):
    """Soundness on its own: every intermediate bound of the patch passes contains the
    values of 500 sampled inputs (evaluated by the IR, which agrees with onnxruntime)."""
    from verifier.engine import evaluate

    model, rng = _model(tmp_path, "gan", seed=3)
    lower, upper = _box(model, rng, batch=1, width=0.8)
    graph = model.graph_for("cpu", F64)
    bounds = get_domain("crown").intermediate_bounds(graph, lower, upper)
    xs = lower + (upper - lower) * torch.rand((500, *lower.shape[1:]), dtype=F64, generator=torch.Generator().manual_seed(0))
    values = evaluate(graph, xs, keep_all=True)
    for n, (l, u) in bounds.items():
        assert bool((values[n] >= l - 1e-9).all() and (values[n] <= u + 1e-9).all()), n
