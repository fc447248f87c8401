"""Run a whole VNN-COMP benchmark folder the way the competition does.

A benchmark folder holds ``instances.csv`` (no header: ``onnx,vnnlib,timeout`` with paths
relative to the folder) plus the files it names, possibly gzip-compressed (``.onnx.gz``,
``.vnnlib.gz``; a listed ``x.onnx`` that exists only as ``x.onnx.gz`` is found too).
:func:`run_benchmark` verifies every instance and appends one row per instance to a CSV
in the competition layout ``benchmark,onnx,vnnlib,prepare_time,result,run_time`` (after a
header line), flushed row by row so that an interrupted run can be resumed.

``prepare_time`` is the model import (once per distinct ONNX file: later instances of the
same model reuse it), the VNN-LIB parse and the onnxruntime fidelity check inside the
spec's first input box; ``run_time`` is the wall time of :func:`verifier.verify.verify`.
As in the competition, a verdict that arrives after the instance's timeout counts as
``timeout``.
"""

from __future__ import annotations

import csv
import gzip
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import VerifierInputError

RESULTS = ("unsat", "sat", "unknown", "timeout", "error")
HEADER = ("benchmark", "onnx", "vnnlib", "prepare_time", "result", "run_time")


@dataclass(frozen=True)
class Instance:
    """One line of ``instances.csv``: paths as written there and the timeout in seconds."""

    onnx: str
    vnnlib: str
    timeout: float


def read_instances(path: str | os.PathLike) -> list[Instance]:
    """Parse an ``instances.csv`` (no header; blank lines ignored).

    Raises :class:`VerifierInputError` naming the file (and line) when it is missing or
    a row is not ``onnx,vnnlib,timeout`` with a positive timeout."""
    path = Path(path)
    if not path.is_file():
        raise VerifierInputError(f"instances file not found: {path}")
    instances = []
    with open(path, newline="", encoding="utf-8") as fh:
        for line, row in enumerate(csv.reader(fh), start=1):
            row = [cell.strip() for cell in row]
            if not any(row):
                continue
            if len(row) != 3:
                raise VerifierInputError(f"{path}, line {line}: expected 'onnx,vnnlib,timeout', got {len(row)} fields")
            try:
                timeout = float(row[2])
            except ValueError:
                raise VerifierInputError(f"{path}, line {line}: timeout '{row[2]}' is not a number") from None
            if not timeout > 0:
                raise VerifierInputError(f"{path}, line {line}: timeout must be positive, got {row[2]}")
            instances.append(Instance(row[0], row[1], timeout))
    return instances


def read_done(path: str | os.PathLike) -> list[dict[str, str]]:
    """Rows already in a results CSV (header optional), as dicts keyed by :data:`HEADER`."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        rows = [row for row in csv.reader(fh) if row]
    if rows and tuple(cell.strip() for cell in rows[0]) == HEADER:
        rows = rows[1:]
    return [dict(zip(HEADER, (cell.strip() for cell in row))) for row in rows if len(row) == len(HEADER)]


class FileResolver:
    """Maps instance paths to readable files, decompressing ``.gz`` files once into ``cache_dir``."""

    def __init__(self, bench_dir: Path, cache_dir: Path):
        self.bench_dir = bench_dir
        self.cache_dir = cache_dir
        self._done: dict[Path, Path] = {}

    def __call__(self, relative: str) -> Path:
        """The plain file for ``relative`` (``x``, or ``x.gz`` decompressed); a missing file
        raises :class:`VerifierInputError` naming the path that was looked for."""
        path = self.bench_dir / relative
        if not path.exists() and path.suffix != ".gz" and path.with_name(path.name + ".gz").exists():
            path = path.with_name(path.name + ".gz")
        if not path.is_file():
            raise VerifierInputError(f"file not found: {path}")
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
    """Loads each ONNX file once; a file that failed to load fails again without retrying."""

    def __init__(self):
        self._models: dict[Path, object] = {}

    def get(self, path: Path):
        """The :class:`verifier.api.Model` for ``path`` (unchecked; see :func:`prepare`)."""
        from .api import load

        if path not in self._models:
            try:
                self._models[path] = load(path, check=False)
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
    if fidelity:
        from .ir.fidelity import check_fidelity

        region = spec.regions[0] if spec.regions else None
        model.fidelity = check_fidelity(model.graph, None if region is None else region.lower,
                                        None if region is None else region.upper)
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
                 dtype: torch.dtype = torch.float64, fidelity: bool = True) -> tuple[float, str, float, str]:
    """Prepare and verify one instance; write its result file.

    Returns ``(prepare_time, result, run_time, message)``; any exception becomes result
    ``error`` with its message (``KeyboardInterrupt`` propagates)."""
    from .counterexample import write_result
    from .verify import verify

    start, prepared, prepare_time, run_time = time.perf_counter(), False, 0.0, 0.0
    try:
        model, spec = prepare(instance, files, models, fidelity)
        prepare_time, prepared, start = time.perf_counter() - start, True, time.perf_counter()
        result = verify(model, spec, domain=domain, timeout=timeout, device=device, dtype=dtype)
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
    return prepare_time, status, run_time, message


def run_benchmark(bench_dir: str | os.PathLike, instances_csv: str | os.PathLike | None = None,
                  timeout_scale: float = 1.0, output: str | os.PathLike | None = None,
                  results_dir: str | os.PathLike | None = None, domain: str = "auto",
                  limit: int | None = None, resume: bool = False, device: str = "cpu",
                  dtype: torch.dtype = torch.float64, fidelity: bool = True,
                  progress: bool = True) -> tuple[Path, Counter]:
    """Verify the instances of ``bench_dir`` (the first ``limit`` of them) and write the CSV.

    ``output`` defaults to ``<benchmark>.csv`` in the current folder and ``results_dir`` to
    ``<output stem>_results/`` beside it. Without ``resume`` the output is rewritten; with
    it, instances already listed there are skipped and new rows are appended. Returns the
    output path and the count of each result (resumed rows included)."""
    from tqdm import tqdm

    bench_dir = Path(bench_dir)
    if not bench_dir.is_dir():
        raise VerifierInputError(f"benchmark folder not found: {bench_dir}")
    if not timeout_scale > 0:
        raise VerifierInputError(f"--timeout-scale must be positive, got {timeout_scale}")
    if limit is not None and limit < 0:
        raise VerifierInputError(f"--limit must be at least 0, got {limit}")
    benchmark = bench_dir.resolve().name
    instances = read_instances(instances_csv if instances_csv is not None else bench_dir / "instances.csv")
    instances = instances[:limit] if limit is not None else instances
    output = Path(output) if output is not None else Path(f"{benchmark}.csv")
    results_dir = Path(results_dir) if results_dir is not None else output.with_name(f"{output.stem}_results")
    results_dir.mkdir(parents=True, exist_ok=True)

    wanted = {(inst.onnx, inst.vnnlib) for inst in instances}
    done = {(row["onnx"], row["vnnlib"]): row["result"] for row in (read_done(output) if resume else [])
            if row["benchmark"] == benchmark and (row["onnx"], row["vnnlib"]) in wanted}
    counts = Counter({name: 0 for name in RESULTS})
    counts.update(done.values())
    todo = [inst for inst in instances if (inst.onnx, inst.vnnlib) not in done]

    fresh = not (resume and output.is_file() and output.stat().st_size > 0)
    models = ModelCache()
    with tempfile.TemporaryDirectory(prefix="verifier_vnncomp_") as cache, \
            open(output, "w" if fresh else "a", newline="", encoding="utf-8") as fh, \
            tqdm(total=len(instances), initial=len(instances) - len(todo), unit="inst", desc=benchmark,
                 disable=not progress, file=sys.stderr) as bar:
        writer = csv.writer(fh)
        if fresh:
            writer.writerow(HEADER)
        files = FileResolver(bench_dir, Path(cache))
        bar.set_postfix(_postfix(counts))
        for instance in todo:
            prepare_time, result, run_time, message = run_instance(
                instance, instance.timeout * timeout_scale, files, models, results_dir / result_name(instance),
                domain=domain, device=device, dtype=dtype, fidelity=fidelity)
            if message:
                tqdm.write(f"{result}: {instance.onnx} {instance.vnnlib}: {message}", file=sys.stderr)
            writer.writerow([benchmark, instance.onnx, instance.vnnlib, f"{prepare_time:.3f}", result, f"{run_time:.3f}"])
            fh.flush()
            counts[result] += 1
            bar.set_postfix(_postfix(counts))
            bar.update(1)
    return output, counts


def _postfix(counts: Counter) -> dict[str, int]:
    """Progress-bar postfix: the count of each result, in :data:`RESULTS` order."""
    return {name: counts[name] for name in RESULTS}
