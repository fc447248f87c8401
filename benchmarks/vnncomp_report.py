"""Compare a `verifier vnncomp` results CSV with the tools published in reference.csv.

    python benchmarks/vnncomp_report.py BENCH_DIR results.csv [BENCH_DIR results.csv ...]
    python benchmarks/vnncomp_report.py all_results.csv --bench-root ../shared/benchmarks/vnncomp
    python benchmarks/vnncomp_report.py BENCH_DIR results.csv --markdown   # tables for README.md

A results CSV given right after a BENCH_DIR is compared with that folder's reference.csv;
a results CSV given alone is split by its `benchmark` column and each benchmark's folder
is looked up under --bench-root (default $VERIFIER_BENCHMARKS or ../shared/benchmarks/vnncomp).

Per benchmark, one line per tool (ours first, then every `<tool>_result` column of
reference.csv), over the instances in our results only: solved (sat + unsat), wrong (a
sat/unsat verdict that contradicts a sat/unsat `expected`), timeout/unknown, error, and
the total time in seconds (negative published times count as 0).

Exit codes: 0, 1 when any of our verdicts is wrong, 2 for bad input (one ``error:`` line:
a missing or non-UTF-8 CSV, wrong columns). A results row cut by an interrupted run (the
last line, without its newline) is left out with a note, as ``verifier vnncomp --resume``
does.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

OURS = "verifier"
ALIASES = {"holds": "unsat", "violated": "sat", "": "unknown"}
RESULT_HEADER = ("benchmark", "onnx", "vnnlib", "prepare_time", "result", "run_time")


@dataclass
class ToolSummary:
    """One tool's counts on one benchmark."""

    tool: str
    instances: int = 0
    solved: int = 0
    wrong: int = 0
    undecided: int = 0  # timeout or unknown
    errors: int = 0
    seconds: float = 0.0


def normalise_result(text: str) -> str:
    """A result word in VNN-COMP spelling: ``sat``/``unsat``/``unknown``/``timeout``/``error``."""
    text = text.strip().lower()
    return ALIASES.get(text, text)


def instance_key(onnx: str, vnnlib: str) -> tuple[str, str]:
    """A path pair comparable across CSVs: no leading ``./``, no ``.gz``, ``/`` separators."""
    def clean(path: str) -> str:
        path = path.strip().replace("\\", "/")
        while path.startswith("./"):
            path = path[2:]
        return path[:-3] if path.endswith(".gz") else path

    return clean(onnx), clean(vnnlib)


def fail(message: str) -> NoReturn:
    """Bad input: one ``error:`` line on stderr, exit 2."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def _read_text(path: str | os.PathLike) -> str:
    """The UTF-8 text of ``path``; a missing, unreadable or non-UTF-8 file is an error."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        fail(f"{path}, line {line}: not UTF-8 text")


def _csv_rows(path: str | os.PathLike, text: str) -> list[list[str]]:
    try:
        return list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        fail(f"{path}: not a CSV file ({exc})")


def read_results(path: str | os.PathLike) -> list[dict[str, str]]:
    """Rows of a results CSV (header optional) as dicts keyed by the competition columns."""
    text = _read_text(path)
    rows = _csv_rows(path, text)
    numbers = [number for number, row in enumerate(rows, start=1) if row]
    rows = [row for row in rows if row]
    if rows and not text.endswith("\n") and len(rows[-1]) != len(RESULT_HEADER):
        print(f"note: {path}: left out a last row cut by an interrupted run", file=sys.stderr)
        rows, numbers = rows[:-1], numbers[:-1]
    if rows and tuple(cell.strip() for cell in rows[0]) == RESULT_HEADER:
        rows, numbers = rows[1:], numbers[1:]
    for number, row in zip(numbers, rows):
        if len(row) != len(RESULT_HEADER):
            fail(f"{path}, line {number}: expected {len(RESULT_HEADER)} columns ({','.join(RESULT_HEADER)}), "
                 f"got {len(row)}")
    return [dict(zip(RESULT_HEADER, (cell.strip() for cell in row))) for row in rows]


def read_reference(path: str | os.PathLike) -> tuple[list[str], dict[tuple[str, str], dict[str, str]]]:
    """Tool names (from ``<tool>_result`` columns) and reference rows keyed by :func:`instance_key`."""
    text = _read_text(path)
    _csv_rows(path, text)  # a malformed file is an error here, not a traceback below
    reader = csv.DictReader(io.StringIO(text, newline=""))
    fields = reader.fieldnames or []
    missing = [name for name in ("onnx", "vnnlib") if name not in fields]
    if missing:
        fail(f"{path}, line 1: no {' or '.join(missing)} column (expected onnx,vnnlib,timeout,expected,"
             "<tool>_result,<tool>_time,...)")
    tools = [name[: -len("_result")] for name in fields if name.endswith("_result")]
    rows = {instance_key(row["onnx"] or "", row["vnnlib"] or ""): row for row in reader}
    return tools, rows


def _add(summary: ToolSummary, result: str, seconds: float, expected: str) -> None:
    """Count one instance's verdict into ``summary``."""
    summary.instances += 1
    summary.seconds += max(seconds, 0.0)
    if result in ("sat", "unsat"):
        summary.solved += 1
        if expected in ("sat", "unsat") and result != expected:
            summary.wrong += 1
    elif result in ("timeout", "unknown"):
        summary.undecided += 1
    else:
        summary.errors += 1


def _number(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else 0.0
    except ValueError:
        return 0.0


def summarise(results: list[dict[str, str]], tools: list[str],
              reference: dict[tuple[str, str], dict[str, str]]) -> tuple[list[ToolSummary], int]:
    """Our summary followed by each tool's, over the instances in ``results``.

    Returns the summaries and how many of our instances are missing from the reference
    (counted for us, without an expected answer, and not for the published tools)."""
    ours, theirs = ToolSummary(OURS), {tool: ToolSummary(tool) for tool in tools}
    missing = 0
    for row in results:
        ref = reference.get(instance_key(row["onnx"], row["vnnlib"]))
        expected = normalise_result(ref.get("expected", "")) if ref else ""
        _add(ours, normalise_result(row["result"]), _number(row["run_time"]), expected)
        if ref is None:
            missing += 1
            continue
        for tool in tools:
            _add(theirs[tool], normalise_result(ref.get(f"{tool}_result", "")), _number(ref.get(f"{tool}_time")), expected)
    return [ours, *theirs.values()], missing


def format_table(benchmark: str, summaries: list[ToolSummary], missing: int = 0, markdown: bool = False) -> str:
    """A text (or markdown) table of ``summaries`` under a ``benchmark`` title."""
    head = ["tool", "instances", "solved", "wrong", "timeout/unknown", "error", "time s"]
    body = [[s.tool, str(s.instances), str(s.solved), str(s.wrong), str(s.undecided), str(s.errors), f"{s.seconds:.1f}"]
            for s in summaries]
    note = f"{missing} of our instances are not in reference.csv" if missing else ""
    if markdown:
        lines = [f"### {benchmark}", "", "| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in body]
        return "\n".join(lines + ([f"\n{note}"] if note else [])) + "\n"
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
    fmt = lambda row: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
    lines = [benchmark, fmt(head), *(fmt(row) for row in body)]
    return "\n".join(lines + ([note] if note else [])) + "\n"


def _default_root() -> Path:
    env = os.environ.get("VERIFIER_BENCHMARKS")
    return Path(env) if env else Path(__file__).resolve().parent.parent.parent / "shared" / "benchmarks" / "vnncomp"


def group(paths: list[str], bench_root: Path) -> dict[str, tuple[Path, list[dict[str, str]]]]:
    """``{benchmark: (bench_dir, result rows)}`` from the command line's folders and CSVs."""
    groups: dict[str, tuple[Path, list[dict[str, str]]]] = {}
    pending: Path | None = None
    for arg in paths:
        path = Path(arg)
        if path.is_dir():
            pending = path
            continue
        if not path.is_file():
            fail(f"not a benchmark folder or results CSV: {path}")
        rows = read_results(path)
        if pending is not None:
            groups.setdefault(pending.resolve().name, (pending, []))[1].extend(rows)
            pending = None
            continue
        by_name: dict[str, list[dict[str, str]]] = defaultdict(list)
        for row in rows:
            by_name[row["benchmark"]].append(row)
        for name, bench_rows in by_name.items():
            groups.setdefault(name, (bench_root / name, []))[1].extend(bench_rows)
    if pending is not None:
        fail(f"benchmark folder {pending} is not followed by a results CSV")
    return groups


def main(argv: list[str] | None = None) -> int:
    """Print one table per benchmark; exit 1 when any of our verdicts is wrong."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", help="BENCH_DIR results.csv pairs, or results CSVs alone")
    parser.add_argument("--bench-root", type=Path, default=_default_root(),
                        help="folder holding <benchmark>/reference.csv for CSVs given alone")
    parser.add_argument("--markdown", action="store_true", help="print markdown tables (for benchmarks/README.md)")
    args = parser.parse_args(argv)
    any_wrong = False
    for name, (bench_dir, rows) in sorted(group(args.paths, args.bench_root).items()):
        ref_path = bench_dir / "reference.csv"
        tools, reference = read_reference(ref_path) if ref_path.is_file() else ([], {})
        summaries, missing = summarise(rows, tools, reference)
        if not ref_path.is_file():
            missing = 0
            print(f"note: no {ref_path}; {name}: our results only", file=sys.stderr)
        print(format_table(name, summaries, missing, args.markdown))
        any_wrong |= summaries[0].wrong > 0
    return 1 if any_wrong else 0


if __name__ == "__main__":
    sys.exit(main())
