"""``verifier report`` refuses CSVs of the wrong kind at the boundary: a result word that
is not a VNN-COMP result, a results CSV given as ``--reference`` and a reference given as
the results; every reference.csv of the shared benchmarks stays accepted."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from verifier.report import RESULT_WORDS, load_reference, read_results

from cli_helpers import assert_refused, run
from test_report import REFERENCE, RESULTS

HEADER = "benchmark,onnx,vnnlib,prepare_time,result,run_time\n"
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks"


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "reference.csv").write_text(REFERENCE)
    (tmp_path / "results.csv").write_text(RESULTS)
    return tmp_path / "results.csv", tmp_path / "reference.csv"


@pytest.mark.parametrize("word", ["maybe", "", "none", "unsat?", "proved"])
def test_a_result_that_is_not_a_vnncomp_result_is_refused_with_its_line(files, capsys, word):
    results, reference = files
    results.write_text(HEADER + "alpha,onnx/a.onnx,vnnlib/p1.vnnlib,0.1,unsat,1.0\n"
                       f"alpha,onnx/a.onnx,vnnlib/p2.vnnlib,0.1,{word},1.0\n")
    code, out, err = run(capsys, "report", results, "--reference", reference)
    assert_refused(code, out, err, f"{results}:3: result '{word}'", "sat, unknown, timeout, error")
    assert out == ""


def test_every_word_the_runner_writes_and_2021s_words_are_read(tmp_path):
    words = [*RESULT_WORDS, "holds", "violated", "SAT", "Unsat"]
    path = tmp_path / "results.csv"
    path.write_text(HEADER + "".join(f"b,onnx/a.onnx,vnnlib/p{i}.vnnlib,0.1,{w},1.0\n" for i, w in enumerate(words)))
    assert [row["result"] for row in read_results(path, [])] == words


@pytest.mark.parametrize("headed", [True, False])
def test_a_results_csv_given_as_the_reference_is_refused(files, capsys, headed):
    results, _ = files
    other = results.parent / "other_results.csv"
    body = "alpha,onnx/a.onnx,vnnlib/p1.vnnlib,0.1,unsat,1.0\n"
    other.write_text(HEADER + body if headed else body)
    code, out, err = run(capsys, "report", results, "--reference", other)
    assert_refused(code, out, err, f"--reference {other}:1:", "a reference needs the columns onnx,vnnlib",
                   "expected", "<tool>_result")
    if headed:
        assert "a results CSV" in err
    assert out == ""


def test_a_reference_without_answers_is_refused_and_one_with_either_column_is_read(tmp_path, capsys):
    path = tmp_path / "ref.csv"
    path.write_text("onnx,vnnlib,timeout\nonnx/a.onnx,vnnlib/p1.vnnlib,60\n")
    results = tmp_path / "results.csv"
    results.write_text(HEADER + "alpha,onnx/a.onnx,vnnlib/p1.vnnlib,0.1,unsat,1.0\n")
    assert_refused(*run(capsys, "report", results, "--reference", path), f"--reference {path}:1:", "not a reference")
    path.write_text("onnx,vnnlib,timeout,expected\nonnx/a.onnx,vnnlib/p1.vnnlib,60,unsat\n")
    assert load_reference(path).tools == []
    path.write_text("onnx,vnnlib,x_result,x_time\nonnx/a.onnx,vnnlib/p1.vnnlib,unsat,2\n")
    assert load_reference(path).tools == ["x"]


@pytest.mark.parametrize("tools", [1, 2])
def test_a_reference_given_as_the_results_is_refused(tmp_path, capsys, tools):
    """One tool makes six columns, as many as a results row: named by its header."""
    header = "onnx,vnnlib,timeout,expected" + "".join(f",t{i}_result,t{i}_time" for i in range(tools))
    ref = tmp_path / "reference.csv"
    ref.write_text(header + "\nonnx/a.onnx,vnnlib/p1.vnnlib,60,unsat" + ",unsat,1.0" * tools + "\n")
    code, out, err = run(capsys, "report", ref)
    assert_refused(code, out, err, f"{ref}:1:", "not a results header", "give it with --reference")


REAL = sorted(SHARED.glob("*/*/reference.csv"))


@pytest.mark.skipif(not REAL, reason="../shared/benchmarks is not present")
def test_every_shared_reference_is_read_with_its_tools(capsys):
    for path in REAL:
        with open(path, newline="") as fh:
            header = next(csv.reader(fh))
        reference = load_reference(path, "--reference")
        assert reference.rows and reference.tools == [c[: -len("_result")] for c in header if c.endswith("_result")]
