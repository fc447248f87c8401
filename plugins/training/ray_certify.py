"""``verifier certify ... --ray [ADDRESS]``: certified accuracy with the test points'
batches spread over Ray actors.

:func:`certify_model_ray` takes the arguments of
:func:`verifier_plugins.training.certify.certify_model` and returns the same
:class:`~verifier_plugins.training.certify.Certificate`, bit for bit: the points are cut
into the same batches of ``batch``; each batch is one actor task that computes the
clean, PGD and certified counts exactly as the single-process loop does (same margin
matrix, same domain bound, same PGD), with the PGD random start drawn from the state the
one-process generator has at that batch (the driver replays the generator's draws,
one ``torch.rand`` of the batch's shape per batch and radius, which is what
:func:`~verifier_plugins.training.objectives.pgd_attack` draws with one restart). The
counts are summed and divided by the number of points as there.

Each worker (:func:`~verifier.cluster.ray_session.workers`) fetches the model once
(:func:`~verifier.cluster.ray_session.portable_model` through the object store) and keeps
it for all its batches; a task sends one batch of points and the generator states (5 kB
per radius) and returns three counts per radius. A killed worker is restarted and its
batch rerun (``max_restarts``/``max_task_retries``).

It lives in the training plugin (the core never imports the plugins) and uses the core's
Ray session (:mod:`verifier.cluster.ray_session`); ray is imported only when called.
"""

from __future__ import annotations

import torch

from verifier.cluster.ray_session import LOCAL, check_address, cluster_cpus, connect, model_from, portable_model, require_ray, workers


def counts_on_worker(state: dict, shared: list, x: torch.Tensor, y: torch.Tensor, radii: tuple[float, ...],
                     states: list[torch.Tensor], domain: str, dtype: torch.dtype, pgd_steps: int, clip,
                     options: dict) -> tuple[int, list, list]:
    """In a worker (:class:`~verifier.cluster.ray_session.Worker`):
    :func:`~verifier_plugins.training.certify.batch_counts` of one batch on the model
    ``shared[0]`` (fetched once per worker), the PGD generators set to ``states``."""
    from .certify import batch_counts

    generators = [torch.Generator() for _ in states]
    for generator, saved in zip(generators, states):
        generator.set_state(saved)
    return batch_counts(model_from(state, shared), x, y, radii, generators, domain, dtype, pgd_steps, clip, options)


def generator_states(x: torch.Tensor, radii: tuple[float, ...], batch: int, pgd_steps: int,
                     seed: int) -> list[list[torch.Tensor]]:
    """Per batch, per radius: the state of the one-process PGD generator (seeded with
    ``seed``) when that batch starts; each batch of a positive radius (with
    ``pgd_steps > 0``) draws one ``torch.rand`` of its shape."""
    generators = [torch.Generator().manual_seed(seed) for _ in radii]
    states = []
    for start in range(0, len(x), batch):
        states.append([g.get_state() for g in generators])
        shape = x[start:start + batch].shape
        for g, eps in zip(generators, radii):
            if eps > 0 and pgd_steps > 0:
                torch.rand(shape, generator=g)
    return states


def certify_curve_ray(model, x: torch.Tensor, y: torch.Tensor, eps, domain: str = "crown", batch: int = 50,
                      dtype: torch.dtype = torch.float64, pgd_steps: int = 20, seed: int = 0, clip=(0.0, 1.0),
                      data: str = "mnist", *, ray_address: str | None = LOCAL, ray_workers: int | None = None,
                      **options) -> list:
    """:func:`~verifier_plugins.training.certify.certify_curve` (same arguments, checks,
    errors and :class:`~verifier_plugins.training.certify.Certificate` s) with the batches
    run on Ray at ``ray_address`` (``"local"``: a local Ray instance with this machine's
    cores) by ``ray_workers`` actors (default: the cluster's CPUs, at most one per batch).
    Raises :class:`~verifier.errors.VerifierInputError` without ``ray`` installed."""
    from .certify import Certificate, check_certify_inputs
    from .validation import check_int

    require_ray()
    check_address(ray_address)
    if ray_workers is not None:
        check_int("ray_workers", ray_workers, 1)
    radii, batch, pgd_steps, seed, x, y = check_certify_inputs(model, x, y, eps, domain, batch, dtype, pgd_steps,
                                                                seed, clip, data, options)
    states = generator_states(x, radii, batch, pgd_steps, seed)

    ray = connect(ray_address)
    from ray.util import ActorPool

    starts = list(range(0, len(y), batch))
    actors = workers(ray, min(ray_workers or cluster_cpus(ray), len(starts)))
    shared = [ray.put(portable_model(model))]
    clean, pgd, certified = 0, [0] * len(radii), [0] * len(radii)
    jobs = [(x[s:s + batch], y[s:s + batch], states[i]) for i, s in enumerate(starts)]
    results = ActorPool(actors).map_unordered(
        lambda actor, job: actor.call.remote(counts_on_worker, shared, job[0], job[1], radii, job[2], domain, dtype,
                                             pgd_steps, clip, options), jobs)
    for c, p, v in results:
        clean += c
        pgd = [a + b for a, b in zip(pgd, p)]
        certified = [a + b for a, b in zip(certified, v)]
    n, kind = len(y), str(dtype).replace("torch.", "")
    return [Certificate(clean / n, pgd[k] / n, certified[k] / n, domain, float(r), n, kind, data)
            for k, r in enumerate(radii)]


def certify_model_ray(model, x: torch.Tensor, y: torch.Tensor, eps: float, domain: str = "crown", batch: int = 50,
                      dtype: torch.dtype = torch.float64, pgd_steps: int = 20, seed: int = 0, clip=(0.0, 1.0),
                      data: str = "mnist", *, ray_address: str | None = LOCAL, ray_workers: int | None = None,
                      **options):
    """:func:`~verifier_plugins.training.certify.certify_model` on Ray: one radius of
    :func:`certify_curve_ray` (same checks and errors); the same Certificate."""
    return certify_curve_ray(model, x, y, [eps], domain, batch, dtype, pgd_steps, seed, clip, data,
                             ray_address=ray_address, ray_workers=ray_workers, **options)[0]
