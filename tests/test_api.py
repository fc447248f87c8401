"""The Python API: shapes, batching, dtypes, spec matrices, and the fidelity check."""

from __future__ import annotations

import pytest
import torch

import verifier
from verifier.cli import main
from verifier.errors import FidelityError, VerifierInputError
from verifier.ir import topological_order
from verifier.fidelity import check_fidelity
from verifier.ops import FORWARD
from verifier.spec import linf_robustness_spec, read_vnnlib
from verifier.verify import verify

from conftest import DEFAULT_MODEL, PROPERTIES


@pytest.fixture(scope="module")
def model():
    return verifier.load(DEFAULT_MODEL)


def test_load_reports_fidelity_and_shapes(model):
    assert model.fidelity is not None and model.fidelity.ok
    assert model.input_shape == (1, 1, 28, 28) and model.output_size == 10


def test_batched_bounds_accept_every_input_layout(model):
    x = torch.rand(4, 784, dtype=torch.float64)
    lb_flat, ub_flat = verifier.compute_bounds(model, x - 0.01, x + 0.01)
    lb_img, ub_img = verifier.compute_bounds(model, (x - 0.01).reshape(4, 1, 1, 28, 28), (x + 0.01).reshape(4, 1, 1, 28, 28))
    assert lb_flat.shape == (4, 10) and torch.equal(lb_flat, lb_img) and torch.equal(ub_flat, ub_img)
    lb_one, _ = verifier.compute_bounds(model, x[2] - 0.01, x[2] + 0.01)
    assert torch.allclose(lb_one[0], lb_flat[2])
    with pytest.raises(VerifierInputError):
        verifier.compute_bounds(model, torch.zeros(3, 100), torch.ones(3, 100))
    with pytest.raises(VerifierInputError):
        verifier.compute_bounds(model, x + 0.01, x - 0.01)


def test_float32_and_float64_agree_and_keep_their_dtype(model):
    x = torch.rand(2, 784, dtype=torch.float64)
    lb64, ub64 = verifier.compute_bounds(model, x - 0.02, x + 0.02)
    lb32, ub32 = verifier.compute_bounds(model, (x - 0.02).float(), (x + 0.02).float())
    assert lb64.dtype == torch.float64 and lb32.dtype == torch.float32
    # float32 pays the rounding margin of its sums (γ_n·eps32 over 784 inputs): wider, never narrower
    assert bool((lb32.double() <= lb64 + 1e-4).all() and (ub32.double() >= ub64 - 1e-4).all())
    assert torch.allclose(lb64, lb32.double(), atol=0.2) and torch.allclose(ub64, ub32.double(), atol=0.2)


def test_spec_matrix_bounds_are_sound_and_tighter_than_logit_intervals(model):
    x = torch.rand(3, 784, dtype=torch.float64)
    labels = torch.tensor([0, 4, 9])
    C = torch.eye(10, dtype=torch.float64)[labels].unsqueeze(1) - torch.eye(10, dtype=torch.float64)  # (3, 10, 10)
    lo, hi = (x - 0.05).clamp(0, 1), (x + 0.05).clamp(0, 1)
    lb, ub = verifier.compute_bounds(model, lo, hi, C=C)
    assert lb.shape == (3, 10)
    ylb, yub = verifier.compute_bounds(model, lo, hi)
    naive = ylb.gather(1, labels[:, None]) - yub  # lb(y_label) − ub(y_j)
    assert bool((lb >= naive - 1e-9).all())
    samples = lo + (hi - lo) * torch.rand(500, 3, 784, dtype=torch.float64)
    margins = torch.einsum("bkn,sbn->sbk", C, model(samples.reshape(-1, 784)).reshape(500, 3, 10))
    assert bool((margins >= lb - 1e-9).all() and (margins <= ub + 1e-9).all())


def test_linf_spec_verifies_like_the_vnnlib_file(model):
    from verifier.datasets import load_mnist

    images, labels = load_mnist("test")
    spec = linf_robustness_spec(images[0], int(labels[0]), 0.02, 10)
    file_spec = read_vnnlib(PROPERTIES / "mnist_0_eps0.02.vnnlib")
    assert torch.allclose(spec.regions[0].lower, file_spec.regions[0].lower)
    assert verify(model, spec).status == verify(model, file_spec).status == "unsat"


def test_fidelity_mismatch_names_the_first_diverging_node(monkeypatch, capsys):
    graph = verifier.load(DEFAULT_MODEL, check=False).graph
    relus = [n for n in topological_order(graph) if graph.nodes[n]["kind"] == "relu"]
    first_relu_source = graph.nodes[relus[0]]["source"]
    monkeypatch.setitem(FORWARD, "relu", lambda node, x: torch.nn.functional.leaky_relu(x, 0.1))
    with pytest.raises(FidelityError) as info:
        check_fidelity(graph)
    assert f"'{first_relu_source}'" in str(info.value)
    assert main(["check", str(DEFAULT_MODEL)]) == 1
    assert "DISAGREES" in capsys.readouterr().out


def test_box_dense_shortcut_equals_centre_radius_form(monkeypatch):
    """Small dense layers use ``[l, u]·[[W⁺, W⁻], [W⁻, W⁺]]``; large ones ``Wc ± |W|r``: same bounds."""
    import verifier.domains.box as box

    model = verifier.load(DEFAULT_MODEL, check=False)
    x = torch.rand(3, 784, dtype=torch.float64)
    lo, hi = (x - 0.03).clamp(0, 1), (x + 0.03).clamp(0, 1)
    monkeypatch.setattr(box, "SMALL_PRODUCT", 1 << 40)
    short = verifier.compute_bounds(model, lo, hi)
    monkeypatch.setattr(box, "SMALL_PRODUCT", 0)
    general = verifier.compute_bounds(model, lo, hi)
    for a, b in zip(short, general):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-10)
