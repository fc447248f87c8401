"""``verifier report``: counts equal a hand count on a small results file, the markdown and
HTML files hold the table, the cactus plot is a real PNG, bad input is refused before any
work; ``vnncomp`` draws no progress bar off a terminal."""

from __future__ import annotations

import shutil
import struct
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from verifier.report import (build_report, load_reference, read_results, render_markdown,
                             render_text)

from cli_helpers import assert_refused, run
from conftest import DEFAULT_MODEL, PROPERTIES

REFERENCE = (
    "onnx,vnnlib,timeout,expected,good_result,good_time,bad_result,bad_time\n"
    "onnx/a.onnx,vnnlib/p1.vnnlib,60,unsat,holds,1.0,violated,2.0\n"
    "onnx/a.onnx,vnnlib/p2.vnnlib,60,sat,violated,3.0,sat,1.0\n"
    "onnx/a.onnx,vnnlib/p3.vnnlib,60,unknown,timeout,60,unsat,4.0\n"
    "onnx/a.onnx,vnnlib/p4.vnnlib,60,,unsat,2.0,,-1\n"
    "onnx/a.onnx,vnnlib/p5.vnnlib,60,unsat,error,-1,unsat,5.0\n")
RESULTS = (
    "benchmark,onnx,vnnlib,prepare_time,result,run_time\n"
    "alpha,onnx/a.onnx,vnnlib/p1.vnnlib,0.1,unsat,1.0\n"        # right
    "alpha,./onnx/a.onnx,vnnlib/p2.vnnlib.gz,0.1,sat,2.0\n"     # right (paths normalised)
    "alpha,onnx/a.onnx,vnnlib/p3.vnnlib,0.1,sat,4.0\n"          # unconfirmed: 'bad' answered unsat
    "alpha,onnx/a.onnx,vnnlib/p4.vnnlib,0.1,unsat,8.0\n"        # no expected answer, 'good' agrees
    "alpha,onnx/a.onnx,vnnlib/p5.vnnlib,0.1,sat,3.0\n"          # wrong
    "alpha,onnx/a.onnx,vnnlib/p6.vnnlib,0.1,unsat,5.0\n"        # not in the reference: unconfirmed
    "alpha,onnx/a.onnx,vnnlib/p7.vnnlib,0.1,timeout,60.0\n"     # not in the reference
    "beta,onnx/b.onnx,vnnlib/q1.vnnlib,0.1,unknown,7.0\n"       # beta: no reference at all
    "beta,onnx/b.onnx,vnnlib/q2&.vnnlib,0.1,holds,0.5\n"
    "beta,onnx/b.onnx,vnnlib/q3.vnnlib,0.1,error,-1\n"
    "beta,onnx/b.onnx,vnnlib/q4.vnn")                           # cut by a kill: left out

# The hand count: (instances, sat, unsat, wrong, timeout, unknown, error, total s, median s).
HAND = {
    ("alpha", "verifier"): (7, 3, 3, 1, 1, 0, 0, 83.0, 4.0),   # times 1 2 4 8 3 5 60
    ("alpha", "good"): (5, 1, 2, 0, 1, 0, 1, 66.0, 2.0),       # times 1 3 60 2 0
    ("alpha", "bad"): (5, 2, 2, 1, 0, 1, 0, 12.0, 2.0),        # times 2 1 4 0 5
    ("beta", "verifier"): (3, 0, 1, 0, 0, 1, 1, 7.5, 0.5),     # times 7 0.5 0
}
FLAGGED = [
    ("alpha", "vnnlib/p3.vnnlib", "sat", "unconfirmed", "bad answered unsat"),
    ("alpha", "vnnlib/p5.vnnlib", "sat", "wrong", "expected unsat"),
    ("alpha", "vnnlib/p6.vnnlib", "unsat", "unconfirmed", "not in the reference"),
    ("beta", "vnnlib/q2&.vnnlib", "unsat", "unconfirmed", "no reference answer"),
]


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "reference.csv").write_text(REFERENCE)
    (tmp_path / "results.csv").write_text(RESULTS)
    return tmp_path / "results.csv", tmp_path / "reference.csv"


def counts(summary) -> tuple:
    return (summary.instances, summary.sat, summary.unsat, summary.wrong, summary.timeout, summary.unknown,
            summary.errors, summary.seconds, summary.median)


def test_counts_equal_a_hand_count(files):
    results, reference = files
    notes: list[str] = []
    report = build_report(read_results(results, notes), [load_reference(reference)])
    assert len(notes) == 1 and "cut by an interrupted run" in notes[0]
    assert [b.name for b in report.benchmarks] == ["alpha", "beta"]
    alpha, beta = report.benchmarks
    assert [s.tool for s in alpha.summaries] == ["verifier", "good", "bad"]
    assert [s.tool for s in beta.summaries] == ["verifier"]  # no reference lists beta's instances
    got = {(b.name, s.tool): counts(s) for b in report.benchmarks for s in b.summaries}
    assert got == HAND
    assert alpha.summaries[0].solved == 6 and alpha.summaries[0].undecided == 1
    assert (alpha.missing, beta.missing) == (2, 0)
    assert alpha.reference == str(reference) and beta.reference is None
    assert report.notes == ["beta: no reference lists its instances; our results only"]
    flagged = [(f.benchmark, f.vnnlib, f.result, f.kind) for b in report.benchmarks for f in b.flagged]
    assert flagged == [row[:4] for row in FLAGGED]
    reasons = [f.reason for b in report.benchmarks for f in b.flagged]
    assert all(want in reason for want, reason in zip((row[4] for row in FLAGGED), reasons))
    assert report.any_wrong
    # The cactus plot's points: correct or unchecked answers only (p5 is wrong: left out).
    assert sorted(alpha.summaries[0].solved_times) == [1.0, 2.0, 4.0, 5.0, 8.0]


def test_text_and_markdown_hold_the_counts(files):
    results, reference = files
    report = build_report(read_results(results, []), [load_reference(reference)])
    text = render_text(report)
    assert "wrong or unconfirmed answers: 4" in text
    assert "wrong: alpha onnx/a.onnx vnnlib/p5.vnnlib: ours sat; expected unsat" in text
    markdown = render_markdown(report, plot="cactus.png")
    assert "| verifier | 7 | 6 | 3 | 3 | 1 | 1 | 0 | 0 | 83.0 | 4.00 |" in markdown
    assert "| good | 5 | 3 | 1 | 2 | 0 | 1 | 0 | 1 | 66.0 | 2.00 |" in markdown
    assert "| verifier | 3 | 1 | 0 | 1 | 0 | 0 | 1 | 1 | 7.5 | 0.50 |" in markdown
    assert "![instances solved vs time](cactus.png)" in markdown


class Tables(HTMLParser):
    """The cells of every ``<table>`` of a page, row by row."""

    def __init__(self):
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self.cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self.cell is not None:
            self.tables[-1][-1].append("".join(self.cell))
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell.append(data)


def test_report_command_writes_markdown_and_html_with_the_table(files, capsys):
    results, reference = files
    md, page = results.parent / "out.md", results.parent / "out.html"
    code, out, err = run(capsys, "report", results, "--reference", reference, "--markdown", md, "--html", page)
    assert code == 1, err  # one of our answers is wrong
    assert "note: beta: no reference" in err and "cut by an interrupted run" in err
    assert out.splitlines()[0] == "alpha" and "wrong or unconfirmed answers: 4" in out
    assert "| bad | 5 | 4 | 2 | 2 | 1 | 0 | 1 | 0 | 12.0 | 2.00 |" in md.read_text()
    parser = Tables()
    parser.feed(page.read_text(encoding="utf-8"))
    alpha, beta = parser.tables
    assert alpha[0][:3] == ["tool", "instances", "solved"]
    assert [row[0] for row in alpha[1:]] == ["verifier", "good", "bad"]
    for row in alpha[1:]:
        instances, _, sat, unsat, wrong, timeout, unknown, error, total, median = row[1:]
        want = HAND[("alpha", row[0])]
        assert (int(instances), int(sat), int(unsat), int(wrong), int(timeout), int(unknown), int(error),
                float(total), float(median)) == want
    assert beta[1][0] == "verifier" and int(beta[1][1]) == 3
    html_text = page.read_text(encoding="utf-8")
    assert "q2&amp;.vnnlib" in html_text and "q2&.vnnlib" not in html_text  # escaped
    assert html_text.count("<li") == len(FLAGGED)


def test_report_exits_0_without_a_wrong_answer(files, capsys):
    results, reference = files
    results.write_text("\n".join(RESULTS.splitlines()[:3]) + "\n")  # header, p1 and p2: both right
    code, out, _ = run(capsys, "report", results, "--reference", reference)
    assert code == 0 and "wrong or unconfirmed answers: 0" in out


def test_bench_root_finds_each_benchmarks_reference(files, capsys):
    results, reference = files
    root = results.parent / "root"
    (root / "alpha").mkdir(parents=True)
    shutil.copy(reference, root / "alpha" / "reference.csv")
    code, out, _ = run(capsys, "report", results, "--bench-root", root)
    assert code == 1 and "good" in out and "bad" in out


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_cactus_plot_is_a_png_of_the_expected_size(files, capsys):
    pytest.importorskip("matplotlib", reason="the cactus plot needs matplotlib: pip install -e '.[plots]'")
    from verifier.report_plot import cactus_series

    results, reference = files
    plot, page, md = results.parent / "cactus.png", results.parent / "r.html", results.parent / "r.md"
    code, _, err = run(capsys, "report", results, "--reference", reference, "--plot", plot, "--html", page,
                       "--markdown", md)
    assert code == 1, err
    data = plot.read_bytes()
    assert png_size(data) == (800, 500) and len(data) > 10_000  # 8 × 5 in at 100 dpi, lines drawn
    assert "data:image/png;base64," in page.read_text() and "(cactus.png)" in md.read_text()
    report = build_report(read_results(results, []), [load_reference(reference)])
    series = cactus_series(report)
    assert list(series) == ["verifier", "good", "bad"]
    assert series["verifier"] == [0.5, 1.0, 2.0, 4.0, 5.0, 8.0]  # alpha's right ones and beta's q2
    assert series["good"] == [1.0, 2.0, 3.0] and series["bad"] == [1.0, 4.0, 5.0]


def test_plot_without_matplotlib_is_refused_before_any_work(files, capsys, monkeypatch):
    results, reference = files
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    md = results.parent / "r.md"
    code, out, err = run(capsys, "report", results, "--markdown", md, "--plot", results.parent / "p.png")
    assert_refused(code, out, err, "--plot", "matplotlib", "plots")
    assert not md.exists() and out == ""


@pytest.mark.parametrize("case", ["missing", "folder", "not-utf8", "columns", "empty", "out-folder", "same-file",
                                  "bench-root", "reference-columns"])
def test_bad_input_is_one_error_line_before_any_work(files, capsys, case):
    results, reference = files
    tmp = results.parent
    md = tmp / "r.md"
    argv: list = [results, "--markdown", md]
    words: tuple = ()
    if case == "missing":
        argv[0], words = tmp / "none.csv", ("none.csv",)
    elif case == "folder":
        argv[0], words = tmp, ("folder",)
    elif case == "not-utf8":
        results.write_bytes(b"benchmark,onnx,vnnlib,prepare_time,result,run_time\nalpha,\xff\n")
        words = ("line 2", "UTF-8")
    elif case == "columns":
        results.write_text("alpha,onnx/a.onnx,vnnlib/p1.vnnlib,unsat\n")
        words = ("line 1", "6 columns")
    elif case == "empty":
        results.write_text("benchmark,onnx,vnnlib,prepare_time,result,run_time\n")
        words = ("no result rows",)
    elif case == "out-folder":
        argv[2], words = tmp / "missing" / "r.md", ("--markdown", "does not exist")
    elif case == "same-file":
        argv += ["--html", md]
        words = ("--markdown", "--html", "same file")
    elif case == "bench-root":
        argv += ["--bench-root", tmp / "nowhere"]
        words = ("--bench-root",)
    elif case == "reference-columns":
        (tmp / "bad_ref.csv").write_text("model,property\na,b\n")
        argv += ["--reference", tmp / "bad_ref.csv"]
        words = ("bad_ref.csv", "onnx")
    code, out, err = run(capsys, "report", *argv)
    assert_refused(code, out, err, *words)
    assert out == "" and not md.exists() and not (tmp / "missing").exists()


def test_vnncomp_draws_no_progress_bar_off_a_terminal(tmp_path, capsys, monkeypatch):
    bench = tmp_path / "tiny"
    (bench / "onnx").mkdir(parents=True)
    (bench / "vnnlib").mkdir()
    shutil.copy(DEFAULT_MODEL, bench / "onnx" / "m.onnx")
    shutil.copy(PROPERTIES / "mnist_5_eps0.3.vnnlib", bench / "vnnlib" / "p.vnnlib")
    (bench / "instances.csv").write_text("onnx/m.onnx,vnnlib/p.vnnlib,20\n")
    out = tmp_path / "res.csv"
    code, stdout, err = run(capsys, "vnncomp", bench, "--output", out)
    assert code == 0 and "sat 1" in stdout
    assert "inst" not in err and "|" not in err and "\r" not in err  # no tqdm bar in a log
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    code, _, err = run(capsys, "vnncomp", bench, "--output", out)
    assert code == 0 and "inst" in err  # on a terminal the bar is drawn
    # ... and the report reads what vnncomp wrote.
    code, stdout, _ = run(capsys, "report", out)
    assert code == 0 and stdout.splitlines()[2].split()[:5] == ["verifier", "1", "1", "1", "0"]

