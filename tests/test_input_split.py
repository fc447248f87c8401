"""Branch-and-bound by input splitting agrees with brute force and with the VNN-COMP reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import verifier
import verifier.verify
from benchdata import instances
from test_domain_ordering import relu_mlp
from verifier.complete.input_split import input_split_bab
from verifier.deadline import Deadline
from verifier.spec import read_vnnlib
from verifier.spec.model import Conjunction, InputRegion


@given(st.integers(0, 10_000), st.floats(-0.05, 0.05).filter(lambda o: abs(o) > 1e-3))
@settings(max_examples=10, deadline=None)
def test_input_split_agrees_with_dense_sampling(tmp_path_factory, seed, offset):
    """Property "y_0 ≥ t" on a 2-input net, with t just above or below the sampled maximum."""
    rng = np.random.default_rng(seed)
    path = tmp_path_factory.mktemp("bab") / "m.onnx"
    relu_mlp(path, rng, (2, 12, 12, 2))
    model = verifier.load(path)
    lower, upper = torch.tensor([-1.0, -1.0], dtype=torch.float64), torch.tensor([1.0, 1.0], dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(torch.linspace(-1, 1, 301, dtype=torch.float64),
                                      torch.linspace(-1, 1, 301, dtype=torch.float64), indexing="ij"), -1).reshape(-1, 2)
    top = float(model(grid)[:, 0].max())
    threshold = top + offset
    region = InputRegion(lower, upper, [Conjunction(torch.tensor([[-1.0, 0.0]], dtype=torch.float64),
                                                    torch.tensor([-threshold], dtype=torch.float64))])
    status, cex = input_split_bab(model, region, Deadline(60))
    if status == "sat":
        assert float(cex.y[0]) >= threshold and np.all(np.abs(cex.x) <= 1.0)
    else:
        assert status == "unsat"
        assert threshold > top  # the grid's maximum is a true value: unsat needs t above it
    if offset < -1e-3:
        assert status == "sat"


FAST_ACAS = [row for row in instances("acasxu") if float(row["nnenum_time"]) < 1.0][:12]


@pytest.mark.parametrize("row", FAST_ACAS, ids=lambda r: f"{r['onnx'][20:32]}-{r['vnnlib'][7:]}")
def test_auto_strategy_on_acasxu_never_contradicts_reference(bench, row):
    model = verifier.load(bench / "acasxu" / row["onnx"], check=False)
    spec = read_vnnlib(bench / "acasxu" / row["vnnlib"])
    result = verifier.verify.verify(model, spec, domain="auto", timeout=20)
    assert result.status in ("sat", "unsat", "timeout")
    if result.status != "timeout":
        assert result.status == row["expected"], result.notes


def test_nan_bounds_are_never_a_refutation_nor_a_loop(tmp_path, monkeypatch):
    """A domain that returns NaN bounds (an overflow) refutes nothing and is not split on
    forever: the box is left undecided and the answer is ``unknown`` at once."""
    import verifier.complete.input_split as input_split

    rng = np.random.default_rng(0)
    relu_mlp(tmp_path / "m.onnx", rng, (3, 8, 2))
    model = verifier.load(tmp_path / "m.onnx")
    A = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    region = InputRegion(-torch.ones(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64),
                         [Conjunction(A, torch.tensor([-1e6], dtype=torch.float64))])  # unsafe: y_0 ≤ −1e6 (never)

    def nan_bounds(model, lo, hi, domain, C, **options):
        nan = torch.full((lo.shape[0], C.shape[0]), float("nan"), dtype=lo.dtype)
        return nan, nan

    monkeypatch.setattr(input_split, "compute_bounds", nan_bounds)
    status, cex = input_split_bab(model, region, Deadline(20), domain="box")
    assert (status, cex) == ("unknown", None)
