"""The ``verifier`` program's exit: a ``verify`` run as the program leaves with ``os._exit``
once its verdict is written and flushed (no interpreter shutdown; a library call of
:func:`verifier.cli.main` returns, as every in-process CLI test shows); and
``vnncomp --timings FILE`` writes the time split."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys

from verifier.vnncomp import TIMINGS_HEADER

from cli_helpers import run
from conftest import DEFAULT_MODEL, PROPERTIES

UNSAT = PROPERTIES / "mnist_0_eps0.02.vnnlib"
# the program's entry point, with an exit hook that reports whether interpreter shutdown ran
PROGRAM = ("import atexit, sys; atexit.register(lambda: print('shutdown ran', file=sys.stderr)); "
           "sys.argv = ['verifier', *sys.argv[1:]]; from verifier.cli import main; sys.exit(main())")


def program(tmp_path, *args):
    return subprocess.run([sys.executable, "-c", PROGRAM, *map(str, args)], capture_output=True, text=True,
                          cwd=tmp_path, env={**os.environ, "VERIFIER_NO_SERVE": "1"}, timeout=300)


def test_verify_as_the_program_skips_shutdown_after_writing_its_verdict(tmp_path):
    done = program(tmp_path, "verify", DEFAULT_MODEL, UNSAT, "--result-file", "r.txt", "--json")
    assert done.returncode == 0 and "shutdown ran" not in done.stderr, done.stderr
    assert '"result": "unsat"' in done.stdout and done.stdout.endswith("}\n")  # the whole record, flushed
    assert (tmp_path / "r.txt").read_text() == "unsat\n"
    refused = program(tmp_path, "verify", DEFAULT_MODEL, "missing.vnnlib")
    assert refused.returncode == 2 and refused.stderr.startswith("error: ") and "shutdown ran" not in refused.stderr
    other = program(tmp_path, "domains")  # other commands exit as Python does
    assert other.returncode == 0 and "shutdown ran" in other.stderr


def test_vnncomp_timings_option_writes_the_time_split(tmp_path, capsys):
    bench = tmp_path / "bench"
    bench.mkdir()
    shutil.copy(DEFAULT_MODEL, bench / "net.onnx")
    shutil.copy(UNSAT, bench / "prop.vnnlib")
    (bench / "instances.csv").write_text("net.onnx,prop.vnnlib,30\n")
    out, timings = tmp_path / "out.csv", tmp_path / "timings.csv"
    code, stdout, err = run(capsys, "vnncomp", bench, "--output", out, "--timings", timings)
    assert code == 0 and "unsat 1" in stdout, err
    with open(timings, newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == list(TIMINGS_HEADER) and len(rows) == 2
    row = dict(zip(rows[0], rows[1]))
    assert row["result"] == "unsat" and float(row["search"]) >= 0
    code, stdout, err = run(capsys, "vnncomp", bench, "--output", out, "--timings", out)
    assert code == 2 and err.startswith("error: --timings") and len(err.splitlines()) == 1, err
