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

With ``timings``, a second CSV gets one row per instance with the time split
(:data:`TIMINGS_HEADER`, docs/outputs.md): model load, spec parse, fidelity check, search
and the subdomains the search bounded (``benchmarks/vnncomp_speed.py`` reads it).

The work is in three modules: :mod:`verifier.vnncomp_plan` (reading and validating
everything up front), :mod:`verifier.vnncomp_instance` (one instance: files, models,
prepare, verify, result file) and this one (the run: executor, CSV rows, progress).
"""

from __future__ import annotations

import logging
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Callable, Iterator

import torch

from .errors import VerifierInputError
from .outputs import append_line, check_not_an_input, check_output_dir, check_output_file, write_atomic
from .vnncomp_instance import (FileResolver, InstanceOutcome, InstanceRunner, ModelCache, RunSettings,
                               Split, prepare, result_name, run_instance)
from .vnncomp_plan import (HEADER, RESULTS, Instance, Plan, check_domain, csv_line, plan_benchmark,
                           read_done, read_instances)

_LOG = logging.getLogger(__name__)  # notes, and with --verbose each instance (verifier/logs.py)

#: the timings CSV (``run_benchmark(timings=...)``): seconds, ``subdomains`` empty when none reported
TIMINGS_HEADER = ("benchmark", "onnx", "vnnlib", "result", "load", "parse", "check", "search", "subdomains")


#: one finished instance: the instance and its :class:`InstanceOutcome` (or the plain
#: tuple ``(prepare_time, result, run_time, message)`` of an executor that records no split)
Outcome = tuple[Instance, "InstanceOutcome | tuple[float, str, float, str]"]
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
                  executor: Executor | None = None, proofs: str | os.PathLike | None = None,
                  timings: str | os.PathLike | None = None) -> tuple[Path, Counter]:
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
    one's workers record nothing).

    ``timings``: a CSV that receives, beside each results row, the instance's time split
    (:data:`TIMINGS_HEADER`: seconds of model load, spec parse, fidelity check and search,
    and the subdomains the search reported bounding; a cell is empty where the step was
    not reached or the executor recorded no split); replaced by its header line, or with
    ``resume`` appended to (its header written if it is missing or empty; another header
    is refused)."""
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
    if timings is not None:
        csv_path = Path(instances_csv) if instances_csv is not None else plan.bench_dir / "instances.csv"
        timings = _start_timings(Path(timings), output, resume, _benchmark_inputs(plan, csv_path))
    for note in plan.notes:
        _LOG.info(note)
    if plan.resume_lines is None:
        write_atomic(output, csv_line(HEADER))
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
            for instance, outcome in outcomes:
                prepare_time, result, run_time, message, split = InstanceOutcome(*outcome)
                if message:
                    tqdm.write(f"{result}: {instance.onnx} {instance.vnnlib}: {message}", file=sys.stderr)
                append_line(output, csv_line([benchmark, instance.onnx, instance.vnnlib, f"{prepare_time:.3f}",
                                              result, f"{run_time:.3f}"]))
                if timings is not None:
                    append_line(timings, csv_line(_timings_row(benchmark, instance, result, split)))
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


def _benchmark_inputs(plan: Plan, csv_path: Path) -> list[tuple[str, Path]]:
    """The files a run reads, which no output may replace: the instances CSV, the
    reference.csv beside them, and every model and spec its rows name (or their .gz; every
    row, ``limit`` or not)."""
    inputs = [("the benchmark's instances CSV", csv_path), ("the benchmark's reference.csv",
                                                            plan.bench_dir / "reference.csv")]
    for instance in read_instances(csv_path, plan.bench_dir):
        for what, name in (("model", instance.onnx), ("spec", instance.vnnlib)):
            path = plan.bench_dir / name
            inputs += [(f"the {what} {name}", path), (f"the {what} {name}.gz", path.with_name(path.name + ".gz"))]
    return [(what, path) for what, path in inputs if path.exists()]


def _start_timings(path: Path, output: Path, resume: bool, inputs: list[tuple[str, Path]]) -> Path:
    """Check the ``timings`` CSV path (a writable file, neither the output nor one of the
    run's ``inputs``) and write its header (see :func:`run_benchmark`)."""
    check_output_file(path, "--timings")
    if path.resolve() == output.resolve():
        raise VerifierInputError(f"--timings {path} is the --output file; give another file")
    check_not_an_input(path, "--timings", inputs)
    header = csv_line(TIMINGS_HEADER)
    if resume and path.is_file() and path.stat().st_size > 0:
        with open(path, encoding="utf-8", errors="replace", newline="") as handle:
            first = handle.readline()
        if first.rstrip("\r\n") != header.rstrip("\r\n"):
            raise VerifierInputError(f"--timings {path}, line 1: not the header '{','.join(TIMINGS_HEADER)}'; "
                                     "--resume will not append to another file (choose another --timings)")
        return path
    write_atomic(path, header)
    return path


def _timings_row(benchmark: str, instance: Instance, result: str, split: Split | None) -> list[str]:
    """One :data:`TIMINGS_HEADER` row (seconds to the millisecond; empty: not reached or not recorded)."""
    def cell(value) -> str:
        return "" if value is None else (str(value) if isinstance(value, int) else f"{value:.3f}")

    parts = split if split is not None else Split()
    return [benchmark, instance.onnx, instance.vnnlib, result, cell(parts.load), cell(parts.parse), cell(parts.check),
            cell(parts.search), cell(parts.subdomains)]


__all__ = ["HEADER", "RESULTS", "TIMINGS_HEADER", "Executor", "FileResolver", "Instance", "InstanceOutcome",
           "InstanceRunner", "ModelCache", "Outcome", "Plan", "RunSettings", "Split", "check_domain", "plan_benchmark",
           "prepare", "read_done", "read_instances", "result_name", "run_benchmark", "run_instance", "serial_executor"]
