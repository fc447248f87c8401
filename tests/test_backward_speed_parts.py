"""The fast paths of the backward domains give the same bounds as the plain dense passes.

The intermediate bounds of a convolution's crossing neurons run in patch form
(:mod:`verifier.domains.patches`): each row's coefficients are kept as a window of the
grid. On small random conv nets (strides, padding, dilation, groups, ReLU, LeakyReLU,
sigmoid, two convolutions in a row, a flatten + dense head), in float64, every
intermediate bound and the final bound of CROWN and of the dual LP, and one α-CROWN
intermediate pass with random per-row slopes (values and gradients), must equal those of
the dense passes (the patch path switched off) to 1e-9, and the patch path must have
been taken.
"""

from __future__ import annotations

import numpy as np
import onnx.helper as oh
import pytest
import torch

import verifier
import verifier.domains.backward as backward
import verifier.domains.patches as patches
from verifier.domains import get_domain
from onnx_builders import make_model, save_model
from patch_helpers import (assert_alpha_rows_match_dense, assert_bounds_match_dense, count_calls,  # noqa: F401
                           dense, random_box)  # (dense: a fixture)

F64 = torch.float64
TOL = 1e-9


def conv_net(tmp_path, rng, convs, act="Relu", head=True, channels=1, size=8):
    """An ONNX model ``x (N, channels, size, size)`` → [Conv → act]* → (Flatten → Gemm);
    ``convs``: ``(out_channels, kernel, stride, pad, dilation, group)`` per convolution;
    ``act``: one ONNX activation for all, or a list (``None``: no activation there)."""
    acts = act if isinstance(act, list) else [act] * len(convs)
    nodes, inits, prev, c = [], {}, "x", channels
    for i, (co, k, s, p, d, g) in enumerate(convs):
        inits[f"w{i}"] = rng.normal(0, 1.0 / np.sqrt(k * k * c / g), (co, c // g, k, k)).astype(np.float32)
        inits[f"b{i}"] = rng.normal(0, 0.1, co).astype(np.float32)
        nodes.append(oh.make_node("Conv", [prev, f"w{i}", f"b{i}"], [f"c{i}"], strides=[s, s], pads=[p] * 4,
                                  dilations=[d, d], group=g))
        prev, c, act = f"c{i}", co, acts[i]
        if act:
            attrs = {"alpha": 0.1} if act == "LeakyRelu" else {}
            nodes.append(oh.make_node(act, [prev], [f"a{i}"], **attrs))
            prev = f"a{i}"
    if head:
        probe = verifier.load(save_model(make_model(nodes, ["N", channels, size, size], prev, inits), tmp_path),
                              check=False)
        n = int(np.prod(probe.graph.nodes[probe.graph.graph["output"]]["shape"]))
        inits["wf"] = rng.normal(0, 1.0 / np.sqrt(n), (5, n)).astype(np.float32)
        inits["bf"] = rng.normal(0, 0.1, 5).astype(np.float32)
        nodes += [oh.make_node("Flatten", [prev], ["f"]), oh.make_node("Gemm", ["f", "wf", "bf"], ["y"], transB=1)]
        prev = "y"
    return verifier.load(save_model(make_model(nodes, ["N", channels, size, size], prev, inits), tmp_path))


NETS = {
    "stride2-pad1": ([(4, 4, 2, 1, 1, 1), (6, 3, 2, 1, 1, 1)], "Relu", True),
    "stride1-pad2-dilation2": ([(3, 3, 1, 2, 2, 1), (4, 3, 1, 0, 1, 1)], "Relu", True),
    "groups": ([(4, 3, 1, 1, 1, 1), (4, 3, 2, 1, 1, 2)], "Relu", True),
    "leaky-relu": ([(3, 3, 2, 0, 1, 1), (5, 2, 1, 1, 1, 1)], "LeakyRelu", True),
    "sigmoid": ([(3, 3, 1, 1, 1, 1), (4, 3, 2, 1, 1, 1)], "Sigmoid", True),
    "conv-conv": ([(3, 3, 1, 1, 1, 1), (4, 3, 2, 1, 1, 1), (3, 2, 1, 1, 1, 1)], [None, "Relu", "Relu"], False),
}


def _box(model, rng, batch=3, width=0.6):
    return random_box(model, rng, batch, width)


@pytest.fixture
def counted(monkeypatch):
    """The number of patch-form passes run so far."""
    return count_calls(monkeypatch, backward, "patch_bound", patches.patch_bound)


@pytest.mark.parametrize("name", list(NETS))
@pytest.mark.parametrize("domain", ["crown", "dual-lp"])
@pytest.mark.parametrize("layout", ["chosen rows", "all rows"])
def test_patch_passes_equal_dense_passes(tmp_path, name, domain, layout, dense, counted, monkeypatch):
    """Both layouts: one window per chosen row, or all of a convolution's entries with one
    window per location (what the passes use when most entries are asked for)."""
    monkeypatch.setattr(backward, "ALL_ROWS_FRACTION", 2.0 if layout == "chosen rows" else 0.0)
    if layout == "all rows":
        real, calls = patches.patch_bound_all, counted

        def counting(*args, **kwargs):
            calls[0] += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(backward, "patch_bound_all", counting)
    convs, act, head = NETS[name]
    if domain == "dual-lp" and act not in ("Relu", [None, "Relu", "Relu"]):
        pytest.skip("the dual LP handles ReLU networks only")
    rng = np.random.default_rng(len(name))
    model = conv_net(tmp_path, rng, convs, act, head)
    lower, upper = _box(model, rng)
    graph, dom = model.graph_for("cpu", F64), get_domain(domain)
    assert_bounds_match_dense(dom, graph, lower, upper, dense, counted, TOL, "the patch path was not taken")


@pytest.mark.parametrize("name", ["stride2-pad1", "leaky-relu", "sigmoid", "groups"])
def test_patch_pass_with_per_row_slopes_equals_dense(tmp_path, name, dense, counted):
    """α-CROWN's intermediate passes: one slope per row and neuron; equal bounds and
    equal gradients with respect to the slopes."""
    convs, act, head = NETS[name]
    rng = np.random.default_rng(7)
    model = conv_net(tmp_path, rng, convs, act, head)
    lower, upper = _box(model, rng, batch=2, width=1.0)
    graph, dom = model.graph_for("cpu", F64), get_domain("alpha-crown")
    bounds = get_domain("crown").intermediate_bounds(graph, lower, upper)
    target = [n for n in backward.pre_activation_nodes(graph, dom) if graph.nodes[n]["kind"] == "conv"][1]
    assert_alpha_rows_match_dense(dom, graph, target, lower, upper, bounds, 7, dense, counted, TOL,
                                  "the patch path was not taken")


@pytest.mark.parametrize("ci,co,k,s,p,d,g,size", [
    (1, 16, 4, 2, 1, 1, 1, 28), (3, 8, 3, 2, 1, 1, 1, 9), (2, 5, 5, 3, 2, 1, 1, 11), (4, 6, 2, 2, 0, 1, 1, 8),
    (1, 3, 3, 1, 1, 1, 1, 7), (16, 32, 4, 2, 1, 1, 1, 14), (4, 4, 3, 2, 1, 2, 1, 10), (4, 6, 3, 1, 1, 1, 2, 6),
    (1, 2, (3, 2), 2, 0, 1, 1, 9),
])
def test_conv_adjoint_equals_convolution_backward(ci, co, k, s, p, d, g, size):
    """The dense conv adjoint (sub-pixel convolution onto few channels, channels-last
    transposed convolution otherwise) equals torch's convolution_backward."""
    from verifier.ops.conv import conv2d_transpose_map

    k0, k1 = (k, k) if isinstance(k, int) else k
    gen = torch.Generator().manual_seed(ci * 100 + co)
    weight = torch.randn((co, ci // g, k0, k1), dtype=F64, generator=gen)
    x = torch.randn((1, ci, size, size), dtype=F64, generator=gen)
    out = torch.nn.functional.conv2d(x, weight, None, s, p, d, g)
    lam = torch.randn((5, *out.shape[1:]), dtype=F64, generator=gen)
    got = conv2d_transpose_map(lam, weight, (s, s), (p, p), (d, d), g, (size, size))
    want = torch.nn.grad.conv2d_input((5, ci, size, size), weight, lam, s, p, d, g)
    torch.testing.assert_close(got, want, rtol=TOL, atol=TOL)


@pytest.mark.parametrize("name", ["stride2-pad1", "groups", "conv-conv"])
def test_dual_lp_mirrored_pass_equals_both_signs(tmp_path, name, monkeypatch):
    """The dual LP bounds ``±Λ`` from one pass of ``Λ`` (its lines share their slope):
    every intermediate and final bound equals the pass from ``[Λ, −Λ]``."""
    from verifier.domains.dual_lp import DualLPDomain

    convs, act, head = NETS[name]
    rng = np.random.default_rng(3)
    model = conv_net(tmp_path, rng, convs, act, head)
    lower, upper = _box(model, rng, batch=2, width=0.8)
    graph, dom = model.graph_for("cpu", F64), get_domain("dual-lp")
    monkeypatch.setattr(backward, "ALL_ROWS_FRACTION", 2.0)  # dense and chosen-rows passes only
    calls, real = [0], backward.BackwardDomain.mirrored_bound

    def counting(*args, **kwargs):
        calls[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(backward.BackwardDomain, "mirrored_bound", counting)
    fast = dom.intermediate_bounds(graph, lower, upper), dom.bound(graph, lower, upper)
    assert calls[0] > 0, "the mirrored pass was not taken"
    monkeypatch.setattr(DualLPDomain, "mirrorable", lambda self, graph: False)
    slow = dom.intermediate_bounds(graph, lower, upper), dom.bound(graph, lower, upper)
    for n in slow[0]:
        for a, b in zip(fast[0][n], slow[0][n]):
            torch.testing.assert_close(a, b, rtol=TOL, atol=TOL)
    for a, b in zip(fast[1], slow[1]):
        torch.testing.assert_close(a, b, rtol=TOL, atol=TOL)
