"""`verifier vnncomp`: every bad input is refused before the first instance runs.

The error contract: exit 2 with exactly one ``error:`` line naming the file (and line)
or the option, and nothing written (no results CSV, no results folder). A problem of
one instance in a well-formed benchmark stays that instance's row ``error``. Rows are
appended whole, and ``--resume`` drops a row cut by a kill and reruns that instance:
every instance appears exactly once.
"""

from __future__ import annotations

import csv
import gzip
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from verifier.cli import main

from conftest import REPO

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CASES = REPO / "tests" / "cases"
VNNCOMP = CASES / "vnncomp"
MODEL = CASES / "models" / "small5x3.onnx"
SPEC = CASES / "spec" / "s_good.vnnlib"
HEADER = ["benchmark", "onnx", "vnnlib", "prepare_time", "result", "run_time"]


def make_bench(root: Path, models: list[str], specs: list[str], rows: list[tuple[str, str]] | None = None) -> Path:
    """A benchmark folder of copies of the tiny 5→3 net and its control spec."""
    (root / "onnx").mkdir(parents=True)
    (root / "vnnlib").mkdir()
    for name in models:
        shutil.copy(MODEL, root / "onnx" / name)
    for name in specs:
        shutil.copy(SPEC, root / "vnnlib" / name)
    rows = rows if rows is not None else [(f"onnx/{m}", f"vnnlib/{s}") for m in models for s in specs]
    (root / "instances.csv").write_text("".join(f"{o},{v},10\n" for o, v in rows))
    return root


@pytest.fixture
def bench(tmp_path: Path) -> Path:
    return make_bench(tmp_path / "tiny", ["net.onnx"], ["good.vnnlib", "other.vnnlib"])


def rows_of(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh))


def run(args: list[str], capsys) -> tuple[int, str]:
    try:
        code = main(["vnncomp", *map(str, args)])
    except SystemExit as exc:  # argparse refuses a malformed command line
        code = exc.code
    return code, capsys.readouterr().err


def assert_refused(code: int, err: str, *words: str) -> None:
    """Exit 2, one ``error:`` line (no progress bar: no instance ran), naming ``words``."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err and "internal error" not in err
    for word in words:
        assert word in lines[0], (word, lines[0])


# --- the shared cases ---------------------------------------------------------------

def test_empty_instances_is_an_error(bench, tmp_path, capsys):
    out = tmp_path / "out.csv"
    code, err = run([bench, "--instances", VNNCOMP / "instances_empty.csv", "--output", out], capsys)
    assert_refused(code, err, "instances_empty.csv", "no instances")
    assert not out.exists() and not (tmp_path / "out_results").exists()


def test_non_utf8_instances_names_the_file(tmp_path, capsys):
    out = tmp_path / "out.csv"
    code, err = run([VNNCOMP / "bench_nonutf8", "--output", out], capsys)
    assert_refused(code, err, "instances.csv", "UTF-8", "line 1")
    assert not out.exists()


def test_resume_after_a_kill_mid_row_reruns_the_cut_row(tmp_path, capsys):
    """partial_in.csv: four mnist_fc rows, then one cut by a kill (no newline)."""
    nets = ["mnist-net_256x2.onnx", "mnist-net_256x4.onnx", "mnist-net_256x6.onnx"]
    props = ["prop_0_0.03.vnnlib", "prop_1_0.03.vnnlib"]
    bench = make_bench(tmp_path / "mnist_fc", nets, props)
    out = tmp_path / "results.csv"
    shutil.copy(VNNCOMP / "partial_in.csv", out)
    before = rows_of(VNNCOMP / "partial_in.csv")
    code, err = run([bench, "--output", out, "--resume"], capsys)
    assert code == 0, err
    assert "cut" in err
    rows = rows_of(out)
    assert rows[0] == HEADER
    assert rows[1:5] == before[1:5]  # the complete rows are kept as they were (timings included)
    keys = [(row[1], row[2]) for row in rows[1:]]
    expected = [(f"onnx/{n}", f"vnnlib/{p}") for n in nets for p in props]
    assert sorted(keys) == sorted(expected) and len(keys) == len(set(keys))  # each exactly once
    assert all(len(row) == 6 and row[0] == "mnist_fc" for row in rows[1:])
    assert {row[4] for row in rows[5:]} == {"unsat"}  # the cut row and the missing one, rerun


# --- options ------------------------------------------------------------------------

@pytest.mark.parametrize("option, value, word", [
    ("--timeout-scale", "nan", "--timeout-scale"),
    ("--timeout-scale", "inf", "--timeout-scale"),
    ("--timeout-scale", "0", "--timeout-scale"),
    ("--timeout-scale", "-2", "--timeout-scale"),
    ("--limit", "0", "--limit"),
    ("--limit", "-3", "--limit"),
    ("--domain", "bogus", "bogus"),
    ("--limit", "abc", "--limit"),
])
def test_bad_option_is_refused_up_front(bench, tmp_path, capsys, option, value, word):
    out = tmp_path / "out.csv"
    code, err = run([bench, "--output", out, option, value], capsys)
    assert_refused(code, err, word)
    assert not out.exists() and not (tmp_path / "out_results").exists()


def test_complete_method_and_domain_names_are_accepted(bench, tmp_path, capsys):
    for domain in ("box", "input-split"):
        out = tmp_path / f"{domain}.csv"
        code, err = run([bench, "--output", out, "--domain", domain, "--limit", "1"], capsys)
        assert code == 0, err
        assert len(rows_of(out)) == 2


def test_scaled_timeout_that_overflows_is_refused(bench, tmp_path, capsys):
    (bench / "instances.csv").write_text("onnx/net.onnx,vnnlib/good.vnnlib,1e300\n")
    code, err = run([bench, "--output", tmp_path / "o.csv", "--timeout-scale", "1e10"], capsys)
    assert_refused(code, err, "--timeout-scale")


def test_bench_dir_that_is_a_file(tmp_path, capsys):
    path = tmp_path / "file"
    path.write_text("x")
    code, err = run([path, "--output", tmp_path / "o.csv"], capsys)
    assert_refused(code, err, "is a file")


# --- output paths -------------------------------------------------------------------

def test_output_kinds_are_checked_before_any_work(bench, tmp_path, capsys):
    folder = tmp_path / "afolder"
    folder.mkdir()
    code, err = run([bench, "--output", folder], capsys)
    assert_refused(code, err, "--output", "folder")

    code, err = run([bench, "--output", tmp_path / "missing" / "o.csv"], capsys)
    assert_refused(code, err, "--output", "does not exist")

    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    code, err = run([bench, "--output", tmp_path / "o.csv", "--results-dir", a_file], capsys)
    assert_refused(code, err, "--results-dir", "file")
    assert not (tmp_path / "o.csv").exists()

    same = tmp_path / "same"
    code, err = run([bench, "--output", same, "--results-dir", same], capsys)
    assert_refused(code, err, "--results-dir")
    assert not same.exists()


@pytest.mark.parametrize("target", ["instances", "custom-instances", "model", "spec", "gz-model", "resume",
                                    "reference"])
def test_output_that_is_an_input_is_refused(tmp_path, capsys, target):
    """``--output`` naming the instances CSV or a model/spec file a row lists (as written or
    its ``.gz``; also with ``--resume``) would overwrite it: refused, every input untouched."""
    bench = make_bench(tmp_path / "tiny", ["net.onnx"], ["good.vnnlib"])
    with open(bench / "onnx" / "net.onnx", "rb") as src, gzip.open(bench / "onnx" / "zipped.onnx.gz", "wb") as dst:
        dst.write(src.read())
    (bench / "instances.csv").write_text("onnx/net.onnx,vnnlib/good.vnnlib,10\nonnx/zipped.onnx,vnnlib/good.vnnlib,10\n")
    custom = tmp_path / "mine.csv"
    custom.write_text((bench / "instances.csv").read_text())
    (bench / "reference.csv").write_text("onnx,vnnlib,timeout,expected\nonnx/net.onnx,vnnlib/good.vnnlib,10,unsat\n")
    extra: list = ["--instances", custom] if target == "custom-instances" else []
    extra += ["--resume"] if target == "resume" else []
    output = {"instances": bench / "instances.csv", "custom-instances": custom, "resume": bench / "instances.csv",
              "model": bench / "onnx" / "net.onnx", "spec": bench / "vnnlib" / ".." / "vnnlib" / "good.vnnlib",
              "gz-model": bench / "onnx" / "zipped.onnx.gz", "reference": bench / "reference.csv"}[target]
    before = {p: p.read_bytes() for p in [*bench.rglob("*"), custom] if p.is_file()}
    code, err = run([bench, "--output", output, "--limit", "1", *extra], capsys)
    what = {"instances": "the benchmark's instances CSV", "custom-instances": "the benchmark's instances CSV",
            "resume": "the benchmark's instances CSV", "model": "the model onnx/net.onnx",
            "spec": "the spec vnnlib/good.vnnlib", "gz-model": "the model onnx/zipped.onnx",
            "reference": "the benchmark's reference.csv"}[target]
    assert_refused(code, err, f"--output {output} is {what}", "give another path")
    assert {p: p.read_bytes() for p in before} == before
    assert not list(tmp_path.rglob("*_results"))  # nothing created


def test_results_dir_is_created(bench, tmp_path, capsys):
    """The folder --results-dir names is created; the folder it goes in must exist (the rule
    of every output path: a mistyped parent is refused before any instance runs)."""
    deep = tmp_path / "deep" / "er" / "results"
    code, err = run([bench, "--output", tmp_path / "o.csv", "--results-dir", deep, "--limit", "1"], capsys)
    assert_refused(code, err, "--results-dir", "does not exist")
    assert not (tmp_path / "deep").exists() and not (tmp_path / "o.csv").exists()
    results = tmp_path / "results"
    code, err = run([bench, "--output", tmp_path / "o.csv", "--results-dir", results, "--limit", "1"], capsys)
    assert code == 0, err
    assert (results / "net__good.txt").read_text().strip() == "unsat"


@pytest.mark.parametrize("option", ["--timings", "--proofs"])
def test_a_refused_output_leaves_no_results_folder(bench, tmp_path, capsys, option):
    """A bad --timings file or --proofs folder is refused before the default results folder
    (``o_results/``) is created (it was left behind, empty)."""
    bad = tmp_path / "missing" / "x.csv" if option == "--timings" else tmp_path / "missing" / "proofs"
    code, err = run([bench, "--output", tmp_path / "o.csv", option, bad], capsys)
    assert_refused(code, err, option, "does not exist")
    assert not (tmp_path / "o_results").exists() and not (tmp_path / "o.csv").exists()


# --- resume -------------------------------------------------------------------------

def test_resume_refuses_a_csv_with_another_header(bench, tmp_path, capsys):
    out = tmp_path / "o.csv"
    out.write_text("name,score\nfoo,1\n")
    code, err = run([bench, "--output", out, "--resume"], capsys)
    assert_refused(code, err, str(out), "header")
    assert out.read_text() == "name,score\nfoo,1\n"  # never appended onto


def test_resume_refuses_a_non_utf8_csv(bench, tmp_path, capsys):
    out = tmp_path / "o.csv"
    out.write_bytes(b"benchmark,onnx,vnnlib,prepare_time,result,run_time\n\xff\xfe,1\n")
    code, err = run([bench, "--output", out, "--resume"], capsys)
    assert_refused(code, err, str(out), "UTF-8")


def test_resume_refuses_a_malformed_row(bench, tmp_path, capsys):
    out = tmp_path / "o.csv"
    out.write_text(",".join(HEADER) + "\ntiny,onnx/net.onnx,vnnlib/good.vnnlib,0.1,maybe,0.2\n")
    code, err = run([bench, "--output", out, "--resume"], capsys)
    assert_refused(code, err, "line 2", "maybe")


def test_kill_mid_row_then_resume_runs_every_instance_once(bench, tmp_path, capsys):
    out = tmp_path / "o.csv"
    code, err = run([bench, "--output", out], capsys)
    assert code == 0, err
    full = out.read_bytes()
    assert full.endswith(b"\n") and len(rows_of(out)) == 3
    out.write_bytes(full[: full.rindex(b"unsat")])  # the kill landed inside the last row
    code, err = run([bench, "--output", out, "--resume"], capsys)
    assert code == 0, err
    rows = rows_of(out)
    assert [tuple(row[1:3]) for row in rows[1:]] == [("onnx/net.onnx", "vnnlib/good.vnnlib"),
                                                     ("onnx/net.onnx", "vnnlib/other.vnnlib")]
    assert all(len(row) == 6 for row in rows)

    # A resume with nothing left to do changes nothing; without --resume the file is replaced.
    before = out.read_bytes()
    assert run([bench, "--output", out, "--resume"], capsys)[0] == 0
    assert out.read_bytes() == before
    assert run([bench, "--output", out, "--limit", "1"], capsys)[0] == 0
    assert len(rows_of(out)) == 2


def test_resume_with_only_a_cut_header_starts_afresh(bench, tmp_path, capsys):
    out = tmp_path / "o.csv"
    out.write_text("benchmark,onnx,vnn")
    code, err = run([bench, "--output", out, "--resume", "--limit", "1"], capsys)
    assert code == 0, err
    assert rows_of(out)[0] == HEADER and len(rows_of(out)) == 2


# --- instances.csv ------------------------------------------------------------------

@pytest.mark.parametrize("text, words", [
    ("onnx/net.onnx,vnnlib/good.vnnlib\n", ["line 1", "fields"]),
    ("onnx/net.onnx,vnnlib/good.vnnlib,10\nonnx/net.onnx,vnnlib/good.vnnlib,10,4\n", ["line 2", "fields"]),
    ("onnx/net.onnx,vnnlib/good.vnnlib,nan\n", ["line 1", "timeout"]),
    ("onnx/net.onnx,vnnlib/good.vnnlib,-5\n", ["line 1", "timeout"]),
    ("onnx/net.onnx,vnnlib/good.vnnlib,0\n", ["line 1", "timeout"]),
    ("onnx/net.onnx,vnnlib/good.vnnlib,1e400\n", ["line 1", "timeout"]),
    ("onnx/net.onnx,vnnlib/good.vnnlib,soon\n", ["line 1", "soon"]),
    (",vnnlib/good.vnnlib,10\n", ["line 1", "onnx"]),
    ("\n\nonnx/gone.onnx,vnnlib/good.vnnlib,10\n", ["line 3", "gone.onnx"]),
    ("onnx/net.onnx,vnnlib/gone.vnnlib,10\n", ["line 1", "gone.vnnlib"]),
    ("onnx/net.onnx,vnnlib,10\n", ["line 1", "vnnlib"]),  # a folder, not a file
    ("onnx/net.onnx,vnnlib/good.vnnlib,10\x00\n", ["line 1"]),
    ("onnx/net.onnx,\"vnnlib/good.vnnlib,10\n", ["line"]),
])
def test_bad_instance_rows_name_the_line(bench, tmp_path, capsys, text, words):
    (bench / "instances.csv").write_text(text)
    out = tmp_path / "o.csv"
    code, err = run([bench, "--output", out], capsys)
    assert_refused(code, err, "instances.csv", *words)
    assert not out.exists()


def test_instances_path_that_is_a_folder(bench, tmp_path, capsys):
    code, err = run([bench, "--instances", tmp_path, "--output", tmp_path / "o.csv"], capsys)
    assert_refused(code, err, "folder")


def test_gz_files_repeats_and_a_utf8_bom_are_accepted(bench, tmp_path, capsys):
    with open(SPEC, "rb") as src, gzip.open(bench / "vnnlib" / "zipped.vnnlib.gz", "wb") as dst:
        dst.write(src.read())
    (bench / "instances.csv").write_text("\ufeffonnx/net.onnx,vnnlib/zipped.vnnlib,10\n"
                                         " onnx/net.onnx , vnnlib/good.vnnlib , 10 \n"
                                         "onnx/net.onnx,vnnlib/good.vnnlib,20\n")
    out = tmp_path / "o.csv"
    code, err = run([bench, "--output", out], capsys)
    assert code == 0, err
    assert "repeats line 2" in err
    assert [row[4] for row in rows_of(out)[1:]] == ["unsat", "unsat"]


def test_per_instance_problems_stay_rows_and_all_errors_is_not_success(bench, tmp_path, capsys):
    (bench / "onnx" / "broken.onnx").write_bytes(b"not a model")
    (bench / "vnnlib" / "bad.vnnlib").write_text("(assert (<= X_0 1.2.3))\n")
    (bench / "instances.csv").write_text("onnx/net.onnx,vnnlib/good.vnnlib,10\n"
                                         "onnx/broken.onnx,vnnlib/good.vnnlib,10\n"
                                         "onnx/net.onnx,vnnlib/bad.vnnlib,10\n")
    out = tmp_path / "o.csv"
    code, err = run([bench, "--output", out], capsys)
    assert code == 0, err
    assert [row[4] for row in rows_of(out)[1:]] == ["unsat", "error", "error"]
    assert "broken.onnx" in err and "bad.vnnlib" in err

    (bench / "instances.csv").write_text("onnx/broken.onnx,vnnlib/good.vnnlib,10\n")
    code, err = run([bench, "--output", out], capsys)
    assert code == 1 and "every instance ended in error" in err
    assert [row[4] for row in rows_of(out)[1:]] == ["error"]


# --- fuzz ---------------------------------------------------------------------------

GOOD_ROWS = [("onnx/net.onnx", "vnnlib/good.vnnlib"), ("onnx/z.onnx", "vnnlib/good.vnnlib"),
             ("onnx/net.onnx", "vnnlib/z.vnnlib"), ("./onnx/net.onnx", "vnnlib/good.vnnlib")]
GOOD_TIMEOUTS = ["10", " 5 ", "0.5", "1e300"]
BAD_CELLS = {0: ["onnx/gone.onnx", "", "onnx", "onnx/net"], 1: ["vnnlib/gone.vnnlib", "", "vnnlib/good"],
             2: ["nan", "NaN", "-1", "0", "1e400", "inf", "-inf", "abc", "", "1.2.3"]}


@st.composite
def instances_text(draw) -> bytes:
    """Valid rows (some naming a model or spec that fails per instance), then up to two
    damages: a bad cell, a field dropped or added, or random bytes written anywhere."""
    rows = [[*draw(st.sampled_from(GOOD_ROWS)), draw(st.sampled_from(GOOD_TIMEOUTS))]
            for _ in range(draw(st.integers(0, 4)))]
    raw_damage = []
    for kind in draw(st.lists(st.sampled_from(["cell", "drop", "add", "bytes"]), max_size=2)):
        if kind == "bytes":
            raw_damage.append(draw(st.tuples(st.floats(0, 1), st.integers(0, 3), st.binary(max_size=4))))
        elif rows:
            row = rows[draw(st.integers(0, len(rows) - 1))]
            if kind == "cell" and row:
                column = draw(st.integers(0, min(2, len(row) - 1)))
                row[column] = draw(st.sampled_from(BAD_CELLS[column]))
            elif kind == "drop" and row:
                del row[draw(st.integers(0, len(row) - 1)):]
            elif kind == "add":
                row.append(draw(st.sampled_from(["", "7"])))
    data = bytearray("\n".join(",".join(row) for row in rows).encode() + draw(st.sampled_from([b"", b"\n", b"\r\n"])))
    for where, length, payload in raw_damage:
        at = int(where * len(data))
        data[at:at + length] = payload
    return bytes(data)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=instances_text(), resume=st.booleans())
def test_fuzz_instances_csv(tmp_path_factory, capsys, text, resume):
    root = tmp_path_factory.mktemp("fuzz")
    bench = make_bench(root / "fz", ["net.onnx", "z.onnx"], ["good.vnnlib"], rows=[])
    (bench / "onnx" / "z.onnx").write_bytes(b"\x08\x07garbage")  # exists, does not load: a row `error`
    (bench / "vnnlib" / "z.vnnlib").write_text("(declare-const X_0 Real)\n(assert (<= X_0 .))\n")
    (bench / "instances.csv").write_bytes(text)
    out = root / "o.csv"
    code, err = run([bench, "--output", out, *(["--resume"] if resume else [])], capsys)
    assert code in (0, 1, 2), err
    assert "Traceback" not in err and "internal error" not in err
    if code == 2:
        assert_refused(code, err)
        assert not out.exists() and not (root / "o_results").exists()  # before any instance
        return
    rows = rows_of(out)
    assert rows[0] == HEADER
    keys = [(row[1], row[2]) for row in rows[1:]]
    assert keys and len(keys) == len(set(keys))
    assert all(len(row) == 6 and row[4] in ("unsat", "sat", "unknown", "timeout", "error") for row in rows[1:])
    assert (code == 1) == all(row[4] == "error" for row in rows[1:])
