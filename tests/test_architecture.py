"""The layout the design promises: one walk per direction, imports one way, no private
names across modules, capabilities asked through ``supports``, a new elementwise op
handled by every domain from its registered entries alone, and ``--method``."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import onnx.helper as oh
import pytest
import torch

import verifier
from verifier.cli import main
from verifier.complete.methods import METHODS
from verifier.domains import DOMAINS
from verifier.engine import evaluate
from verifier.ops import FORWARD, MONOTONE_KINDS
from verifier.ops.relaxation import RELAXATIONS, Band, Relaxation, band_lines

from onnx_builders import make_model, save_model

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "verifier").rglob("*.py")) + sorted((ROOT / "plugins").rglob("*.py"))


def _trees():
    for path in SOURCES:
        yield path, ast.parse(path.read_text(encoding="utf-8"))


def test_the_core_never_imports_the_plugins():
    for path, tree in _trees():
        if "plugins" in path.relative_to(ROOT).parts[:1]:
            continue
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n.startswith("verifier_plugins") for n in names), f"{path} imports the plugins"


def test_no_private_name_is_imported_across_modules():
    for path, tree in _trees():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module != "__future__":
                private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                assert not private, f"{path}:{node.lineno} imports private names {private} from {node.module}"


def _walk_loops(tree):
    """``for`` statements over ``topological_order(...)`` (or its reverse)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.For):
            text = ast.unparse(node.iter)
            if "topological_order(" in text:
                yield node


def test_one_topological_walk_in_each_direction():
    """Only the engine dispatches nodes to their op's function in topological order;
    other loops over the order only read the graph (no FORWARD, no transfer tables)."""
    walks = {"forward": [], "backward": []}
    for path, tree in _trees():
        for loop in _walk_loops(tree):
            body = ast.unparse(loop)
            dispatches = any(word in body for word in ("FORWARD[", "transfer", "LINEAR_PART[", "adjoint("))
            if dispatches:
                direction = "backward" if "reversed(" in ast.unparse(loop.iter) else "forward"
                walks[direction].append(f"{path.relative_to(ROOT)}:{loop.lineno}")
    assert len(walks["forward"]) == 1 and walks["forward"][0].startswith("verifier/engine.py"), walks
    assert len(walks["backward"]) == 1 and walks["backward"][0].startswith("verifier/engine.py"), walks


# --- a new elementwise op, registered after the domains were imported ---------------------


def _softsign(node, x):
    return x / (1 + x.abs())


def _softsign_slope(x):
    return 1 / (1 + x.abs()) ** 2


class SoftsignRelaxation(Relaxation):
    """``f(x) = x/(1+|x|)``: ``f'`` is unimodal with its peak at 0, so ``f' ≥ λ = min(f'(l), f'(u))``
    on ``[l, u]`` and ``f(x) − λx`` is non-decreasing there: the band ``[f(l) − λl, f(u) − λu]``."""

    def band(self, node, l, u):
        lam = torch.minimum(_softsign_slope(l), _softsign_slope(u))
        return Band(lam, _softsign(node, l) - lam * l, _softsign(node, u) - lam * u)

    def lines(self, node, l, u, alpha=None, policy="adaptive"):
        if alpha is not None:
            l, u = l.unsqueeze(1), u.unsqueeze(1)
        return band_lines(self.band(node, l, u))

    def alpha_init(self, node, l, u):
        return torch.full_like(l, 0.5)


@pytest.fixture
def softsign(monkeypatch):
    """Register the op the way an op file does (forward function, property, relaxation entry)."""
    monkeypatch.setitem(FORWARD, "softsign", _softsign)
    monkeypatch.setitem(RELAXATIONS, "softsign", SoftsignRelaxation())
    MONOTONE_KINDS.add("softsign")
    yield
    MONOTONE_KINDS.discard("softsign")


def _mlp_with(tmp_path, rng):
    w1, w2 = rng.normal(size=(8, 4)).astype(np.float32), rng.normal(size=(3, 8)).astype(np.float32)
    nodes = [oh.make_node("Gemm", ["x", "W1"], ["h"], transB=1), oh.make_node("Relu", ["h"], ["a"]),
             oh.make_node("Gemm", ["a", "W2"], ["y"], transB=1)]
    path = save_model(make_model(nodes, ["N", 4], "y", {"W1": w1, "W2": w2}), tmp_path)
    return verifier.load(path)


@pytest.mark.parametrize("domain", ["box", "deepz", "crown", "crown-ibp", "alpha-crown", "lp"])
def test_an_elementwise_op_added_later_is_bounded_soundly_by_every_domain(tmp_path, softsign, domain):
    rng = np.random.default_rng(3)
    model = _mlp_with(tmp_path, rng)
    graph = model.graph_for("cpu", torch.float64)
    for n in graph.nodes:
        if graph.nodes[n]["kind"] == "relu":
            graph.nodes[n]["kind"] = "softsign"
    dom = DOMAINS[domain]()
    assert dom.supports(graph) == []
    lower = torch.full((1, 1, 4), -1.0, dtype=torch.float64)
    upper = torch.full((1, 1, 4), 1.5, dtype=torch.float64)
    lb, ub = dom.bound(graph, lower, upper)
    x = lower + (upper - lower) * torch.rand((4000, 1, 4), dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = evaluate(graph, x).reshape(4000, -1)
    assert bool((y >= lb - 1e-9).all() and (y <= ub + 1e-9).all())
    assert bool(torch.isfinite(lb).all() and (ub - lb).max() < 100)


def test_supports_names_what_a_domain_or_method_cannot_handle(tmp_path):
    rng = np.random.default_rng(4)
    w = rng.normal(size=(3, 4)).astype(np.float32)
    nodes = [oh.make_node("Gemm", ["x", "W"], ["h"], transB=1), oh.make_node("Sigmoid", ["h"], ["y"])]
    model = verifier.load(save_model(make_model(nodes, ["N", 4], "y", {"W": w}), tmp_path))
    assert DOMAINS["crown"]().supports(model.graph) == []
    assert any("sigmoid" in reason for _, reason in DOMAINS["dual-lp"]().supports(model.graph))
    assert any("sigmoid" in reason for _, reason in METHODS["relu-split"].supports(model.graph))
    assert any("sigmoid" in reason for _, reason in METHODS["milp"].supports(model.graph))
    assert METHODS["input-split"].supports(model.graph) == []


def _sigmoid_net(tmp_path, n_in=20):
    rng = np.random.default_rng(5)
    w1, w2 = rng.normal(size=(16, n_in)).astype(np.float32), rng.normal(size=(2, 16)).astype(np.float32)
    nodes = [oh.make_node("Gemm", ["x", "W1"], ["h"], transB=1), oh.make_node("Sigmoid", ["h"], ["a"]),
             oh.make_node("Gemm", ["a", "W2"], ["y"], transB=1)]
    model = save_model(make_model(nodes, ["N", n_in], "y", {"W1": w1, "W2": w2}), tmp_path)
    y = evaluate(verifier.load(model).graph_for("cpu", torch.float64),
                 torch.zeros((1, 1, n_in), dtype=torch.float64)).reshape(-1)
    spec = tmp_path / "p.vnnlib"
    lines = [f"(declare-const X_{i} Real)" for i in range(n_in)] + ["(declare-const Y_0 Real)", "(declare-const Y_1 Real)"]
    lines += [f"(assert (>= X_{i} -0.5))\n(assert (<= X_{i} 0.5))" for i in range(n_in)]
    # Y_0 − Y_1 at the centre, shifted a little: CROWN cannot refute it over the whole box
    lines += [f"(assert (<= (- Y_0 Y_1) {float(y[0] - y[1]) - 3.0}))"]
    spec.write_text("\n".join(lines) + "\n")
    return model, spec


def test_auto_on_a_network_relu_split_cannot_split_ends_in_a_verdict_not_an_error(tmp_path, capsys):
    """auto goes on to activation-split (the property is false: its candidate search finds
    the counterexample even without the attack)."""
    model, spec = _sigmoid_net(tmp_path)
    code = main(["verify", str(model), str(spec), "--no-attack", "--timeout", "60"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert out.out.strip().splitlines()[-1] in ("result: sat", "result: unsat", "result: unknown", "result: timeout")
    assert "relu-split does not apply" in out.out and "activation-split" in out.out


def test_method_flag_selects_a_complete_method_and_refuses_clashes(tmp_path, capsys):
    model, spec = _sigmoid_net(tmp_path)
    assert main(["verify", str(model), str(spec), "--method", "relu-split", "--no-attack"]) == 2
    assert "sigmoid" in capsys.readouterr().err
    assert main(["verify", str(model), str(spec), "--method", "bogus"]) == 2
    assert "complete methods: auto, input-split, relu-split, milp" in capsys.readouterr().err
    assert main(["verify", str(model), str(spec), "--method", "milp", "--domain", "crown"]) == 2
    assert "give one of them" in capsys.readouterr().err
