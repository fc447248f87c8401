"""The VNN-COMP runner (`verifier vnncomp`), the competition scripts and the report."""

from __future__ import annotations

import csv
import gzip
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from verifier.cli import main

from cli_helpers import run as run_cli
from conftest import DEFAULT_MODEL, PROPERTIES, REPO

pytestmark = pytest.mark.usefixtures("one_torch_thread")

HEADER = ["benchmark", "onnx", "vnnlib", "prepare_time", "result", "run_time"]
UNSAT, SAT, UNSAT_GZ, BROKEN = (
    ("onnx/mnist_small.onnx", "vnnlib/mnist_0_eps0.02.vnnlib"),
    ("onnx/mnist_small.onnx", "vnnlib/mnist_5_eps0.3.vnnlib"),
    ("onnx/mnist_small.onnx", "vnnlib/copy_0_eps0.02.vnnlib.gz"),
    ("onnx/broken.onnx", "vnnlib/mnist_5_eps0.3.vnnlib"),
)
SCRIPTS = REPO / "scripts" / "vnncomp"
needs_bash = pytest.mark.skipif(shutil.which("bash") is None, reason="bash not installed")


@pytest.fixture
def bench(tmp_path: Path) -> Path:
    """A four-instance benchmark: unsat, sat, unsat from a .vnnlib.gz, and a model that does
    not load (a per-instance problem: its row is ``error``, the run goes on)."""
    root = tmp_path / "tiny"
    (root / "onnx").mkdir(parents=True)
    (root / "vnnlib").mkdir()
    shutil.copy(DEFAULT_MODEL, root / "onnx" / "mnist_small.onnx")
    (root / BROKEN[0]).write_bytes(b"not an onnx model")
    for name in ("mnist_0_eps0.02.vnnlib", "mnist_5_eps0.3.vnnlib"):
        shutil.copy(PROPERTIES / name, root / "vnnlib" / name)
    with open(PROPERTIES / "mnist_0_eps0.02.vnnlib", "rb") as src, gzip.open(root / UNSAT_GZ[1], "wb") as dst:
        dst.write(src.read())
    (root / "instances.csv").write_text("".join(f"{o},{v},20\n" for o, v in (UNSAT, SAT, UNSAT_GZ, BROKEN)))
    return root


def rows_of(path: Path) -> list[list[str]]:
    with open(path, newline="") as fh:
        return list(csv.reader(fh))


def results_by_instance(rows: list[list[str]]) -> dict[tuple[str, str], str]:
    return {(row[1], row[2]): row[4] for row in rows[1:]}


def test_runner_writes_competition_rows(bench, tmp_path, capsys):
    out = tmp_path / "run" / "tiny.csv"
    out.parent.mkdir()
    code = main(["vnncomp", str(bench), "--output", str(out)])
    _, err = capsys.readouterr()
    assert code == 0
    rows = rows_of(out)
    assert rows[0] == HEADER
    assert len(rows) == 5 and all(len(row) == 6 and row[0] == "tiny" for row in rows[1:])
    for row in rows[1:]:
        float(row[3]), float(row[5])
    assert results_by_instance(rows) == {UNSAT: "unsat", SAT: "sat", UNSAT_GZ: "unsat", BROKEN: "error"}
    assert "broken.onnx" in err  # the error is printed and the run went on

    results = out.parent / "tiny_results"
    sat_text = (results / "mnist_small__mnist_5_eps0.3.txt").read_text()
    assert sat_text.startswith("sat\n") and "(X_0 " in sat_text and "(Y_0 " in sat_text
    assert (results / "mnist_small__mnist_0_eps0.02.txt").read_text().strip() == "unsat"
    assert (results / "broken__mnist_5_eps0.3.txt").read_text().strip() == "error"


def test_resume_skips_done_rows(bench, tmp_path):
    out, results = tmp_path / "res.csv", tmp_path / "files"
    assert main(["vnncomp", str(bench), "--output", str(out), "--results-dir", str(results), "--limit", "2"]) == 0
    rows = rows_of(out)
    assert [tuple(row[1:3]) for row in rows[1:]] == [UNSAT, SAT]
    rows[1][5] = "999.000"  # a marker: a resumed row must be kept, not recomputed
    with open(out, "w", newline="") as fh:
        csv.writer(fh).writerows(rows)

    assert main(["vnncomp", str(bench), "--output", str(out), "--results-dir", str(results), "--resume"]) == 0
    rows = rows_of(out)
    assert rows[0] == HEADER and rows[1][5] == "999.000"
    assert [tuple(row[1:3]) for row in rows[1:]] == [UNSAT, SAT, UNSAT_GZ, BROKEN]

    # Without --resume the output is rewritten from scratch.
    assert main(["vnncomp", str(bench), "--output", str(out), "--results-dir", str(results), "--limit", "1"]) == 0
    assert len(rows_of(out)) == 2


def test_bad_benchmark_folder_is_an_input_error(tmp_path, capsys):
    assert main(["vnncomp", str(tmp_path / "nope")]) == 2
    assert "nope" in capsys.readouterr().err
    assert main(["vnncomp", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "instances.csv" in err
    (tmp_path / "instances.csv").write_text("a.onnx,b.vnnlib,soon\n")
    assert main(["vnncomp", str(tmp_path)]) == 2
    assert "line 1" in capsys.readouterr().err


def load_report():
    spec = importlib.util.spec_from_file_location("vnncomp_report", REPO / "benchmarks" / "vnncomp_report.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def test_report_counts_wrong_answers(tmp_path, capsys):
    report = load_report()
    bench = tmp_path / "fake"
    bench.mkdir()
    (bench / "reference.csv").write_text(
        "onnx,vnnlib,timeout,expected,good_result,good_time,bad_result,bad_time\n"
        "onnx/a.onnx,vnnlib/p1.vnnlib,60,unsat,unsat,1.5,sat,2.0\n"
        "onnx/a.onnx,vnnlib/p2.vnnlib,60,sat,sat,2.5,unsat,3.0\n"
        "onnx/a.onnx,vnnlib/p3.vnnlib,60,unknown,timeout,60,sat,-1\n"
        "onnx/a.onnx,vnnlib/p4.vnnlib,60,sat,error,-1,sat,1.0\n")
    results = tmp_path / "results.csv"
    results.write_text(
        "benchmark,onnx,vnnlib,prepare_time,result,run_time\n"
        "fake,onnx/a.onnx,vnnlib/p1.vnnlib,0.1,sat,1.0\n"      # wrong
        "fake,./onnx/a.onnx,vnnlib/p2.vnnlib.gz,0.1,sat,2.0\n"  # right (paths normalised)
        "fake,onnx/a.onnx,vnnlib/p3.vnnlib,0.1,unsat,3.0\n"     # no sat/unsat expected: not wrong
        "fake,onnx/a.onnx,vnnlib/p4.vnnlib,0.1,timeout,4.0\n")
    tools, reference = report.read_reference(bench / "reference.csv")
    assert tools == ["good", "bad"]
    summaries, missing = report.summarise(report.read_results(results), tools, reference)
    by_tool = {s.tool: s for s in summaries}
    assert missing == 0 and [s.tool for s in summaries] == ["verifier", "good", "bad"]
    ours, good, bad = by_tool["verifier"], by_tool["good"], by_tool["bad"]
    assert (ours.solved, ours.wrong, ours.undecided, ours.errors, ours.seconds) == (3, 1, 1, 0, 10.0)
    assert (good.solved, good.wrong, good.undecided, good.errors, good.seconds) == (2, 0, 1, 1, 64.0)
    assert (bad.solved, bad.wrong, bad.seconds) == (4, 2, 6.0)

    assert report.main([str(bench), str(results), "--markdown"]) == 1  # we gave a wrong answer
    out = capsys.readouterr().out
    assert "### fake" in out and "| verifier | 4 | 3 | 1 | 1 | 0 | 10.0 |" in out


def run_script(name: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPTS / name), *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})


@needs_bash
@pytest.mark.parametrize("name, args", [
    ("run_instance.sh", ["v1", "tiny", "a.onnx", "b.vnnlib", "out.txt"]),             # one short
    ("run_instance.sh", ["v2", "tiny", "a.onnx", "b.vnnlib", "out.txt", "20"]),       # wrong version
    ("prepare_instance.sh", ["v1", "tiny", "a.onnx"]),
    ("install_tool.sh", []),
])
def test_scripts_reject_wrong_arguments(name, args):
    done = run_script(name, *args)
    assert done.returncode != 0
    assert "usage" in done.stderr or "v1" in done.stderr


@needs_bash
@pytest.mark.parametrize("timeout", ["1.2.3", ".", "1e400", "-1", "0", "abc"])
def test_run_instance_rejects_a_bad_timeout(tmp_path, timeout):
    done = run_script("run_instance.sh", "v1", "tiny", "a.onnx", "b.vnnlib", str(tmp_path / "out.txt"), timeout)
    assert done.returncode != 0 and "TIMEOUT" in done.stderr
    assert not (tmp_path / "out.txt").exists()


@needs_bash
def test_run_instance_rejects_a_results_file_in_a_missing_folder(tmp_path):
    done = run_script("run_instance.sh", "v1", "tiny", "a.onnx", "b.vnnlib", str(tmp_path / "no" / "out.txt"), "20")
    assert done.returncode != 0 and "RESULTS_FILE" in done.stderr


def test_report_input_errors_exit_2_with_one_line(tmp_path, capsys):
    report = load_report()
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"benchmark,onnx\n\xff\n")
    for args in ([str(bad)], [str(tmp_path / "nothere.csv")], [str(tmp_path)]):
        with pytest.raises(SystemExit) as exc:
            report.main(args)
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ")

    # A results row cut by a kill is left out with a note; the complete rows count.
    bench = tmp_path / "fake"
    bench.mkdir()
    (bench / "reference.csv").write_text("onnx,vnnlib,timeout,expected\nonnx/a.onnx,vnnlib/p1.vnnlib,60,unsat\n")
    results = tmp_path / "results.csv"
    results.write_text("benchmark,onnx,vnnlib,prepare_time,result,run_time\n"
                       "fake,onnx/a.onnx,vnnlib/p1.vnnlib,0.1,unsat,1.0\nfake,onnx/a.onnx,vnnl")
    assert report.main([str(bench), str(results)]) == 0
    out, err = capsys.readouterr()
    ours = next(line for line in out.splitlines() if line.startswith("verifier"))
    assert "cut" in err and ours.split()[1:3] == ["1", "1"]  # one instance, solved

    (bench / "reference.csv").write_text("name,score\n")
    with pytest.raises(SystemExit) as exc:
        report.main([str(bench), str(results)])
    assert exc.value.code == 2 and "onnx" in capsys.readouterr().err


@needs_bash
def test_run_instance_writes_sat_result(bench, tmp_path):
    result_file = tmp_path / "out.txt"
    done = run_script("run_instance.sh", "v1", "tiny", str(bench / SAT[0]), str(bench / SAT[1]), str(result_file), "30",
                      PYTHON=sys.executable)
    assert done.returncode == 0, done.stderr
    assert result_file.read_text().startswith("sat\n")


def test_proofs_folder_gets_a_checkable_certificate_per_unsat_instance(bench, tmp_path, capsys):
    out, proofs = tmp_path / "tiny.csv", tmp_path / "proofs"
    code = main(["vnncomp", str(bench), "--output", str(out), "--proofs", str(proofs)])
    capsys.readouterr()
    assert code == 0
    assert results_by_instance(rows_of(out)) == {UNSAT: "unsat", SAT: "sat", UNSAT_GZ: "unsat", BROKEN: "error"}
    assert sorted(p.name for p in proofs.iterdir()) == ["mnist_small__copy_0_eps0.02.proof",
                                                       "mnist_small__mnist_0_eps0.02.proof"]
    code = main(["check-proof", str(bench / UNSAT[0]), str(bench / UNSAT[1]),
                 str(proofs / "mnist_small__mnist_0_eps0.02.proof")])
    out_text, err = capsys.readouterr()
    assert code == 0 and "proof valid" in out_text, out_text + err
    # the certificate names its model and spec: checked against another spec it is refused
    code = main(["check-proof", str(bench / UNSAT[0]), str(bench / SAT[1]),
                 str(proofs / "mnist_small__mnist_0_eps0.02.proof")])
    assert code == 2 and "error:" in capsys.readouterr().err


def test_proofs_folder_that_is_a_file_is_refused_before_any_work(bench, tmp_path, capsys):
    out, proofs = tmp_path / "tiny.csv", tmp_path / "proofs"
    proofs.write_text("a file")
    code, _, err = run_cli(capsys, "vnncomp", bench, "--output", out, "--proofs", proofs)
    assert code == 2 and "--proofs" in err and not out.exists()


def test_resume_with_a_smaller_limit_says_which_rows_the_summary_leaves_out(bench, tmp_path, capsys):
    """``--resume --limit 1`` after a run of 3: the CSV keeps all 3 rows, and the run says
    that 2 of them are outside its instances, which its summary does not count."""
    out, results = tmp_path / "res.csv", tmp_path / "files"
    assert main(["vnncomp", str(bench), "--output", str(out), "--results-dir", str(results), "--limit", "3"]) == 0
    capsys.readouterr()
    assert main(["vnncomp", str(bench), "--output", str(out), "--results-dir", str(results), "--resume",
                 "--limit", "1"]) == 0
    out_text, err = capsys.readouterr()
    assert len(rows_of(out)) == 4
    assert "keeps 2 earlier rows of instances outside this run" in err and "only this run's 1" in err
    assert "unsat 1," in out_text and "sat 0," in out_text  # the summary: the one instance of this run
