"""What a complete method or domain supports, said once (``verifier.coverage.support``):
``verify --method``/``--domain`` refuses an unsupported model before any bound, attack or
onnxruntime check, and ``verifier ops`` and ``verifier check MODEL --ops`` cannot word an
op differently (a softmax classifier head is the case that disagreed)."""

from __future__ import annotations

import numpy as np
import onnx.helper as oh
import pytest

import verifier.api
import verifier.verify
from onnx_builders import make_model, save_model
from verifier.complete.methods import METHODS
from verifier.coverage import YES, YES_IF_NEEDS, checker, coverage_cells, kind_cell, support

from cli_helpers import assert_refused, run

RNG = np.random.default_rng(0)


def _net(tmp_path, *activations: str, name: str = "net") -> str:
    """``x (2) → Gemm → activations… → Gemm → Softmax`` (3 outputs), saved as ONNX."""
    nodes, last, weights = [oh.make_node("Gemm", ["x", "W1"], ["h0"], transB=1)], "h0", {}
    weights["W1"] = RNG.normal(size=(4, 2)).astype(np.float32)
    for i, op in enumerate(activations):
        nodes.append(oh.make_node(op, [last], [f"a{i}"]))
        last = f"a{i}"
    nodes += [oh.make_node("Gemm", [last, "W2"], ["z"], transB=1), oh.make_node("Softmax", ["z"], ["y"], axis=1)]
    weights["W2"] = RNG.normal(size=(3, 4)).astype(np.float32)
    return str(save_model(make_model(nodes, [1, 2], "y", weights), tmp_path, name))


def _spec(tmp_path) -> str:
    """A box [0, 1]² and the unsafe set y_0 ≥ 0.99."""
    path = tmp_path / "p.vnnlib"
    path.write_text("".join(f"(declare-const X_{i} Real)\n" for i in range(2))
                    + "".join(f"(declare-const Y_{j} Real)\n" for j in range(3))
                    + "".join(f"(assert (>= X_{i} 0))\n(assert (<= X_{i} 1))\n" for i in range(2))
                    + "(assert (>= Y_0 0.99))\n")
    return str(path)


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if verify() runs, a bound is computed or onnxruntime checks the model."""
    def forbidden(*args, **kwargs):
        raise AssertionError("work ran before the refusal")

    monkeypatch.setattr(verifier.verify, "verify", forbidden)
    monkeypatch.setattr(verifier.api, "compute_bounds", forbidden)
    monkeypatch.setattr(verifier.api.Model, "check", forbidden)


@pytest.mark.parametrize("flags,words", [
    (["--method", "milp", "--no-attack"], ["--method milp cannot decide this model",
                                           "the MILP does not encode op kind 'softmax' exactly", "node 'y'"]),
    (["--method", "milp"], ["--method milp", "'softmax'"]),
    (["--domain", "milp", "--no-attack"], ["--method milp", "'softmax'"]),
    (["--method", "relu-split", "--no-attack"], ["--method relu-split", "'sigmoid'"]),
])
def test_a_method_that_cannot_decide_the_model_is_refused_before_any_work(tmp_path, capsys, no_work, flags,
                                                                          words):
    model = _net(tmp_path, "Relu", "Sigmoid") if "relu-split" in flags else _net(tmp_path, "Relu")
    assert_refused(*run(capsys, "verify", model, _spec(tmp_path), *flags), *words)


def test_a_whole_network_need_is_refused_before_any_work(tmp_path, capsys, no_work):
    """A softmax head on a linear layer: nothing for activation-split to split."""
    assert_refused(*run(capsys, "verify", _net(tmp_path), _spec(tmp_path), "--method", "activation-split"),
                   "--method activation-split cannot decide this model", "needs an elementwise nonlinearity")


def test_a_domain_that_cannot_bound_the_model_is_refused_before_any_work(tmp_path, capsys, no_work):
    for command in ("verify", "bounds"):
        assert_refused(*run(capsys, command, _net(tmp_path, "Relu"), _spec(tmp_path), "--domain", "dual-lp"),
                       "--domain dual-lp cannot bound this model", "'softmax'")


@pytest.mark.parametrize("method", ["auto", "input-split", "activation-split"])
def test_methods_that_support_the_softmax_net_still_decide_it(tmp_path, capsys, method):
    code, out, err = run(capsys, "verify", _net(tmp_path, "Relu"), _spec(tmp_path), "--method", method,
                         "--timeout", "60")
    assert code == 0, err
    assert out.strip().splitlines()[-1] in ("result: sat", "result: unsat", "result: unknown")


def _table(out: str) -> dict[str, dict[str, str]]:
    """The op-kind grid of ``verifier ops`` / ``check --ops``: kind → column → cell."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("op kind"))
    columns = lines[start].split()[2:]
    table = {}
    for line in lines[start + 1:]:
        if not line.strip():
            break
        words = line.split()
        kind, cells = words[0], words[-len(columns):]
        table[kind] = dict(zip(columns, cells))
    return table


@pytest.mark.parametrize("activations", [(), ("Relu",), ("Sigmoid",), ("Relu", "Sigmoid")])
def test_ops_and_check_ops_say_the_same_for_every_op_of_the_model(tmp_path, capsys, activations):
    code, out, err = run(capsys, "ops")
    assert code == 0, err
    registry = _table(out)
    code, out, err = run(capsys, "check", _net(tmp_path, *activations), "--ops")
    assert code == 0, err
    model = _table(out.split("op kinds of this model:", 1)[1])
    assert model and all(registry[kind] == cells for kind, cells in model.items())
    verdicts = {line.split()[0]: line.split(None, 1)[1] for line in out.split("support for this model:", 1)[1]
                .splitlines() if line.strip() and not line.startswith("IR ")}
    for column in registry["softmax"]:
        cells = [model[kind][column] for kind in model]
        if verdicts[column] == "yes":  # a supported model has no refused op
            assert "-" not in cells, (column, cells)
        elif "-" not in cells:  # refused with every op handled: only a whole-network need, starred in the grid
            assert YES_IF_NEEDS in cells and "needs" in verdicts[column], (column, cells, verdicts[column])
        else:  # a refused op is named by the model's verdict
            refused = [kind for kind in model if model[kind][column] == "-"]
            assert any(f"'{kind}'" in verdicts[column] for kind in refused), (column, verdicts[column])


def test_kind_cells_come_from_support():
    columns, rows = coverage_cells(["softmax", "relu", "sigmoid", "linear"])
    for kind, cells in rows:
        for name, cell in zip(columns, cells):
            assert cell == kind_cell(checker(name), kind)
    table = {kind: dict(zip(columns, cells)) for kind, cells in rows}
    assert table["softmax"]["milp"] == "-" and table["relu"]["relu-split"] == YES
    assert table["softmax"]["relu-split"] == YES_IF_NEEDS and table["sigmoid"]["relu-split"] == "-"
    assert table["linear"]["activation-split"] == YES_IF_NEEDS and table["sigmoid"]["activation-split"] == YES


def test_support_splits_nodes_from_needs(tmp_path):
    graph = verifier.api.load(_net(tmp_path), check=False).graph
    found = support(METHODS["relu-split"], graph)
    assert not found.refused and found.needs == ["relu-split branch-and-bound needs a network with ReLUs"]
    found = support(METHODS["milp"], graph)
    assert [node for node, _ in found.refused] == ["y"] and not found.needs and not found.ok
    assert support(checker("crown"), graph).ok
