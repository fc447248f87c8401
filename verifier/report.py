"""Benchmark reports: a ``verifier vnncomp`` results CSV beside the published tools.

``verifier report RESULTS.csv [--reference reference.csv]`` (see ``docs/outputs.md``):

- :func:`read_results` / :func:`read_reference` read the competition CSVs (bad input raises
  :class:`~verifier.errors.VerifierInputError` naming the file and line);
- :func:`build_report` groups our rows by benchmark, finds each benchmark's reference and
  counts, per tool (ours first), sat / unsat / wrong / timeout / unknown / error, total and
  median time (:class:`ToolSummary`), and lists our wrong or unconfirmed answers
  (:class:`Flagged`);
- :func:`render_text`, :func:`render_markdown`, :func:`render_html` draw the tables;
  :mod:`verifier.report_plot` draws the cactus plot (matplotlib, the ``plots`` extra).

Result words follow VNN-COMP: ``holds`` is ``unsat``, ``violated`` is ``sat``, an empty cell
is ``unknown``.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import math
import os
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from .errors import VerifierInputError

OURS = "verifier"
ALIASES = {"holds": "unsat", "violated": "sat", "": "unknown"}
RESULT_HEADER = ("benchmark", "onnx", "vnnlib", "prepare_time", "result", "run_time")
ANSWERS = ("sat", "unsat")


@dataclass
class ToolSummary:
    """One tool's counts on one benchmark. ``times`` holds every instance's run time
    (seconds, ``≥ 0``); ``solved_times`` those of its correct-or-unchecked ``sat``/``unsat``
    answers (what the cactus plot draws)."""

    tool: str
    instances: int = 0
    sat: int = 0
    unsat: int = 0
    wrong: int = 0
    timeout: int = 0
    unknown: int = 0
    errors: int = 0
    times: list[float] = field(default_factory=list)
    solved_times: list[float] = field(default_factory=list)

    @property
    def solved(self) -> int:
        """``sat`` + ``unsat`` answers, wrong ones included (see :attr:`wrong`)."""
        return self.sat + self.unsat

    @property
    def undecided(self) -> int:
        """``timeout`` + ``unknown`` answers."""
        return self.timeout + self.unknown

    @property
    def seconds(self) -> float:
        """Total run time (seconds)."""
        return float(sum(self.times))

    @property
    def median(self) -> float:
        """Median run time (seconds; 0 without instances)."""
        return float(statistics.median(self.times)) if self.times else 0.0

    def add(self, result: str, seconds: float, expected: str) -> None:
        """Count one instance: ``result`` and ``expected`` as :func:`normalise_result` gives
        them, ``seconds`` its run time (a negative time, a published tool's "not run",
        counts as 0)."""
        seconds = max(seconds, 0.0)
        self.instances += 1
        self.times.append(seconds)
        if result in ANSWERS:
            setattr(self, result, getattr(self, result) + 1)
            if expected in ANSWERS and result != expected:
                self.wrong += 1
            else:
                self.solved_times.append(seconds)
        elif result == "timeout":
            self.timeout += 1
        elif result == "unknown":
            self.unknown += 1
        else:
            self.errors += 1


@dataclass
class Flagged:
    """One of our answers to look at: ``kind`` is ``'wrong'`` (contradicts ``expected``) or
    ``'unconfirmed'`` (see :func:`flag`), ``reason`` says why in words."""

    benchmark: str
    onnx: str
    vnnlib: str
    result: str
    expected: str
    kind: str
    reason: str


@dataclass
class Reference:
    """A VNN-COMP ``reference.csv``: the published tools (from its ``<tool>_result``
    columns) and its rows keyed by :func:`instance_key`."""

    path: str
    tools: list[str]
    rows: dict[tuple[str, str], dict[str, str]]


@dataclass
class BenchmarkReport:
    """One benchmark: tool summaries (ours first), how many of our instances the reference
    lacks (``missing``), the flagged answers and the reference used (``None``: ours only)."""

    name: str
    summaries: list[ToolSummary]
    missing: int
    flagged: list[Flagged]
    reference: str | None


@dataclass
class Report:
    """Every benchmark of a results file, in name order."""

    benchmarks: list[BenchmarkReport]
    notes: list[str] = field(default_factory=list)

    @property
    def any_wrong(self) -> bool:
        """Whether any of our answers contradicts an expected one."""
        return any(b.summaries[0].wrong for b in self.benchmarks)


def normalise_result(text: str) -> str:
    """A result word in VNN-COMP spelling: ``sat``/``unsat``/``unknown``/``timeout``/``error``/…"""
    text = (text or "").strip().lower()
    return ALIASES.get(text, text)


def instance_key(onnx: str, vnnlib: str) -> tuple[str, str]:
    """A path pair comparable across CSVs: no leading ``./``, no ``.gz``, ``/`` separators."""
    def clean(path: str) -> str:
        path = path.strip().replace("\\", "/")
        while path.startswith("./"):
            path = path[2:]
        return path[:-3] if path.endswith(".gz") else path

    return clean(onnx), clean(vnnlib)


def _read_text(path: str | os.PathLike) -> str:
    """The UTF-8 text of ``path``; :class:`VerifierInputError` for a missing, unreadable or
    non-UTF-8 file (with the line of the first bad byte)."""
    if os.path.isdir(path):
        raise VerifierInputError(f"{path}: is a folder; give a CSV file")
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise VerifierInputError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise VerifierInputError(f"{path}, line {line}: not UTF-8 text") from None


def _csv_rows(path: str | os.PathLike, text: str) -> list[list[str]]:
    try:
        return list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        raise VerifierInputError(f"{path}: not a CSV file ({exc})") from None


def read_results(path: str | os.PathLike, notes: list[str] | None = None) -> list[dict[str, str]]:
    """Rows of a results CSV (``benchmark,onnx,vnnlib,prepare_time,result,run_time``,
    header optional) as dicts keyed by those columns, cells stripped.

    A last row without its newline and with too few cells (cut by an interrupted run) is
    left out, with a line appended to ``notes`` (printed to stderr when ``notes`` is
    ``None``). Raises :class:`VerifierInputError` for a missing, unreadable, non-UTF-8 or
    malformed file, or a row with another number of columns (naming its line)."""
    text = _read_text(path)
    rows = _csv_rows(path, text)
    numbers = [number for number, row in enumerate(rows, start=1) if row]
    rows = [row for row in rows if row]
    if rows and not text.endswith("\n") and len(rows[-1]) != len(RESULT_HEADER):
        note = f"{path}: left out a last row cut by an interrupted run"
        if notes is None:
            print(f"note: {note}", file=sys.stderr)
        else:
            notes.append(note)
        rows, numbers = rows[:-1], numbers[:-1]
    if rows and tuple(cell.strip() for cell in rows[0]) == RESULT_HEADER:
        rows, numbers = rows[1:], numbers[1:]
    for number, row in zip(numbers, rows):
        if len(row) != len(RESULT_HEADER):
            raise VerifierInputError(f"{path}, line {number}: expected {len(RESULT_HEADER)} columns "
                                     f"({','.join(RESULT_HEADER)}), got {len(row)}")
    return [dict(zip(RESULT_HEADER, (cell.strip() for cell in row))) for row in rows]


def read_reference(path: str | os.PathLike) -> tuple[list[str], dict[tuple[str, str], dict[str, str]]]:
    """Tool names (from ``<tool>_result`` columns, in column order) and the rows of a
    ``reference.csv`` keyed by :func:`instance_key`. Raises :class:`VerifierInputError` for
    a missing, unreadable, non-UTF-8 or malformed file, or one without ``onnx``/``vnnlib``
    columns."""
    text = _read_text(path)
    _csv_rows(path, text)  # a malformed file is an error here, not a traceback below
    reader = csv.DictReader(io.StringIO(text, newline=""))
    fields = [name.strip() for name in reader.fieldnames or []]
    reader.fieldnames = fields
    missing = [name for name in ("onnx", "vnnlib") if name not in fields]
    if missing:
        raise VerifierInputError(f"{path}, line 1: no {' or '.join(missing)} column (expected onnx,vnnlib,"
                                 "timeout,expected,<tool>_result,<tool>_time,...)")
    tools = [name[: -len("_result")] for name in fields if name.endswith("_result") and name != "_result"]
    rows = {instance_key(row["onnx"] or "", row["vnnlib"] or ""): row for row in reader}
    return tools, rows


def load_reference(path: str | os.PathLike) -> Reference:
    """:func:`read_reference` as a :class:`Reference` (same errors)."""
    tools, rows = read_reference(path)
    return Reference(os.fspath(path), tools, rows)


def _number(text: str | None) -> float:
    """A CSV time cell as seconds; empty or non-numeric cells count as 0."""
    try:
        value = float(text) if text not in (None, "") else 0.0
    except ValueError:
        return 0.0
    return value if math.isfinite(value) else 0.0


def summarise(results: list[dict[str, str]], tools: list[str],
              reference: dict[tuple[str, str], dict[str, str]]) -> tuple[list[ToolSummary], int]:
    """Our summary followed by each tool's, over the instances in ``results``.

    Returns the summaries and how many of our instances are missing from ``reference``
    (counted for us, without an expected answer, and not for the published tools)."""
    ours, theirs = ToolSummary(OURS), {tool: ToolSummary(tool) for tool in tools}
    missing = 0
    for row in results:
        ref = reference.get(instance_key(row["onnx"], row["vnnlib"]))
        expected = normalise_result(ref.get("expected", "")) if ref else ""
        ours.add(normalise_result(row["result"]), _number(row["run_time"]), expected)
        if ref is None:
            missing += 1
            continue
        for tool in tools:
            theirs[tool].add(normalise_result(ref.get(f"{tool}_result", "")), _number(ref.get(f"{tool}_time")),
                             expected)
    return [ours, *theirs.values()], missing


def flag(benchmark: str, results: list[dict[str, str]], tools: list[str],
         reference: dict[tuple[str, str], dict[str, str]] | None) -> list[Flagged]:
    """Our ``sat``/``unsat`` answers to look at, in ``results`` order.

    ``wrong``: the reference's ``expected`` is ``sat``/``unsat`` and differs. ``unconfirmed``:
    no ``sat``/``unsat`` expected answer and either no published tool gives the same answer
    or one gives the opposite; also every answer of an instance the reference lacks (or of
    every instance when ``reference`` is ``None``)."""
    flagged = []
    for row in results:
        result = normalise_result(row["result"])
        if result not in ANSWERS:
            continue
        ref = None if reference is None else reference.get(instance_key(row["onnx"], row["vnnlib"]))
        if ref is None:
            flagged.append(Flagged(benchmark, row["onnx"], row["vnnlib"], result, "", "unconfirmed",
                                   "no reference answer" if reference is None else "not in the reference"))
            continue
        expected = normalise_result(ref.get("expected", ""))
        if expected in ANSWERS:
            if expected != result:
                flagged.append(Flagged(benchmark, row["onnx"], row["vnnlib"], result, expected, "wrong",
                                       f"expected {expected}"))
            continue
        answers = {tool: normalise_result(ref.get(f"{tool}_result", "")) for tool in tools}
        same = [tool for tool, answer in answers.items() if answer == result]
        opposite = [tool for tool, answer in answers.items() if answer in ANSWERS and answer != result]
        if opposite:
            flagged.append(Flagged(benchmark, row["onnx"], row["vnnlib"], result, expected, "unconfirmed",
                                   f"{', '.join(opposite)} answered {'unsat' if result == 'sat' else 'sat'}"))
        elif not same:
            flagged.append(Flagged(benchmark, row["onnx"], row["vnnlib"], result, expected, "unconfirmed",
                                   f"expected {expected or 'unknown'}; no published tool gives this answer"))
    return flagged


def benchmark_report(name: str, results: list[dict[str, str]], reference: Reference | None) -> BenchmarkReport:
    """The :class:`BenchmarkReport` of ``results`` (rows of one benchmark) against
    ``reference`` (``None``: ours only, every answer unconfirmed)."""
    tools, rows = (reference.tools, reference.rows) if reference is not None else ([], {})
    summaries, missing = summarise(results, tools, rows)
    return BenchmarkReport(name, summaries, missing if reference is not None else 0,
                           flag(name, results, tools, rows if reference is not None else None),
                           None if reference is None else reference.path)


def build_report(results: list[dict[str, str]], references: Iterable[Reference] = (),
                 bench_root: str | os.PathLike | None = None) -> Report:
    """Group ``results`` (rows of :func:`read_results`) by their ``benchmark`` column and
    report each against its reference: the first of ``references`` that lists any of the
    benchmark's instances, else ``bench_root/<benchmark>/reference.csv`` when that file
    exists, else none (our results only, with a note). Raises :class:`VerifierInputError`
    when a reference under ``bench_root`` cannot be read."""
    references = list(references)
    by_name: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in results:
        by_name[row["benchmark"]].append(row)
    reports, notes = [], []
    for name in sorted(by_name):
        rows = by_name[name]
        keys = {instance_key(row["onnx"], row["vnnlib"]) for row in rows}
        reference = next((ref for ref in references if keys & ref.rows.keys()), None)
        if reference is None and bench_root is not None:
            candidate = Path(bench_root) / name / "reference.csv"
            if candidate.is_file():
                reference = load_reference(candidate)
        if reference is None:
            notes.append(f"{name}: no reference lists its instances; our results only")
        reports.append(benchmark_report(name, rows, reference))
    return Report(reports, notes)


# --- rendering ---------------------------------------------------------------------------

Column = tuple[str, Callable[[ToolSummary], str]]
COLUMNS: tuple[Column, ...] = (
    ("instances", lambda s: str(s.instances)),
    ("solved", lambda s: str(s.solved)),
    ("sat", lambda s: str(s.sat)),
    ("unsat", lambda s: str(s.unsat)),
    ("wrong", lambda s: str(s.wrong)),
    ("timeout", lambda s: str(s.timeout)),
    ("unknown", lambda s: str(s.unknown)),
    ("error", lambda s: str(s.errors)),
    ("time s", lambda s: f"{s.seconds:.1f}"),
    ("median s", lambda s: f"{s.median:.2f}"),
)
BRIEF_COLUMNS: tuple[Column, ...] = (  # the tables of benchmarks/README.md
    ("instances", lambda s: str(s.instances)),
    ("solved", lambda s: str(s.solved)),
    ("wrong", lambda s: str(s.wrong)),
    ("timeout/unknown", lambda s: str(s.undecided)),
    ("error", lambda s: str(s.errors)),
    ("time s", lambda s: f"{s.seconds:.1f}"),
)


def _missing_note(missing: int) -> str:
    return f"{missing} of our instances are not in the reference" if missing else ""


def format_table(benchmark: str, summaries: list[ToolSummary], missing: int = 0, markdown: bool = False,
                 columns: tuple[Column, ...] = COLUMNS) -> str:
    """A text (or markdown) table of ``summaries`` under a ``benchmark`` title, one row
    per tool, with ``columns`` (header, cell function) after the tool's name."""
    head = ["tool", *(name for name, _ in columns)]
    body = [[s.tool, *(cell(s) for _, cell in columns)] for s in summaries]
    note = _missing_note(missing)
    if markdown:
        lines = [f"### {benchmark}", "", "| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in body]
        return "\n".join(lines + ([f"\n{note}"] if note else [])) + "\n"
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]

    def fmt(row: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))

    lines = [benchmark, fmt(head), *(fmt(row) for row in body)]
    return "\n".join(lines + ([note] if note else [])) + "\n"


def _flag_line(f: Flagged) -> str:
    return f"{f.kind}: {f.benchmark} {f.onnx} {f.vnnlib}: ours {f.result}; {f.reason}"


def render_text(report: Report) -> str:
    """Plain-text tables (one per benchmark) and the flagged answers."""
    parts = [format_table(b.name, b.summaries, b.missing) for b in report.benchmarks]
    flagged = [f for b in report.benchmarks for f in b.flagged]
    parts.append(f"wrong or unconfirmed answers: {len(flagged)}\n" + "".join(f"  {_flag_line(f)}\n" for f in flagged))
    return "\n".join(parts)


def render_markdown(report: Report, plot: str | None = None) -> str:
    """A markdown document: one table per benchmark (``### name``), the flagged answers and,
    when ``plot`` (a path relative to the document) is given, the cactus plot."""
    lines = ["# Benchmark report", ""]
    for b in report.benchmarks:
        lines.append(format_table(b.name, b.summaries, b.missing, markdown=True))
        lines.append(f"Reference: `{b.reference}`\n" if b.reference else "No reference: our results only.\n")
    if plot:
        lines += ["## Cactus plot", "", f"![instances solved vs time]({plot})", ""]
    flagged = [f for b in report.benchmarks for f in b.flagged]
    lines += ["## Wrong or unconfirmed answers", ""]
    lines += [f"- **{f.kind}**: {f.benchmark} `{f.onnx}` `{f.vnnlib}`: ours {f.result}; {f.reason}" for f in flagged]
    lines += [] if flagged else ["None."]
    return "\n".join(lines) + "\n"


def render_html(report: Report, plot_png: bytes | None = None) -> str:
    """A self-contained HTML page: one table per benchmark, the flagged answers and, when
    ``plot_png`` (PNG bytes) is given, the cactus plot embedded as a data URI."""
    esc = html.escape
    out = ["<!DOCTYPE html>", "<html><head><meta charset=\"utf-8\"><title>Benchmark report</title>",
           "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:1em}"
           "th,td{border:1px solid #bbb;padding:.25em .6em}td.n{text-align:right}tr:first-child td{font-weight:bold}"
           ".wrong{color:#b00}</style></head><body>", "<h1>Benchmark report</h1>"]
    head = ["tool", *(name for name, _ in COLUMNS)]
    for b in report.benchmarks:
        out.append(f"<h2>{esc(b.name)}</h2>")
        out.append("<table><thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr></thead><tbody>")
        for s in b.summaries:
            cells = "".join(f"<td class=\"n\">{esc(cell(s))}</td>" for _, cell in COLUMNS)
            out.append(f"<tr><td>{esc(s.tool)}</td>{cells}</tr>")
        out.append("</tbody></table>")
        if b.missing:
            out.append(f"<p>{esc(_missing_note(b.missing))}</p>")
        out.append(f"<p>Reference: <code>{esc(b.reference)}</code></p>" if b.reference
                   else "<p>No reference: our results only.</p>")
    if plot_png is not None:
        data = base64.b64encode(plot_png).decode("ascii")
        out.append(f"<h2>Cactus plot</h2><img alt=\"instances solved vs time\" src=\"data:image/png;base64,{data}\">")
    flagged = [f for b in report.benchmarks for f in b.flagged]
    out.append("<h2>Wrong or unconfirmed answers</h2>")
    if flagged:
        out.append("<ul>" + "".join(
            f"<li class=\"{esc(f.kind)}\"><b>{esc(f.kind)}</b>: {esc(f.benchmark)} <code>{esc(f.onnx)}</code> "
            f"<code>{esc(f.vnnlib)}</code>: ours {esc(f.result)}; {esc(f.reason)}</li>" for f in flagged) + "</ul>")
    else:
        out.append("<p>None.</p>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"
