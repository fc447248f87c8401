"""Max-pooling in proof certificates: the checker reads MaxPool as onnxruntime runs it,
its Lagrangian term stays below the exact value for any relaxation parameters, unsat
certificates of conv + ReLU + max-pool nets check, and a perturbed max-pool parameter is
rejected."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from onnx_builders import GraphBuilder, save_model
from proof_helpers import certify, pool_net, read_archive, robustness_spec, write_archive
from verifier.proofcheck.check import check_proof
from verifier.proofcheck.network import UnsupportedModel, load_network
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


def test_max_pooling_of_anything_but_a_relu_output_is_not_read(tmp_path):
    g = GraphBuilder(np.random.default_rng(0), (1, 2, 4, 4))
    path = str(save_model(g.model(g.op("Flatten", g.op("MaxPool", g.x, kernel_shape=[2, 2], strides=[2, 2]))), tmp_path))
    with pytest.raises(UnsupportedModel, match="max-pooling of a ReLU's output"):
        load_network(path)


@pytest.mark.parametrize("overlap", [False, True])
def test_the_pool_term_is_below_the_exact_minimum_for_any_parameters(overlap):
    """``λ·maxpool(v) − λ_in·v ≥ pool_term`` at sampled points of the box, for the rule's
    parameters and for random ones (any selection and flag must stay sound)."""
    rng = np.random.default_rng(int(overlap))
    n_in = 9 if overlap else 8
    windows = np.array([[0, 1, 3, 4], [1, 2, 4, 5], [3, 4, 6, 7], [4, 5, 7, 8]]) if overlap else \
        np.array([[0, 1, 4, 5], [2, 3, 6, 7], [0, 1, -1, -1]])
    l = rng.uniform(0, 1, (3, n_in))
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
