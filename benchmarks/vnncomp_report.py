"""Compare `verifier vnncomp` results CSVs with the tools published in reference.csv.

A thin wrapper of :mod:`verifier.report` (``verifier report``, see docs/outputs.md), kept for
its folder-and-CSV arguments and the short tables of benchmarks/README.md:

    python benchmarks/vnncomp_report.py BENCH_DIR results.csv [BENCH_DIR results.csv ...]
    python benchmarks/vnncomp_report.py all_results.csv --bench-root ../shared/benchmarks/vnncomp
    python benchmarks/vnncomp_report.py BENCH_DIR results.csv --markdown   # tables for README.md

A results CSV given right after a BENCH_DIR is compared with that folder's reference.csv;
a results CSV given alone is split by its `benchmark` column and each benchmark's folder
is looked up under --bench-root (default $VERIFIER_BENCHMARKS or ../shared/benchmarks/vnncomp).
Columns: instances, solved (sat + unsat), wrong, timeout/unknown, error, time s.

Exit codes: 0, 1 when any of our verdicts is wrong, 2 for bad input (one ``error:`` line).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from verifier.errors import VerifierInputError
from verifier.logs import configure as configure_logs, reset as reset_logs
from verifier.report import (BRIEF_COLUMNS, BenchmarkReport, ToolSummary, benchmark_report,  # noqa: F401
                             build_report, format_table, instance_key, load_reference, normalise_result,
                             read_reference, read_results, summarise)


def _default_root() -> Path:
    env = os.environ.get("VERIFIER_BENCHMARKS")
    return Path(env) if env else Path(__file__).resolve().parent.parent.parent / "shared" / "benchmarks" / "vnncomp"


def reports(paths: list[str], bench_root: Path) -> list[BenchmarkReport]:
    """One report per benchmark from the command line's folders and CSVs (name order).
    Raises :class:`VerifierInputError` for a path that is neither, a folder not followed
    by a CSV, or an unreadable CSV."""
    pairs: dict[str, tuple[Path, list[dict[str, str]]]] = {}
    alone: list[dict[str, str]] = []
    pending: Path | None = None
    for arg in paths:
        path = Path(arg)
        if path.is_dir():
            pending = path
            continue
        if not path.is_file():
            raise VerifierInputError(f"not a benchmark folder or results CSV: {path}")
        rows = read_results(path)
        if pending is not None:
            pairs.setdefault(pending.resolve().name, (pending, []))[1].extend(rows)
            pending = None
        else:
            alone.extend(rows)
    if pending is not None:
        raise VerifierInputError(f"benchmark folder {pending} is not followed by a results CSV")
    out = []
    for name, (bench_dir, rows) in pairs.items():
        ref = bench_dir / "reference.csv"
        if not ref.is_file():
            print(f"note: no {ref}; {name}: our results only", file=sys.stderr)
        out.append(benchmark_report(name, rows, load_reference(ref) if ref.is_file() else None))
    built = build_report(alone, bench_root=bench_root if bench_root.is_dir() else None)
    for note in built.notes:
        print(f"note: {note}", file=sys.stderr)
    return sorted(out + built.benchmarks, key=lambda b: b.name)


def main(argv: list[str] | None = None) -> int:
    """Print one table per benchmark; exit 1 when any of our verdicts is wrong, 2 (via
    ``SystemExit``) for bad input."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", help="BENCH_DIR results.csv pairs, or results CSVs alone")
    parser.add_argument("--bench-root", type=Path, default=_default_root(),
                        help="folder holding <benchmark>/reference.csv for CSVs given alone")
    parser.add_argument("--markdown", action="store_true", help="print markdown tables (for benchmarks/README.md)")
    args = parser.parse_args(argv)
    configure_logs("default")  # the library's notes (e.g. a cut row left out) as note: lines
    try:
        try:
            benches = reports(args.paths, args.bench_root)
        except VerifierInputError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
        for bench in benches:
            print(format_table(bench.name, bench.summaries, bench.missing, args.markdown, columns=BRIEF_COLUMNS))
        return 1 if any(b.summaries[0].wrong for b in benches) else 0
    finally:
        reset_logs()


if __name__ == "__main__":
    sys.exit(main())
