"""Proof certificates (``verify --proof``) and the independent checker (``check-proof``):
certificates of unsat on small ReLU nets check (input splitting, ReLU splitting; MILP
parts: test_proof_milp.py); every single-value perturbation of one is rejected; the
checker's arithmetic rounds outward; the checker imports nothing from the search."""

from __future__ import annotations

import ast
import io
import os
import zipfile
import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from cli_helpers import assert_refused, run
from onnx_builders import GraphBuilder, save_model
from proof_helpers import certify, conv_net, read_archive, relu_net, robustness_spec, write_archive
from verifier.proofcheck.check import ProofRefused, check_proof, covers
from verifier.proofcheck import rounding

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("proofs")


@pytest.fixture(scope="module")
def input_split(work):
    """3 inputs, 15 boxes bounded by input splitting."""
    model = relu_net(work, 0, 3, [10, 10])
    spec = robustness_spec(work / "in.vnnlib", model, 0, 3, 0.6)
    status, index = certify(model, spec, str(work / "in.proof"), "input-split")
    assert status == "unsat" and index["certified"]
    return model, spec, str(work / "in.proof")


@pytest.fixture(scope="module")
def relu_split(work):
    """8 inputs, two hidden layers of 20: α-CROWN leaves disjuncts open, β-CROWN splits
    (hundreds of subdomains, some closed with nonzero β)."""
    model = relu_net(work, 4, 8, [20, 20])
    spec = robustness_spec(work / "relu.vnnlib", model, 4, 8, 0.15)
    status, index = certify(model, spec, str(work / "relu.proof"), "relu-split")
    assert status == "unsat" and index["certified"]
    return model, spec, str(work / "relu.proof")


def _leaf_disjunct(arrays):
    return next(k for k in arrays if k.endswith(".signs")).rsplit(".", 1)[0]


def test_input_split_certificate_checks(input_split):
    report = check_proof(*input_split)
    assert report.valid, report.message
    assert report.message == "proof valid" and report.leaves > 1 and not report.trusted
    index, arrays = read_archive(input_split[2])
    assert index["regions"][0]["kind"] == "box-tree" and (arrays["r0.tree.dim"] >= 0).sum() == report.leaves - 1


def test_relu_split_certificate_checks(relu_split):
    report = check_proof(*relu_split)
    assert report.valid, report.message
    assert report.leaves > 100
    # subdomains with every ReLU fixed that an LP closed are named, not re-derived
    assert all("closed by a HiGHS LP" in item for item in report.trusted)
    index, arrays = read_archive(relu_split[2])
    entry = index["regions"][0]
    assert entry["kind"] == "relu-split" and entry["intermediate"]  # α-CROWN's intermediate slopes are recorded
    key = _leaf_disjunct(arrays)
    every = np.concatenate([arrays[f"{key}.signs"], arrays.get(f"{key}.trusted", np.zeros((0, 40), np.int8))])
    assert covers(every) and not covers(every[1:])


def test_float32_searches_are_certified(work, input_split):
    """Bounds computed in float32 are claims of float32 precision; the checker's own
    float64 outward-rounded bounds still close every leaf (the verifier's refutation margin
    covers float32 rounding here)."""
    model, spec, _ = input_split
    status, index = certify(model, spec, str(work / "f32.proof"), "input-split", dtype=torch.float32)
    assert status == "unsat" and index["claims_dtype"] == "float32"
    report = check_proof(model, spec, str(work / "f32.proof"))
    assert report.valid, report.message


def test_a_spec_of_two_regions_is_certified_region_by_region(work, input_split):
    """One region closed on its whole box (the batched screen), one by input splitting."""
    import verifier

    model = input_split[0]
    x0 = np.random.default_rng(100).uniform(-1, 1, 3)
    label = int(verifier.load(model, check=False)(torch.tensor(x0)[None]).detach().numpy()[0].argmax())

    def box(eps):
        return "(and " + " ".join(f"(>= X_{i} {float(x0[i] - eps)!r}) (<= X_{i} {float(x0[i] + eps)!r})"
                                  for i in range(3)) + ")"

    lines = [f"(declare-const X_{i} Real)" for i in range(3)] + [f"(declare-const Y_{j} Real)" for j in range(3)]
    lines += [f"(assert (or {box(0.1)} {box(0.6)}))",
              "(assert (or " + " ".join(f"(and (>= Y_{j} Y_{label}))" for j in range(3) if j != label) + "))"]
    (work / "two.vnnlib").write_text("\n".join(lines) + "\n")
    status, index = certify(model, str(work / "two.vnnlib"), str(work / "two.proof"), "auto")
    assert status == "unsat" and [(e["kind"], e["nodes"] > 1) for e in index["regions"]] == [("box-tree", False),
                                                                                              ("box-tree", True)]
    report = check_proof(model, str(work / "two.vnnlib"), str(work / "two.proof"))
    assert report.valid, report.message


def test_conv_net_certificate_checks(work):
    model = conv_net(work, 0)
    spec = robustness_spec(work / "conv.vnnlib", model, 0, 36, 0.16)
    status, index = certify(model, spec, str(work / "conv.proof"), "auto")
    assert status == "unsat" and index["certified"] and index["regions"][0]["kind"] == "relu-split"
    report = check_proof(model, spec, str(work / "conv.proof"))
    assert report.valid and report.leaves > 0, report.message


@pytest.mark.parametrize("C,H,W,M,k,stride,pad,group,dilation",
                         [(3, 7, 6, 4, 3, 2, 1, 1, 1), (4, 6, 6, 4, 2, 1, 0, 2, 1), (2, 8, 8, 3, 3, 1, 2, 1, 2)])
def test_the_checker_reads_convolutions_as_onnxruntime_runs_them(work, C, H, W, M, k, stride, pad, group, dilation):
    import onnxruntime as ort

    from verifier.proofcheck.network import load_network

    rng = np.random.default_rng(C + H)
    g = GraphBuilder(rng, (1, C, H, W))
    h = g.op("Conv", g.x, g.weight(M, C // group, k, k), g.rand(M), strides=[stride, stride],
             pads=[pad, pad, pad + 1, pad], group=group, dilations=[dilation, dilation])
    path = str(save_model(g.model(g.op("Flatten", g.op("Relu", h))), work))
    x = rng.normal(size=(4, C, H, W)).astype(np.float32)
    session = ort.InferenceSession(path)
    expected = np.concatenate([session.run(None, {"x": x[i:i + 1]})[0] for i in range(4)]).reshape(4, -1)
    v = x.reshape(4, -1).astype(np.float64)
    for op in load_network(path).ops:
        v = v @ op.value.T if op.kind == "linear" else v + op.value if op.kind == "shift" else np.maximum(v, 0.0)
    assert np.allclose(v, expected, atol=1e-5)


def test_covers_is_an_exact_case_split():
    full = np.array([[1, 0, 0], [-1, 1, 0], [-1, -1, 1], [-1, -1, -1]], np.int8)
    assert covers(full)
    for i in range(len(full)):
        assert not covers(np.delete(full, i, 0))
    assert covers(np.zeros((1, 3), np.int8)) and not covers(np.zeros((0, 3), np.int8))
    assert covers(np.array([[1, 1], [1, -1], [-1, 0]], np.int8))  # splits in another order
    assert not covers(np.array([[1, 1], [-1, -1]], np.int8))


def _perturbed(source: str, target: Path, change) -> str:
    index, arrays = read_archive(source)
    change(index, arrays)
    return write_archive(str(target), index, arrays)


def _set(arrays, key, where, value):
    a = arrays[key].copy()
    a[where] = value
    arrays[key] = a


def _inner(values: np.ndarray):
    """The first entry strictly inside (0, 1) (a slope the optimiser moved)."""
    hits = np.argwhere((values > 1e-3) & (values < 1 - 1e-3))
    assert len(hits), "no optimised slope to perturb"
    return tuple(hits[0])


def _positive(values: np.ndarray):
    hits = np.argwhere(values > 1e-6)
    assert len(hits), "no multiplier to perturb"
    return tuple(hits[0])


INPUT_SPLIT_PERTURBATIONS = {
    "a split turned into a leaf": lambda i, a: _set(a, "r0.tree.dim", 0, -1),
    "a leaf dropped": lambda i, a: _set(a, "r0.tree.right", 0, -1),
    "a split point moved off its box": lambda i, a: _set(a, "r0.tree.mid", 0, 10.0),
    "a leaf's bound raised": lambda i, a: _set(a, "r0.tree.claims", tuple(np.argwhere(~np.isnan(a["r0.tree.claims"]))[0]),
                                             a["r0.tree.claims"][~np.isnan(a["r0.tree.claims"])][0] + 1.0),
    "a leaf's claim 1e300": lambda i, a: _set(a, "r0.tree.claims", tuple(np.argwhere(~np.isnan(a["r0.tree.claims"]))[0]),
                                            1e300),
    "a claim on a split node": lambda i, a: _set(a, "r0.tree.claims", (0, 0), 0.0),
    "a leaf's claim +inf": lambda i, a: _set(a, "r0.tree.claims", tuple(np.argwhere(~np.isnan(a["r0.tree.claims"]))[0]),
                                           np.inf),
}


@pytest.mark.parametrize("name", sorted(INPUT_SPLIT_PERTURBATIONS))
def test_input_split_perturbations_are_rejected(work, input_split, name):
    model, spec, proof = input_split
    bad = _perturbed(proof, work / f"in-{name.replace(' ', '_')}.proof", INPUT_SPLIT_PERTURBATIONS[name])
    report = check_proof(model, spec, bad)
    assert not report.valid and report.message.startswith("proof invalid: "), report.message


def _drop_leaf(index, arrays):
    key = _leaf_disjunct(arrays)
    for name in ("signs", "alpha", "beta", "lower"):
        arrays[f"{key}.{name}"] = arrays[f"{key}.{name}"][1:]
    d = int(key.rsplit(".d", 1)[1])
    next(item for item in index["regions"][0]["disjuncts"] if item["index"] == d)["leaves"] -= 1


def _leaf(name):
    def change(index, arrays):
        key = f"{_leaf_disjunct(arrays)}.{name}"
        if name == "alpha":
            _set(arrays, key, _inner(arrays[key]), 50.0)
        elif name == "beta":
            where = _positive(arrays[key])
            _set(arrays, key, where, arrays[key][where] * 100 + 10)
        elif name == "lower":
            _set(arrays, key, (0, 0), arrays[key][0, 0] + 1.0)
        elif name == "lower 1e300":
            _set(arrays, f"{_leaf_disjunct(arrays)}.lower", (0, 0), 1e300)
        else:  # a split sign flipped
            where = tuple(np.argwhere(arrays[key] != 0)[0])
            _set(arrays, key, where, -arrays[key][where])
    return change


def _root_claim(index, arrays):
    l, u = arrays["r0.claims.l1"], arrays["r0.claims.u1"]
    j = int(np.argmax((l < 0) & (u > 0)))
    _set(arrays, "r0.claims.l1", j, (l[j] + u[j]) / 2)


def _inter_slope(index, arrays):
    t = index["regions"][0]["intermediate"][-1]
    key = f"r0.inter{t}.alpha0"
    _set(arrays, key, _inner(arrays[key]), -50.0)


RELU_SPLIT_PERTURBATIONS = {
    "a leaf dropped": _drop_leaf,
    "a leaf's slope": _leaf("alpha"),
    "a leaf's split multiplier": _leaf("beta"),
    "a leaf's bound raised": _leaf("lower"),
    "a leaf's claim 1e300": _leaf("lower 1e300"),
    "a leaf's split sign flipped": _leaf("signs"),
    "a root intermediate bound tightened": _root_claim,
    "an intermediate pass's slope": _inter_slope,
}


@pytest.mark.parametrize("name", sorted(RELU_SPLIT_PERTURBATIONS))
def test_relu_split_perturbations_are_rejected(work, relu_split, name):
    model, spec, proof = relu_split
    bad = _perturbed(proof, work / f"relu-{name.replace(' ', '_')}.proof", RELU_SPLIT_PERTURBATIONS[name])
    report = check_proof(model, spec, bad)
    assert not report.valid and report.message.startswith("proof invalid: region 0"), report.message


def test_a_certificate_for_another_model_or_spec_is_refused(work, input_split, relu_split):
    with pytest.raises(ProofRefused, match="certifies the model"):
        check_proof(relu_split[0], input_split[1], input_split[2])
    with pytest.raises(ProofRefused, match="certifies the spec"):
        check_proof(input_split[0], relu_split[1], input_split[2])
    (work / "junk.proof").write_bytes(b"not a zip")
    with pytest.raises(ProofRefused, match="not a proof certificate"):
        check_proof(*input_split[:2], str(work / "junk.proof"))


def test_other_activations_are_not_certified(work):
    model = relu_net(work, 3, 3, [6], activation="Sigmoid")
    spec = robustness_spec(work / "sig.vnnlib", model, 3, 3, 0.01)
    status, index = certify(model, spec, str(work / "sig.proof"), "auto")
    assert status == "unsat" and not index["certified"]
    assert any("Sigmoid" in reason for reason in index["uncertified"])
    report = check_proof(model, spec, str(work / "sig.proof"))
    assert not report.valid and "Sigmoid" in report.message


def test_cli_verify_proof_and_check_proof(work, input_split, capsys):
    model, spec, _ = input_split
    proof = work / "cli.proof"
    code, out, err = run(capsys, "verify", model, spec, "--method", "input-split", "--proof", proof, "--no-cache")
    assert code == 0 and "result: unsat" in out and f"proof: {proof}" in out, (out, err)
    code, out, err = run(capsys, "check-proof", model, spec, proof)
    assert code == 0 and out.strip().endswith("proof valid"), (out, err)
    bad = _perturbed(str(proof), work / "cli-bad.proof", INPUT_SPLIT_PERTURBATIONS["a split turned into a leaf"])
    code, out, err = run(capsys, "check-proof", model, spec, bad)
    assert code == 1 and "proof invalid: region 0" in out
    other = shutil.copy(model, work / "other.onnx")
    Path(other).write_bytes(Path(model).read_bytes() + b"\0")
    assert_refused(*run(capsys, "check-proof", other, spec, proof), "certifies the model")
    assert_refused(*run(capsys, "verify", model, spec, "--proof", work / "no" / "such" / "dir.proof"), "--proof")


def test_outward_rounding_encloses_exact_values():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 40)) * 10.0 ** rng.integers(-8, 8, size=(3, 40))
    b = rng.normal(size=(40, 5))
    exact = [[sum(Fraction(x) * Fraction(y) for x, y in zip(a[i], b[:, j])) for j in range(5)] for i in range(3)]
    lo, hi = rounding.matmul_down(a, b), rounding.matmul_up(a, b)
    for i in range(3):
        for j in range(5):
            assert Fraction(lo[i, j]) <= exact[i][j] <= Fraction(hi[i, j])
    t = a[0]
    exact_sum = sum(Fraction(x) for x in t)
    assert Fraction(rounding.sum_down(t)) <= exact_sum <= Fraction(rounding.sum_up(t))
    x, y = a[1], a[2]
    for k in range(40):
        product = Fraction(x[k]) * Fraction(y[k])
        assert Fraction(rounding.mul_down(x[k], y[k])) <= product <= Fraction(rounding.mul_up(x[k], y[k]))
    tiny = np.array([5e-324, -5e-324, 1e-310])
    assert np.all(rounding.down(tiny) < tiny) and np.all(rounding.up(tiny) > tiny)


def test_relu_terms_skip_only_exact_zeros_and_stay_below_the_exact_minimum():
    from verifier.proofcheck.bounds import Relaxation, relu_term

    rng = np.random.default_rng(1)
    B, R, n = 3, 4, 12
    l = rng.normal(size=(B, n))
    u = l + rng.uniform(0, 2, size=(B, n))
    L = rng.normal(size=(B, R, n))
    relax = Relaxation({0: (l, u)})
    P = relax.multipliers(0, L)
    zero = relax.exact_zero(0, l, u)
    assert zero.any() and not zero.all()
    sparse, dense = relu_term(L, P, l, u, zero), relu_term(L, P, l, u)
    assert np.allclose(sparse, dense, atol=1e-12)
    for b in range(B):
        for r in range(R):
            exact = sum(min(Fraction(L[b, r, j]) * max(Fraction(z), 0) - Fraction(P[b, r, j]) * Fraction(z)
                            for z in [l[b, j], u[b, j]] + ([0.0] if l[b, j] < 0 < u[b, j] else [])) for j in range(n))
            assert Fraction(sparse[b, r]) <= exact and Fraction(dense[b, r]) <= exact



@pytest.mark.parametrize("scale", [1.0, 1e-300, 1e-320, 1e150])
def test_crossing_step_gives_the_multipliers_and_a_term_below_the_exact_minimum(scale):
    from verifier.proofcheck.bounds import Relaxation, relu_term

    rng = np.random.default_rng(2)
    B, R, n = 3, 4, 12
    l = rng.normal(size=(B, n)) * scale
    u = l + rng.uniform(0, 2, size=(B, n)) * scale
    L = rng.normal(size=(B, R, n))
    for alpha in (None, rng.uniform(0, 1, size=(B, R, n))):
        relax = Relaxation({0: (l, u)}, alpha=None if alpha is None else {0: alpha})
        prev, term, contracts = relax.crossing_step(0, L, l, u)
        assert np.array_equal(prev, relax.multipliers(0, L))
        assert contracts and np.all(np.abs(prev) <= np.abs(L))
        scratch = L.copy()
        again = relax.crossing_step(0, scratch, l, u, reuse=True)
        assert again[0] is scratch and np.array_equal(again[0], prev) and np.array_equal(again[1], term)
        generic = relu_term(L, prev, l, u, relax.exact_zero(0, l, u))
        assert np.allclose(term, generic, rtol=1e-12, atol=1e-300 * scale)
        for b in range(B):
            for r in range(R):
                exact = sum(min(Fraction(L[b, r, j]) * max(Fraction(z), 0) - Fraction(prev[b, r, j]) * Fraction(z)
                                for z in [l[b, j], u[b, j]] + ([0.0] if l[b, j] < 0 < u[b, j] else []))
                            for j in range(n))
                assert Fraction(term[b, r]) <= exact and Fraction(generic[b, r]) <= exact
    steep = Relaxation({0: (l, u)}, alpha={0: np.full((B, R, n), 1.5)})
    assert not steep.crossing_step(0, L, l, u)[2]  # a slope above 1 may grow |λ|: its maxima are recomputed
    split = Relaxation({0: (l, u)}, signs={0: np.sign(rng.normal(size=(B, n)))})
    assert split.crossing_step(0, L, l, u) is None  # split ReLUs take the general path


def test_crown_bounds_contain_sampled_values_and_unit_rows_match_the_matrix_product(work):
    from verifier.proofcheck.bounds import Relaxation, crown_bounds, lagrangian_bound
    from verifier.proofcheck.network import load_network

    net = load_network(str(relu_net(work, 5, 4, [16, 16, 16])))
    rng = np.random.default_rng(3)
    lo = rng.uniform(-1, 0.5, size=(6, 4))
    hi = lo + rng.uniform(0.05, 1.0, size=(6, 4))
    bounds = crown_bounds(net, lo, hi)
    x = lo[:, None, :] + rng.uniform(size=(6, 500, 4)) * (hi - lo)[:, None, :]
    v = x
    for i, op in enumerate(net.ops):
        l, u = bounds[i]
        assert np.all((l[:, None, :] <= v) & (v <= u[:, None, :]))
        v = {"linear": lambda v: v @ op.value.T, "shift": lambda v: v + op.value,
             "relu": lambda v: np.maximum(v, 0.0)}[op.kind](v)
    node = net.relu_inputs[-1]
    rows = np.tile(np.arange(net.sizes[node]), (6, 1))
    lam = np.zeros((6, 2 * rows.shape[1], net.sizes[node]))
    lam[:, np.arange(rows.shape[1]), rows[0]], lam[:, rows.shape[1] + np.arange(rows.shape[1]), rows[0]] = 1.0, -1.0
    relax = Relaxation({r: bounds[i] for r, i in enumerate(net.relu_inputs)})
    plain = lagrangian_bound(net, node, lam, bounds, relax)
    unit = lagrangian_bound(net, node, lam, bounds, relax, unit=np.concatenate([rows, rows], 1))
    assert np.all(unit >= plain) and np.allclose(unit, plain, rtol=1e-12, atol=1e-12)


def test_refinement_passes_group_every_box_with_crossing_entries_once():
    from verifier.proofcheck.bounds import PASS_ROWS, _count_groups

    counts = np.sort(np.random.default_rng(4).integers(0, 40, size=300))
    runs = _count_groups(counts)
    covered = np.concatenate([np.arange(a, b) for a, b, _ in runs])
    assert np.array_equal(covered, np.nonzero(counts > 0)[0])  # each box once, the zero-count ones left out
    assert all(R == counts[b - 1] for _, b, R in runs)
    assert len(runs) > 1 and _count_groups(np.zeros(5, int)) == []
    assert len(_count_groups(np.full(50, 7))) == 1 and len(_count_groups(np.array([1, PASS_ROWS]))) == 2

ALLOWED = {"__future__", "numpy", "onnx", "json", "hashlib", "zipfile", "io", "ctypes", "re", "contextlib", "typing",
           "time", "dataclasses", "math", "os", "stat", "zlib"}


def test_the_checker_imports_nothing_from_the_search():
    for path in sorted((REPO / "verifier" / "proofcheck").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level == 1:
                    continue  # the checker's own modules
                names = [("." * node.level) + (node.module or "")]
            else:
                continue
            for name in names:
                assert name.split(".")[0] in ALLOWED or name == "..spec", f"{path.name} imports {name}"


# --- a PROOF argument that is not a certificate: refused, never a hang or a traceback ---------
def _proof_refused(capsys, model, spec, proof) -> str:
    code, out, err = run(capsys, "check-proof", model, spec, proof)
    assert code == 2 and "proof valid" not in out and err.startswith("error: ") and len(err.splitlines()) == 1, err
    return err


def test_a_folder_or_fifo_as_proof_is_refused_without_blocking(tmp_path, capsys):
    model = relu_net(tmp_path, 0, 2, [4])
    spec = robustness_spec(tmp_path / "s.vnnlib", model, 0, 2, 0.01)
    assert "is a folder" in _proof_refused(capsys, model, spec, tmp_path)
    fifo = tmp_path / "proof.fifo"
    os.mkfifo(fifo)
    assert "not a regular file" in _proof_refused(capsys, model, spec, fifo)
    loop = tmp_path / "loop.proof"
    os.symlink(loop, loop)
    assert "symbolic link loop" in _proof_refused(capsys, model, spec, loop)
    assert "no such file" in _proof_refused(capsys, model, spec, tmp_path / "absent.proof")


def test_hostile_members_are_refused(tmp_path, capsys):
    """An index nested beyond Python's recursion limit, and an array whose header declares
    10^12 values (np.load would allocate them): errors naming the problem, not exit 3."""
    model = relu_net(tmp_path, 0, 2, [4])
    spec = robustness_spec(tmp_path / "s.vnnlib", model, 0, 2, 0.01)
    deep = tmp_path / "deep.proof"
    with zipfile.ZipFile(deep, "w") as zf:
        zf.writestr("index.json", "[" * 100_000 + "]" * 100_000)
    assert "nested too deeply" in _proof_refused(capsys, model, spec, deep)
    proof = tmp_path / "p.proof"
    status, index = certify(model, spec, str(proof), "box")
    assert status == "unsat"
    index, arrays = read_archive(str(proof))
    key = sorted(arrays)[0]
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (10 ** 12,)})
    huge = tmp_path / "huge.proof"
    with zipfile.ZipFile(proof) as src, zipfile.ZipFile(huge, "w") as dst:
        for name in src.namelist():
            dst.writestr(name, header.getvalue() if name == f"{key}.npy" else src.read(name))
    err = _proof_refused(capsys, model, spec, huge)
    assert str(huge) in err and "declares" in err and "give the certificate verify --proof wrote" in err, err
    damaged = tmp_path / "damaged.proof"  # a member's stored bytes changed: its CRC (or deflate stream) fails
    with zipfile.ZipFile(proof) as src, zipfile.ZipFile(damaged, "w", compression=zipfile.ZIP_STORED) as dst:
        for name in src.namelist():
            dst.writestr(name, src.read(name))
    raw = bytearray(damaged.read_bytes())
    at = raw.index(b"\x93NUMPY") + 60  # inside the first array's stored data
    raw[at] ^= 0xFF
    damaged.write_bytes(bytes(raw))
    err = _proof_refused(capsys, model, spec, damaged)
    assert str(damaged) in err and "cannot be read" in err, err


def test_a_one_leaf_certificate_with_a_made_up_claim_is_rejected(tmp_path):
    """A verdict of one Box pass has one leaf and no claim (NaN); a claim written into it
    (1e300, which no bound reaches) is rejected, not ignored."""
    model = relu_net(tmp_path, 0, 2, [4])
    spec = robustness_spec(tmp_path / "s.vnnlib", model, 0, 2, 0.01)
    status, _ = certify(model, spec, str(tmp_path / "p.proof"), "box")
    assert status == "unsat"
    index, arrays = read_archive(str(tmp_path / "p.proof"))
    assert check_proof(model, spec, str(tmp_path / "p.proof")).valid
    arrays["r0.tree.claims"] = np.full_like(arrays["r0.tree.claims"], 1e300)  # (1, 1): not one per row
    with pytest.raises(ProofRefused, match="malformed certificate: region 0: tree arrays of different lengths"):
        check_proof(model, spec, write_archive(str(tmp_path / "q.proof"), index, arrays))
    arrays["r0.tree.claims"] = np.full((1, 2), 1e300)  # one per row: well-formed, not reached
    report = check_proof(model, spec, write_archive(str(tmp_path / "q2.proof"), index, arrays))
    assert not report.valid and "below the certificate's claim" in report.message, report.message
