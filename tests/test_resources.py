"""Memory checks before large allocations (:mod:`verifier.resources`): on the CPU an
allocation beyond the machine's memory is the kernel's OOM killer, not an exception, so a
domain whose state outgrows memory must refuse with one clear message first."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import verifier
import verifier.resources as resources
from verifier.errors import VerifierInputError
from onnx_builders import GraphBuilder, save_model


def test_available_memory_is_known_on_this_machine():
    free = resources.available_bytes("cpu")
    assert free is not None and free > 0


def test_an_allocation_beyond_memory_is_refused_with_its_size():
    with pytest.raises(VerifierInputError, match=r"would take .* GiB, more than half of the"):
        resources.require_memory(10**15, torch.float32, "cpu", "a test tensor", "use less")
    resources.require_memory(1000, torch.float32, "cpu", "a small tensor", "nothing")  # fits: no error


def test_deepz_refuses_generators_that_do_not_fit(tmp_path, monkeypatch):
    g = GraphBuilder(np.random.default_rng(0), ["N", 4])
    h = g.op("Relu", g.op("Gemm", g.x, g.weight(16, 4), transB=1))
    model = verifier.load(save_model(g.model(g.op("Gemm", h, g.weight(2, 16), transB=1)), tmp_path))
    lo, hi = -torch.ones(1, 1, 4), torch.ones(1, 1, 4)
    lb, ub = verifier.compute_bounds(model, lo, hi, domain="deepz")  # fits
    assert bool((lb <= ub).all())
    monkeypatch.setattr(resources, "available_bytes", lambda device: 256)  # a machine with 256 bytes free
    with pytest.raises(VerifierInputError, match="DeepZ's generators .* bound this model with crown"):
        verifier.compute_bounds(model, lo, hi, domain="deepz")


def test_deepz_refuses_the_first_convolution_of_a_large_input_before_allocating(tmp_path, monkeypatch):
    """The input's generators are kept factored (one shared row per input value) through the
    affine ops before the first ReLU; those rows × the convolution's output values must be
    checked too (a 3×64×64 traffic-sign net asked for 26.5 GB there and crashed)."""
    g = GraphBuilder(np.random.default_rng(0), ["N", 2, 8, 8])
    h = g.op("Flatten", g.op("Conv", g.x, g.weight(16, 2, 3, 3), pads=[1, 1, 1, 1]), axis=1)
    # affine only: the rows stay factored to the 2 outputs, so only the convolution's own
    # rows can be too large (128 × 2 at the end always fit)
    model = verifier.load(save_model(g.model(g.op("Gemm", h, g.weight(2, 1024), transB=1)), tmp_path))
    lo, hi = -torch.ones(1, 2, 8, 8), torch.ones(1, 2, 8, 8)
    lb, ub = verifier.compute_bounds(model, lo, hi, domain="deepz")
    assert bool((lb <= ub).all())
    # 128 symbols: the input's rows (128 × 128 float64, 128 kB) fit in half of 1 MiB, the
    # convolution's (128 × 1,024 values, 1 MiB) do not
    monkeypatch.setattr(resources, "available_bytes", lambda device: 1 << 20)
    with pytest.raises(VerifierInputError, match=r"DeepZ's generators \(1 × 128 symbols × 1024 values\)"):
        verifier.compute_bounds(model, lo.double(), hi.double(), domain="deepz")
