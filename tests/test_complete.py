"""Complete verification (`verify` with MILP, ReLU-splitting and input-splitting
branch-and-bound): the three complete methods agree with each other and with brute force on
small random ReLU nets; every ``sat`` carries a counterexample that onnxruntime confirms;
disjunctive specs and specs with several input regions are decided per disjunct / region;
timeouts are honoured; on the shared VNN-COMP instances expected ``sat`` is never claimed
``unsat``; and the MILP closes a property that plain CROWN bounds leave open."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

import verifier
from benchdata import benchmarks_dir, instances
from test_domain_ordering import relu_mlp
from verifier.complete.milp import milp_disjunct
from verifier.complete.relu_split import relu_split_bab, root_intermediate_bounds
from verifier.deadline import Deadline
from verifier.domains import get_domain
from verifier.fidelity import run_onnxruntime
from verifier.spec import read_vnnlib
from verifier.spec.linf import linf_robustness_spec
from verifier.spec.model import Conjunction, InputRegion, Spec
from verifier.verify import VerificationResult, verify

pytestmark = pytest.mark.usefixtures("one_torch_thread")

F64 = torch.float64
COMPLETE = ("milp", "relu-split", "input-split")
DECIDED = ("sat", "unsat")


# --- helpers ---------------------------------------------------------------------------
def _t(values) -> torch.Tensor:
    return torch.as_tensor(np.asarray(values, dtype=np.float64))


def margin_spec(lo, hi, n_out: int, b: float, i: int = 0, j: int = 1) -> Spec:
    """Unsafe iff ``y_i − y_j ≤ b`` on the box ``[lo, hi]``."""
    region = InputRegion(_t(lo), _t(hi), [margin_conj(n_out, b, i, j)])
    return Spec([region], len(lo), n_out, "margin")


def margin_conj(n_out: int, b: float, i: int = 0, j: int = 1) -> Conjunction:
    A = torch.zeros(1, n_out, dtype=F64)
    A[0, i], A[0, j] = 1.0, -1.0
    return Conjunction(A, torch.tensor([b], dtype=F64))


def check_counterexample(model, spec: Spec, result) -> None:
    """A ``sat`` result's counterexample lies in its region's box and onnxruntime's output
    on it (re-evaluated here, not taken from the result) lies in the region's unsafe set."""
    assert result.status == "sat"
    cex = result.counterexample
    assert cex is not None, result.notes
    assert 0 <= cex.region_index < len(spec.regions)
    region = spec.regions[cex.region_index]
    x = np.asarray(cex.x, dtype=np.float64).reshape(-1)
    assert x.shape == (model.input_size,)
    assert np.all(x >= region.lower.numpy()) and np.all(x <= region.upper.numpy()), "counterexample outside its box"
    y = run_onnxruntime(model.graph, np.asarray(cex.x).reshape(1, *model.input_shape)).reshape(-1)
    y = torch.as_tensor(y.astype(np.float64))
    assert float(region.violation(y[None])[0]) <= 0.0, f"onnxruntime output {y.tolist()} is safe"
    np.testing.assert_allclose(np.asarray(cex.y, dtype=np.float64).reshape(-1), y.numpy(), rtol=1e-5, atol=1e-6)


def brute_force_min_violation(model, region: InputRegion, samples: int = 20000, restarts: int = 32,
                              steps: int = 100, seed: int = 0) -> tuple[float, torch.Tensor]:
    """Smallest ``region.violation`` found by uniform sampling (plus the box corners) and
    projected sign-gradient descent from the best samples; and the input reaching it."""
    gen = torch.Generator().manual_seed(seed)
    lo, hi = region.lower, region.upper
    n = lo.numel()
    x = lo + (hi - lo) * torch.rand(samples, n, generator=gen, dtype=F64)
    if n <= 10:
        bits = torch.cartesian_prod(*[torch.tensor([0.0, 1.0], dtype=F64)] * n).reshape(-1, n)
        x = torch.cat([x, lo + (hi - lo) * bits])
    with torch.no_grad():
        v = region.violation(model(x))
    best_v, best_i = v.min(0)
    best_v, best_x = float(best_v), x[best_i].clone()
    z = x[torch.argsort(v)[:restarts]].clone()
    width = hi - lo
    for step in range(steps):
        z.requires_grad_(True)
        vz = region.violation(model(z))
        (grad,) = torch.autograd.grad(vz.sum(), z)
        with torch.no_grad():
            k = int(vz.argmin())
            if float(vz[k]) < best_v:
                best_v, best_x = float(vz[k]), z[k].detach().clone()
            size = 0.1 * width * (1 + math.cos(math.pi * step / steps)) / 2 + 1e-7 * width
            z = torch.max(torch.min(z.detach() - size * grad.sign(), hi), lo)
    with torch.no_grad():
        vz = region.violation(model(z))
    k = int(vz.argmin())
    if float(vz[k]) < best_v:
        best_v, best_x = float(vz[k]), z[k].clone()
    return best_v, best_x


def lipschitz_l2(layers, c: np.ndarray) -> float:
    """An upper bound on the ℓ2 Lipschitz constant of ``c·f`` for a ReLU MLP (ReLU is
    1-Lipschitz): ``‖cᵀW_K‖₂ · Π ‖W_i‖₂``."""
    *hidden, (w_last, _) = layers
    bound = float(np.linalg.norm(c @ w_last))
    for w, _ in hidden:
        bound *= float(np.linalg.norm(w, 2))
    return bound


def rigorous_2d_minimum(model, layers, lo, hi, c, points: int = 401) -> tuple[float, float, np.ndarray]:
    """For a 2-input net: the minimum of ``c·f`` over a dense grid of the box (a true value),
    a proven lower bound on the minimum over the whole box (grid minimum minus Lipschitz
    constant times the largest distance to the grid), and the grid's minimiser."""
    lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    axes = [torch.linspace(float(lo[k]), float(hi[k]), points, dtype=F64) for k in range(2)]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 2)
    with torch.no_grad():
        v = model(grid) @ torch.as_tensor(c, dtype=F64)
    k = int(v.argmin())
    step = (hi - lo) / (points - 1)
    slack = lipschitz_l2(layers, np.asarray(c, dtype=np.float64)) * float(np.linalg.norm(step / 2))
    return float(v[k]), float(v[k]) - slack, grid[k].numpy()


# --- 1 & 2: agreement of the complete methods on small random nets ----------------------
@dataclass
class Case:
    model: verifier.Model
    spec: Spec
    bf_violation: float  # smallest violation found by brute force (≤ 0: a known violation)
    results: dict


SEEDS = list(range(16))
OFFSETS = (-0.05, -0.005, 0.005, 0.05)  # b − (brute-force minimum), in units of the output spread
_CASES: dict[int, Case] = {}


def agreement_case(tmp_dir: Path, seed: int) -> Case:
    if seed in _CASES:
        return _CASES[seed]
    rng = np.random.default_rng(1000 + seed)
    n_in, n_out = int(rng.integers(2, 5)), int(rng.integers(2, 4))
    widths = (n_in, int(rng.integers(6, 13)), int(rng.integers(6, 13)), n_out)
    relu_mlp(tmp_dir / f"agree{seed}.onnx", rng, widths)
    model = verifier.load(tmp_dir / f"agree{seed}.onnx")
    centre, half = rng.uniform(-1, 1, n_in), rng.uniform(0.1, 0.8, n_in)
    lo, hi = centre - half, centre + half
    i, j = (int(v) for v in rng.choice(n_out, 2, replace=False))
    probe = margin_spec(lo, hi, n_out, 0.0, i, j).regions[0]
    v_min, _ = brute_force_min_violation(model, probe, seed=seed)  # min of y_i − y_j (b = 0)
    with torch.no_grad():
        x = probe.lower + (probe.upper - probe.lower) * torch.rand(2000, n_in, dtype=F64,
                                                                   generator=torch.Generator().manual_seed(seed))
        spread = float(probe.violation(model(x)).max()) - v_min
    b = v_min + OFFSETS[seed % len(OFFSETS)] * max(spread, 1e-3)
    spec = margin_spec(lo, hi, n_out, b, i, j)
    bf_violation, _ = brute_force_min_violation(model, spec.regions[0], seed=seed + 1)
    results = {d: verify(model, spec, domain=d, timeout=30, attack=False) for d in COMPLETE}
    results["auto"] = verify(model, spec, domain="auto", timeout=30, attack=True, seed=seed)
    status, cex = relu_split_bab(model, spec.regions[0], Deadline(30))  # no MILP fallback
    results["relu-split-bab"] = VerificationResult(status, cex)
    _CASES[seed] = Case(model, spec, bf_violation, results)
    return _CASES[seed]


@pytest.fixture(scope="module")
def agree_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("agree")


@pytest.mark.parametrize("seed", SEEDS)
def test_complete_methods_agree_with_each_other_and_brute_force(agree_dir, seed):
    case = agreement_case(agree_dir, seed)
    statuses = {d: r.status for d, r in case.results.items()}
    # Small nets, generous time: the exact MILP and both branch-and-bounds decide.
    for d in (*COMPLETE, "relu-split-bab"):
        assert statuses[d] in DECIDED, (d, statuses, case.results[d].notes)
    decided = {d: s for d, s in statuses.items() if s in DECIDED}
    assert len(set(decided.values())) == 1, f"complete methods disagree: {statuses}"
    if case.bf_violation <= 0:  # a sampled input violates the property: never unsat
        assert "unsat" not in statuses.values(), statuses
    if "unsat" in decided.values():
        assert case.bf_violation > 0, "unsat, yet brute force found a violation"


@pytest.mark.parametrize("seed", SEEDS)
def test_every_sat_carries_an_onnxruntime_confirmed_counterexample(agree_dir, seed):
    case = agreement_case(agree_dir, seed)
    for domain, result in case.results.items():
        if result.status == "sat":
            check_counterexample(case.model, case.spec, result)
        else:
            assert result.counterexample is None, domain


def test_agreement_cases_cover_both_verdicts(agree_dir):
    verdicts = [agreement_case(agree_dir, s).results["milp"].status for s in SEEDS]
    assert verdicts.count("sat") >= 4 and verdicts.count("unsat") >= 4, verdicts
    # and brute force alone decides at least the sat ones whose threshold lies above its minimum
    assert sum(agreement_case(agree_dir, s).bf_violation <= 0 for s in SEEDS) >= 4
    # ReLU-splitting branch-and-bound is complete on its own (fully split subdomains are LPs)
    alone = [agreement_case(agree_dir, s).results["relu-split-bab"].status for s in SEEDS]
    assert all(v in DECIDED for v in alone), alone


# --- 3: the attack finds a counterexample ---------------------------------------------
def test_attack_finds_a_synthetic_counterexample(tmp_path):
    rng = np.random.default_rng(5)
    relu_mlp(tmp_path / "m.onnx", rng, (6, 16, 16, 3))
    model = verifier.load(tmp_path / "m.onnx")
    lo, hi = np.full(6, -0.5), np.full(6, 0.5)
    probe = margin_spec(lo, hi, 3, 0.0, 0, 2).regions[0]
    with torch.no_grad():
        x = probe.lower + (probe.upper - probe.lower) * torch.rand(5000, 6, dtype=F64,
                                                                   generator=torch.Generator().manual_seed(0))
        v = probe.violation(model(x))
    b = float(torch.quantile(v, 0.02))  # about 2% of the box is unsafe
    spec = margin_spec(lo, hi, 3, b, 0, 2)
    result = verify(model, spec, domain="box", attack=True, timeout=30, seed=3)
    assert result.status == "sat", result.notes
    assert any("counterexample in region 0" in n for n in result.notes)
    check_counterexample(model, spec, result)
    # Box bounds alone cannot produce "sat": the counterexample came from the attack.
    assert verify(model, spec, domain="box", attack=False, timeout=30).status == "unknown"


# --- 4: disjunctions and several input regions ----------------------------------------
@pytest.fixture(scope="module")
def net2d(tmp_path_factory):
    """A 2-input net with its layers and a proven-exact picture of ``y0 − y1`` on two boxes."""
    path = tmp_path_factory.mktemp("net2d") / "m.onnx"
    layers = relu_mlp(path, np.random.default_rng(21), (2, 10, 10, 3))
    model = verifier.load(path)
    c = np.array([1.0, -1.0, 0.0])
    boxes = [(np.array([-1.0, -1.0]), np.array([0.0, 0.0])), (np.array([0.0, 0.0]), np.array([1.0, 1.0]))]
    pictures = [rigorous_2d_minimum(model, layers, lo, hi, c) for lo, hi in boxes]
    return model, layers, boxes, pictures


def _sat_unsat_thresholds(picture) -> tuple[float, float]:
    grid_min, proven_min, _ = picture
    return grid_min + 0.02, proven_min - 0.02  # a grid point violates / provably none does


@pytest.mark.parametrize("expected", ["sat", "unsat"])
@pytest.mark.parametrize("easy_first", [True, False])
def test_disjunctive_spec(net2d, expected, easy_first):
    model, _, boxes, pictures = net2d
    lo, hi = boxes[0]
    sat_b, unsat_b = _sat_unsat_thresholds(pictures[0])
    b = sat_b if expected == "sat" else unsat_b
    with torch.no_grad():
        y_max = verifier.compute_bounds(model, _t(lo), _t(hi), domain="box")[1][0]
    easy = Conjunction(torch.tensor([[0.0, 0.0, -1.0]], dtype=F64), -(y_max[2:3] + 10.0))  # y2 ≥ ub(y2) + 10
    hard = margin_conj(3, b)
    disjuncts = [easy, hard] if easy_first else [hard, easy]
    region = InputRegion(_t(lo), _t(hi), disjuncts)
    spec = Spec([region], 2, 3, "disjunctive")
    for domain in ("relu-split", "milp", "input-split"):
        result = verify(model, spec, domain=domain, timeout=30, attack=False)
        assert result.status == expected, (domain, result.notes)
        if expected == "sat":
            check_counterexample(model, spec, result)
            y = torch.as_tensor(np.asarray(result.counterexample.y, dtype=np.float64)).reshape(1, -1)
            assert float(hard.violation(y)[0]) <= 0 and float(easy.violation(y)[0]) > 0
    # The complete procedures themselves, past verify's root refutation. ReLU-splitting
    # branch-and-bound alone may answer "unknown" (a fully split subdomain left open: verify
    # then falls back to the MILP), but never the wrong verdict, and it closes the easy disjunct.
    root, _ = root_intermediate_bounds(model, region, "cpu", F64)
    hard_index, easy_index = (1, 0) if easy_first else (0, 1)
    status, cex = relu_split_bab(model, region, Deadline(30))
    assert status in (expected, "unknown")
    assert (cex is not None) == (status == "sat")
    if cex is not None:
        assert float(hard.violation(torch.as_tensor(cex.y, dtype=F64).reshape(1, -1))[0]) <= 0
    assert relu_split_bab(model, region, Deadline(30), disjuncts=[easy_index])[0] == "unsat"
    assert milp_disjunct(model, region, easy_index, root, time_limit=30)[0] == "unsat"
    status, cex = milp_disjunct(model, region, hard_index, root, time_limit=30)
    assert status == expected
    if cex is not None:
        assert float(hard.violation(torch.as_tensor(cex.y, dtype=F64).reshape(1, -1))[0]) <= 0


@pytest.mark.parametrize("domain", ["relu-split", "milp", "input-split"])
def test_spec_with_two_input_regions(net2d, domain):
    model, _, boxes, pictures = net2d
    # region 0 safe (provably), region 1 unsafe: sat, with the counterexample in region 1
    _, unsat_0 = _sat_unsat_thresholds(pictures[0])
    sat_1, unsat_1 = _sat_unsat_thresholds(pictures[1])
    regions = [InputRegion(_t(boxes[0][0]), _t(boxes[0][1]), [margin_conj(3, unsat_0)]),
               InputRegion(_t(boxes[1][0]), _t(boxes[1][1]), [margin_conj(3, sat_1)])]
    spec = Spec(regions, 2, 3, "two regions")
    result = verify(model, spec, domain=domain, timeout=30, attack=False)
    assert result.status == "sat", result.notes
    assert result.counterexample.region_index == 1
    check_counterexample(model, spec, result)
    # both regions safe: unsat
    regions[1] = InputRegion(_t(boxes[1][0]), _t(boxes[1][1]), [margin_conj(3, unsat_1)])
    result = verify(model, Spec(regions, 2, 3, "two safe regions"), domain=domain, timeout=30, attack=False)
    assert result.status == "unsat", result.notes


def test_many_small_regions_are_screened_together(net2d):
    """A spec of many small boxes (a learned index's 1,200 one-dimensional regions): one
    batched CROWN pass refutes the safe ones, the unsafe one is still found and confirmed,
    and the verdicts equal those of the regions taken one by one."""
    model, _, boxes, pictures = net2d
    _, unsat_0 = _sat_unsat_thresholds(pictures[0])
    sat_1, _ = _sat_unsat_thresholds(pictures[1])
    lo, hi = boxes[0]
    edges = np.linspace(0.0, 1.0, 13)
    tiles = [(lo + (hi - lo) * np.array([a, b]), lo + (hi - lo) * np.array([a2, b2]))
             for a, a2 in zip(edges[:-1], edges[1:]) for b, b2 in zip(edges[:-1], edges[1:])]
    safe = [InputRegion(_t(t_lo), _t(t_hi), [margin_conj(3, unsat_0)] * (1 + i % 3)) for i, (t_lo, t_hi) in enumerate(tiles)]
    result = verify(model, Spec(safe, 2, 3, "144 safe tiles"), domain="auto", timeout=60, attack=False)
    assert result.status == "unsat", result.notes
    assert "regions 0-143 refuted by one batched crown pass (144/144)" in result.notes, result.notes
    unsafe = safe + [InputRegion(_t(boxes[1][0]), _t(boxes[1][1]), [margin_conj(3, sat_1)])]
    result = verify(model, Spec(unsafe, 2, 3, "144 safe tiles and an unsafe box"), domain="auto", timeout=60)
    assert result.status == "sat" and result.counterexample.region_index == len(safe)
    check_counterexample(model, Spec(unsafe, 2, 3, ""), result)


# --- 5: timeouts ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def hard_instance(tmp_path_factory):
    """mnist-net_256x4 with prop_0_0.05 (unsat; tens of seconds for the best VNN-COMP tools)
    when the shared benchmarks are present, else a wide random 784-input net."""
    root = benchmarks_dir()
    if root is not None and (root / "mnist_fc" / "onnx" / "mnist-net_256x4.onnx").exists():
        model = verifier.load(root / "mnist_fc" / "onnx" / "mnist-net_256x4.onnx", check=False)
        return model, read_vnnlib(root / "mnist_fc" / "vnnlib" / "prop_0_0.05.vnnlib")
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("hard") / "wide.onnx"
    relu_mlp(path, rng, (784, 256, 256, 256, 10))
    model = verifier.load(path)
    centre = torch.as_tensor(rng.uniform(0.2, 0.8, 784))
    with torch.no_grad():
        label = int(model(centre[None])[0].argmax())
    return model, linf_robustness_spec(centre, label, 0.01, 10, clip=(0.0, 1.0))  # CROWN refutes 5 of 9


@pytest.mark.parametrize("domain,attack", [("auto", True), ("relu-split", False), ("milp", False)])
def test_timeout_is_honoured(hard_instance, domain, attack):
    model, spec = hard_instance
    timeout = 2.0
    start = time.monotonic()
    result = verify(model, spec, domain=domain, timeout=timeout, attack=attack)
    wall = time.monotonic() - start
    assert result.status == "timeout", (result.status, result.notes)
    assert result.counterexample is None
    assert result.seconds < timeout + 1.0, result.seconds
    assert wall < timeout + 1.0, wall


# --- 6: expected-sat VNN-COMP instances are never claimed unsat ------------------------
def _expected_sat_rows() -> list[tuple[str, dict]]:
    mnist = [("mnist_fc", r) for r in instances("mnist_fc")
             if r["expected"] == "sat" and r["onnx"].endswith("mnist-net_256x2.onnx")]
    acas = [("acasxu", r) for r in instances("acasxu") if r["expected"] == "sat"]
    by_prop: dict[str, tuple[str, dict]] = {}
    for item in acas:  # one row per property, then fill up with prop_2 rows
        by_prop.setdefault(item[1]["vnnlib"], item)
    chosen = list(by_prop.values())
    chosen += [item for item in acas if item not in chosen][: max(0, 5 - len(chosen))]
    return mnist + chosen[:5]


@pytest.mark.parametrize("item", _expected_sat_rows(),
                         ids=lambda it: f"{it[0]}-{Path(it[1]['onnx']).stem[-20:]}-{Path(it[1]['vnnlib']).stem}")
def test_expected_sat_instances_are_never_unsat(bench, item):
    benchmark, row = item
    model = verifier.load(bench / benchmark / row["onnx"], check=False)
    spec = read_vnnlib(bench / benchmark / row["vnnlib"])
    result = verify(model, spec, timeout=10)
    assert result.status != "unsat", result.notes
    assert result.status in ("sat", "unknown", "timeout")
    if result.status == "sat":
        check_counterexample(model, spec, result)


# --- 7: the MILP closes what CROWN leaves open -------------------------------------------
def test_milp_proves_what_crown_cannot(tmp_path):
    """A threshold between α-CROWN's lower bound (so CROWN's too) and a proven lower bound
    of the true minimum: unsat, and only the MILP can tell."""
    c = np.array([1.0, -1.0])
    lo, hi = np.array([-1.0, -1.0]), np.array([1.0, 1.0])
    for seed in range(40):
        rng = np.random.default_rng(300 + seed)
        path = tmp_path / f"m{seed}.onnx"
        layers = relu_mlp(path, rng, (2, 12, 12, 2))
        model = verifier.load(path)
        grid_min, proven_min, _ = rigorous_2d_minimum(model, layers, lo, hi, c)
        lb, _ = verifier.compute_bounds(model, _t(lo)[None], _t(hi)[None], domain="crown",
                                        C=torch.as_tensor(c)[None])
        crown_lb = float(lb[0, 0])
        assert crown_lb <= grid_min + 1e-9  # CROWN is sound
        probe = margin_spec(lo, hi, 2, 0.0).regions[0]
        _, alpha_lb = root_intermediate_bounds(model, probe, "cpu", F64)
        alpha_lb = float(alpha_lb[0])
        assert crown_lb - 1e-9 <= alpha_lb <= grid_min + 1e-9
        if proven_min - alpha_lb > 0.05:  # room for a threshold neither can refute
            break
    else:
        pytest.fail("no seed where α-CROWN is loose")
    b = (alpha_lb + proven_min) / 2  # alpha_lb < b < true minimum: unsat
    spec = margin_spec(lo, hi, 2, b)
    assert verify(model, spec, domain="crown", attack=False).status == "unknown"
    assert verify(model, spec, domain="alpha-crown", attack=False).status == "unknown"
    result = verify(model, spec, domain="milp", attack=False, timeout=30)
    assert result.status == "unsat", result.notes
    assert any("MILP" in n for n in result.notes), result.notes  # decided by the MILP, not α-CROWN
    # milp_disjunct directly, with CROWN's own (looser) intermediate bounds as big-M
    region = spec.regions[0]
    crown_inter = get_domain("crown").intermediate_bounds(
        model.graph_for("cpu", F64), model.as_batch(region.lower), model.as_batch(region.upper))
    assert milp_disjunct(model, region, 0, crown_inter, time_limit=30)[0] == "unsat"
    # just above the grid minimum (a true value) the same MILP finds the violation
    sat_spec = margin_spec(lo, hi, 2, grid_min + 1e-3)
    result = verify(model, sat_spec, domain="milp", attack=False, timeout=30)
    assert result.status == "sat", result.notes
    check_counterexample(model, sat_spec, result)
