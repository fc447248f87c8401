"""activation-split (GenBaB-style branch-and-bound on activation input intervals): on small
sigmoid / tanh / LeakyReLU networks with 2-D inputs it proves margins that α-CROWN cannot
(truth checked on a dense grid with a margin above the grid's Lipschitz error), finds
onnxruntime-confirmed counterexamples of false ones, and never says ``unsat`` where a
grid point violates (hypothesis over random nets and thresholds); ``auto`` uses it on
wide-input non-ReLU networks and answers instead of failing."""

from __future__ import annotations

import numpy as np
import onnx.helper as oh
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

import verifier
from onnx_builders import make_model, save_model
from test_complete import check_counterexample
from verifier.api import compute_bounds
from verifier.cli import main
from verifier.complete.activation_split import activation_split_bab, split_point
from verifier.complete.methods import METHODS
from verifier.complete.relu_split import SplitBaBStats
from verifier.deadline import Deadline, Timeout
from verifier.engine import evaluate
from verifier.spec.model import Conjunction, InputRegion, Spec
from verifier.verify import verify

pytestmark = pytest.mark.usefixtures("one_torch_thread")

F64 = torch.float64
ACTS = [("Sigmoid", {}), ("Tanh", {}), ("LeakyRelu", {"alpha": 0.1})]
C = torch.tensor([[1.0, -1.0]], dtype=F64)  # the margin y_0 − y_1


def mlp(tmp_path, act: str, attrs: dict, seed: int, depth: int = 1, hidden: int = 8, n_in: int = 2,
        scale: float = 1.5):
    """``n_in → (Gemm, act) × depth → 2`` with random float32 weights."""
    rng = np.random.default_rng(seed)
    nodes, inits, prev, width = [], {}, "x", n_in
    for i in range(depth):
        inits[f"W{i}"] = (rng.normal(size=(hidden, width)) * scale).astype(np.float32)
        inits[f"b{i}"] = (rng.normal(size=hidden) * 0.5).astype(np.float32)
        nodes += [oh.make_node("Gemm", [prev, f"W{i}", f"b{i}"], [f"h{i}"], transB=1),
                  oh.make_node(act, [f"h{i}"], [f"a{i}"], **attrs)]
        prev, width = f"a{i}", hidden
    inits["Wo"] = rng.normal(size=(2, width)).astype(np.float32)
    nodes.append(oh.make_node("Gemm", [prev, "Wo"], ["y"], transB=1))
    return verifier.load(save_model(make_model(nodes, ["N", n_in], "y", inits), tmp_path))


def grid_margin(model, points: int = 301) -> tuple[float, float]:
    """The smallest margin on a ``points × points`` grid of ``[−1, 1]²`` and a bound on how
    far below it the true minimum can lie (Lipschitz constant × half the grid diagonal,
    the constant estimated from the largest difference between grid neighbours, doubled)."""
    t = torch.linspace(-1, 1, points, dtype=F64)
    x = torch.cartesian_prod(t, t).reshape(-1, 1, 2)
    m = (evaluate(model.graph_for("cpu", F64), x).reshape(len(x), -1) @ C.T).reshape(points, points)
    h = float(t[1] - t[0])
    slope = max(float((m[1:] - m[:-1]).abs().max()), float((m[:, 1:] - m[:, :-1]).abs().max())) / h
    return float(m.min()), 2 * slope * h * 2 ** 0.5 / 2


def region(threshold: float) -> InputRegion:
    """Unsafe iff ``y_0 − y_1 ≤ threshold`` on ``[−1, 1]²``."""
    return InputRegion(-torch.ones(2, dtype=F64), torch.ones(2, dtype=F64),
                       [Conjunction(C.clone(), torch.tensor([threshold], dtype=F64))])


def alpha_crown_margin(model) -> float:
    lo, hi = -torch.ones(1, 1, 2, dtype=F64), torch.ones(1, 1, 2, dtype=F64)
    lb, _ = compute_bounds(model, lo, hi, domain="alpha-crown", C=C)
    return float(lb)


@pytest.mark.parametrize("act,attrs", ACTS, ids=[a for a, _ in ACTS])
@pytest.mark.parametrize("seed,depth", [(0, 1), (1, 2)])
def test_proves_true_margins_that_alpha_crown_cannot(tmp_path, act, attrs, seed, depth):
    model = mlp(tmp_path, act, attrs, seed, depth)
    low, error = grid_margin(model)
    root = alpha_crown_margin(model)
    threshold = (low + root) / 2
    assert root < threshold < low - error, "the property must be true and open at the root"
    stats = SplitBaBStats()
    status, cex = activation_split_bab(model, region(threshold), Deadline(60), stats=stats)
    assert (status, cex) == ("unsat", None)
    assert stats.domains_bounded > 1


@pytest.mark.parametrize("act,attrs", ACTS, ids=[a for a, _ in ACTS])
def test_false_margins_are_sat_with_a_confirmed_counterexample(tmp_path, act, attrs):
    model = mlp(tmp_path, act, attrs, seed=3, depth=2, hidden=5)
    low, _ = grid_margin(model)
    spec = Spec([region(low + 0.05 * abs(low) + 0.01)], 2, 2, "margin")
    for attack in (False, True):
        result = verify(model, spec, domain="activation-split", timeout=60, attack=attack)
        check_counterexample(model, spec, result)


@settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(act=st.sampled_from(ACTS), seed=st.integers(0, 10_000), depth=st.integers(1, 2),
       hidden=st.integers(2, 6), quantile=st.floats(0.0, 0.3))
def test_never_unsat_where_a_grid_point_violates(tmp_path_factory, act, seed, depth, hidden, quantile):
    """Thresholds around the grid's low margins (some true, some false): ``unsat`` only when
    no grid point violates; ``sat`` only with an onnxruntime-confirmed counterexample."""
    model = mlp(tmp_path_factory.mktemp("net"), act[0], act[1], seed, depth, hidden)
    t = torch.linspace(-1, 1, 201, dtype=F64)
    x = torch.cartesian_prod(t, t).reshape(-1, 1, 2)
    margins = (evaluate(model.graph_for("cpu", F64), x).reshape(len(x), -1) @ C.T).reshape(-1)
    root = alpha_crown_margin(model)
    threshold = float(torch.quantile(margins, quantile)) if quantile > 0.02 else \
        float(margins.min()) - quantile * 10 * (float(margins.min()) - root)
    spec = Spec([region(threshold)], 2, 2, "margin")
    result = verify(model, spec, domain="activation-split", timeout=3, attack=False)
    if result.status == "unsat":
        assert float(margins.min()) > threshold, "unsat although a grid point violates"
    elif result.status == "sat":
        check_counterexample(model, spec, result)


def test_split_point_is_zero_inside_and_the_midpoint_otherwise():
    lo, hi = torch.tensor([-1.0, 0.5, -3.0, 0.0]), torch.tensor([2.0, 1.5, -1.0, 4.0])
    assert split_point(lo, hi).tolist() == [0.0, 1.0, -2.0, 2.0]


def _wide_sigmoid(tmp_path, shift: float):
    """A 20-input sigmoid network (too wide for input splitting) and a margin spec."""
    model = mlp(tmp_path, "Sigmoid", {}, seed=5, depth=1, hidden=16, n_in=20, scale=1.0)
    lo, hi = -0.5 * torch.ones(20, dtype=F64), 0.5 * torch.ones(20, dtype=F64)
    y = evaluate(model.graph_for("cpu", F64), torch.zeros(1, 1, 20, dtype=F64)).reshape(-1)
    conj = Conjunction(C.clone(), torch.tensor([float(y[0] - y[1]) - shift], dtype=F64))
    return model, Spec([InputRegion(lo, hi, [conj])], 20, 2, "margin")


@pytest.mark.parametrize("shift", [0.3, 1.0, 3.0, -0.1])
def test_auto_on_a_wide_sigmoid_network_answers_without_error(tmp_path, shift):
    model, spec = _wide_sigmoid(tmp_path, shift)
    result = verify(model, spec, domain="auto", timeout=20, attack=False)
    assert result.status in ("sat", "unsat", "unknown", "timeout")
    if result.status == "sat":
        check_counterexample(model, spec, result)
    if result.status != "unsat" or any("alpha-crown" in n for n in result.notes):
        assert any("relu-split does not apply" in n for n in result.notes), result.notes
    if shift < 0:  # the centre itself violates
        assert verify(model, spec, domain="auto", timeout=20).status == "sat"


def test_supports_and_the_relu_split_refusal_name_the_method(tmp_path):
    model = mlp(tmp_path, "Tanh", {}, seed=0)
    assert METHODS["activation-split"].supports(model.graph) == []
    reasons = [r for _, r in METHODS["relu-split"].supports(model.graph)]
    assert any("tanh" in r and "activation-split" in r for r in reasons)
    spec = Spec([region(alpha_crown_margin(model) + 0.1)], 2, 2, "margin")
    from verifier.errors import VerifierInputError

    with pytest.raises(VerifierInputError, match="activation-split"):
        verify(model, spec, domain="relu-split", attack=False)


def test_activation_split_refuses_a_network_without_activations(tmp_path):
    w = np.eye(2, dtype=np.float32)
    model = verifier.load(save_model(make_model([oh.make_node("Gemm", ["x", "W"], ["y"], transB=1)],
                                                ["N", 2], "y", {"W": w}), tmp_path))
    assert any("elementwise nonlinearity" in r for _, r in METHODS["activation-split"].supports(model.graph))


def test_timeout_is_raised_not_a_verdict(tmp_path):
    model = mlp(tmp_path, "Tanh", {}, seed=1, depth=2)
    low, _ = grid_margin(model)
    with pytest.raises(Timeout):
        activation_split_bab(model, region(low - 1e-4), Deadline(0.5))


def test_cli_method_activation_split(tmp_path, capsys):
    model, spec = _wide_sigmoid(tmp_path, 3.0)
    path = tmp_path / "p.vnnlib"
    lines = [f"(declare-const X_{i} Real)" for i in range(20)] + ["(declare-const Y_0 Real)", "(declare-const Y_1 Real)"]
    lines += [f"(assert (>= X_{i} -0.5))\n(assert (<= X_{i} 0.5))" for i in range(20)]
    lines += [f"(assert (<= (- Y_0 Y_1) {float(spec.regions[0].disjuncts[0].b[0])}))"]
    path.write_text("\n".join(lines) + "\n")
    code = main(["verify", model.graph.graph["path"], str(path), "--method", "activation-split", "--no-attack",
                 "--timeout", "30"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert out.out.strip().splitlines()[-1] in ("result: sat", "result: unsat", "result: unknown", "result: timeout")
    assert "activation-split branch-and-bound bounded" in out.out or "refuted by alpha-crown" in out.out
