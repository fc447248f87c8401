"""Run a whole VNN-COMP benchmark folder the way the competition does.

A benchmark folder holds ``instances.csv`` (no header: ``onnx,vnnlib,timeout`` with paths
relative to the folder) plus the files it names, possibly gzip-compressed (``.onnx.gz``,
``.vnnlib.gz``; a listed ``x.onnx`` that exists only as ``x.onnx.gz`` is found too).
:func:`run_benchmark` verifies every instance and appends one row per instance to a CSV
in the competition layout ``benchmark,onnx,vnnlib,prepare_time,result,run_time`` (after a
header line), flushed row by row so that an interrupted run can be resumed.

``prepare_time`` is the model import (once per distinct ONNX file: later instances of the
same model reuse it; read from the on-disk IR cache when a run or ``prepare_instance.sh``
imported it before), the VNN-LIB parse and the onnxruntime fidelity check inside the
spec's first input box (skipped when the cache records it passed on that box); ``run_time`` is the wall time of :func:`verifier.verify.verify`.
As in the competition, a verdict that arrives after the instance's timeout counts as
``timeout``.

Everything the user gives is validated before the first instance runs (see
:func:`plan_benchmark`): the folder, every row of ``instances.csv`` and the files it
names, the options, the output paths and, with ``resume``, the existing results CSV.
Each failure is a :class:`~verifier.errors.VerifierInputError` naming the file (and
line) or the option. A problem of one instance in a well-formed benchmark (a model the
verifier cannot load, a malformed spec) is that instance's row ``error``, as in the
competition. Rows are appended with :func:`verifier.outputs.append_line` (one write:
complete or absent), so a resumed run drops a row cut by a kill and reruns it.
"""

from __future__ import annotations

import csv
import gzip
import io
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch

from .errors import VerifierInputError
from .outputs import append_line, check_output_dir, check_output_file, read_complete_lines, write_atomic

_LOG = logging.getLogger(__name__)  # notes, and with --verbose each instance (verifier/logs.py)

RESULTS = ("unsat", "sat", "unknown", "timeout", "error")
HEADER = ("benchmark", "onnx", "vnnlib", "prepare_time", "result", "run_time")


@dataclass(frozen=True)
class Instance:
    """One line of ``instances.csv``: paths as written there and the timeout in seconds."""

    onnx: str
    vnnlib: str
    timeout: float


def _bench_file(bench_dir: Path, relative: str) -> Path | None:
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
                if _bench_file(Path(bench_dir), cell) is None:
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


def _csv_line(row) -> str:
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


class FileResolver:
    """Maps instance paths to readable files, decompressing ``.gz`` files once into ``cache_dir``."""

    def __init__(self, bench_dir: Path, cache_dir: Path):
        self.bench_dir = bench_dir
        self.cache_dir = cache_dir
        self._done: dict[Path, Path] = {}

    def __call__(self, relative: str) -> Path:
        """The plain file for ``relative`` (``x``, or ``x.gz`` decompressed); a missing file
        raises :class:`VerifierInputError` naming the path that was looked for."""
        path = _bench_file(self.bench_dir, relative)
        if path is None:
            raise VerifierInputError(f"file not found: {self.bench_dir / relative}")
        if path.suffix != ".gz":
            return path
        if path not in self._done:
            target = self.cache_dir / f"{len(self._done)}_{path.name[:-3]}"
            try:
                with gzip.open(path, "rb") as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
            except (OSError, EOFError) as exc:
                raise VerifierInputError(f"cannot decompress {path}: {exc}") from None
            self._done[path] = target
        return self._done[path]


class ModelCache:
    """Loads each ONNX file once; a file that failed to load fails again without retrying.
    With ``disk_cache`` the imports go through the on-disk IR cache
    (:mod:`verifier.ir.cache`), so a model prepared or run before is not imported again."""

    def __init__(self, disk_cache: bool = True):
        self._models: dict[Path, object] = {}
        self.disk_cache = disk_cache

    def get(self, path: Path):
        """The :class:`verifier.api.Model` for ``path`` (unchecked; see :func:`prepare`)."""
        from .api import load

        if path not in self._models:
            try:
                self._models[path] = load(path, check=False, cache=self.disk_cache)
            except Exception as exc:  # remembered, re-raised for every instance of this model
                self._models[path] = exc
        model = self._models[path]
        if isinstance(model, Exception):
            raise model
        return model


def prepare(instance: Instance, files: FileResolver, models: ModelCache, fidelity: bool = True):
    """Model and spec for ``instance``: (cached) import, VNN-LIB parse, size check and,
    with ``fidelity``, the onnxruntime agreement check inside the spec's first box."""
    from .spec import read_vnnlib

    model = models.get(files(instance.onnx))
    spec = read_vnnlib(files(instance.vnnlib))
    spec.check_model(model.input_size, model.output_size)
    if fidelity:  # a check passed before on this box (IR cache) is not repeated
        region = spec.regions[0] if spec.regions else None
        model.check(None if region is None else region.lower, None if region is None else region.upper)
    return model, spec


def result_name(instance: Instance) -> str:
    """File name of an instance's result file: ``<onnx stem>__<vnnlib stem>.txt``."""
    def stem(path: str) -> str:
        name = Path(path).name
        for suffix in (".gz", ".onnx", ".vnnlib"):
            name = name[: -len(suffix)] if name.endswith(suffix) else name
        return name

    return f"{stem(instance.onnx)}__{stem(instance.vnnlib)}.txt"


def run_instance(instance: Instance, timeout: float, files: FileResolver, models: ModelCache,
                 result_file: Path, domain: str = "auto", device: str = "cpu",
                 dtype: torch.dtype = torch.float64, fidelity: bool = True,
                 proofs: Path | None = None) -> tuple[float, str, float, str]:
    """Prepare and verify one instance; write its result file (and, given ``proofs``, a
    certificate of an ``unsat`` verdict as ``proofs/<result name>.proof``, docs/proofs.md).

    Returns ``(prepare_time, result, run_time, message)``; any exception becomes result
    ``error`` with its message (``KeyboardInterrupt`` propagates)."""
    from .counterexample import write_result
    from .verify import verify

    start, prepared, prepare_time, run_time = time.perf_counter(), False, 0.0, 0.0
    try:
        model, spec = prepare(instance, files, models, fidelity)
        prepare_time, prepared, start = time.perf_counter() - start, True, time.perf_counter()
        def run():
            return verify(model, spec, domain=domain, timeout=timeout, device=device, dtype=dtype)

        if proofs is None:
            result = run()
        else:
            from .proof.cli import recorded

            result, line = recorded(str(Path(proofs) / (result_name(instance)[: -len(".txt")] + ".proof")),
                                    str(files(instance.onnx)), str(files(instance.vnnlib)), len(spec.regions), run)
            _LOG.debug("%s %s: %s", instance.onnx, instance.vnnlib, line)
        run_time = time.perf_counter() - start
        status, cex, message = result.status, result.counterexample, ""
        if status in ("sat", "unsat") and run_time > timeout:
            status, cex, message = "timeout", None, f"{result.status} after {run_time:.1f} s > timeout {timeout:g} s"
    except Exception as exc:
        if prepared:
            run_time = time.perf_counter() - start
        else:
            prepare_time = time.perf_counter() - start
        text = (str(exc).splitlines() or ["(no message)"])[0]
        kind = "" if isinstance(exc, VerifierInputError) else f"{type(exc).__name__}: "
        status, cex, message = "error", None, kind + text
    write_result(result_file, status, cex)
    _LOG.debug("%s %s: %s (prepare %.2f s, run %.2f s)", instance.onnx, instance.vnnlib, status, prepare_time, run_time)
    return prepare_time, status, run_time, message


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
        for row in rows:
            key = (row["onnx"], row["vnnlib"])
            if row["benchmark"] == benchmark and key in wanted:
                done.setdefault(key, row["result"])
        resume_lines = lines if lines else None
    todo = [inst for inst in instances if (inst.onnx, inst.vnnlib) not in done]
    if cut:
        notes.append(f"{output}: dropped a last row cut by an interrupted run; that instance runs again")
    return Plan(bench_dir, benchmark, instances, todo, done, output, results_dir, resume_lines, cut, notes)


@dataclass(frozen=True)
class RunSettings:
    """What every instance of a run shares, picklable so that remote workers
    (:mod:`verifier.cluster.ray_vnncomp`) can rebuild an :class:`InstanceRunner`."""

    bench_dir: Path
    timeout_scale: float = 1.0
    domain: str = "auto"
    device: str = "cpu"
    dtype: torch.dtype = torch.float64
    fidelity: bool = True
    cache: bool = True
    proofs: Path | None = None  # a certificate per unsat instance here (verifier/proof; docs/proofs.md)


class InstanceRunner:
    """Runs instances one after the other in this process: one :class:`ModelCache` (each
    model imported once) and one :class:`FileResolver` (each ``.gz`` decompressed once into
    a private temporary folder, removed by :meth:`close`)."""

    def __init__(self, settings: RunSettings):
        self.settings = settings
        self.models = ModelCache(disk_cache=settings.cache)
        self._tmp = tempfile.TemporaryDirectory(prefix="verifier_vnncomp_")
        self.files = FileResolver(Path(settings.bench_dir), Path(self._tmp.name))

    def run(self, instance: Instance, result_file: Path) -> tuple[float, str, float, str]:
        """:func:`run_instance` with the run's timeout scale, domain, device, dtype and
        fidelity setting: ``(prepare_time s, result, run_time s, message)``; writes ``result_file``."""
        s = self.settings
        return run_instance(instance, instance.timeout * s.timeout_scale, self.files, self.models, result_file,
                            domain=s.domain, device=s.device, dtype=s.dtype, fidelity=s.fidelity, proofs=s.proofs)

    def close(self) -> None:
        """Remove the decompressed files."""
        self._tmp.cleanup()


#: one finished instance: the instance and ``(prepare_time, result, run_time, message)``
Outcome = tuple[Instance, tuple[float, str, float, str]]
#: runs ``todo`` (writing each instance's result file into ``results_dir``) and yields each
#: outcome as it finishes, in any order; see :func:`serial_executor`
Executor = Callable[[list[Instance], RunSettings, Path], Iterator[Outcome]]


def serial_executor(todo: list[Instance], settings: RunSettings, results_dir: Path) -> Iterator[Outcome]:
    """The single-process executor: the instances in ``todo`` order, in this process."""
    runner = InstanceRunner(settings)
    try:
        for instance in todo:
            yield instance, runner.run(instance, results_dir / result_name(instance))
    finally:
        runner.close()


def run_benchmark(bench_dir: str | os.PathLike, instances_csv: str | os.PathLike | None = None,
                  timeout_scale: float = 1.0, output: str | os.PathLike | None = None,
                  results_dir: str | os.PathLike | None = None, domain: str = "auto",
                  limit: int | None = None, resume: bool = False, device: str = "cpu",
                  dtype: torch.dtype = torch.float64, fidelity: bool = True,
                  progress: bool = True, cache: bool = True,
                  executor: Executor | None = None, proofs: str | os.PathLike | None = None) -> tuple[Path, Counter]:
    """Verify the instances of ``bench_dir`` (the first ``limit`` of them) and write the CSV.

    ``output`` defaults to ``<benchmark>.csv`` in the current folder and ``results_dir`` to
    ``<output stem>_results/`` beside it. Everything is validated first
    (:func:`plan_benchmark`); then, without ``resume``, the output is replaced atomically
    by the header line; with it, a cut last row is dropped (the file rewritten
    atomically), instances already listed are skipped and the rest appended. Every row is
    appended in one write (complete or absent), by this process only, as each instance
    finishes. Returns the output path and the count of each result (resumed rows included).
    ``cache=False`` imports every model afresh instead of through the on-disk IR cache.

    ``executor`` runs the instances still to do (default :func:`serial_executor`: in this
    process, in ``instances.csv`` order); another one (e.g.
    :func:`verifier.cluster.ray_vnncomp.ray_executor`) may run them elsewhere and yield
    them in the order they finish, which is then the order of the rows.

    ``proofs``: a folder that receives a certificate of every ``unsat`` instance
    (``<result name>.proof``, :func:`verifier.proof.cli.recorded`; check one with
    ``verifier check-proof``), created if absent; only with the default executor (a remote
    one's workers record nothing)."""
    from tqdm import tqdm

    if not isinstance(cache, bool):
        raise VerifierInputError(f"cache must be True or False, not {cache!r}")
    plan = plan_benchmark(bench_dir, instances_csv, timeout_scale, output, results_dir, domain, limit, resume)
    check_output_dir(plan.results_dir, "--results-dir")
    if proofs is not None:
        if executor is not None:
            raise VerifierInputError("--proofs records the search in this process; it cannot be combined with --ray")
        check_output_dir(proofs, "--proofs")
        proofs = Path(proofs)
    output, benchmark = plan.output, plan.benchmark
    for note in plan.notes:
        _LOG.info(note)
    if plan.resume_lines is None:
        write_atomic(output, _csv_line(HEADER))
    elif plan.cut:
        write_atomic(output, "".join(line + "\n" for line in plan.resume_lines))

    counts = Counter({name: 0 for name in RESULTS})
    counts.update(plan.done.values())
    settings = RunSettings(plan.bench_dir, timeout_scale, domain, device, dtype, fidelity, cache, proofs)
    outcomes = (executor or serial_executor)(plan.todo, settings, plan.results_dir)
    with tqdm(total=len(plan.instances), initial=len(plan.instances) - len(plan.todo), unit="inst",
              desc=benchmark, disable=not progress, file=sys.stderr) as bar:
        bar.set_postfix(_postfix(counts))
        try:
            for instance, (prepare_time, result, run_time, message) in outcomes:
                if message:
                    tqdm.write(f"{result}: {instance.onnx} {instance.vnnlib}: {message}", file=sys.stderr)
                append_line(output, _csv_line([benchmark, instance.onnx, instance.vnnlib, f"{prepare_time:.3f}",
                                               result, f"{run_time:.3f}"]))
                counts[result] += 1
                bar.set_postfix(_postfix(counts))
                bar.update(1)
        finally:
            close = getattr(outcomes, "close", None)
            if close is not None:
                close()
    return output, counts


def _postfix(counts: Counter) -> dict[str, int]:
    """Progress-bar postfix: the count of each result, in :data:`RESULTS` order."""
    return {name: counts[name] for name in RESULTS}
