"""Float32 Box of a point (lower = upper) on deep nets is as narrow as rounding allows
(:func:`verifier.domains.box.box_linear` accumulates narrow boxes in float64 and rounds the
result outwards), where Higham's float32 margin made it 0.086 wide on mnist_fc's 256x6 net."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import verifier
from benchdata import benchmarks_dir
from onnx_builders import GraphBuilder, save_model
from verifier.domains import get_domain
from verifier.ir.graph import topological_order
from verifier.ops import FORWARD, LINEAR_PART

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EPS32, EPS64 = 2.0 ** -23, 2.0 ** -52
TINY32 = 2.0 ** -149  # float32's smallest subnormal: an outward step's size near zero


def width_bound(model: verifier.Model, x: torch.Tensor) -> torch.Tensor:
    """An upper bound on the width of Box's float32 output interval at the point ``x``,
    derived layer by layer (in float64, on the float32 network's parameters, which float64
    holds exactly), for chains of linear ops, ReLUs and reshapes.

    With ``y`` the input's exact value, ``w`` its interval's width bound: a linear op's exact
    range has width ``m = |L| w``; float64 accumulation adds at most ``ρ`` per end, with
    ``ρ = (2n + 3)·eps₆₄·(3a + |b| + m)``, ``a = |L|(|y| + w) ≥ |L||c|`` (which covers both of
    :func:`~verifier.domains.box.interval_linear`'s margins); so both ends lie within
    ``m + 2ρ`` of ``L y + b``, and rounding each outwards to float32 moves it by at most an ulp,
    ``≤ eps₃₂·(|L y + b| + m + 2ρ) + 2⁻¹⁴⁹``. The interval holds ``y`` and lies in
    ``[y − w, y + w]``, so a ReLU's is at most ``min(w, relu(y + w) − relu(y − w))`` wide
    (zero where the whole interval is negative); reshapes keep the width."""
    graph = model.graph_for("cpu", torch.float64)
    y, w = {}, {}
    for name in topological_order(graph):
        node = graph.nodes[name]
        kind = node["kind"]
        inputs = list(graph.predecessors(name))
        if kind == "input":
            y[name], w[name] = x.double(), torch.zeros_like(x, dtype=torch.float64)
            continue
        (src,) = inputs
        if kind == "linear":
            n = y[src][0].numel()
            m = LINEAR_PART[kind](node, w[src], True)
            a = LINEAR_PART[kind](node, y[src].abs() + w[src], True)
            bias = node["params"].get("bias")
            b = torch.zeros_like(m) if bias is None else bias.abs().expand_as(m)
            rho = (2 * n + 3) * EPS64 * (3 * a + b + m)
            y[name] = FORWARD[kind](node, y[src])
            w[name] = m + 2 * rho + 2 * (EPS32 * (y[name].abs() + m + 2 * rho) + TINY32)
        elif kind == "relu":  # the interval lies in [y − w, y + w]; ReLU is monotone and 1-Lipschitz
            y[name] = torch.relu(y[src])
            w[name] = torch.minimum(w[src], torch.relu(y[src] + w[src]) - torch.relu(y[src] - w[src]))
        elif kind in ("reshape", "flatten"):
            y[name], w[name] = FORWARD[kind](node, y[src]), FORWARD[kind](node, w[src])
        else:
            raise AssertionError(f"width_bound has no rule for op kind {kind!r}")
    return w[graph.graph["output"]]


def _eran_like_9x200(directory) -> str:
    """784 → 9 hidden layers of 200 ReLUs → 10, He-initialised (the shape of ERAN's
    ffnnRELU 9x200 MNIST net), float32."""
    g = GraphBuilder(np.random.default_rng(9), ("N", 784))
    h, prev = g.x, 784
    for _ in range(9):
        h = g.op("Relu", g.op("Gemm", h, g.weight(200, prev), g.rand(200, scale=0.1), transB=1))
        prev = 200
    return str(save_model(g.model(g.op("Gemm", h, g.weight(10, prev), g.rand(10, scale=0.1), transB=1)), directory))


def _nets(tmp_path):
    yield "9x200", _eran_like_9x200(tmp_path)
    root = benchmarks_dir()
    if root is not None:
        yield "mnist_fc 256x6", str(root / "mnist_fc" / "onnx" / "mnist-net_256x6.onnx")


def test_float32_box_of_a_point_is_as_narrow_as_rounding_allows(tmp_path, monkeypatch):
    """Box's width at a point is within :func:`width_bound`; the float32 margin alone (the
    narrow path forced) is wider than that bound on the same nets (mnist_fc 256x6: 0.06
    against 5e-6 wide), so the bound is what separates the two."""
    import verifier.domains.box as box_module

    box = get_domain("box")
    for label, path in _nets(tmp_path):
        model = verifier.load(path)
        graph = model.graph_for("cpu", torch.float32)
        for seed in range(3):
            x = model.as_batch(torch.rand(1, 784, generator=torch.Generator().manual_seed(seed)))
            lb, ub = box.bound(graph, x, x)
            assert lb.dtype == torch.float32
            bound = width_bound(model, x).reshape(ub.shape)
            width = ub.double() - lb.double()
            assert bool((width <= bound).all()), (label, seed, float((width - bound).max()))
            with monkeypatch.context() as patch:
                patch.setattr(box_module, "_widen", lambda node, x: False)
                lo, hi = box.bound(graph, x, x)
            assert float((hi.double() - lo.double()).max()) > float(bound.max()), label


def test_wide_float32_boxes_keep_the_float32_path(tmp_path, monkeypatch):
    """A box wide enough that float32's margin is under 1 % of the width is not widened to
    float64 (same cost as before); a point's first layer is (later layers of this random net
    amplify the rounding-level width until the margin no longer matters)."""
    import verifier.domains.box as box_module

    calls = []
    original = box_module._widen
    monkeypatch.setattr(box_module, "_widen", lambda node, x: calls.append(original(node, x)) or calls[-1])
    model = verifier.load(_eran_like_9x200(tmp_path))
    graph = model.graph_for("cpu", torch.float32)
    x = model.as_batch(torch.rand(4, 784, generator=torch.Generator().manual_seed(0)))
    get_domain("box").bound(graph, x - 0.05, x + 0.05)
    assert calls and not any(calls)
    calls.clear()
    get_domain("box").bound(graph, x, x)
    assert calls and calls[0]  # a point: zero width, any margin matters
