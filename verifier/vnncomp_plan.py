"""The input side of a VNN-COMP benchmark run (:mod:`verifier.vnncomp`): reading and
validating ``instances.csv``, an existing results CSV for ``--resume``, and the whole run
up front (:func:`plan_benchmark`), before any instance runs. Nothing here writes a file.

Each failure is a :class:`~verifier.errors.VerifierInputError` naming the file (and line)
or the option.
"""

from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import VerifierInputError
from .outputs import check_output_file, read_complete_lines

RESULTS = ("unsat", "sat", "unknown", "timeout", "error")
HEADER = ("benchmark", "onnx", "vnnlib", "prepare_time", "result", "run_time")


@dataclass(frozen=True)
class Instance:
    """One line of ``instances.csv``: paths as written there and the timeout in seconds."""

    onnx: str
    vnnlib: str
    timeout: float


def bench_file(bench_dir: Path, relative: str) -> Path | None:
    """The file ``relative`` names in ``bench_dir`` (or its ``.gz``), ``None`` if neither is a file."""
    path = bench_dir / relative
    candidates = [path] if path.suffix == ".gz" else [path, path.with_name(path.name + ".gz")]
    for candidate in candidates:
        try:
            if candidate.is_file():
                return candidate
        except (OSError, ValueError):  # a name too long for the file system, a NUL byte
            return None
    return None


def read_instances(path: str | os.PathLike, bench_dir: str | os.PathLike | None = None,
                   notes: list[str] | None = None) -> list[Instance]:
    """Parse an ``instances.csv`` (no header; blank lines ignored).

    Raises :class:`VerifierInputError` naming the file (and line) when it is missing,
    unreadable or not UTF-8, when a row is not ``onnx,vnnlib,timeout`` with a finite
    positive timeout, when it holds no instance, and (given ``bench_dir``) when a file a
    row names exists neither as written nor with ``.gz``. A row repeating an earlier
    ``onnx,vnnlib`` pair is dropped, with a line added to ``notes`` (each instance runs once)."""
    path = Path(path)
    if path.is_dir():
        raise VerifierInputError(f"instances file {path} is a folder; give the instances CSV (onnx,vnnlib,timeout)")
    if not path.is_file():
        raise VerifierInputError(f"instances file not found: {path}")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise VerifierInputError(f"cannot read instances file {path}: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise VerifierInputError(f"{path}, line {line}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset "
                                 f"{exc.start}); instances.csv must be UTF-8 'onnx,vnnlib,timeout' rows") from None
    instances, seen = [], {}
    reader = csv.reader(io.StringIO(text, newline=""))
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise VerifierInputError(f"{path}, line {reader.line_num}: not a CSV row ({exc})") from None
        line = reader.line_num
        row = [cell.strip() for cell in row]
        if not any(row):
            continue
        if len(row) != 3:
            raise VerifierInputError(f"{path}, line {line}: expected 'onnx,vnnlib,timeout', got {len(row)} fields")
        for name, cell in zip(("onnx", "vnnlib"), row):
            if not cell:
                raise VerifierInputError(f"{path}, line {line}: empty {name} path (expected 'onnx,vnnlib,timeout')")
        try:
            timeout = float(row[2])
        except ValueError:
            raise VerifierInputError(f"{path}, line {line}: timeout '{row[2]}' is not a number "
                                     "(give seconds, e.g. 300)") from None
        if not (math.isfinite(timeout) and timeout > 0):
            raise VerifierInputError(f"{path}, line {line}: timeout must be a finite number of seconds > 0, "
                                     f"got {row[2]}")
        if bench_dir is not None:
            for name, cell in zip(("onnx", "vnnlib"), row):
                if bench_file(Path(bench_dir), cell) is None:
                    raise VerifierInputError(f"{path}, line {line}: {name} file not found: {Path(bench_dir) / cell} "
                                             "(nor with .gz)")
        key = (row[0], row[1])
        if key in seen:
            if notes is not None:
                notes.append(f"{path}, line {line} repeats line {seen[key]} ({row[0]},{row[1]}); it runs once")
            continue
        seen[key] = line
        instances.append(Instance(row[0], row[1], timeout))
    if not instances:
        raise VerifierInputError(f"{path}: no instances (expected rows 'onnx,vnnlib,timeout')")
    return instances


def csv_line(row) -> str:
    """One CSV row as text, ending in CRLF (the layout :mod:`csv` writes)."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow(row)
    return buffer.getvalue()


def read_done(path: str | os.PathLike) -> tuple[list[dict[str, str]], list[str], bool]:
    """The rows of an existing results CSV, for ``--resume``.

    Returns ``(rows, lines, cut)``: the rows as dicts keyed by :data:`HEADER`, the
    complete lines of the file (the header first; empty when the file is missing or
    empty) and whether a cut last line (a row interrupted by a kill) was dropped. Raises
    :class:`VerifierInputError` naming the file (and line) when it is not UTF-8, does not
    start with the :data:`HEADER` line, or a complete row is not a results row."""
    path = Path(path)
    if not path.is_file():
        return [], [], False
    try:
        lines, cut = read_complete_lines(path)
    except UnicodeDecodeError as exc:
        raise VerifierInputError(f"--output {path}: not UTF-8 text (offset {exc.start}); it is not a results CSV "
                                 "this tool wrote, so --resume will not append to it (choose another --output)") from None
    except OSError as exc:
        raise VerifierInputError(f"--output {path}: cannot read it for --resume ({exc.strerror})") from None
    if not lines:
        return [], [], cut
    try:
        parsed = list(csv.reader(line.rstrip("\r") for line in lines))
    except csv.Error as exc:
        raise VerifierInputError(f"--output {path}: not a CSV file ({exc}); --resume will not append to it") from None
    header = tuple(cell.strip() for cell in parsed[0])
    if header != HEADER:
        raise VerifierInputError(f"--output {path}, line 1: header is '{','.join(header)[:120]}', expected "
                                 f"'{','.join(HEADER)}'; --resume will not append to another file "
                                 "(choose another --output)")
    rows = []
    for number, row in enumerate(parsed[1:], start=2):
        row = [cell.strip() for cell in row]
        if not any(row):
            continue
        if len(row) != len(HEADER):
            raise VerifierInputError(f"--output {path}, line {number}: expected {len(HEADER)} fields "
                                     f"({','.join(HEADER)}), got {len(row)}")
        record = dict(zip(HEADER, row))
        if record["result"] not in RESULTS:
            raise VerifierInputError(f"--output {path}, line {number}: result '{record['result']}' is not one of "
                                     f"{', '.join(RESULTS)}")
        rows.append(record)
    return rows, lines, cut


def check_domain(domain: str) -> str:
    """Refuse a ``--domain`` that is neither ``auto``, a complete method nor an installed domain."""
    from .complete.methods import METHODS
    from .domains import available_domains

    known = [*METHODS, *sorted(available_domains())]
    if domain not in known:
        raise VerifierInputError(f"--domain '{domain}' is unknown; use one of {', '.join(known)}")
    return domain


@dataclass
class Plan:
    """A validated benchmark run: what :func:`run_benchmark` will do, nothing done yet."""

    bench_dir: Path
    benchmark: str
    instances: list[Instance]       # the instances of this run (after ``limit``)
    todo: list[Instance]            # those still to run (all without ``resume``)
    done: dict[tuple[str, str], str]  # resumed instance → its result
    output: Path
    results_dir: Path
    resume_lines: list[str] | None  # with ``resume``: the complete lines to keep; None: start afresh
    cut: bool                       # a cut last row was dropped from the resumed CSV
    notes: list[str]                # printed once the run starts (e.g. repeated instances)


def plan_benchmark(bench_dir: str | os.PathLike, instances_csv: str | os.PathLike | None = None,
                   timeout_scale: float = 1.0, output: str | os.PathLike | None = None,
                   results_dir: str | os.PathLike | None = None, domain: str = "auto",
                   limit: int | None = None, resume: bool = False) -> Plan:
    """Validate a run up front; raises :class:`VerifierInputError` naming the file (and
    line) or option at the first problem. Writes nothing."""
    bench_dir = Path(bench_dir)
    if not bench_dir.exists():
        raise VerifierInputError(f"benchmark folder not found: {bench_dir}")
    if not bench_dir.is_dir():
        raise VerifierInputError(f"benchmark folder {bench_dir} is a file; give the folder holding instances.csv")
    if not (isinstance(timeout_scale, (int, float)) and math.isfinite(timeout_scale) and timeout_scale > 0):
        raise VerifierInputError(f"--timeout-scale must be a finite number > 0, got {timeout_scale}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise VerifierInputError(f"--limit must be a whole number >= 1 (omit it for every instance), got {limit}")
    check_domain(domain)
    benchmark = bench_dir.resolve().name
    output = Path(output) if output is not None else Path(f"{benchmark}.csv")
    check_output_file(output, "--output")  # a regular file path (devices, FIFOs, folders refused)
    results_dir = Path(results_dir) if results_dir is not None else output.with_name(f"{output.stem}_results")
    if results_dir.exists() and not results_dir.is_dir():
        raise VerifierInputError(f"--results-dir {results_dir}: is a file; give a folder")
    if results_dir.resolve() == output.resolve():
        raise VerifierInputError(f"--results-dir {results_dir} is the --output file; give another folder")

    csv_path = Path(instances_csv) if instances_csv is not None else bench_dir / "instances.csv"
    notes: list[str] = []
    instances = read_instances(csv_path, bench_dir, notes)
    instances = instances[:limit] if limit is not None else instances
    for instance in instances:
        if not math.isfinite(instance.timeout * timeout_scale):
            raise VerifierInputError(f"--timeout-scale {timeout_scale:g} times the timeout {instance.timeout:g} of "
                                     f"{instance.onnx},{instance.vnnlib} is not a finite number of seconds")

    resume_lines, cut, done = None, False, {}
    if resume:
        rows, lines, cut = read_done(output)
        wanted = {(inst.onnx, inst.vnnlib) for inst in instances}
        others = 0
        for row in rows:
            key = (row["onnx"], row["vnnlib"])
            if row["benchmark"] == benchmark and key in wanted:
                done.setdefault(key, row["result"])
            else:
                others += 1
        if others:
            notes.append(f"{output}: keeps {others} earlier row{'s' if others != 1 else ''} of instances outside "
                         f"this run (another benchmark, or beyond --limit); the summary counts only this run's "
                         f"{len(instances)}")
        resume_lines = lines if lines else None
    todo = [inst for inst in instances if (inst.onnx, inst.vnnlib) not in done]
    if cut:
        notes.append(f"{output}: dropped a last row cut by an interrupted run (its instance runs again when it is "
                     "among this run's instances)")
    return Plan(bench_dir, benchmark, instances, todo, done, output, results_dir, resume_lines, cut, notes)
