"""Surrogate gradients for the gradient attacks (:mod:`verifier.ops.surrogate`).

Step functions have gradient 0 almost everywhere and a saturated softmax rounds to 0 or 1,
so projected gradient descent gets no direction on binarised nets (the traffic-sign
benchmark's Larq nets end in ``sign`` layers and a softmax). Inside
``surrogate_gradients()`` the ops keep their values bit for bit and pass the identity's
(steps) or log-softmax's (softmax) gradient. Each attack test is built so that uniform
sampling cannot hit the unsafe set and the true gradient is 0: it fails without the
surrogate, and with it the attack returns a counterexample that onnxruntime confirms.
"""

from __future__ import annotations

import contextlib

import networkx as nx
import numpy as np
import onnx.helper as oh
import pytest
import torch
from hypothesis import given, settings, strategies as st

import verifier
import verifier.attack as attack
from verifier.attack import attack_region
from verifier.deadline import Deadline
from verifier.ops import FORWARD
from verifier.ops.surrogate import surrogate_gradients
from verifier.spec.vnnlib import parse_vnnlib
from onnx_builders import make_model, save_model

N = 60


def _spec(n_in: int, out: str) -> str:
    decls = "".join(f"(declare-const X_{i} Real)\n" for i in range(n_in))
    box = "".join(f"(assert (>= X_{i} 0.0))\n(assert (<= X_{i} 1.0))\n" for i in range(n_in))
    return decls + "(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n" + box + out


def step_net(tmp_path, kind: str):
    """``y_0 = Σ_i step(x_i − 0.9)``, ``y_1 = 0.8·N`` (``x ∈ [0, 1]^N``): unsafe where
    ``y_0 ≥ y_1``, i.e. nearly every entry above 0.9 (for ``sign``; above 0.4 after
    ``round(x + 0.1)``) — a corner of volume ≈ 10⁻⁴⁰ for sampling."""
    inits = {"shift": np.full(N, -0.9 if kind == "Sign" else -0.4, dtype=np.float32),
             "w": np.concatenate([np.ones((N, 1)), np.zeros((N, 1))], 1).astype(np.float32),
             "b": np.array([0.0, 0.8 * N], dtype=np.float32)}
    nodes = [oh.make_node("Add", ["x", "shift"], ["s"]), oh.make_node(kind, ["s"], ["h"]),
             oh.make_node("MatMul", ["h", "w"], ["m"]), oh.make_node("Add", ["m", "b"], ["y"])]
    return verifier.load(save_model(make_model(nodes, ["N", N], "y", inits), tmp_path))


def softmax_net(tmp_path):
    """``p = softmax(z)`` with ``z_0 = 0``, ``z_1 = 100·(Σ x − (N − 1))``: unsafe where
    ``p_1 ≥ p_0`` (``Σ x ≥ N − 1``); at a sampled point ``z_1 ≈ −3000`` and ``p_1`` is 0."""
    inits = {"w": np.concatenate([np.zeros((N, 1)), np.full((N, 1), 100.0)], 1).astype(np.float32),
             "b": np.array([0.0, -100.0 * (N - 1)], dtype=np.float32)}
    nodes = [oh.make_node("MatMul", ["x", "w"], ["m"]), oh.make_node("Add", ["m", "b"], ["z"]),
             oh.make_node("Softmax", ["z"], ["y"], axis=-1)]
    return verifier.load(save_model(make_model(nodes, ["N", N], "y", inits), tmp_path))


CASES = {"sign": lambda p: step_net(p, "Sign"), "round": lambda p: step_net(p, "Round"), "softmax": softmax_net}


@pytest.mark.parametrize("name", list(CASES))
def test_attack_needs_the_surrogate_and_finds_a_confirmed_counterexample(tmp_path, name, monkeypatch):
    model = CASES[name](tmp_path)
    region = parse_vnnlib(_spec(N, "(assert (>= Y_0 Y_1))\n" if name != "softmax" else "(assert (>= Y_1 Y_0))\n")).regions[0]
    monkeypatch.setattr(attack, "surrogate_gradients", contextlib.nullcontext)
    assert attack_region(model, region, Deadline(60.0)) is None, "found without the surrogate: the test proves nothing"
    monkeypatch.undo()
    hit = attack_region(model, region, Deadline(60.0))
    assert hit is not None  # confirm() ran onnxruntime on it before returning it
    x = torch.as_tensor(np.asarray(hit.x, dtype=np.float64)).reshape(1, -1)
    assert bool(((x >= 0) & (x <= 1)).all())
    assert float(region.violation(model(x.float()).double())) <= 0


@settings(max_examples=30, deadline=None)
@given(kind=st.sampled_from(["sign", "floor", "ceil", "round", "softmax"]),
       values=st.lists(st.floats(-50, 50, allow_nan=False, width=32), min_size=1, max_size=8))
def test_surrogate_keeps_values_bit_for_bit_and_passes_its_gradient(kind, values):
    x = torch.tensor(values, dtype=torch.float32).reshape(1, -1)
    node = {"kind": kind, "attrs": {"axis": -1}, "params": {}, "shape": tuple(x.shape[1:]), "source": "out"}
    graph = nx.DiGraph(output="out")
    graph.add_node("out", **node)
    plain = FORWARD[kind](node, x)
    xg = x.clone().requires_grad_(True)
    with surrogate_gradients(graph):  # the node is the model's output
        y = FORWARD[kind](node, xg)
    assert torch.equal(y.detach(), plain)
    weights = torch.linspace(-1, 1, x.shape[1]).reshape(1, -1)
    grad, = torch.autograd.grad((y * weights).sum(), xg)
    if kind == "softmax":
        z = x.clone().requires_grad_(True)
        expected, = torch.autograd.grad((torch.log_softmax(z, -1) * weights).sum(), z)
    else:
        expected = weights
    torch.testing.assert_close(grad, expected)
    xp = x.clone().requires_grad_(True)
    own, = torch.autograd.grad((FORWARD[kind](node, xp) * weights).sum(), xp)
    if kind != "softmax":
        assert not bool(own.any())  # outside the block: the step's own gradient, 0


def test_a_softmax_inside_the_network_keeps_its_own_gradient(tmp_path):
    """Attention's softmax (here one followed by a MatMul) is not the output: the attack's
    gradient through it is softmax's own, while the output softmax of ``softmax_net``
    passes log-softmax's."""
    rng = np.random.default_rng(0)
    inits = {"w": rng.normal(0, 1, (N, 4)).astype(np.float32), "v": rng.normal(0, 1, (4, 2)).astype(np.float32)}
    nodes = [oh.make_node("MatMul", ["x", "w"], ["z"]), oh.make_node("Softmax", ["z"], ["p"], axis=-1),
             oh.make_node("MatMul", ["p", "v"], ["y"])]
    inner = verifier.load(save_model(make_model(nodes, ["N", N], "y", inits), tmp_path))
    outer = softmax_net(tmp_path)
    x = torch.rand((3, N), generator=torch.Generator().manual_seed(0))
    for model, changed in ((inner, False), (outer, True)):
        grads = []
        for surrogate in (False, True):
            xg = x.clone().requires_grad_(True)
            with surrogate_gradients(model.graph) if surrogate else contextlib.nullcontext():
                y = model(xg)
            grads.append(torch.autograd.grad((y[:, 1] - y[:, 0]).sum(), xg)[0])
        assert torch.equal(grads[0], grads[1]) != changed
