"""Benchmark reports: a ``verifier vnncomp`` results CSV beside the published tools.

``verifier report RESULTS.csv [--reference reference.csv]`` (see ``docs/outputs.md``):

- :func:`read_results` / :func:`read_all_results` / :func:`read_reference` (from
  :mod:`verifier.report_csv`) read the competition CSVs (bad input raises
  :class:`~verifier.errors.VerifierInputError` as ``FILE:LINE: ...``);
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
import html
import math
import os
import re
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from .errors import VerifierInputError
from .report_csv import (ALIASES, RESULT_HEADER, RESULT_WORDS, Reference, instance_key,  # noqa: F401
                         load_reference, normalise_result, read_all_results, read_reference, read_results,
                         run_time_seconds)

OURS = "verifier"
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


def _number(text: str | None) -> float:
    """A published tool's time cell as seconds; empty or non-numeric cells count as 0 (our
    own ``run_time`` is checked instead: :func:`~verifier.report_csv.run_time_seconds`)."""
    try:
        value = float(text) if text not in (None, "") else 0.0
    except ValueError:
        return 0.0
    return value if math.isfinite(value) else 0.0


def summarise(results: list[dict[str, str]], tools: list[str],
              reference: dict[tuple[str, str], dict[str, str]]) -> tuple[list[ToolSummary], int]:
    """Our summary followed by each tool's, over the instances in ``results``.

    Returns the summaries and how many of our instances are missing from ``reference``
    (counted for us, without an expected answer, and not for the published tools). Raises
    :class:`VerifierInputError` for a row whose ``run_time`` is not a finite number ``>= 0``."""
    ours, theirs = ToolSummary(OURS), {tool: ToolSummary(tool) for tool in tools}
    missing = 0
    for row in results:
        ref = reference.get(instance_key(row["onnx"], row["vnnlib"]))
        expected = normalise_result(ref.get("expected", "")) if ref else ""
        seconds = run_time_seconds(row["run_time"])
        if seconds is None:
            raise VerifierInputError(f"run_time '{row['run_time']}' of {row['onnx']} {row['vnnlib']} is not valid "
                                     f"(a finite number >= 0, in seconds)")
        ours.add(normalise_result(row["result"]), seconds, expected)
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


def _seconds(value: float, digits: int) -> str:
    """A time in seconds with ``digits`` decimals, or in ``e`` notation from 10^7 s on (a
    ``run_time`` of 1e308 would otherwise print as a 300-digit number and break the table)."""
    return f"{value:.{digits}f}" if value < 1e7 else f"{value:.3g}"


COLUMNS: tuple[Column, ...] = (
    ("instances", lambda s: str(s.instances)),
    ("solved", lambda s: str(s.solved)),
    ("sat", lambda s: str(s.sat)),
    ("unsat", lambda s: str(s.unsat)),
    ("wrong", lambda s: str(s.wrong)),
    ("timeout", lambda s: str(s.timeout)),
    ("unknown", lambda s: str(s.unknown)),
    ("error", lambda s: str(s.errors)),
    ("time s", lambda s: _seconds(s.seconds, 1)),
    ("median s", lambda s: _seconds(s.median, 2)),
)
BRIEF_COLUMNS: tuple[Column, ...] = (  # the tables of benchmarks/README.md
    ("instances", lambda s: str(s.instances)),
    ("solved", lambda s: str(s.solved)),
    ("wrong", lambda s: str(s.wrong)),
    ("timeout/unknown", lambda s: str(s.undecided)),
    ("error", lambda s: str(s.errors)),
    ("time s", lambda s: _seconds(s.seconds, 1)),
)


_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|~&#$!(){}])")


def _md_text(text: str) -> str:
    """``text`` as literal inline markdown (CommonMark / GitHub): line breaks become spaces
    and the punctuation that could start markup, close a table cell (``|``) or an HTML
    entity is backslash-escaped."""
    return _MD_SPECIAL.sub(r"\\\1", " ".join(str(text).splitlines()))


def _md_code(text: str) -> str:
    """``text`` as a markdown code span: fenced by one backtick more than its longest run of
    backticks (CommonMark 6.1), padded by a space where it starts or ends with a backtick or
    a space; line breaks become spaces. Not for table cells (``|`` is not escaped)."""
    text = " ".join(str(text).splitlines())
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text[:1] in ("`", " ") or text[-1:] in ("`", " ") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


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
        lines = [f"### {_md_text(benchmark)}", "", "| " + " | ".join(head) + " |",
                 "|---" + "|---:" * (len(head) - 1) + "|"]
        lines += ["| " + " | ".join(_md_text(cell) for cell in row) + " |" for row in body]
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
        lines.append(f"Reference: {_md_code(b.reference)}\n" if b.reference else "No reference: our results only.\n")
    if plot:
        lines += ["## Cactus plot", "", f"![instances solved vs time]({plot})", ""]
    flagged = [f for b in report.benchmarks for f in b.flagged]
    lines += ["## Wrong or unconfirmed answers", ""]
    lines += [f"- **{f.kind}**: {_md_text(f.benchmark)} {_md_code(f.onnx)} {_md_code(f.vnnlib)}: ours {f.result}; "
              f"{_md_text(f.reason)}" for f in flagged]
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
