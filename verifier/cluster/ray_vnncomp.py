"""``verifier vnncomp BENCH --ray [ADDRESS]``: a benchmark's instances as Ray actor tasks.

Each worker (:func:`~verifier.cluster.ray_session.workers`, one actor per CPU) holds for
the run an :class:`~verifier.vnncomp.InstanceRunner`: a
:class:`~verifier.vnncomp.ModelCache` (each model imported once per worker, through the
on-disk IR cache, and reused by every instance of it that worker runs). The driver keeps
one instance in flight per worker, takes the results as they finish (:func:`ray.wait`) and
hands them to :func:`verifier.vnncomp.run_benchmark`, which appends the CSV rows (one
atomic write each, in the order the instances finish) and moves the progress bar, exactly
as in a single-process run; the worker sends back each result file's text and the driver
writes it into ``--results-dir``, so only the driver writes output files.

Failures: an actor whose process dies (killed, out of memory, a lost node) is restarted by
Ray (``max_restarts``) and the instance it was running is run again
(``max_task_retries``); only after :data:`MAX_TASK_RETRIES` retries is the instance
written as ``error``. A row is written only when its instance has finished, so an
instance is never lost or written twice; a killed driver leaves complete rows that
``--resume`` keeps (the CSV's done-set) while the rest run again.

Over the network go, per instance, the run settings (a few hundred bytes) and the
instance's two paths and timeout, and back the four values of its row and its result
file's text. Model
and spec files are read by the workers from ``BENCH`` itself: on a cluster of several
machines it must be on a shared file system (the same path on every node).
"""

from __future__ import annotations

import itertools
import os
import tempfile
from pathlib import Path
from typing import Iterator

from ..errors import VerifierInputError
from ..vnncomp import Executor, Instance, InstanceRunner, Outcome, RunSettings, result_name
from .ray_session import (LOCAL, MAX_TASK_RETRIES, check_address, cluster_cpus, connect, require_ray, retire,
                          workers as worker_pool)

_RUNS = itertools.count()


def run_instance_on_worker(state: dict, key: str, settings: RunSettings,
                           instance: Instance) -> tuple[tuple[float, str, float, str], str]:
    """In a worker (:class:`~verifier.cluster.ray_session.Worker`): run ``instance`` with the
    run's :class:`~verifier.vnncomp.InstanceRunner` (made on the worker's first instance of
    run ``key``, kept in ``state``); returns ``((prepare_time s, result, run_time s,
    message), result file text)``."""
    if key not in state:
        state[key] = (InstanceRunner(settings), Path(tempfile.mkdtemp(prefix="verifier_ray_result_")) / "result.txt")
    runner, result_file = state[key]
    outcome = runner.run(instance, result_file)
    return outcome, result_file.read_text()


def end_run_on_worker(state: dict, key: str) -> None:
    """In a worker: forget run ``key`` (its models, its decompressed files)."""
    runner, _ = state.pop(key, (None, None))
    if runner is not None:
        runner.close()


def ray_executor(address: str | None = LOCAL, workers: int | None = None) -> Executor:
    """An executor for :func:`verifier.vnncomp.run_benchmark` that runs the instances on
    Ray: ``address`` as in :func:`~verifier.cluster.ray_session.connect` (``"local"``: start
    Ray here), ``workers`` actors (default: the cluster's CPUs, at most one per instance;
    :func:`~verifier.cluster.ray_session.workers`).

    Checks that ``ray`` is installed now (:class:`~verifier.errors.VerifierInputError`
    otherwise); connects when the run starts, after the benchmark was validated."""
    require_ray()
    check_address(address)
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise VerifierInputError(f"workers must be a whole number >= 1, not {workers!r}")

    def execute(todo: list[Instance], settings: RunSettings, results_dir: Path) -> Iterator[Outcome]:
        if not todo:
            return
        if str(settings.device) != "cpu":
            raise VerifierInputError(f"--ray runs the instances on CPU workers; --device {settings.device} is not "
                                     f"available there (drop one of them)")
        ray = connect(address)
        actors = worker_pool(ray, min(workers or cluster_cpus(ray), len(todo)))
        key = f"vnncomp-{os.getpid()}-{next(_RUNS)}"
        try:
            yield from _dispatch(ray, actors, todo, results_dir, key, settings)
        finally:
            for actor in actors:
                actor.call.remote(end_run_on_worker, key)

    return execute


def _dispatch(ray, actors: list, todo: list[Instance], results_dir: Path, key: str,
              settings: RunSettings) -> Iterator[Outcome]:
    """Keep one instance in flight per actor; yield each as it finishes (writing its result
    file here). An instance whose actor died more than :data:`MAX_TASK_RETRIES` times is
    yielded as ``error`` and that actor is retired; with every actor retired the run stops
    with :class:`~verifier.errors.VerifierInputError` (the rows written so far are kept for
    ``--resume``)."""
    from ..counterexample import write_result
    from ..outputs import write_atomic

    actors, queue, idle, pending = list(actors), list(todo), list(actors), {}
    while queue or pending:
        while queue and idle:
            actor, instance = idle.pop(), queue.pop(0)
            pending[actor.call.remote(run_instance_on_worker, key, settings, instance)] = (instance, actor)
        (ref,), _ = ray.wait(list(pending), num_returns=1)
        instance, actor = pending.pop(ref)
        idle.append(actor)
        target = results_dir / result_name(instance)
        try:
            outcome, text = ray.get(ref)
        except ray.exceptions.RayError as exc:  # the actor died on every try (or cannot start)
            first = (str(exc).splitlines() or [""])[0][:200]
            lost = f"Ray worker lost {MAX_TASK_RETRIES + 1} times ({type(exc).__name__}: {first})"
            outcome = (0.0, "error", 0.0, lost)
            write_result(target, "error", None)
            idle.remove(actor)
            actors = [a for a in actors if a is not actor]
            retire(ray, actor)
        else:
            write_atomic(target, text)
        yield instance, outcome
        if queue and not actors:
            raise VerifierInputError(f"every Ray worker died; {len(queue)} instances did not run: rerun with --resume "
                                     f"(see the errors above)")
