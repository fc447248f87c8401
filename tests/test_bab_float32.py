"""ReLU-split branch-and-bound optimising in float32 and certifying in float64
(:mod:`verifier.complete.beta_crown`'s docstring): the same verdicts as a float64 search on
small random nets and on shared instances, no subdomain closed by float32 rounding alone,
and ``verify --proof`` certificates that still check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import verifier
from benchdata import benchmarks_dir, instances
from onnx_builders import GraphBuilder, save_model
from proof_helpers import certify, relu_net, robustness_spec
from test_complete import brute_force_min_violation, margin_spec
from verifier.complete import relu_split
from verifier.complete.beta_crown import BetaCrown
from verifier.complete.relu_split import SplitBaBStats, _threshold, relu_split_bab, root_intermediate_bounds
from verifier.deadline import Deadline
from verifier.proofcheck.check import check_proof
from verifier.spec import read_vnnlib

pytestmark = pytest.mark.usefixtures("one_torch_thread")

F64, F32 = torch.float64, torch.float32


def _both(model, region, **options) -> tuple[str, str]:
    """Verdicts of float64 and float32-bounded searches of one region (no MILP fallback)."""
    found = []
    for dtype in (F64, F32):
        stats = SplitBaBStats()
        status, cex = relu_split_bab(model, region, Deadline(60), bound_dtype=dtype, stats=stats, **options)
        assert (status == "sat") == (cex is not None)
        found.append(status)
    return found[0], found[1]


@pytest.mark.parametrize("seed", range(6))
def test_float32_and_float64_searches_agree_on_random_nets(tmp_path, seed):
    """Margins placed just above and below the sampled minimum (so that the searches branch)
    are decided alike; a float32 ``unsat`` never meets a sampled violation."""
    rng = np.random.default_rng(2000 + seed)
    n_in = int(rng.integers(2, 5))
    path = relu_net(tmp_path, 2000 + seed, n_in, [int(rng.integers(8, 16)), int(rng.integers(8, 16))])
    model = verifier.load(path)
    centre, half = rng.uniform(-1, 1, n_in), rng.uniform(0.2, 0.8, n_in)
    probe = margin_spec(centre - half, centre + half, 3, 0.0).regions[0]
    v_min, _ = brute_force_min_violation(model, probe, samples=4000, restarts=8, steps=40, seed=seed)
    for offset in (-0.02, 0.02):
        region = margin_spec(centre - half, centre + half, 3, v_min + offset * (1 + abs(v_min))).regions[0]
        f64, f32 = _both(model, region, batch=16)
        assert f64 == f32, (offset, f64, f32)
        if offset > 0:  # b above a reached value: a violation exists
            assert f32 != "unsat"


def _cancelling_net(directory: Path) -> tuple[str, float, float]:
    """``x ∈ [−1, 1]``, ``y = (relu(x) + c₁, relu(x) + c₂)`` in float64 with ``c₁ − c₂ = 10``
    near ``2²⁷`` where float32's spacing is 16: float32 rounds ``c₁`` up by 3 and ``c₂``
    down by 3, so the float32 network's ``y₀ − y₁`` is 16. Returns the path, ``c₁``, ``c₂``."""
    c1, c2 = 2.0 ** 27 + 13, 2.0 ** 27 + 3
    g = GraphBuilder(np.random.default_rng(0), (1, 1), elem_type=onnx.TensorProto.DOUBLE)
    h = g.op("Relu", g.op("Gemm", g.x, g.const([[1.0]]), g.const([0.0]), transB=1))
    y = g.op("Gemm", h, g.const([[1.0], [1.0]]), g.const([c1, c2]), transB=1)
    return str(save_model(g.model(y), directory)), c1, c2


def test_float32_rounding_alone_never_closes_a_subdomain(tmp_path):
    """Unsafe set ``y₀ − y₁ ≤ 12``: every input reaches 10, so the answer is ``sat``; the
    float32 evaluation of the root subdomain claims 16 > 12 (it would close it, and the
    search would say ``unsat``), the float64 certification keeps it open."""
    path, c1, c2 = _cancelling_net(tmp_path)
    assert np.float32(c1) - np.float32(c2) == 16.0  # the premise: float32 rounding alone refutes
    model = verifier.load(path)
    region = margin_spec([-1.0], [1.0], 2, 12.0).regions[0]
    lam = region.disjuncts[0].A.reshape(1, 1, 2)
    root, _ = root_intermediate_bounds(model, region, "cpu", F64)
    lower, upper = model.as_batch(region.lower), model.as_batch(region.upper)
    engine = BetaCrown(model.graph_for("cpu", F64), lower, upper, lam, root, iterations=3,
                       fast_graph=model.graph_for("cpu", F32))
    threshold = _threshold(region.disjuncts[0].b)
    dom = engine.root_subdomain()
    narrow_bounds, _ = engine.fast.clamp(dom.splits)
    with torch.no_grad():
        narrow = engine.fast.evaluate(narrow_bounds, dom, {n: a.float() for n, a in dom.alpha.items()},
                                      {z: b.float() for z, b in dom.beta.items()})
    assert float(narrow) > float(threshold)  # float32 alone would close the root
    bounded, _ = engine.bound(dom, threshold)
    assert float(bounded.lb) <= 10.0 + 1e-9 and float(bounded.lb) <= float(threshold)
    status, cex = relu_split_bab(model, region, Deadline(30), bound_dtype=F32)
    assert status == "sat" and cex is not None


def _shared(benchmark: str, row: int):
    rows = instances(benchmark)
    if not rows:
        pytest.skip("../shared/benchmarks is absent")
    root = benchmarks_dir() / benchmark
    return verifier.load(root / rows[row]["onnx"]), read_vnnlib(root / rows[row]["vnnlib"]), rows[row]["expected"]


@pytest.mark.parametrize("benchmark, row", [("mnist_fc", 25), ("oval21", 0)])
def test_float32_and_float64_searches_agree_on_shared_instances(benchmark, row):
    """Two instances whose α-CROWN root leaves a disjunct open and that β-CROWN decides in
    seconds: both dtypes give the published answer."""
    from verifier.complete.methods import alpha_crown_root

    model, spec, expected = _shared(benchmark, row)
    (region,) = spec.regions
    root, open_disjuncts = alpha_crown_root(model, region, 0, "cpu", F64, [])
    assert open_disjuncts
    f64, f32 = _both(model, region, root=root, disjuncts=open_disjuncts)
    assert f64 == f32 == expected


def test_default_bound_dtype_follows_the_network_size():
    assert relu_split.default_bound_dtype(F64, relu_split.FLOAT32_NEURONS) == F32
    assert relu_split.default_bound_dtype(F64, relu_split.FLOAT32_NEURONS - 1) == F64
    assert relu_split.default_bound_dtype(F32, 10 ** 6) == F32


def test_float32_bounded_search_certificates_check(tmp_path, monkeypatch):
    """``verify --proof`` with every subdomain optimised in float32: the recorded α, β
    (float32 values, exact in float64) re-derive every closed leaf in the checker."""
    monkeypatch.setattr(relu_split, "FLOAT32_NEURONS", 0)
    model = relu_net(tmp_path, 4, 8, [20, 20])
    spec = robustness_spec(tmp_path / "relu.vnnlib", model, 4, 8, 0.15)
    status, index = certify(model, spec, str(tmp_path / "relu.proof"), "relu-split")
    assert status == "unsat" and index["certified"]
    report = check_proof(model, spec, str(tmp_path / "relu.proof"))
    assert report.valid, report.message
    assert report.leaves > 100


@pytest.mark.parametrize("seed", range(2))
def test_smart_branching_keeps_the_verdicts(tmp_path, seed):
    """Filtered smart branching (``candidates`` 3, its children estimated by
    :meth:`~verifier.complete.beta_crown.BetaCrown.estimate`) decides as BaBSR alone, with
    float64 and float32 bounding and under activation splitting (whose engine estimates
    its interval subdomains the same way)."""
    from verifier.complete.activation_split import activation_split_bab

    rng = np.random.default_rng(3000 + seed)
    path = relu_net(tmp_path, 3000 + seed, 3, [12, 12])
    model = verifier.load(path)
    centre = rng.uniform(-1, 1, 3)
    probe = margin_spec(centre - 0.5, centre + 0.5, 3, 0.0).regions[0]
    v_min, _ = brute_force_min_violation(model, probe, samples=4000, restarts=8, steps=40, seed=seed)
    region = margin_spec(centre - 0.5, centre + 0.5, 3, v_min - 0.02 * (1 + abs(v_min))).regions[0]
    verdicts = set()
    for dtype in (F64, F32):
        for candidates in (1, 3):
            stats = SplitBaBStats()
            verdicts.add(relu_split_bab(model, region, Deadline(60), bound_dtype=dtype, candidates=candidates,
                                        batch=8, stats=stats)[0])
            assert stats.domains_bounded > 1  # it branched
    verdicts.add(activation_split_bab(model, region, Deadline(60), candidates=3, batch=8)[0])
    assert verdicts == {"unsat"}
