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
    "beta,onnx/b.onnx,vnnlib/q3.vnnlib,0.1,error,0.0\n"
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
        words = (f"{results}:2:", "UTF-8")
    elif case == "columns":
        results.write_text("alpha,onnx/a.onnx,vnnlib/p1.vnnlib,unsat\n")
        words = (f"{results}:1:", "6 columns")
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



# --- fresh-eyes findings: cut rows, bad times, duplicates, plot formats, markdown escaping ---------
CLEAN = "benchmark,onnx,vnnlib,prepare_time,result,run_time\n" + "".join(RESULTS.splitlines(keepends=True)[1:3])


def test_a_cut_last_row_is_dropped_as_vnncomp_resume_drops_it(tmp_path):
    """Any last line without its newline is a row cut by a kill, whatever its number of
    cells (a cut inside run_time still has six): dropped with a note, as ``--resume`` does."""
    from verifier.vnncomp import read_done

    vnncomp_cut = Path(__file__).parent / "cases" / "vnncomp" / "partial_in.csv"  # CRLF rows, last one cut
    notes: list[str] = []
    assert read_results(vnncomp_cut, notes) == read_done(vnncomp_cut)[0] and len(read_done(vnncomp_cut)[0]) == 4
    assert len(notes) == 1 and "cut by an interrupted run" in notes[0]
    cuts = ("alpha,onnx/a.onnx,vnnlib/p3.vnnlib,0.1,unsat,1",  # six cells, run_time cut short
            'alpha,"onnx/a.on',  # inside a quoted cell
            "alpha,onnx/a.onnx,vnnlib/p3.vnnlib,0.1,unsat,1.5\r")  # between the CR and the LF
    for cut in cuts:
        path = tmp_path / "results.csv"
        path.write_text(CLEAN + cut, newline="")
        notes = []
        rows = read_results(path, notes)
        assert [row["vnnlib"] for row in rows] == ["vnnlib/p1.vnnlib", "vnnlib/p2.vnnlib.gz"], cut
        assert len(notes) == 1 and str(path) in notes[0]


@pytest.mark.parametrize("value", ["abc", "nan", "inf", "-inf", "-5", "", "1e999"])
def test_a_bad_run_time_is_refused_with_its_line(files, capsys, value):
    results, reference = files
    results.write_text(CLEAN + f"alpha,onnx/a.onnx,vnnlib/p3.vnnlib,0.1,sat,{value}\n")
    code, out, err = run(capsys, "report", results, "--reference", reference)
    assert_refused(code, out, err, f"{results}:4: run_time", "a finite number >= 0")


@pytest.mark.parametrize("case", ["same instance", "same instance respelled", "exact duplicate", "second header",
                                  "empty benchmark", "duplicate reference"])
def test_duplicates_a_second_header_and_an_empty_benchmark_are_refused(files, capsys, case):
    results, reference = files
    line = 3
    if case == "same instance":
        results.write_text(CLEAN + "alpha,onnx/a.onnx,vnnlib/p1.vnnlib,0.1,sat,9.0\n")
        where, words = results, ("line 2", "onnx/a.onnx", "vnnlib/p1.vnnlib")
        line = 4
    elif case == "same instance respelled":  # ./ and .gz name the same instance
        results.write_text(CLEAN + "alpha,./onnx/a.onnx,vnnlib/p1.vnnlib.gz,0.1,unsat,1.0\n")
        where, words, line = results, ("line 2",), 4
    elif case == "exact duplicate":
        results.write_text(CLEAN + CLEAN.splitlines(keepends=True)[1])
        where, words, line = results, ("line 2",), 4
    elif case == "second header":  # two results files joined with cat
        results.write_text(CLEAN + CLEAN.replace("p1", "p3").replace("p2", "p4"))
        where, words, line = results, ("header",), 4
    elif case == "empty benchmark":
        results.write_text(CLEAN.replace("\nalpha,./onnx", "\n ,./onnx"))
        where, words = results, ("benchmark",)
    else:
        reference.write_text(REFERENCE + "./onnx/a.onnx,vnnlib/p2.vnnlib.gz,60,sat,sat,1,sat,1\n")
        where, words, line = reference, ("line 3",), 7
    code, out, err = run(capsys, "report", results, "--reference", reference)
    assert_refused(code, out, err, f"{where}:{line}:", *words)


def test_the_same_instance_in_two_results_files_is_refused(tmp_path):
    from verifier.errors import VerifierInputError
    from verifier.report import read_all_results

    first, second, other = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "c.csv"
    first.write_text(CLEAN)
    second.write_text(CLEAN.splitlines(keepends=True)[0] + CLEAN.splitlines(keepends=True)[2])
    other.write_text(CLEAN.replace("alpha", "gamma"))  # the same paths in another benchmark: other instances
    assert len(read_all_results([first, other], [])) == 4
    with pytest.raises(VerifierInputError, match=f"{second}:2: .*{first}:3"):
        read_all_results([first, second], [])


@pytest.mark.parametrize("name", ["out.txt", "out", "out.jpg", "out.png.bak"])
def test_a_plot_path_matplotlib_should_not_write_is_refused_before_any_output(files, capsys, name):
    from verifier.errors import VerifierInputError
    from verifier.report_plot import check_plot_path

    results, reference = files
    with pytest.raises(VerifierInputError, match=r"--plot .*\.png, \.svg or \.pdf"):
        check_plot_path(results.parent / name)
    pytest.importorskip("matplotlib")
    results.write_text(CLEAN)
    md = results.parent / "r.md"
    code, out, err = run(capsys, "report", results, "--reference", reference, "--plot", results.parent / name,
                         "--markdown", md)
    assert_refused(code, out, err, "--plot", ".png, .svg or .pdf")
    assert not md.exists() and not (results.parent / name).exists()


def test_svg_and_pdf_plots_are_written_in_their_format(files, capsys):
    pytest.importorskip("matplotlib")
    results, reference = files
    results.write_text(CLEAN)
    for name, magic in (("plot.svg", b"<svg"), ("plot.PDF", b"%PDF-"), ("plot.png", b"\x89PNG")):
        page = results.parent / "r.html"
        code, _, err = run(capsys, "report", results, "--reference", reference, "--plot", results.parent / name,
                           "--html", page)
        assert code == 0, err
        data = (results.parent / name).read_bytes()
        assert magic in data[:400], name
        assert "data:image/png;base64," in page.read_text()  # the page embeds a PNG whatever the file's format


def _unescaped_pipes(line: str) -> int:
    count, escaped = 0, False
    for char in line:
        if char == "|" and not escaped:
            count += 1
        escaped = char == "\\" and not escaped
    return count


def test_markdown_escapes_names_that_would_break_the_tables(tmp_path):
    """A benchmark, tool or instance name with ``|``, backticks, ``*``, ``<`` or a newline stays
    inside its cell / code span: each table row keeps its column count and, unescaped, the
    text reads back."""
    import re

    from verifier.report import _md_text

    bench = 'we|ird `name`\n*x* <b>'
    ref = tmp_path / "ref.csv"
    ref.write_text('onnx,vnnlib,expected,"to|ol`_result",to|ol`_time\n"a`b|c.onnx",p.vnnlib,unsat,sat,1\n')
    results = tmp_path / "res.csv"
    results.write_text(f'benchmark,onnx,vnnlib,prepare_time,result,run_time\n"{bench}","a`b|c.onnx",p.vnnlib,0,sat,1\n')
    report = build_report(read_results(results, []), [load_reference(ref)])
    markdown = render_markdown(report)
    table = [line for line in markdown.splitlines() if line.startswith("|")]
    assert len(table) == 4 and all(_unescaped_pipes(line) == 12 for line in table)  # tool + 10 columns
    title = next(line for line in markdown.splitlines() if line.startswith("### "))
    unescape = lambda text: re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", text)  # noqa: E731  (CommonMark escapes)
    assert unescape(title[4:]) == bench.replace("\n", " ")
    assert unescape(table[3].split(" | ")[0][2:]) == "to|ol`"
    assert _md_text("plain_name") == r"plain\_name"
    flagged = next(line for line in markdown.splitlines() if line.startswith("- **"))
    assert "``a`b|c.onnx``" in flagged  # a code span fenced longer than the backtick run inside
    assert "\n" not in unescape(title)


def test_a_huge_run_time_keeps_the_table_readable(tmp_path, capsys):
    """A finite but absurd ``run_time`` (1e308 s) printed as a 300-digit number, breaking
    every table; from 10^7 s on times are in ``e`` notation."""
    results = tmp_path / "results.csv"
    results.write_text("bench,a.onnx,p1.vnnlib,0,unsat,1e308\nbench,a.onnx,p2.vnnlib,0,sat,2.5\n")
    code, out, err = run(capsys, "report", results)
    assert code == 0, err
    row = next(line.split() for line in out.splitlines() if line.startswith("verifier"))
    assert row[-2:] == ["1e+308", "5e+307"] and max(map(len, out.splitlines())) < 200
