"""The VNN-COMP runner's time split (``run_benchmark(timings=...)``): one row per instance
beside the results CSV, with model load / spec parse / fidelity check / search seconds and
the subdomains the search reported bounding."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from verifier.errors import VerifierInputError
from verifier.vnncomp import TIMINGS_HEADER, run_benchmark
from verifier.vnncomp_instance import bounded_count

from conftest import DEFAULT_MODEL, PROPERTIES, REPO

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = REPO / "tests" / "cases" / "models" / "small5x3.onnx"
# y_2 − y_0 ≥ −4.6 on [−1, 1]^5 (sampled minimum −4.598): unsafe set below −4.83 is empty,
# but neither Box nor CROWN proves it at the root, so input splitting runs
SPLIT_SPEC = "".join(f"(declare-const X_{i} Real)\n" for i in range(5)) + \
    "".join(f"(declare-const Y_{j} Real)\n" for j in range(3)) + \
    "".join(f"(assert (>= X_{i} -1))\n(assert (<= X_{i} 1))\n" for i in range(5)) + \
    "(assert (<= (- Y_2 Y_0) -4.83))\n"


@pytest.fixture
def bench(tmp_path: Path) -> Path:
    """unsat at the root (mnist_small ε 0.02), sat (ε 0.3), unsat by input splitting
    (small5x3), and a model that does not load."""
    root = tmp_path / "timed"
    (root / "onnx").mkdir(parents=True)
    (root / "vnnlib").mkdir()
    shutil.copy(DEFAULT_MODEL, root / "onnx" / "mnist_small.onnx")
    shutil.copy(SMALL, root / "onnx" / "small5x3.onnx")
    (root / "onnx" / "broken.onnx").write_bytes(b"not an onnx model")
    for name in ("mnist_0_eps0.02.vnnlib", "mnist_5_eps0.3.vnnlib"):
        shutil.copy(PROPERTIES / name, root / "vnnlib" / name)
    (root / "vnnlib" / "split.vnnlib").write_text(SPLIT_SPEC)
    rows = [("onnx/mnist_small.onnx", "vnnlib/mnist_0_eps0.02.vnnlib"),
            ("onnx/mnist_small.onnx", "vnnlib/mnist_5_eps0.3.vnnlib"),
            ("onnx/small5x3.onnx", "vnnlib/split.vnnlib"),
            ("onnx/broken.onnx", "vnnlib/mnist_5_eps0.3.vnnlib")]
    (root / "instances.csv").write_text("".join(f"{o},{v},30\n" for o, v in rows))
    return root


def read(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_timings_rows_split_each_results_row(bench, tmp_path):
    out, timings = tmp_path / "timed.csv", tmp_path / "timed_timings.csv"
    run_benchmark(bench, output=out, timings=timings, progress=False, cache=False)
    with open(timings, newline="") as handle:
        assert next(csv.reader(handle)) == list(TIMINGS_HEADER)
    results, split = read(out), read(timings)
    assert [(r["onnx"], r["vnnlib"], r["result"]) for r in results] == \
        [(t["onnx"], t["vnnlib"], t["result"]) for t in split]
    by_spec = {(t["onnx"], t["vnnlib"]): t for t in split}
    assert [r["result"] for r in results] == ["unsat", "sat", "unsat", "error"]
    for row, times in zip(results, split):
        if row["result"] == "error":  # the model never loaded: no step was timed
            assert times["load"] == times["parse"] == times["check"] == times["search"] == ""
            continue
        parts = [float(times[k]) for k in ("load", "parse", "check")]
        assert all(p >= 0 for p in parts)
        # the three steps are the prepare time (each rounded to the millisecond)
        assert abs(sum(parts) - float(row["prepare_time"])) <= 0.01
        assert times["search"] == row["run_time"]
    # the second instance of mnist_small reuses the model loaded by the first
    first = by_spec["onnx/mnist_small.onnx", "vnnlib/mnist_0_eps0.02.vnnlib"]
    second = by_spec["onnx/mnist_small.onnx", "vnnlib/mnist_5_eps0.3.vnnlib"]
    assert float(second["load"]) < float(first["load"])
    assert int(by_spec["onnx/small5x3.onnx", "vnnlib/split.vnnlib"]["subdomains"]) > 1
    assert first["subdomains"] == ""  # decided without branch-and-bound


def test_timings_resume_appends_and_refuses_another_file(bench, tmp_path):
    out, timings = tmp_path / "timed.csv", tmp_path / "t.csv"
    run_benchmark(bench, output=out, timings=timings, progress=False, limit=1)
    run_benchmark(bench, output=out, timings=timings, progress=False, limit=2, resume=True)
    assert [t["vnnlib"] for t in read(timings)] == ["vnnlib/mnist_0_eps0.02.vnnlib", "vnnlib/mnist_5_eps0.3.vnnlib"]
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    with pytest.raises(VerifierInputError, match="--timings .*other.csv, line 1"):
        run_benchmark(bench, output=out, timings=other, progress=False, limit=2, resume=True)
    with pytest.raises(VerifierInputError, match="is the --output file"):
        run_benchmark(bench, output=out, timings=out, progress=False, limit=1)
    for victim, what in ((bench / "instances.csv", "instances CSV"), (bench / "vnnlib" / "split.vnnlib", "spec")):
        before = victim.read_bytes()
        with pytest.raises(VerifierInputError, match=f"--timings .* is the .*{what}"):
            run_benchmark(bench, output=out, timings=victim, progress=False, limit=1)
        assert victim.read_bytes() == before


def test_bounded_count_sums_the_search_notes():
    notes = ["region 0: 0/1 disjuncts refuted by crown", "region 0: input-split branch-and-bound bounded 87 boxes",
             "region 1: relu-split branch-and-bound bounded 12 subdomains (depth ≤ 3, frontier ≤ 5)"]
    assert bounded_count(notes) == 99
    assert bounded_count(notes[:1]) is None
