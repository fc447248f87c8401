"""Reading the CSVs of a benchmark report (:mod:`verifier.report`, ``verifier report``).

- :func:`read_results` / :func:`read_all_results`: the ``verifier vnncomp`` results CSV
  (``benchmark,onnx,vnnlib,prepare_time,result,run_time``, header optional). A last line
  without its newline is a row cut by a kill and is dropped with a note, exactly as
  ``verifier vnncomp --resume`` drops it (both read with
  :func:`verifier.outputs.read_complete_lines`). Every other row must be whole: six cells,
  a benchmark name, ``run_time`` a finite number ``>= 0`` (seconds), no second header line
  (files joined with ``cat``) and one row per instance (the benchmark and the
  :func:`instance_key` of its paths; an exact duplicate is refused too, since a doubled row
  would count twice), and ``result`` one of :data:`RESULT_WORDS` (any case; ``holds`` and
  ``violated``, VNN-COMP 2021's words, read as ``unsat`` and ``sat``). A reference CSV given
  as results is named as such.
- :func:`read_reference` / :func:`load_reference`: a VNN-COMP ``reference.csv``, one row
  per instance: ``onnx``, ``vnnlib`` and an ``expected`` or ``<tool>_result`` column (a
  results CSV given as a reference is named as such).

Every problem raises :class:`~verifier.errors.VerifierInputError` as ``FILE:LINE: what``.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import VerifierInputError
from .logs import note
from .outputs import read_complete_lines
from .vnncomp_plan import RESULTS as RESULT_WORDS

_LOG = logging.getLogger(__name__)

RESULT_HEADER = ("benchmark", "onnx", "vnnlib", "prepare_time", "result", "run_time")
# RESULT_WORDS (vnncomp_plan.RESULTS): what `verifier vnncomp` writes, VNN-COMP's words since 2022;
# ALIASES: VNN-COMP 2021's words
ALIASES = {"holds": "unsat", "violated": "sat", "": "unknown"}  # "": a published tool's empty cell
REFERENCE_COLUMNS = "onnx,vnnlib and expected and/or <tool>_result (VNN-COMP: onnx,vnnlib,timeout,expected," \
                    "<tool>_result,<tool>_time,...)"


def normalise_result(text: str) -> str:
    """A result word in VNN-COMP spelling: lower case, ``holds``/``violated`` as
    ``unsat``/``sat`` and an empty cell as ``unknown`` (:data:`ALIASES`); other words unchanged."""
    text = (text or "").strip().lower()
    return ALIASES.get(text, text)


@dataclass
class Reference:
    """A VNN-COMP ``reference.csv``: the published tools (from its ``<tool>_result``
    columns) and its rows keyed by :func:`instance_key`."""

    path: str
    tools: list[str]
    rows: dict[tuple[str, str], dict[str, str]]


def instance_key(onnx: str, vnnlib: str) -> tuple[str, str]:
    """A path pair comparable across CSVs: no leading ``./``, no ``.gz``, ``/`` separators."""
    def clean(path: str) -> str:
        path = path.strip().replace("\\", "/")
        while path.startswith("./"):
            path = path[2:]
        return path[:-3] if path.endswith(".gz") else path

    return clean(onnx), clean(vnnlib)


def run_time_seconds(text: str) -> float | None:
    """A ``run_time`` cell as seconds, or ``None`` unless it is a finite number ``>= 0``."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) and value >= 0 else None


def _refuse_folder(path: str | os.PathLike) -> None:
    if os.path.isdir(path):
        raise VerifierInputError(f"{path}: is a folder; give a CSV file")


def _read_text(path: str | os.PathLike) -> str:
    """The UTF-8 text of ``path``; :class:`VerifierInputError` for a missing, unreadable or
    non-UTF-8 file (with the line of the first bad byte)."""
    _refuse_folder(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise VerifierInputError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise VerifierInputError(f"{path}:{_line_of(exc)}: not UTF-8 text") from None


def _line_of(exc: UnicodeDecodeError) -> int:
    """The line (from 1) of the first byte ``exc`` could not decode."""
    return exc.object[: exc.start].count(b"\n") + 1


def _complete_lines(path: str | os.PathLike, notes: list[str] | None) -> list[str]:
    """The newline-terminated lines of ``path``, each with its ``\\n`` (a cut last line
    dropped, with a note in ``notes`` or, when ``None``, logged (:mod:`verifier.logs`)), for :mod:`csv` (which
    reads ``\\r\\n`` and quoted line breaks). Errors as :func:`_read_text`."""
    _refuse_folder(path)
    try:
        lines, cut = read_complete_lines(path, encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise VerifierInputError(f"{path}:{_line_of(exc)}: not UTF-8 text") from None
    except OSError as exc:
        raise VerifierInputError(f"cannot read {path}: {exc.strerror or exc}") from None
    if cut:
        note(_LOG, f"{path}: left out a last row cut by an interrupted run (no newline at its end)", notes)
    return [line + "\n" for line in lines]


def read_results(path: str | os.PathLike, notes: list[str] | None = None,
                 seen: dict[tuple[str, str, str], tuple[str, int]] | None = None) -> list[dict[str, str]]:
    """Rows of a results CSV (``benchmark,onnx,vnnlib,prepare_time,result,run_time``, header
    optional on the first line) as dicts keyed by those columns, cells stripped.

    A last line without its newline (a row cut by a kill) is left out, with a line appended
    to ``notes`` (printed to stderr when ``notes`` is ``None``). ``seen`` maps each
    instance already read (benchmark, :func:`instance_key`) to its ``(file, line)``, so that
    :func:`read_all_results` finds one listed in two files; it is updated. Raises
    :class:`VerifierInputError` (``FILE:LINE: ...``) for a missing, unreadable, non-UTF-8 or
    malformed file, a first line naming columns other than the results header (a reference
    CSV), a row with another number of columns, an empty benchmark, onnx or vnnlib cell, a
    result that is not one of :data:`RESULT_WORDS` (or an alias, :func:`normalise_result`), a
    ``run_time`` that is not a finite number ``>= 0``, a second header line, or an instance
    listed twice."""
    seen = {} if seen is None else seen
    reader = csv.reader(_complete_lines(path, notes))
    rows: list[dict[str, str]] = []
    try:
        for row in reader:
            number, cells = reader.line_num, tuple(cell.strip() for cell in row)
            if not row:
                continue
            if cells == RESULT_HEADER:
                if number == 1:
                    continue
                raise VerifierInputError(f"{path}:{number}: a second header line (files joined with cat?); "
                                         f"give each results file as its own argument")
            if number == 1 and {"onnx", "vnnlib"} <= set(cells):
                raise VerifierInputError(f"{path}:1: header '{','.join(cells)[:120]}' is not a results header "
                                         f"({','.join(RESULT_HEADER)})" + ("; it is a reference CSV: give it "
                                         "with --reference" if _is_reference(cells) else ""))
            if len(cells) != len(RESULT_HEADER):
                raise VerifierInputError(f"{path}:{number}: expected {len(RESULT_HEADER)} columns "
                                         f"({','.join(RESULT_HEADER)}), got {len(cells)}")
            record = dict(zip(RESULT_HEADER, cells))
            empty = [name for name in ("benchmark", "onnx", "vnnlib") if not record[name]]
            if empty:
                raise VerifierInputError(f"{path}:{number}: empty {' and '.join(empty)} cell (each row names its "
                                         f"benchmark and instance)")
            if not record["result"] or normalise_result(record["result"]) not in RESULT_WORDS:
                raise VerifierInputError(f"{path}:{number}: result '{record['result']}' is not a VNN-COMP result "
                                         f"(one of {', '.join(RESULT_WORDS)}; holds and violated read as unsat "
                                         f"and sat)")
            if run_time_seconds(record["run_time"]) is None:
                raise VerifierInputError(f"{path}:{number}: run_time '{record['run_time']}' is not valid "
                                         f"(a finite number >= 0, in seconds)")
            key = (record["benchmark"], *instance_key(record["onnx"], record["vnnlib"]))
            if key in seen:
                file, line = seen[key]
                where = f"line {line}" if file == os.fspath(path) else f"{file}:{line}"
                raise VerifierInputError(f"{path}:{number}: instance {record['onnx']} {record['vnnlib']} of "
                                         f"benchmark {record['benchmark']} is already on {where} (one row per "
                                         f"instance; remove one of them)")
            seen[key] = (os.fspath(path), number)
            rows.append(record)
    except csv.Error as exc:
        raise VerifierInputError(f"{path}:{reader.line_num}: not a CSV row ({exc})") from None
    return rows


def read_all_results(paths: list[str | os.PathLike], notes: list[str] | None = None) -> list[dict[str, str]]:
    """The rows of every results CSV in ``paths`` (:func:`read_results`, in order), an
    instance listed in two of them refused (``FILE:LINE: ... already at FILE:LINE``)."""
    seen: dict[tuple[str, str, str], tuple[str, int]] = {}
    return [row for path in paths for row in read_results(path, notes, seen)]


def _tools(fields: list[str]) -> list[str]:
    """The tool names of a reference's ``<tool>_result`` columns, in column order."""
    return [name[: -len("_result")] for name in fields if name.endswith("_result") and name != "_result"]


def _is_reference(fields) -> bool:
    """Whether columns ``fields`` hold a reference's answers: ``expected`` or a ``<tool>_result``."""
    return "expected" in fields or bool(_tools(list(fields)))


def read_reference(path: str | os.PathLike,
                   option: str | None = None) -> tuple[list[str], dict[tuple[str, str], dict[str, str]]]:
    """Tool names (from ``<tool>_result`` columns, in column order) and the rows of a
    ``reference.csv`` keyed by :func:`instance_key`. Raises :class:`VerifierInputError`
    (``[OPTION ]FILE:LINE: ...``, ``option`` the command-line option that named the file)
    for a missing, unreadable, non-UTF-8 or malformed file, one without ``onnx``/``vnnlib``
    columns or without an ``expected`` or ``<tool>_result`` column (e.g. a results CSV:
    nothing to compare with), or an instance listed twice."""
    where = f"{option} {path}" if option else f"{path}"
    try:
        text = _read_text(path)
    except VerifierInputError as exc:
        raise VerifierInputError(f"{option} {exc}" if option else str(exc)) from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        fields = [name.strip() for name in reader.fieldnames or []]
        reader.fieldnames = fields
        missing = [name for name in ("onnx", "vnnlib") if name not in fields]
        if missing:
            raise VerifierInputError(f"{where}:1: no {' or '.join(missing)} column (a reference needs the columns "
                                     f"{REFERENCE_COLUMNS})")
        if not _is_reference(fields):
            kind = "a results CSV" if "result" in fields else "not a reference"
            raise VerifierInputError(f"{where}:1: {kind} (columns {','.join(fields)[:120]}): no expected or "
                                     f"<tool>_result column; a reference needs the columns {REFERENCE_COLUMNS}")
        rows: dict[tuple[str, str], dict[str, str]] = {}
        lines: dict[tuple[str, str], int] = {}
        for row in reader:
            key = instance_key(row["onnx"] or "", row["vnnlib"] or "")
            if key == ("", ""):  # a row of empty cells: no instance
                continue
            if key in rows:
                raise VerifierInputError(f"{where}:{reader.line_num}: instance {row['onnx']} {row['vnnlib']} is "
                                         f"already on line {lines[key]} (one row per instance)")
            rows[key], lines[key] = row, reader.line_num
    except csv.Error as exc:
        raise VerifierInputError(f"{where}:{reader.line_num}: not a CSV row ({exc})") from None
    return _tools(fields), rows


def load_reference(path: str | os.PathLike, option: str | None = None) -> Reference:
    """:func:`read_reference` as a :class:`Reference` (same errors)."""
    tools, rows = read_reference(path, option)
    return Reference(os.fspath(path), tools, rows)
