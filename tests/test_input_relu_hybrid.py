"""ReLU splitting inside input-split boxes (``relu_hybrid``): it gives the sampled answer on
small nets (unsat and sat, counterexamples real), and a box whose ReLU-split sub-search does
not finish is never counted as proved (it goes back to input splitting)."""

from __future__ import annotations

import pytest
import torch

from test_input_split_branching import _net_and_region as sampled_net
from verifier.complete import input_relu_hybrid as H
from verifier.complete import relu_split
from verifier.complete.input_split import input_split_bab
from verifier.deadline import Deadline, Timeout
from verifier.spec.model import Conjunction, InputRegion


def _net_and_region(tmp_path, offset, seed=9, widths=(3, 12, 12, 2)):
    """A random ReLU net and the property ``y_0 ≥ top + offset`` over ``[-1, 1]^3``, ``top``
    the largest ``y_0`` of 20,000 samples (a true value: ``offset < 0`` is sat)."""
    model, lo, hi, top = sampled_net(tmp_path, seed, widths)
    region = InputRegion(lo, hi, [Conjunction(torch.tensor([[-1.0, 0.0]], dtype=torch.float64),
                                              torch.tensor([-(top + offset)], dtype=torch.float64))])
    return model, region, top + offset


@pytest.fixture
def every_box(monkeypatch):
    """Every open box, from the region's own, goes to ReLU splitting."""
    monkeypatch.setattr(H, "MIN_DEPTH", 0)
    monkeypatch.setattr(H, "MAX_CROSSING", 10 ** 6)
    monkeypatch.setattr(H, "SHARE", 1e9)
    monkeypatch.setattr(H, "BUDGET", 20.0)


@pytest.mark.parametrize("offset", [0.02, -0.002])
def test_hybrid_gives_the_sampled_answer(tmp_path, every_box, offset):
    model, region, threshold = _net_and_region(tmp_path, offset)
    hybrid = H.HybridStats()
    status, cex = input_split_bab(model, region, Deadline(60), relu_hybrid=True, hybrid_stats=hybrid)
    assert hybrid.tried >= 1 and hybrid.subdomains >= 1  # the region's box went to ReLU splitting
    if offset > 0:  # above the sampled maximum: unsat, or a real counterexample above it
        assert status == "unsat" or (float(cex.y[0]) >= threshold and bool(region.contains(torch.as_tensor(cex.x)[None])))
        if status == "unsat":
            assert hybrid.closed >= 1
    else:
        assert status == "sat" and float(cex.y[0]) >= threshold
        assert bool(region.contains(torch.as_tensor(cex.x, dtype=torch.float64).reshape(1, -1)))


def test_an_unfinished_box_is_not_proved(tmp_path, every_box, monkeypatch):
    """A sub-search that runs out of its budget (its own deadline's Timeout) leaves its box
    open: the search still splits it and reaches the answer of the search without the hybrid;
    a box counted as proved would have closed the whole region (unsat) at the first box."""
    calls = []

    def unfinished(*args, **kwargs):
        calls.append(kwargs["root"])
        raise Timeout()

    monkeypatch.setattr(relu_split, "relu_split_bab", unfinished)
    for offset in (0.02, -0.002):
        model, region, _ = _net_and_region(tmp_path, offset)
        calls.clear()
        hybrid = H.HybridStats()
        status, _ = input_split_bab(model, region, Deadline(60), relu_hybrid=True, hybrid_stats=hybrid)
        plain, _ = input_split_bab(model, region, Deadline(60))
        assert status == plain
        assert hybrid.closed == 0 and hybrid.returned == hybrid.tried == len(calls)
        if offset < 0:
            assert status == "sat" and hybrid.tried >= 1  # the region's box went to the hybrid first


def test_retry_depth_and_time_share(tmp_path, monkeypatch):
    """A box whose sub-search did not finish is eligible again only ``RETRY_DEPTH`` levels
    deeper; with the time share used up nothing is eligible; boxes need ``MIN_DEPTH``."""
    model, region, _ = _net_and_region(tmp_path, 0.02)
    graph = model.graph_for("cpu", torch.float64)
    hybrid = H.ReluHybrid(model, region, graph, 0, torch.float64, "cpu")
    assert hybrid.enabled
    inter = {z: (-torch.ones(3, 12), torch.ones(3, 12)) for z in hybrid.pre.values()}
    assert hybrid.crossing(inter).tolist() == [12 * len(hybrid.pre)] * 3
    depth = torch.tensor([H.MIN_DEPTH - 1, H.MIN_DEPTH, H.MIN_DEPTH + 3])
    next_try = torch.tensor([0, 0, H.MIN_DEPTH + 4])
    assert hybrid.eligible(depth, next_try, inter).tolist() == [False, True, False]
    hybrid.stats.seconds = 1e9
    assert not hybrid.eligible(depth, next_try, inter).any()


def test_the_hybrid_is_off_while_a_proof_is_recorded(tmp_path, monkeypatch):
    model, region, _ = _net_and_region(tmp_path, 0.02)
    import verifier.proof.record as record

    monkeypatch.setattr(record, "active", lambda: object())
    hybrid = H.ReluHybrid(model, region, model.graph_for("cpu", torch.float64), 0, torch.float64, "cpu")
    assert not hybrid.enabled
