"""A point box (lower == upper on every input, e.g. a VNN-LIB spec that fixes each X_i):
every domain bounds the one output it holds, instead of failing on zero noise symbols."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import verifier
from verifier.domains import available_domains

from onnx_builders import GraphBuilder, Reference, save_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    """5 → 8 → ReLU → 8 → tanh → 3, random weights."""
    g = GraphBuilder(np.random.default_rng(3), (1, 5))
    h = g.op("Relu", g.op("Gemm", g.x, g.weight(8, 5), g.rand(8), transB=1))
    h = g.op("Tanh", g.op("Gemm", h, g.weight(8, 8), g.rand(8), transB=1))
    y = g.op("Gemm", h, g.weight(3, 8), g.rand(3), transB=1)
    return save_model(g.model(y), tmp_path_factory.mktemp("point"), "mlp")


@pytest.mark.parametrize("domain", sorted(available_domains()))
def test_every_domain_bounds_a_point_box_at_its_output(mlp, domain):
    model = verifier.load(mlp)
    x = torch.from_numpy(np.random.default_rng(0).uniform(-1, 1, (2, 5)))
    y = Reference(mlp, per_sample=True).run(x.numpy().astype(np.float32)).astype(np.float64)
    try:
        lb, ub = verifier.compute_bounds(model, x, x.clone(), domain=domain)
    except verifier.VerifierInputError as exc:  # a domain that refuses tanh says so (dual-lp: ReLU only)
        assert "tanh" in str(exc).lower(), exc
        return
    lb, ub = lb.detach().numpy(), ub.detach().numpy()
    assert np.all(lb <= ub)
    tol = 1e-5 * (1 + np.abs(y))  # onnxruntime computes in float32
    assert np.all(lb <= y + tol) and np.all(y - tol <= ub), (domain, lb, y, ub)
    assert np.all(ub - lb <= 1e-9 * (1 + np.abs(y))), (domain, ub - lb)
