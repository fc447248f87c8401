"""The LP/MILP encoding builds dense Jacobians of the affine ops: a network whose Jacobians
would need more than ``MAX_JACOBIAN_ENTRIES`` entries (a GAN generator's transposed
convolutions: 1.5e9, tens of GB) is refused up front, by the lp domain and the MILP's
``supports``, instead of exhausting the machine's memory (the slow 2024 grid was killed so)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import verifier
import verifier.domains.lp_encoding as lp_encoding
from onnx_builders import gemm_relu_model, save_model
from verifier.complete.methods import METHODS
from verifier.domains import get_domain
from verifier.errors import VerifierInputError


@pytest.fixture
def model(tmp_path):
    rng = np.random.default_rng(0)
    layers = [(rng.normal(size=(6, 4)), rng.normal(size=6)), (rng.normal(size=(2, 6)), rng.normal(size=2))]
    return verifier.load(save_model(gemm_relu_model(layers), tmp_path))


def test_jacobian_entries_count_out_times_in_of_each_affine_node(model):
    entries, name = lp_encoding.jacobian_entries(model.graph)
    assert entries == 6 * 4 + 2 * 6 and name is not None


def test_a_network_past_the_cap_is_refused_before_any_work(model, monkeypatch):
    lower, upper = -torch.ones(1, 4, dtype=torch.float64), torch.ones(1, 4, dtype=torch.float64)
    lb, ub = verifier.compute_bounds(model, lower, upper, domain="lp")  # under the cap: bounds
    assert bool((lb <= ub).all())
    assert not get_domain("lp").supports(model.graph) and not METHODS["milp"].supports(model.graph)
    monkeypatch.setattr(lp_encoding, "MAX_JACOBIAN_ENTRIES", 6 * 4 + 2 * 6 - 1)
    calls = []
    monkeypatch.setattr(type(get_domain("lp")), "intermediate_bounds", lambda *a: calls.append(a))
    with pytest.raises(VerifierInputError, match="LP/MILP encodings are for small networks"):
        verifier.compute_bounds(model, lower, upper, domain="lp")
    assert calls == []  # refused before the intermediate bounds
    for method in (get_domain("lp"), METHODS["milp"]):
        ((source, message),) = method.supports(model.graph)
        assert "dense Jacobians have 36 entries" in message
