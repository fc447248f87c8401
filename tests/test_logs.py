"""The library's notes go through Python logging (verifier/logs.py); the CLI shows them at
--quiet / default / --verbose."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from verifier.logs import configure, reset
from verifier.report import read_results

from cli_helpers import run

REPO = Path(__file__).resolve().parent.parent
MODEL = REPO / "models" / "mnist_small.onnx"
SPEC = REPO / "models" / "properties" / "mnist_0_eps0.05.vnnlib"
HEADER = "benchmark,onnx,vnnlib,prepare_time,result,run_time\n"


@pytest.fixture(autouse=True)
def library_logs():
    """Each test starts from the library's own logging state (an earlier CLI run in this
    process configured it) and leaves it so."""
    reset()
    yield
    reset()


@pytest.fixture
def cut_results(tmp_path) -> Path:
    """A results CSV whose last row was cut by a kill (its drop is a note)."""
    path = tmp_path / "results.csv"
    path.write_text(HEADER + "b,onnx/a.onnx,vnnlib/p1.vnnlib,0.1,unsat,1.0\nb,onnx/a.onnx,vnnlib/p2.vnn")
    return path


def test_the_library_logs_its_notes_instead_of_printing_them(cut_results, capsys, caplog):
    with caplog.at_level(logging.INFO, logger="verifier"):  # caplog listens at the root logger
        rows = read_results(cut_results)
    assert len(rows) == 1
    assert capsys.readouterr().err == ""
    [record] = [r for r in caplog.records if r.name.startswith("verifier")]
    assert record.levelno == logging.INFO and "cut by an interrupted run" in record.getMessage()


@pytest.mark.parametrize("flags, shown", [((), True), (("--quiet",), False), (("--verbose",), True)])
def test_report_notes_follow_quiet_and_verbose(cut_results, capsys, flags, shown):
    code, out, err = run(capsys, *flags, "report", cut_results)
    assert code == 0, err
    assert out.startswith("b\n")  # the table itself is printed either way
    assert ("note: " in err and "cut by an interrupted run" in err) == shown, err


def test_verbose_shows_the_stages_of_verify_and_quiet_keeps_the_verdict(capsys):
    code, out, err = run(capsys, "verify", MODEL, SPEC, "--verbose")
    assert code == 0 and "result: unsat" in out
    debug = [line for line in err.splitlines() if line.startswith("debug: ")]
    assert any("784 inputs, 10 outputs" in line for line in debug), err
    assert any(line.startswith("debug: attack on region 0: none found") for line in debug), err
    assert any(line.startswith("debug: region 0: unsat") for line in debug), err
    code, out, err = run(capsys, "--quiet", "verify", MODEL, SPEC)
    assert code == 0 and "result: unsat" in out and "debug:" not in err and "note:" not in err


def test_the_flags_go_before_or_after_the_command(cut_results, capsys):
    assert "note: " not in run(capsys, "report", cut_results, "--quiet")[2]
    assert "note: " in run(capsys, "--quiet", "report", cut_results, "--verbose")[2]  # the last flag wins


def test_configure_refuses_an_unknown_verbosity():
    with pytest.raises(ValueError, match="quiet, default, verbose"):
        configure("loud")
