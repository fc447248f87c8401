#!/usr/bin/env python
"""float32 against float64 bound arithmetic: the verdicts of one benchmark, instance by instance (issue 14).

Usage::

    python benchmarks/dtype_verdicts.py BENCH_DIR [--timeout-scale S] [--limit N] [--out DIR] [--threads T]

Runs ``verifier vnncomp BENCH_DIR --dtype float64`` and then ``--dtype float32`` (same
instances, same scaled timeouts, one after the other in child processes, the IR cache filled
by the first), joins the two results CSVs by instance and prints one markdown table: per
dtype the solved count (sat + unsat), the wrong ones against ``reference.csv``'s
``expected`` column, timeouts/unknown and run time; then the instances both decided (and
whether every one of them agrees), those only one decided, and every contradiction (sat in
one, unsat in the other), flagged ``!!``. Exit 1 when any verdict contradicts the other
dtype's or the expected answer, or any instance ends in ``error``, else 0; 2 for bad options.

What it measures: whether ``--dtype float32`` (every bound, the search and the refutation
margin ``1e-6·(1 + |b|)`` in float32, docs/complete.md) ever answers differently from
float64 on the same instance. A timeout in one dtype against a verdict in the other is a
speed difference, not a disagreement; it is listed but does not fail the run.

Not a test: it takes as long as two runs of the benchmark.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from verifier.errors import VerifierInputError
from verifier.report_csv import instance_key, normalise_result, read_reference, read_results, run_time_seconds
from verifier.vnncomp_plan import plan_benchmark

DTYPES = ("float64", "float32")
DECIDED = ("sat", "unsat")


def run_benchmark(bench: Path, dtype: str, out: Path, scale: float, limit: int | None, threads: int) -> tuple[Path, float]:
    """``verifier vnncomp`` on ``bench`` in ``dtype``: the results CSV and the wall seconds."""
    csv = out / f"{bench.name}_{dtype}.csv"
    command = [sys.executable, "-m", "verifier", "vnncomp", str(bench), "--dtype", dtype, "--output", str(csv),
               "--timeout-scale", str(scale), "--quiet"]
    if limit is not None:
        command += ["--limit", str(limit)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    return csv, time.perf_counter() - start


def verdicts(csv: Path) -> dict[tuple[str, str], tuple[str, float]]:
    """Instance key → (result word, run seconds) of a results CSV."""
    rows = read_results(csv)
    return {instance_key(r["onnx"], r["vnnlib"]): (normalise_result(r["result"]), run_time_seconds(r["run_time"]) or 0.0)
            for r in rows}


class _Parser(argparse.ArgumentParser):
    """Bad arguments as one ``error:`` line and exit 2 (no usage block)."""

    def error(self, message: str):
        print(f"error: {self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def _refusal(args) -> str | None:
    """What is wrong with the options, before any work (``None``: nothing; the ``--out`` folder
    is created last, once everything else is valid). The benchmark folder, its instances,
    ``--timeout-scale`` and ``--limit`` are checked as the runner checks them
    (:func:`~verifier.vnncomp_plan.plan_benchmark`, which writes nothing)."""
    try:
        plan_benchmark(args.bench, timeout_scale=args.timeout_scale, limit=args.limit)
    except VerifierInputError as exc:
        return str(exc)
    if args.threads < 1:
        return f"--threads must be a whole number >= 1, got {args.threads}"
    if args.out.exists() and not args.out.is_dir():
        return f"--out {args.out} is not a folder"
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"--out {args.out}: cannot create the folder ({exc.strerror})"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="dtype_verdicts.py", description=__doc__.splitlines()[0])
    parser.add_argument("bench", type=Path, help="folder with instances.csv (and reference.csv for the expected answers)")
    parser.add_argument("--timeout-scale", type=float, default=1.0, help="multiply every instance timeout (default 1)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N instances")
    parser.add_argument("--out", type=Path, default=Path("runs/dtype_verdicts"), help="folder for the two CSVs")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each run (default 1)")
    args = parser.parse_args(argv)
    expected = {}
    try:
        refusal = _refusal(args)
        if refusal is None and (args.bench / "reference.csv").is_file():
            _, rows = read_reference(args.bench / "reference.csv")
            expected = {k: normalise_result(r.get("expected", "")) for k, r in rows.items()}
    except VerifierInputError as exc:
        refusal = str(exc)
    if refusal:
        print(f"error: {refusal}", file=sys.stderr)
        return 2
    load = [os.getloadavg()[0]]
    found, wall = {}, {}
    for dtype in DTYPES:
        try:
            csv, wall[dtype] = run_benchmark(args.bench, dtype, args.out, args.timeout_scale, args.limit, args.threads)
        except subprocess.CalledProcessError as exc:  # the runner printed its own error: line
            print(f"error: verifier vnncomp --dtype {dtype} on {args.bench} ended with exit code {exc.returncode}",
                  file=sys.stderr)
            return 2 if exc.returncode == 2 else 1
        found[dtype] = verdicts(csv)
        load.append(os.getloadavg()[0])
    keys = sorted(set(found["float64"]) & set(found["float32"]))
    print(f"## {args.bench.name}: float64 against float32, timeouts × {args.timeout_scale}, "
          f"{len(keys)} instances (load average {' → '.join(f'{x:.1f}' for x in load)})\n")
    print("| dtype | solved | sat | unsat | wrong | timeout/unknown | error | run time s | wall s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    failed = False
    for dtype in DTYPES:
        words = [found[dtype][k][0] for k in keys]
        wrong = sum(w in DECIDED and expected.get(k) in DECIDED and w != expected[k] for k, w in zip(keys, words))
        failed |= wrong > 0
        errors = words.count("error")
        failed |= errors > 0
        print(f"| {dtype} | {sum(w in DECIDED for w in words)} | {words.count('sat')} | {words.count('unsat')} | "
              f"{wrong} | {sum(w not in DECIDED and w != 'error' for w in words)} | {errors} | "
              f"{sum(found[dtype][k][1] for k in keys):.1f} | {wall[dtype]:.1f} |")
    both = [k for k in keys if found["float64"][k][0] in DECIDED and found["float32"][k][0] in DECIDED]
    contradictions = [k for k in both if found["float64"][k][0] != found["float32"][k][0]]
    one = [k for k in keys if (found["float64"][k][0] in DECIDED) != (found["float32"][k][0] in DECIDED)]
    failed |= bool(contradictions)
    print(f"\nBoth decided: {len(both)}, of which {len(both) - len(contradictions)} agree; "
          f"decided by one dtype only: {len(one)}; contradictions: {len(contradictions)}")
    for k in one:
        print(f"- one only: {k[0]} {k[1]}: float64 {found['float64'][k][0]}, float32 {found['float32'][k][0]}")
    for k in contradictions:
        print(f"- !! {k[0]} {k[1]}: float64 {found['float64'][k][0]}, float32 {found['float32'][k][0]}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
