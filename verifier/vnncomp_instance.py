"""One VNN-COMP instance at a time (:mod:`verifier.vnncomp`): files found (``.gz``
decompressed once), models imported once per run (through the on-disk IR cache), the
instance prepared and verified, its result file written, and the time split recorded.

:func:`run_instance` returns an :class:`InstanceOutcome`: the competition's
``prepare_time`` (model import or cache read, VNN-LIB parse and the onnxruntime fidelity
check inside the spec's first box) and ``run_time`` (the wall time of
:func:`verifier.verify.verify`, the search), and a :class:`Split` of the prepare time
into load / parse / check with the number of subdomains the search reported bounding.
"""

from __future__ import annotations

import gzip
import logging
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch

from .errors import VerifierInputError
from .vnncomp_plan import Instance, bench_file

_LOG = logging.getLogger("verifier.vnncomp")  # the runner's logger (verifier/logs.py), as before the split

#: the notes in which a complete method reports its work (verifier/complete/methods.py):
#: "bounded N boxes" (input split), "bounded N subdomains" (ReLU / activation split)
BOUNDED_NOTE = re.compile(r"\bbounded (\d+) (?:boxes|subdomains)\b")


@dataclass(frozen=True)
class Split:
    """Where one instance's time went, in seconds (``None``: that step was not reached).

    ``load``: the model (ONNX import, IR-cache read, or already in memory from an earlier
    instance of the run); ``parse``: the VNN-LIB file; ``check``: the onnxruntime fidelity
    check (about 0 when the IR cache records that it passed on this box, or with
    ``fidelity=False``); ``search``: the wall time of :func:`verifier.verify.verify`
    (the competition's ``run_time``); ``subdomains``: the boxes or subdomains the search
    reported bounding (summed over regions; ``None`` when it reported none, e.g. a verdict
    before any branch-and-bound)."""

    load: float | None = None
    parse: float | None = None
    check: float | None = None
    search: float | None = None
    subdomains: int | None = None


class InstanceOutcome(NamedTuple):
    """One finished instance: the competition's ``prepare_time`` (s), ``result``,
    ``run_time`` (s, the search) and a ``message`` (why an ``error``, or a verdict that
    came after the timeout), and the :class:`Split` (``None`` from an executor that
    does not record one, e.g. a Ray worker that was lost)."""

    prepare_time: float
    result: str
    run_time: float
    message: str
    split: Split | None = None


def bounded_count(notes: list[str]) -> int | None:
    """The boxes/subdomains a search bounded, summed over the :data:`BOUNDED_NOTE` notes
    of a :class:`~verifier.verify.VerificationResult`; ``None`` when there are none."""
    counts = [int(m.group(1)) for note in notes for m in BOUNDED_NOTE.finditer(note)]
    return sum(counts) if counts else None


class FileResolver:
    """Maps instance paths to readable files, decompressing ``.gz`` files once into ``cache_dir``."""

    def __init__(self, bench_dir: Path, cache_dir: Path):
        self.bench_dir = bench_dir
        self.cache_dir = cache_dir
        self._done: dict[Path, Path] = {}

    def found(self, relative: str) -> Path:
        """The benchmark's own file for ``relative`` (``x``, or ``x.gz`` when only that
        exists); a missing file raises :class:`VerifierInputError` naming the path looked for."""
        path = bench_file(self.bench_dir, relative)
        if path is None:
            raise VerifierInputError(f"file not found: {self.bench_dir / relative}")
        return path

    def __call__(self, relative: str) -> Path:
        """The plain file for ``relative`` (``x``, or ``x.gz`` decompressed); a missing file
        raises :class:`VerifierInputError` naming the path that was looked for."""
        path = self.found(relative)
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

    def named(self, text: str) -> str:
        """``text`` (a message) with the path of every decompressed copy replaced by the
        benchmark's ``.gz`` file it came from."""
        for original, copy in self._done.items():
            text = text.replace(str(copy), str(original))
        return text


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


def prepare(instance: Instance, files: FileResolver, models: ModelCache, fidelity: bool = True,
            times: dict[str, float] | None = None):
    """Model and spec for ``instance``: (cached) import, VNN-LIB parse, size check and,
    with ``fidelity``, the onnxruntime agreement check inside the spec's first box.

    ``times``, if given, receives the seconds of each step reached: ``load`` (the model,
    with finding/decompressing its file), ``parse`` (the spec, with the size check) and
    ``check``. Errors of any step propagate (see :func:`run_instance`)."""
    from .spec import read_vnnlib

    times = {} if times is None else times
    start = time.perf_counter()
    model = models.get(files(instance.onnx))
    times["load"], start = time.perf_counter() - start, time.perf_counter()
    spec = read_vnnlib(files.found(instance.vnnlib))  # it reads .gz itself: errors name the benchmark's file
    spec.check_model(model.input_size, model.output_size)
    times["parse"], start = time.perf_counter() - start, time.perf_counter()
    if fidelity:  # a check passed before on this box (IR cache) is not repeated
        region = spec.regions[0] if spec.regions else None
        model.check(None if region is None else region.lower, None if region is None else region.upper)
    times["check"] = time.perf_counter() - start
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
                 proofs: Path | None = None) -> InstanceOutcome:
    """Prepare and verify one instance; write its result file (and, given ``proofs``, a
    certificate of an ``unsat`` verdict as ``proofs/<result name>.proof``, docs/proofs.md).
    The one-time warm-up of what the search uses (:func:`~verifier.deadline.warm_up`) runs
    between the two (counted in neither, like the runner's own start-up), so that the
    search's run time keeps within ``timeout``.

    Returns an :class:`InstanceOutcome` (times in seconds, with the :class:`Split`); any
    exception becomes result ``error`` with its message (``KeyboardInterrupt``
    propagates)."""
    from .counterexample import write_result
    from .deadline import warm_up
    from .verify import uses_optimizers, verify

    start, prepared, prepare_time, run_time = time.perf_counter(), False, 0.0, 0.0
    times: dict[str, float] = {}
    subdomains = None
    try:
        model, spec = prepare(instance, files, models, fidelity, times)
        prepare_time = time.perf_counter() - start
        # one-time start-up of what the search will use (the optimisers' first step imports
        # torch._dynamo, seconds), before the search's clock: verify() would otherwise extend
        # its deadline by it, and the run time would pass the instance's limit by as much
        warm_up(optimizers=uses_optimizers(domain, model.input_size))
        prepared, start = True, time.perf_counter()
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
        subdomains = bounded_count(result.notes)
        status, cex, message = result.status, result.counterexample, ""
        if status in ("sat", "unsat") and run_time > timeout:
            status, cex, message = "timeout", None, f"{result.status} after {run_time:.1f} s > timeout {timeout:g} s"
    except Exception as exc:
        if prepared:
            run_time = time.perf_counter() - start
        else:
            prepare_time = time.perf_counter() - start
        text = files.named((str(exc).splitlines() or ["(no message)"])[0])
        kind = "" if isinstance(exc, VerifierInputError) else f"{type(exc).__name__}: "
        status, cex, message = "error", None, kind + text
    write_result(result_file, status, cex)
    _LOG.debug("%s %s: %s (prepare %.2f s, run %.2f s)", instance.onnx, instance.vnnlib, status, prepare_time, run_time)
    split = Split(times.get("load"), times.get("parse"), times.get("check"), run_time if prepared else None, subdomains)
    return InstanceOutcome(prepare_time, status, run_time, message, split)


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

    def run(self, instance: Instance, result_file: Path) -> InstanceOutcome:
        """:func:`run_instance` with the run's timeout scale, domain, device, dtype and
        fidelity setting (an :class:`InstanceOutcome`); writes ``result_file``."""
        s = self.settings
        return run_instance(instance, instance.timeout * s.timeout_scale, self.files, self.models, result_file,
                            domain=s.domain, device=s.device, dtype=s.dtype, fidelity=s.fidelity, proofs=s.proofs)

    def close(self) -> None:
        """Remove the decompressed files."""
        self._tmp.cleanup()


