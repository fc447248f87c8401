"""The deadline is checked inside autograd's backward passes (:func:`verifier.deadline.interruptible`).

A gradient of α-CROWN's bound or of the attack's loss is one call into autograd; on a
vision transformer it took seconds, so ``verifier vnncomp`` reported timeouts 4–13 s past
a 40 s limit. Every backward step now runs :func:`~verifier.deadline.checkpoint` first:
a deadline that has passed raises :class:`~verifier.deadline.Timeout` from the backward
call itself, and α-CROWN's optimisation and the PGD attack take their gradients that way.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import verifier
import verifier.deadline as deadline_module
from verifier.attack import attack_region
from verifier.deadline import Deadline, Timeout, interruptible
from verifier.domains import get_domain
from verifier.spec.linf import linf_robustness_spec
from onnx_builders import gemm_relu_model, save_model


def _graph(x: torch.Tensor) -> torch.Tensor:
    y = x
    for _ in range(5):
        y = torch.tanh(y @ x.T @ x)
    return y.sum()


def test_backward_raises_timeout_once_the_deadline_has_passed():
    x = torch.randn(6, 6, dtype=torch.float64, requires_grad=True)
    with Deadline(0.0).active():
        with pytest.raises(Timeout):
            interruptible(_graph(x)).backward()
        assert x.grad is None


def test_interruptible_gradients_equal_plain_ones():
    x = torch.randn(6, 6, dtype=torch.float64, requires_grad=True)
    plain, = torch.autograd.grad(_graph(x), x)
    with Deadline(60.0).active():
        hooked, = torch.autograd.grad(interruptible(_graph(x)), x)
    assert torch.equal(plain, hooked)
    assert interruptible(torch.ones(3)) is not None  # a tensor without a graph passes through


@pytest.fixture
def backward_checks(monkeypatch):
    """How often a backward step checked the deadline."""
    calls = [0]
    real = deadline_module._check_in_backward

    def counting(grads):
        calls[0] += 1
        return real(grads)

    monkeypatch.setattr(deadline_module, "_check_in_backward", counting)
    return calls


@pytest.fixture
def mlp(tmp_path):
    rng = np.random.default_rng(0)
    layers = [(rng.normal(0, 0.6, (8, 4)), rng.normal(0, 0.1, 8)), (rng.normal(0, 0.5, (8, 8)), rng.normal(0, 0.1, 8)),
              (rng.normal(0, 0.5, (3, 8)), rng.normal(0, 0.1, 3))]
    return verifier.load(save_model(gemm_relu_model(layers), tmp_path))


def test_alpha_crown_checks_the_deadline_inside_its_backward_passes(mlp, backward_checks):
    lower = torch.full((1, 4), -1.0, dtype=torch.float64)
    graph = mlp.graph_for("cpu", torch.float64)
    with Deadline(600.0).active():
        get_domain("alpha-crown", iterations=3).bound(graph, lower, -lower)
    assert backward_checks[0] > 0


def test_alpha_crown_past_its_deadline_raises_timeout(mlp):
    """Expired from the start: the first check (before the first step or inside it) raises."""
    lower = torch.full((1, 4), -1.0, dtype=torch.float64)
    with Deadline(0.0).active(), pytest.raises(Timeout):
        get_domain("alpha-crown", iterations=3).bound(mlp.graph_for("cpu", torch.float64), lower, -lower)


def test_attack_checks_the_deadline_inside_its_gradient_steps(mlp, backward_checks):
    spec = linf_robustness_spec(torch.zeros(4), 0, 0.05, 3)
    region = spec.regions[0]
    with Deadline(600.0).active():
        attack_region(mlp, region, Deadline(600.0), steps=3)
    assert backward_checks[0] > 0


def test_vnncomp_runner_warms_up_before_the_search_clock(tmp_path, monkeypatch):
    """``run_instance`` runs the one-time warm-up of what the search uses (the optimisers
    on a 784-input net, searched by α-CROWN and ReLU splitting) before ``verify`` starts
    its deadline: verify's own warm-up then finds nothing to do."""
    import shutil

    import verifier.deadline as deadline
    import verifier.verify as verify_module
    from conftest import DEFAULT_MODEL, PROPERTIES
    from verifier.vnncomp_instance import FileResolver, ModelCache, run_instance
    from verifier.vnncomp_plan import Instance

    for sub, src in (("onnx", DEFAULT_MODEL), ("vnnlib", PROPERTIES / "mnist_0_eps0.02.vnnlib")):
        (tmp_path / sub).mkdir()
        shutil.copy(src, tmp_path / sub / src.name)
    calls = []
    real = deadline.warm_up

    def recording(optimizers=True, where="runner"):
        calls.append((where, optimizers, "optimizers" in deadline._WARM))
        return real(optimizers)

    monkeypatch.setattr(deadline, "warm_up", recording)
    monkeypatch.setattr(verify_module, "warm_up", lambda optimizers=True: recording(optimizers, "verify"))
    instance = Instance(f"onnx/{DEFAULT_MODEL.name}", "vnnlib/mnist_0_eps0.02.vnnlib", 30)
    out = run_instance(instance, 30.0, FileResolver(tmp_path, tmp_path), ModelCache(disk_cache=False),
                       tmp_path / "result.txt")
    assert out.result in ("unsat", "unknown", "timeout"), out
    assert calls[0][:2] == ("runner", True)
    assert all(warm for where, optimizers, warm in calls if where == "verify" and optimizers)
