"""The MILP is exact on step functions (sign, floor, ceil, round; issue 13: "MILP equals
brute force on small piecewise-linear nets").

Nets ``Gemm → step → Gemm`` with 1–2 inputs are piecewise constant: the output is
``W₂ s + b₂`` for the vector ``s`` of step values, and ``s`` ranges over the combinations
whose cell ``{x ∈ box : step_i(w_i·x + b_i) = s_i}`` is non-empty. Enumerating the
combinations with an LP per closed cell (the exact step structure) gives ``m_cl``, the
least margin over the closures of the cells (a lower bound of the true minimum, and the
MILP's optimum: it allows either adjacent step on a threshold); a fine grid through
onnxruntime gives true values (the least: ``g``). Then ``y₀ − y₁ ≤ m_cl − 10⁻³`` is unsat,
``y₀ − y₁ ≤ g + 10⁻³`` is sat, and the MILP must say so (every sat confirmed by
onnxruntime again here); a random threshold is checked wherever the two decide it.
"""

from __future__ import annotations

import itertools

import numpy as np
import onnx.helper as oh
import onnxruntime as ort
import pytest
import torch
from scipy.optimize import Bounds, LinearConstraint, linprog, milp

import verifier
from onnx_builders import make_model, save_model
from verifier.complete import milp_encoders
from verifier.complete.methods import METHODS
from verifier.complete.milp import milp_disjunct
from verifier.complete.milp_encoders import MILP_ENCODERS, MilpRows, binary_counts
from verifier.coverage import method_handles
from verifier.domains import get_domain
from verifier.fidelity import run_onnxruntime
from verifier.spec.model import Conjunction, InputRegion, Spec
from verifier.verify import verify

pytestmark = pytest.mark.usefixtures("one_torch_thread")

F64 = torch.float64
STEPS = {"sign": ("Sign", np.sign), "floor": ("Floor", np.floor), "ceil": ("Ceil", np.ceil),
         "round": ("Round", np.round)}
GAP = 1e-3


# --- nets, specs and the exact answer ---------------------------------------------------
def step_net(tmp_path, kind: str, n_in: int, hidden: int, rng, scale: float = 1.5):
    """``Gemm → step → Gemm`` with 2 outputs; returns the path and the float32 weights."""
    w1 = (rng.normal(size=(hidden, n_in)) * scale).astype(np.float32)
    b1 = (rng.normal(size=hidden) * 0.7).astype(np.float32)
    w2 = rng.normal(size=(2, hidden)).astype(np.float32)
    b2 = rng.normal(size=2).astype(np.float32)
    nodes = [oh.make_node("Gemm", ["x", "W1", "B1"], ["z"], transB=1),
             oh.make_node(STEPS[kind][0], ["z"], ["s"]),
             oh.make_node("Gemm", ["s", "W2", "B2"], ["y"], transB=1)]
    path = save_model(make_model(nodes, ["N", n_in], "y", {"W1": w1, "B1": b1, "W2": w2, "B2": b2}), tmp_path)
    return path, [a.astype(np.float64) for a in (w1, b1, w2, b2)]


def margin_spec(n_in: int, b: float, a=(1.0, -1.0)) -> Spec:
    """Unsafe iff ``a·y ≤ b`` (by default the margin ``y₀ − y₁ ≤ b``) on ``[−1, 1]^n_in``."""
    conj = Conjunction(torch.tensor([list(a)], dtype=F64), torch.tensor([b], dtype=F64))
    region = InputRegion(-torch.ones(n_in, dtype=F64), torch.ones(n_in, dtype=F64), [conj])
    return Spec([region], n_in, 2, "margin")


def closed_cell(kind: str, v: float) -> tuple[float, float]:
    """The closed pre-activation interval where ``step = v``."""
    return {"floor": (v, v + 1), "ceil": (v - 1, v), "round": (v - 0.5, v + 0.5),
            "sign": {-1.0: (-np.inf, 0.0), 0.0: (0.0, 0.0), 1.0: (0.0, np.inf)}.get(v)}[kind]


def closure_minimum(kind: str, weights, a=(1.0, -1.0)) -> float:
    """``m_cl``: the least ``a·y`` over the step combinations whose closed cell
    meets the box (one feasibility LP each, the cells widened by 10⁻⁷ so that a cell that
    only touches the box is not missed)."""
    w1, b1, w2, b2 = weights
    f = STEPS[kind][1]
    radius = np.abs(w1).sum(1)
    values = [np.arange(f(b1[i] - radius[i]), f(b1[i] + radius[i]) + 1) for i in range(len(b1))]
    best = np.inf
    for s in itertools.product(*values):
        margin = float(np.asarray(a) @ (w2 @ np.array(s) + b2))
        if margin >= best:
            continue
        lo, hi = zip(*(closed_cell(kind, v) for v in s))
        lo, hi = np.array(lo) - b1 - 1e-7, np.array(hi) - b1 + 1e-7  # lo ≤ w1 x ≤ hi
        a_ub = np.vstack([w1, -w1])
        b_ub = np.concatenate([hi, -lo])
        keep = np.isfinite(b_ub)
        res = linprog(np.zeros(w1.shape[1]), A_ub=a_ub[keep], b_ub=b_ub[keep], bounds=[(-1, 1)] * w1.shape[1])
        if res.status == 0:
            best = margin
    return best


def grid_margins(path, n_in: int, a=(1.0, -1.0)) -> np.ndarray:
    """onnxruntime's ``a·y`` on a grid of the box (one batched run)."""
    axis = np.linspace(-1, 1, 4001 if n_in == 1 else 241)
    x = np.stack(np.meshgrid(*[axis] * n_in, indexing="ij"), -1).reshape(-1, n_in).astype(np.float32)
    (y,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    return y.astype(np.float64) @ np.asarray(a)


def assert_confirmed(model, spec: Spec, cex) -> None:
    """The counterexample lies in the box and onnxruntime finds it unsafe."""
    assert cex is not None
    region = spec.regions[0]
    x = np.asarray(cex.x, dtype=np.float64).reshape(-1)
    assert np.all(x >= region.lower.numpy()) and np.all(x <= region.upper.numpy())
    y = run_onnxruntime(model.graph, x.reshape(1, *model.input_shape)).reshape(-1).astype(np.float64)
    assert float(region.violation(torch.as_tensor(y)[None])[0]) <= 0.0, y


def decide(model, spec: Spec):
    """``milp_disjunct`` on the spec's one disjunct with CROWN's intermediate bounds."""
    region = spec.regions[0]
    graph = model.graph_for("cpu", F64)
    bounds = get_domain("crown").intermediate_bounds(graph, model.as_batch(region.lower),
                                                     model.as_batch(region.upper))
    return milp_disjunct(model, region, 0, bounds, time_limit=60)


# --- the encoders alone -----------------------------------------------------------------
def _encoder_range(kind: str, x: float, l: float, u: float, eta: float = 0.0) -> tuple[float, float] | None:
    """``[min y, max y]`` of the encoder's program with the step input fixed at ``x``
    (``None``: infeasible)."""
    rows = MilpRows(2)  # v = [x, y, δ...]
    MILP_ENCODERS[kind].encode(rows, {"kind": kind}, np.array([0]), np.array([1]), np.array([l]), np.array([u]), eta)
    width = rows.n_cols
    a, lo, hi = rows.matrix(width)
    var_lo = np.concatenate([[x, -np.inf], np.zeros(width - 2)])
    var_hi = np.concatenate([[x, np.inf], np.ones(width - 2)])
    integrality = np.concatenate([[0, 0], np.ones(width - 2)])
    out = []
    for sign in (1.0, -1.0):
        cost = np.zeros(width)
        cost[1] = sign
        res = milp(cost, integrality=integrality, bounds=Bounds(var_lo, var_hi),
                   constraints=LinearConstraint(a, lo, hi) if a.shape[0] else None)
        if res.status != 0:
            return None
        out.append(sign * res.fun)
    return out[0], out[1]


@pytest.mark.parametrize("kind", sorted(STEPS))
def test_step_encoder_is_exact_off_thresholds(kind):
    """On random ranges, y is forced to f(x) for x off the thresholds; on a threshold
    both adjacent steps are allowed (the documented measure-zero relaxation), and with a
    margin η the program excludes x within η of a threshold."""
    f = STEPS[kind][1]
    rng = np.random.default_rng(1)
    for _ in range(30):
        l, u = np.sort(rng.uniform(-4, 4, size=2))
        assert MILP_ENCODERS[kind].binaries({"kind": kind}, np.array([l]), np.array([u]))[0] == f(u) - f(l)
        for x in rng.uniform(l, u, size=5):
            assert _encoder_range(kind, x, l, u) == (pytest.approx(f(x)), pytest.approx(f(x)))
    thresholds = {"floor": 1.0, "ceil": 1.0, "round": 1.5, "sign": 0.0}[kind]
    low, high = _encoder_range(kind, thresholds, -2.7, 2.7)
    left, right = f(thresholds - 1e-3), f(thresholds + 1e-3)
    assert low == pytest.approx(left) and high == pytest.approx(right)  # either step at the threshold
    assert _encoder_range(kind, thresholds, -2.7, 2.7, eta=1e-5) is None
    assert _encoder_range(kind, thresholds + 1e-3, -2.7, 2.7, eta=1e-5) == (pytest.approx(right),) * 2
    # a range with no step: the constant, no binary
    assert _encoder_range(kind, 0.3 if kind != "sign" else 0.5, 0.2, 0.45 if kind != "sign" else 2.0) == \
        (pytest.approx(f(0.3 if kind != "sign" else 0.5)),) * 2


# --- MILP = brute force -----------------------------------------------------------------
@pytest.mark.parametrize("kind", sorted(STEPS))
@pytest.mark.parametrize("n_in", [1, 2])
def test_milp_equals_brute_force(tmp_path, kind, n_in):
    """Per net and random direction ``a``: ``a·y ≤ m_cl − 10⁻³`` unsat, ``a·y ≤ g + 10⁻³`` sat,
    and random thresholds wherever the grid or the enumeration decides them."""
    verdicts = []
    for seed in range(3):
        rng = np.random.default_rng(1000 * n_in + seed)
        path, weights = step_net(tmp_path, kind, n_in, hidden=3, rng=rng)
        model = verifier.load(path)
        for a in ((1.0, -1.0), tuple(rng.normal(size=2))):
            m_cl = closure_minimum(kind, weights, a)
            values = grid_margins(path, n_in, a)
            g = float(values.min())
            assert m_cl <= g + 1e-5, "the enumeration missed a value the grid found"
            cases = [(m_cl - GAP, "unsat"), (g + GAP, "sat")]
            for c in rng.uniform(g - 1, values.max(), size=3):
                if c >= g + GAP or c < m_cl - GAP:  # decided by the grid or the enumeration, with room
                    cases.append((float(c), "sat" if c >= g else "unsat"))
            for b, truth in cases:
                spec = margin_spec(n_in, b, a)
                status, cex = decide(model, spec)
                assert status == truth, (seed, a, b, m_cl, g)
                if status == "sat":
                    assert_confirmed(model, spec, cex)
                verdicts.append(status)
    assert {"sat", "unsat"} <= set(verdicts)


def test_verify_milp_decides_a_sign_net(tmp_path):
    """``verify(..., domain="milp")`` no longer refuses Sign; it decides a tight unsat
    (with the MILP: the notes name its binaries) and a sat with a confirmed counterexample."""
    rng = np.random.default_rng(7)
    path, weights = step_net(tmp_path, "sign", 2, hidden=4, rng=rng)
    model = verifier.load(path)
    assert METHODS["milp"].supports(model.graph) == []
    m_cl = closure_minimum("sign", weights)
    g = float(grid_margins(path, 2).min())
    result = verify(model, margin_spec(2, m_cl - GAP), domain="milp", attack=False, timeout=60)
    assert result.status == "unsat", result.notes
    spec = margin_spec(2, g + GAP)
    result = verify(model, spec, domain="milp", attack=False, timeout=60)
    assert result.status == "sat", result.notes
    assert any("MILP with" in n and "sign" in n for n in result.notes), result.notes
    assert_confirmed(model, spec, result.counterexample)


def test_steps_without_a_jump_are_constants(tmp_path):
    """Ranges holding no step get no binary: the node is its constant."""
    w1 = np.array([[0.1], [-0.2]], dtype=np.float32)
    b1 = np.array([0.5, 2.4], dtype=np.float32)  # z ∈ [0.4, 0.6] and [2.2, 2.6]: floor 0 and 2
    w2 = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    nodes = [oh.make_node("Gemm", ["x", "W1", "B1"], ["z"], transB=1), oh.make_node("Floor", ["z"], ["s"]),
             oh.make_node("Gemm", ["s", "W2", "B2"], ["y"], transB=1)]
    model = verifier.load(save_model(make_model(nodes, ["N", 1], "y", {"W1": w1, "B1": b1, "W2": w2,
                                                                       "B2": np.zeros(2, np.float32)}), tmp_path))
    region = margin_spec(1, 0.0).regions[0]
    graph = model.graph_for("cpu", F64)
    bounds = get_domain("crown").intermediate_bounds(graph, model.as_batch(region.lower), model.as_batch(region.upper))
    assert binary_counts(graph, bounds) == ({"floor": 0}, {})
    assert decide(model, margin_spec(1, -2.0 - GAP))[0] == "unsat"  # y₀ − y₁ = 0 − 2 everywhere
    status, cex = decide(model, margin_spec(1, -2.0))
    assert status == "sat"
    assert_confirmed(model, margin_spec(1, -2.0), cex)


def test_wide_ranges_keep_the_lp_and_supports_says_so(tmp_path, monkeypatch):
    """Over the cap of binaries per entry the step keeps its LP lines: ``supports`` with
    the bounds names the node, the MILP stays sound (never a wrong verdict) and its notes
    say it is not exact."""
    monkeypatch.setattr(milp_encoders, "MAX_BINARIES_PER_ENTRY", 1)
    rng = np.random.default_rng(3)
    path, weights = step_net(tmp_path, "floor", 1, hidden=3, rng=rng, scale=3.0)
    model = verifier.load(path)
    spec = margin_spec(1, closure_minimum("floor", weights) - GAP)
    region = spec.regions[0]
    graph = model.graph_for("cpu", F64)
    bounds = get_domain("crown").intermediate_bounds(graph, model.as_batch(region.lower), model.as_batch(region.upper))
    assert METHODS["milp"].supports(model.graph) == []
    wide = METHODS["milp"].supports(model.graph, bounds)
    assert wide and all("not exact" in reason for _, reason in wide)
    assert decide(model, spec)[0] in ("unsat", "unknown")
    result = verify(model, spec, domain="milp", attack=False, timeout=60)
    assert result.status in ("unsat", "unknown")
    assert result.status == "unsat" or any("not exact" in n for n in result.notes), result.notes


def test_coverage_lists_steps_as_milp_exact():
    for kind in STEPS:
        assert method_handles(METHODS["milp"], kind)
    assert method_handles(METHODS["milp"], "relu") and not method_handles(METHODS["milp"], "sigmoid")
