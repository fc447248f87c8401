"""Max-pooling in proof certificates: the checker reads MaxPool as onnxruntime runs it,
its Lagrangian term stays below the exact value for any relaxation parameters and any
sign of the pooled input, unsat certificates of conv + ReLU + max-pool and conv +
max-pool + ReLU nets check, and a perturbed max-pool parameter is rejected."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from onnx_builders import GraphBuilder, save_model
from proof_helpers import certify, pool_net, read_archive, robustness_spec, write_archive
from verifier.proofcheck.bounds import crown_bounds, interval_bounds
from verifier.proofcheck.check import read_regions
from verifier.proofcheck.check import check_proof
from verifier.proofcheck.network import load_network
from verifier.proofcheck.pool import pool_ibp, pool_multipliers, pool_relaxation, pool_term


@pytest.mark.parametrize("C,H,W,k,stride,pad,dilation", [(2, 6, 6, 2, 2, 0, 1), (3, 7, 5, 3, 2, 1, 1),
                                                         (2, 8, 8, 3, 1, 1, 2)])
def test_the_checker_reads_max_pooling_as_onnxruntime_runs_it(tmp_path, C, H, W, k, stride, pad, dilation):
    """On a point box the exact interval bounds are the pooled values onnxruntime computes."""
    import onnxruntime as ort

    rng = np.random.default_rng(C * H + k)
    g = GraphBuilder(rng, (1, C, H, W))
    h = g.op("MaxPool", g.op("Relu", g.x), kernel_shape=[k, k], strides=[stride, stride], pads=[pad, pad, pad + 1, pad],
             dilations=[dilation, dilation])
    path = str(save_model(g.model(g.op("Flatten", h)), tmp_path))
    x = rng.normal(size=(4, C, H, W)).astype(np.float32)
    session = ort.InferenceSession(path)
    expected = np.concatenate([session.run(None, {"x": x[i:i + 1]})[0] for i in range(4)]).reshape(4, -1)
    net = load_network(path)
    assert [op.kind for op in net.ops] == ["relu", "maxpool"]
    v = np.maximum(x.reshape(4, -1).astype(np.float64), 0.0)
    lo, hi = pool_ibp(net.ops[1].value, v, v)
    assert np.array_equal(lo, hi) and np.array_equal(lo, expected)


def test_max_pooling_of_any_input_is_read_as_onnxruntime_runs_it(tmp_path):
    """Max-pooling of the graph input itself (negative values too), not only of a ReLU's output."""
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    g = GraphBuilder(rng, (1, 2, 4, 4))
    path = str(save_model(g.model(g.op("Flatten", g.op("MaxPool", g.x, kernel_shape=[2, 2], strides=[2, 2]))), tmp_path))
    net = load_network(path)
    assert [op.kind for op in net.ops] == ["maxpool"]
    x = rng.normal(size=(1, 2, 4, 4)).astype(np.float32)
    v = x.reshape(1, -1).astype(np.float64)
    lo, hi = pool_ibp(net.ops[0].value, v, v)
    assert np.array_equal(lo, hi) and np.array_equal(lo, ort.InferenceSession(path).run(None, {"x": x})[0])


@pytest.mark.parametrize("overlap,signed", [(False, False), (True, False), (False, True), (True, True)])
def test_the_pool_term_is_below_the_exact_minimum_for_any_parameters(overlap, signed):
    """``λ·maxpool(v) − λ_in·v ≥ pool_term`` at sampled points of the box, for the rule's
    parameters and for random ones (any selection and flag must stay sound), on boxes of
    a ReLU's output (``l ≥ 0``) and of any sign (max-pooling of a convolution)."""
    rng = np.random.default_rng(int(overlap) + 2 * int(signed))
    n_in = 9 if overlap else 8
    windows = np.array([[0, 1, 3, 4], [1, 2, 4, 5], [3, 4, 6, 7], [4, 5, 7, 8]]) if overlap else \
        np.array([[0, 1, 4, 5], [2, 3, 6, 7], [0, 1, -1, -1]])
    l = rng.uniform(-1 if signed else 0, 1, (3, n_in))
    u = l + rng.uniform(0, 1, (3, n_in)) * (rng.uniform(size=(3, n_in)) > 0.3)
    lam = rng.normal(size=(3, 5, len(windows)))
    for sel, dom in (pool_relaxation(windows, l, u),
                     (rng.integers(0, 2, (3, len(windows))), rng.integers(0, 2, (3, len(windows))).astype(bool))):
        lam_in = pool_multipliers(windows, sel, dom, lam, n_in)
        bound = pool_term(windows, sel, dom, lam, l, u)
        v = l[:, None, :] + rng.uniform(size=(3, 2000, n_in)) * (u - l)[:, None, :]
        v[:, :8] = np.where(rng.integers(0, 2, (3, 8, n_in)) > 0, l[:, None, :], u[:, None, :])  # vertices too
        pooled = np.where(windows < 0, -np.inf, v[..., np.maximum(windows, 0)]).max(-1)  # (3, S, n_out)
        value = np.einsum("brn,bsn->bsr", lam, pooled) - np.einsum("brn,bsn->bsr", lam_in, v)
        assert np.all(value.min(1) >= bound - 1e-12), (value.min(1) - bound).min()


@pytest.fixture(scope="module")
def pooled(tmp_path_factory):
    """A conv + ReLU + 3×3/2 max-pool (overlapping windows, padding) net, unsat by ReLU
    splitting (hundreds of leaves)."""
    work = tmp_path_factory.mktemp("pool")
    model = pool_net(work, 4, channels=2, side=6, kernel=3, stride=2, pad=1)
    spec = robustness_spec(work / "p.vnnlib", model, 4, 36, 0.11)
    status, index = certify(model, spec, str(work / "p.proof"), "relu-split")
    assert status == "unsat" and index["certified"], index["uncertified"]
    return model, spec, str(work / "p.proof"), work


def test_max_pool_certificates_check(pooled):
    model, spec, proof, _ = pooled
    report = check_proof(model, spec, proof)
    assert report.valid and report.leaves > 10, report.message  # β-CROWN leaves, not only the root
    index, arrays = read_archive(proof)
    assert index["regions"][0]["pools"] == [2 * 9] and arrays["r0.pool0.dom"].dtype == np.int8


def test_a_perturbed_max_pool_parameter_is_rejected(pooled):
    model, spec, proof, work = pooled
    index, arrays = read_archive(proof)
    sel, dom = arrays["r0.pool0.sel"], arrays["r0.pool0.dom"]
    bad = dict(arrays)
    bad["r0.pool0.dom"] = np.zeros_like(dom)  # no window bounded exactly from above
    assert dom.any()
    report = check_proof(model, spec, write_archive(str(work / "dom.proof"), index, bad))
    assert not report.valid and report.message.startswith("proof invalid: region 0"), report.message
    bad = dict(arrays)
    bad["r0.pool0.sel"] = np.full_like(sel, 9)  # outside every 3×3 window
    report = check_proof(model, spec, write_archive(str(work / "sel.proof"), index, bad))
    assert not report.valid and "selects outside" in report.message


def test_input_splitting_certificates_of_max_pool_nets_check(tmp_path):
    """Input splitting: every box's max-pool relaxation is the checker's own (DeepPoly's rule
    on its own bounds), as CROWN's adaptive ReLU slopes are."""
    model = pool_net(tmp_path, 4, channels=2, side=3, kernel=3, stride=2, pad=1)
    spec = robustness_spec(tmp_path / "p.vnnlib", model, 4, 9, 0.085)
    status, index = certify(model, spec, str(tmp_path / "p.proof"), "input-split")
    assert status == "unsat" and index["certified"] and index["regions"][0]["nodes"] > 1
    report = check_proof(model, spec, str(tmp_path / "p.proof"))
    assert report.valid and report.leaves > 1, report.message


def _conv_pool_relu(directory: Path, seed: int = 0, side: int = 4, channels: int = 2) -> str:
    """Conv (3×3, padded) → MaxPool 2×2/2 → ReLU → Gemm → ReLU → Gemm: the max-pool's input
    is a convolution's output (negative entries, crossing 0 on a box)."""
    rng = np.random.default_rng(seed)
    g = GraphBuilder(rng, (1, 1, side, side))
    h = g.op("Conv", g.x, g.weight(channels, 1, 3, 3), g.rand(channels, scale=0.1), pads=[1, 1, 1, 1])
    h = g.op("Flatten", g.op("Relu", g.op("MaxPool", h, kernel_shape=[2, 2], strides=[2, 2])))
    h = g.op("Relu", g.op("Gemm", h, g.weight(10, channels * (side // 2) ** 2), g.rand(10, scale=0.1), transB=1))
    return str(save_model(g.model(g.op("Gemm", h, g.weight(3, 10), g.rand(3, scale=0.1), transB=1)), directory))


@pytest.mark.parametrize("method", ["input-split", "relu-split"])
def test_certificates_of_max_pooling_of_a_convolution_check(tmp_path, method):
    """The recorded relaxation (sel, dom) and the checker's own rule hold for any bounds of
    the pooled input (module docstring of verifier/proofcheck/pool.py); the checker tightens
    the pooled input's crossing entries by CROWN passes, as the verifier's CROWN does for
    the input of every relaxed op. A perturbed selection is rejected."""
    model = _conv_pool_relu(tmp_path)
    spec = robustness_spec(tmp_path / "p.vnnlib", model, 0, 16, 0.08)
    net, region = load_network(model), read_regions(spec)[0]
    pool_in = net.pools[0]
    ibp, crown = interval_bounds(net, region.lower, region.upper), crown_bounds(net, region.lower, region.upper)
    assert np.any((crown[pool_in][0] < 0) & (crown[pool_in][1] > 0)), "the pooled input crosses 0"
    assert np.any(crown[pool_in][0] > ibp[pool_in][0]), "and its crossing entries are tightened"
    proof = str(tmp_path / "p.proof")
    status, index = certify(model, spec, proof, method)
    assert status == "unsat" and index["certified"], index["uncertified"]
    report = check_proof(model, spec, proof)
    assert report.valid and report.leaves > 1 and not report.trusted, report.message
    if method == "relu-split":
        index, arrays = read_archive(proof)
        bad = dict(arrays)
        bad["r0.pool0.sel"] = (arrays["r0.pool0.sel"] + 1) % 4
        report = check_proof(model, spec, write_archive(str(tmp_path / "sel.proof"), index, bad))
        assert not report.valid and report.message.startswith("proof invalid: region 0"), report.message
