"""The op coverage report: ``verifier ops`` (every IR op kind × every domain and complete
method) and ``verifier check MODEL --ops`` (this model's ops, and which domains and
methods support it, naming the nodes they refuse)."""

from __future__ import annotations

import numpy as np
import onnx.helper as oh

from onnx_builders import make_model, save_model
from verifier.cli import main
from verifier.complete.methods import METHODS
from verifier.coverage import coverage_rows, op_kinds
from verifier.domains import DOMAINS
from verifier.ops import FORWARD


def test_verifier_ops_lists_every_kind_domain_and_method(capsys):
    assert main(["ops"]) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[0].split()
    for name, cls in DOMAINS.items():
        if cls.__module__.startswith("verifier."):
            assert name in header
    for name in METHODS:
        assert name in header
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[1:] if line and line.split()[0] in FORWARD}
    assert set(rows) == set(op_kinds())
    column = header[2:].index("dual-lp")  # header: "op", "kind", then the columns
    assert rows["sigmoid"][column] == "-" and rows["relu"][column] == "yes"


def test_coverage_agrees_with_supports():
    columns, rows = coverage_rows(["sigmoid", "relu", "linear"])
    table = {kind: dict(zip(columns, cells)) for kind, cells in rows}
    assert table["sigmoid"]["relu-split"] is False and table["sigmoid"]["activation-split"] is True
    assert table["relu"]["relu-split"] is True and table["linear"]["crown"] is True
    assert table["sigmoid"]["dual-lp"] is False and table["sigmoid"]["milp"] is False


def test_check_ops_names_what_supports_the_model(tmp_path, capsys):
    rng = np.random.default_rng(0)
    nodes = [oh.make_node("Gemm", ["x", "W"], ["h"], transB=1), oh.make_node("Sigmoid", ["h"], ["y"])]
    path = save_model(make_model(nodes, ["N", 3], "y", {"W": rng.normal(size=(2, 3)).astype(np.float32)}), tmp_path)
    assert main(["check", str(path), "--ops"]) == 0
    out = capsys.readouterr().out
    assert "sigmoid (×1)" in out and "linear (×1)" in out
    support = out.split("support for this model:", 1)[1]
    lines = {line.split()[0]: line for line in support.splitlines() if line.strip()}
    assert lines["crown"].split()[1] == "yes" and lines["activation-split"].split()[1] == "yes"
    assert lines["dual-lp"].split()[1] == "no:" and "sigmoid" in lines["dual-lp"]
    assert "relu-split" in lines and "no:" in lines["relu-split"] and "'y'" in lines["relu-split"]
