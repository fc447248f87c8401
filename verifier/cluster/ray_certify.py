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

This module belongs to the core only by location: it imports the training plugin
(``verifier_plugins.training``), and only when called.
"""

from __future__ import annotations

import torch

from .ray_session import LOCAL, check_address, cluster_cpus, connect, model_from, portable_model, require_ray, workers


def counts_on_worker(state: dict, shared: list, x: torch.Tensor, y: torch.Tensor, radii: tuple[float, ...],
                     states: list[torch.Tensor], domain: str, dtype: torch.dtype, pgd_steps: int, clip,
                     options: dict) -> tuple[int, list, list]:
    """In a worker (:class:`~verifier.cluster.ray_session.Worker`): :func:`batch_counts` of one
    batch on the model ``shared[0]`` (fetched once per worker)."""
    return batch_counts(model_from(state, shared), x, y, radii, states, domain, dtype, pgd_steps, clip, options)


def batch_counts(model, x: torch.Tensor, y: torch.Tensor, radii: tuple[float, ...], states: list[torch.Tensor],
                 domain: str, dtype: torch.dtype, pgd_steps: int, clip, options: dict) -> tuple[int, list, list]:
    """``(clean, [pgd per radius], [certified per radius])`` counts of one batch: ``x``
    ``(B, *sample)`` in input units, ``y`` ``(B,)`` labels, ``states[k]`` the PGD generator's
    state for radius ``radii[k]`` at this batch. The per-batch step of
    :func:`~verifier_plugins.training.certify.certify_curve` (Madry et al.'s PGD; the
    domain's lower bounds on the margins ``f_y − f_j``, certified when all are positive)."""
    from verifier.api import compute_bounds
    from verifier_plugins.training.certify import verified_mask
    from verifier_plugins.training.live import margin_matrix
    from verifier_plugins.training.objectives import box_around, pgd_attack

    shape = model.input_shape

    def forward(t):
        return model(t.reshape(t.shape[0], *shape).to(dtype))

    x = x.to(dtype)
    with torch.no_grad():
        clean = int((forward(x).argmax(1) == y).sum())
    C = margin_matrix(y, model.output_size).to(dtype)
    pgd, certified = [], []
    for eps, state in zip(radii, states):
        generator = torch.Generator()
        generator.set_state(state)
        adv = pgd_attack(forward, x, y, eps, pgd_steps, clip=clip, generator=generator)
        with torch.no_grad():
            pgd.append(int((forward(adv).argmax(1) == y).sum()))
            lo, hi = box_around(x, eps, clip)
            lb, _ = compute_bounds(model, lo.reshape(lo.shape[0], *shape), hi.reshape(hi.shape[0], *shape),
                                   domain=domain, C=C, **options)
            certified.append(int(verified_mask(lb, y).sum()))
    return clean, pgd, certified


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
    import verifier
    from verifier.errors import VerifierInputError
    from verifier_plugins.training.certify import Certificate, check_eps_values
    from verifier_plugins.training.validation import DataError, check_arrays, check_domain, check_int, check_seed

    require_ray()
    check_address(ray_address)
    if not isinstance(model, verifier.Model):
        raise VerifierInputError(f"model must be a verifier.Model (verifier.load(path)), not {type(model).__name__}")
    radii = check_eps_values("--eps", eps)
    batch, pgd_steps = check_int("batch", batch, 1), check_int("pgd_steps", pgd_steps, 0)
    seed = check_seed("seed", seed)
    if ray_workers is not None:
        check_int("ray_workers", ray_workers, 1)
    if dtype not in (torch.float32, torch.float64):
        raise VerifierInputError(f"dtype {dtype}: use torch.float32 or torch.float64")
    check_domain("--domain", domain, options)
    check_arrays(f"test data ({data})", "x_test", x, "y_test", y, clip)
    if x[0].numel() != model.input_size:
        raise DataError(f"test data ({data}) has samples of shape {list(x.shape[1:])} ({x[0].numel()} values) but "
                        f"the model takes {model.input_size} values of shape {list(model.input_shape)}")
    if int(y.max()) >= model.output_size:
        raise DataError(f"test data ({data}) has label {int(y.max())} but the model has {model.output_size} "
                        f"outputs; labels must be in 0..{model.output_size - 1}")
    x, y = torch.as_tensor(x), torch.as_tensor(y).long()
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
