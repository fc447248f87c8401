"""Certified-training plugin: binding, architectures, objectives, schedules, resume,
export and certificate (fast, CPU)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

import verifier
from verifier.api import compute_bounds
from verifier.domains.dual_lp import DualLPDomain
from verifier_plugins.training import LiveModel, build_model, margin_matrix
from verifier_plugins.training.architectures import ARCHITECTURES
from verifier_plugins.training.certify import read_metadata, verified_mask
from verifier_plugins.training.live import export_onnx
from verifier_plugins.training.objectives import COLT, Context, loss_variation, make_objective
from verifier_plugins.training.schedules import Schedule, default_schedule
from verifier_plugins.training.trainer import load_onnx_module, train

HERE = os.path.dirname(os.path.abspath(__file__))
SHIPPED = os.path.join(HERE, "..", "models", "mnist_small.onnx")


# --- conversion ------------------------------------------------------------------------
@pytest.mark.parametrize("name,shape", [("fc-20-20", (1, 8, 8)), ("crown-ibp-a", (1, 8, 8)),
                                        ("wong-kolter", (1, 28, 28)), ("dm-small", (1, 28, 28))])
def test_architecture_exports_and_loads_back(tmp_path, name, shape):
    net = build_model(name, shape)
    live = LiveModel(net, shape)  # raises if IR forward != module forward
    assert {b.param_name for b in live.bindings} == {n for n, _ in net.named_parameters()}
    path = str(tmp_path / "m.onnx")
    export_onnx(net, shape, path)
    model = verifier.load(path, lower=torch.zeros(1, *shape), upper=torch.ones(1, *shape))
    assert model.fidelity.ok


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_every_named_architecture_exports_and_loads_back(tmp_path, name):
    """Every builder, at its dataset's input size (COLT's CIFAR net on 3×32×32)."""
    shape = (3, 32, 32) if "cifar" in name else (1, 28, 28)
    net = build_model(name, shape)
    path = str(tmp_path / "m.onnx")
    export_onnx(net, shape, path)
    model = verifier.load(path, lower=torch.zeros(1, *shape), upper=torch.ones(1, *shape))
    assert model.fidelity.ok and model.output_size == 10


def test_onnx_file_to_torch_and_bound_like_the_verifier():
    module = load_onnx_module(SHIPPED)
    live = LiveModel(module, (1, 28, 28))
    model = verifier.load(SHIPPED)
    from verifier.datasets import load_mnist

    x = load_mnist("test")[0][:3]
    y = torch.tensor([7, 2, 1])
    C = margin_matrix(y, 10)
    for domain in ("box", "crown-ibp"):
        ours, _ = live.bounds(domain, (x - 0.02).clamp(0, 1), (x + 0.02).clamp(0, 1), C)
        ref, _ = compute_bounds(model, (x - 0.02).clamp(0, 1), (x + 0.02).clamp(0, 1), domain=domain, C=C)
        assert torch.allclose(ours, ref, atol=1e-4)


def test_bounds_are_differentiable_and_track_parameter_updates():
    net = build_model("fc-10", (2,))
    live = LiveModel(net, (2,))
    x = torch.rand(4, 2)
    lb, _ = live.bounds("box", x - 0.1, x + 0.1)
    lb.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
    with torch.no_grad():
        net[-1].bias.add_(1.0)  # in-place update (what an optimiser does)
    assert torch.allclose(live.forward_ir(x), net(x), atol=1e-6)


def test_frozen_parameters_changed_in_place_give_fresh_bounds():
    """Parameters without grad (COLT's frozen layers, evaluation) changed in place: cached
    derived tensors (f(0) offsets, |W|) must follow, or the bounds are unsound."""
    net = build_model("fc-10", (2,), classes=2, seed=3)
    for p in net.parameters():
        p.requires_grad_(False)
    live = LiveModel(net, (2,))
    x = torch.rand(8, 2)
    C = torch.tensor([[1.0, -1.0]]).expand(8, 1, 2)
    live.bounds("crown", x - 0.1, x + 0.1, C)
    first = next(m for m in net.modules() if isinstance(m, torch.nn.Linear))
    thetas = [[p.detach().clone() for p in net.parameters()]]
    with torch.no_grad():
        first.bias.add_(torch.linspace(-2.0, 2.0, first.bias.numel()))
        first.weight.mul_(-1.5)
    thetas.append([p.detach().clone() for p in net.parameters()])
    for k in (1, 0, 1, 0, 1):  # alternate two parameter sets, in place, as an optimiser would
        with torch.no_grad():
            for p, value in zip(net.parameters(), thetas[k]):
                p.copy_(value)
        lb, _ = live.bounds("crown", x - 0.1, x + 0.1, C)
        fresh, _ = LiveModel(net, (2,)).bounds("crown", x - 0.1, x + 0.1, C)
        assert torch.allclose(lb, fresh, atol=1e-5)
        points = x.unsqueeze(1) + 0.2 * (torch.rand(8, 200, 2) - 0.5)
        margins = net(points.reshape(-1, 2)).reshape(8, 200, 2) @ torch.tensor([1.0, -1.0])
        assert (lb[:, 0] <= margins.min(1).values + 1e-5).all()


def test_loss_variation_of_the_landscape_method():
    net = build_model("fc-20", (4,), classes=3, seed=0)
    objective = make_objective("landscape", LiveModel(net, (4,)), 3)
    x, y = torch.rand(16, 4), torch.arange(16) % 3
    ctx = Context(eps=0.05, kappa=0.0, beta=1.0)
    before = [p.detach().clone() for p in net.parameters()]
    variation = loss_variation(objective, x, y, ctx, steps=(0.5, 1.0), lr=1e-2)
    assert variation > 0
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))
    assert loss_variation(objective, x, y, ctx, steps=(0.5, 1.0), lr=1e-2) == variation  # same draws every time


def test_folded_parameters_are_refused():
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(2 * 6 * 6, 3)).eval()
    with pytest.raises(verifier.errors.VerifierInputError, match="do not appear"):
        LiveModel(net, (1, 8, 8))


# --- schedules -------------------------------------------------------------------------
def test_schedule_values():
    s = Schedule(eps=0.3, warmup=1, ramp=2, kappa=(1.0, 0.5), beta=(1.0, 0.0), lr=1e-3, decay_every=1)
    S = 10
    assert s.epsilon(0, S) == 0 and s.epsilon(9, S) == 0  # warm-up
    assert s.epsilon(10, S) == 0 and s.epsilon(20, S) == pytest.approx(0.15) and s.epsilon(30, S) == pytest.approx(0.3)
    assert s.epsilon(100, S) == pytest.approx(0.3)
    assert s.kappa_at(20, S) == pytest.approx(0.75) and s.kappa_at(40, S) == pytest.approx(0.5)
    assert s.beta_at(0, S) == 1.0 and s.beta_at(20, S) == pytest.approx(0.5) and s.beta_at(30, S) == 0.0
    assert [s.lr_at(e) for e in range(6)] == pytest.approx([1e-3, 1e-3, 1e-3, 1e-3, 5e-4, 2.5e-4])
    smooth = Schedule(eps=1.0, ramp=1, shape="smooth")
    assert smooth.epsilon(5, 10) == pytest.approx(0.5) and smooth.epsilon(2, 10) == pytest.approx(0.104)
    dual, batch = default_schedule("dual-lp", 0.1, 100)
    assert batch == 50 and dual.epsilon(0, 1) == pytest.approx(0.05) and dual.epsilon(50, 1) == pytest.approx(0.1)
    crown, batch = default_schedule("crown-ibp", 0.1, 100)  # seed 004, MNIST
    assert batch == 256 and crown.lr == 5e-4 and crown.warmup == 1 and crown.ramp == 60
    assert crown.lr_at(60) == 5e-4 and crown.lr_at(71) == 2.5e-4


# --- objectives --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_conv():
    net = build_model("crown-ibp-a", (1, 8, 8), seed=1)
    return LiveModel(net, (1, 8, 8))


@pytest.mark.parametrize("method", ["standard", "pgd", "ibp", "crown-ibp", "dual-lp", "double-margin", "landscape"])
def test_every_parameter_gets_a_gradient(small_conv, method):
    options = {"projections": 5} if method == "dual-lp" else {}
    objective = make_objective(method, small_conv, 10, pgd_steps=2, **options)
    x, y = torch.rand(6, 1, 8, 8), torch.arange(6)
    ctx = Context(eps=0.05, kappa=0.5, beta=0.5, generator=torch.Generator().manual_seed(0))
    small_conv.module.zero_grad()
    loss, _ = objective.loss(x, y, ctx)
    loss.backward()
    for name, p in small_conv.module.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_dual_lp_exact_and_projected_gradients(small_conv):
    objective = make_objective("dual-lp", small_conv, 10)
    x, y = torch.rand(2, 1, 8, 8), torch.arange(2)
    small_conv.module.zero_grad()
    objective.loss(x, y, Context(eps=0.02, kappa=0.0))[0].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in small_conv.module.parameters())


def test_colt_trains_only_unfrozen_layers(small_conv):
    objective = make_objective("colt", small_conv, 10, latent_steps=2, pgd_steps=2)
    assert isinstance(objective, COLT) and objective.stages == 4
    x, y = torch.rand(4, 1, 8, 8), torch.arange(4)
    net = small_conv.module
    for epoch, frozen in ((1, {"1.weight", "1.bias"}), (3, {"1.weight", "1.bias", "3.weight", "3.bias", "6.weight",
                                                             "6.bias"})):
        ctx = Context(eps=0.05, epoch=epoch, epochs=4, steps_per_epoch=1, step=epoch,
                      generator=torch.Generator().manual_seed(0))
        objective.prepare_epoch(ctx)
        net.zero_grad(set_to_none=True)
        objective.loss(x, y, ctx)[0].backward()
        for name, p in net.named_parameters():
            if name in frozen:
                assert p.grad is None, name
            else:
                assert p.grad is not None and p.grad.abs().sum() > 0, name
    for p in net.parameters():
        p.requires_grad_(True)


def _toy(n=12, eps=0.04, seed=0):
    """Seed 003's 2-D toy: points in the unit square at least 4ε apart (ℓ∞), random labels."""
    rng = np.random.default_rng(seed)
    pts = []
    while len(pts) < n:
        p = rng.uniform(0.1, 0.9, 2)
        if all(np.abs(p - q).max() > 4 * eps for q in pts):
            pts.append(p)
    labels = np.array([0, 1] * (n // 2))
    rng.shuffle(labels)
    return torch.tensor(np.array(pts), dtype=torch.float32), torch.tensor(labels)


def test_toy_2d_dual_lp_reaches_zero_robust_error():
    eps = 0.04
    x, y = _toy(eps=eps)
    net = build_model("fc-20-20", (2,), classes=2, seed=0)
    live = LiveModel(net, (2,))
    objective = make_objective("dual-lp", live, 2)
    opt = torch.optim.Adam(net.parameters(), lr=4e-2)

    def robust_errors():
        with torch.no_grad():
            lb, _ = live.bounds(DualLPDomain(), x - eps, x + eps, margin_matrix(y, 2))
        return int((~verified_mask(lb, y)).sum())

    assert robust_errors() > 0
    for step in range(200):
        loss, _ = objective.loss(x, y, Context(eps=eps, kappa=0.0))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 10 == 9 and robust_errors() == 0:
            break
    assert robust_errors() == 0


# --- training loop: resume, export, certificate ------------------------------------------
def _data(n_train=60, n_test=20):
    from verifier_plugins.training.data import load_data

    return load_data("mnist", n_train, n_test)


def _state(result):
    return {k: v.clone() for k, v in result["module"].state_dict().items()}


def test_resume_after_interruption_matches_uninterrupted_run(tmp_path):
    kw = dict(data=_data(), eval_count=0, batch_size=20, progress=False, export=False, seed=3)
    full = train("fc-20", "ibp", 0.1, 3, str(tmp_path / "a"), **kw)
    cut = train("fc-20", "ibp", 0.1, 3, str(tmp_path / "b"), max_steps=5, **kw)  # dies in epoch 2
    assert cut["interrupted"] and len(cut["log"]) == 1
    resumed = train("fc-20", "ibp", 0.1, 3, str(tmp_path / "b"), resume=True, **kw)
    a, b = _state(full), _state(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    lines = [json.loads(l) for l in open(tmp_path / "b" / "log.jsonl")]
    assert [e["epoch"] for e in lines] == [1, 2, 3]
    assert [e["loss"] for e in lines] == [e["loss"] for e in full["log"]]


def test_export_certificate_and_certify_cli(tmp_path, capsys):
    out = tmp_path / "run"
    result = train("fc-20", "crown-ibp", 0.05, 2, str(out), data=_data(200, 20), eval_count=10, batch_size=50,
                   progress=False, certify_domain="crown", seed=0)
    entry = result["log"][-1]
    for key in ("clean", "pgd", "verified_box", "verified_crown", "seconds"):
        assert key in entry
    meta = read_metadata(result["onnx"])
    assert meta["method"] == "crown-ibp" and meta["eps"] == 0.05 and meta["training_args"]["epochs"] == 2
    assert meta["certified_domain"] == "crown" and meta["certified_count"] == 20
    # the exported model's verifier bounds equal the training-time bounds
    live, model = result["live"], verifier.load(result["onnx"])
    x, y = _data(1, 5).x_test, _data(1, 5).y_test
    C = margin_matrix(y, 10)
    for domain in ("box", "crown-ibp", "crown"):
        ours, _ = live.bounds(domain, (x - 0.05).clamp(0, 1), (x + 0.05).clamp(0, 1), C)
        ref, _ = compute_bounds(model, (x - 0.05).clamp(0, 1), (x + 0.05).clamp(0, 1), domain=domain, C=C)
        assert torch.allclose(ours, ref, atol=1e-5), domain
    # certify reproduces the figure
    from verifier.cli import main

    capsys.readouterr()
    assert main(["certify", result["onnx"], "--data", "mnist", "--eps", "0.05", "--domain", "crown",
                 "--count", "20"]) == 0
    text = capsys.readouterr().out
    assert f"certified accuracy: {meta['certified_accuracy']:.4f}" in text and "reproduced" in text


def test_resume_after_kill_9_matches_uninterrupted_run(tmp_path):
    """``verifier train`` killed with SIGKILL after its first checkpoint, then ``--resume``d,
    ends in the same weights and log as a run never interrupted."""
    import signal
    import subprocess
    import sys
    import time as _time

    def command(out, *extra):
        return [sys.executable, "-m", "verifier.cli", "train", "--model", "fc-20", "--method", "ibp", "--eps", "0.1",
                "--epochs", "8", "--train-count", "400", "--test-count", "5", "--eval-count", "0", "--batch-size", "20",
                "--seed", "1", "--quiet", "--out", str(out), *extra]

    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    subprocess.run(command(tmp_path / "full"), check=True, env=env, capture_output=True, timeout=600)
    proc = subprocess.Popen(command(tmp_path / "cut"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = tmp_path / "cut" / "checkpoint.pt"
    deadline = _time.monotonic() + 300
    while not ckpt.exists() and proc.poll() is None and _time.monotonic() < deadline:
        _time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = torch.load(ckpt, weights_only=False)
    assert saved["epoch"] < 8, "the run finished before it could be killed"
    subprocess.run(command(tmp_path / "cut", "--resume"), check=True, env=env, capture_output=True, timeout=600)
    full = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=False)
    done = torch.load(ckpt, weights_only=False)
    assert done["epoch"] == full["epoch"] == 8
    assert all(torch.equal(full["module"][k], done["module"][k]) for k in full["module"])
    assert [e["loss"] for e in done["log"]] == [e["loss"] for e in full["log"]]
