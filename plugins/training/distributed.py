"""Training on several processes with ``torch.distributed`` (DistributedDataParallel).

``verifier train ... --nproc N`` starts ``N`` processes on this machine
(:func:`launch`, ``torch.multiprocessing.spawn``; gloo on CPU, nccl on CUDA); ``torchrun``
starts them on one or several machines, and :func:`init_from_env` joins the group it
describes (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``). Inside a process
group, :func:`verifier_plugins.training.trainer.train` finds :func:`current` and trains
data-parallel:

* every rank draws the same epoch permutation (the one-process generator seeded by
  ``(seed, epoch)``), so the sequence of global batches is the one-process run's; each
  global batch of ``B`` samples is cut into ``WORLD_SIZE`` contiguous shards, one per rank
  (a ``DistributedSampler`` would shard the epoch instead and change the batches);
* the objective's loss on a shard of ``b_r`` samples is weighted by ``b_r · W / B``;
  DistributedDataParallel averages the gradients over the ``W`` ranks, so every update is
  the gradient of the full batch's mean loss: the same step as one process (to float
  rounding). The logged loss is the all-reduced full-batch loss, the same on every rank
  (a non-finite loss stops every rank at once);
* rank 0 alone evaluates, writes ``log.jsonl`` and ``checkpoint.pt`` (atomically, as in
  one process), exports ``model.onnx`` and certifies it; ``--resume`` reads the checkpoint
  on every rank (on several machines ``--out`` must be a shared folder).

Objectives whose loss is deterministic given the batch (standard, ibp, crown-ibp, dual-lp
without projections) follow the one-process loss curve; those that draw random numbers
per batch (pgd, colt, landscape, projections) draw them per shard: the same distribution,
not the same numbers. Over the network: one gradient all-reduce per step (the model's
parameter count in float32) and one scalar all-reduce (the logged loss).
"""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn

from verifier.errors import VerifierInputError


@dataclass(frozen=True)
class Group:
    """This process's place in the initialised default process group."""

    rank: int
    world: int

    @property
    def main(self) -> bool:
        """Rank 0: the process that evaluates, writes files and exports."""
        return self.rank == 0

    def shard(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        """This rank's contiguous shard of a global batch ``x`` ``(B, ...)``, ``y`` ``(B,)``
        and the weight ``b_r · W / B`` that makes the averaged gradient the full batch's.
        Raises :class:`VerifierInputError` when ``B < W`` (a rank would get no sample)."""
        total = len(y)
        if total < self.world:
            raise VerifierInputError(f"--nproc {self.world}: a batch of {total} samples cannot be split over "
                                     f"{self.world} processes; use a --batch-size of at least {self.world}")
        bounds = [total * r // self.world for r in range(self.world + 1)]
        lo, hi = bounds[self.rank], bounds[self.rank + 1]
        return x[lo:hi], y[lo:hi], (hi - lo) * self.world / total

    def total(self, value: torch.Tensor) -> float:
        """The sum of ``value`` (a scalar tensor) over all ranks, as a float on every rank."""
        value = value.detach().reshape(1).to(torch.float64).clone()
        if dist.get_backend() == "nccl":
            value = value.cuda()
        dist.all_reduce(value)
        return float(value)

    def wrap(self, module: nn.Module, objective) -> nn.Module:
        """``objective.loss`` behind DistributedDataParallel over ``module``'s trainable
        parameters (call it as ``wrapped(x, y, ctx) -> (loss, stats)``). Built again each
        epoch, after the objective's ``prepare_epoch`` may have frozen layers (frozen
        parameters are left out; every trainable one must get a gradient each step)."""
        from torch.nn.parallel import DistributedDataParallel

        device = next(module.parameters()).device
        ids = [device] if device.type == "cuda" else None
        return DistributedDataParallel(_Loss(module, objective), device_ids=ids)


class _Loss(nn.Module):
    """``forward(x, y, ctx)`` = ``objective.loss(x, y, ctx)``, with ``module`` registered
    so that DistributedDataParallel sees its parameters."""

    def __init__(self, module: nn.Module, objective):
        super().__init__()
        self.module = module
        self.objective = objective

    def forward(self, x, y, ctx):
        return self.objective.loss(x, y, ctx)


def current() -> Group | None:
    """The process group this process trains in, or ``None`` (one process)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None
    return Group(dist.get_rank(), dist.get_world_size())


def backend_for(device: str) -> str:
    """``nccl`` for CUDA devices, ``gloo`` otherwise."""
    return "nccl" if str(device).startswith("cuda") else "gloo"


def init_from_env(device: str = "cpu") -> Group | None:
    """Join the process group ``torchrun`` describes in the environment (``RANK``,
    ``WORLD_SIZE`` > 1, ``MASTER_ADDR``, ``MASTER_PORT``); ``None`` without those variables.
    On CUDA each process takes the GPU ``LOCAL_RANK``."""
    if int(os.environ.get("WORLD_SIZE", "1")) < 2 or "RANK" not in os.environ:
        return None
    if not dist.is_initialized():
        if str(device).startswith("cuda"):
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend_for(device))
    return current()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, device: str, kwargs: dict, results) -> None:
    """One spawned process: join the group on 127.0.0.1:``port``, train, leave."""
    from .trainer import train

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    if str(device).startswith("cuda"):
        torch.cuda.set_device(rank % torch.cuda.device_count())
    dist.init_process_group(backend_for(device), rank=rank, world_size=world)
    try:
        result = train(device=device, **kwargs)
        if rank == 0:
            results.put(("ok", {k: v for k, v in result.items() if k not in ("module", "live")}))
    except VerifierInputError as exc:  # bad input: the parent reports it as one error line
        if rank == 0:
            results.put(("error", (type(exc), str(exc))))
    finally:
        dist.destroy_process_group()
    # Leave without the interpreter's shutdown: gloo's threads can make C++ destructors call
    # std::terminate there ("terminate called without an active exception", SIGABRT; seen on
    # a resumed two-process run on 2 cores). Everything this process owes is written above.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _check_before_spawn(kwargs: dict) -> None:
    """The option checks of ``train`` that need no data or model (its hyper-parameters and
    ``out``), here before any process starts; the rest are checked in the processes and
    their error raised again by :func:`launch`."""
    import inspect

    from .validation import check_out_folder, check_train_options

    from .trainer import train

    given = {k: p.default for k, p in inspect.signature(train).parameters.items()} | kwargs  # train's defaults
    names = inspect.signature(check_train_options).parameters
    check_train_options(**{k: v for k, v in given.items() if k in names})
    check_out_folder(given["out"])


def launch(nproc: int, device: str = "cpu", **kwargs) -> dict:
    """:func:`~verifier_plugins.training.trainer.train` (same keyword arguments) on
    ``nproc`` processes of this machine; returns rank 0's summary (without the module).
    ``nproc == 1`` trains in this process. Raises :class:`VerifierInputError` for an
    ``nproc`` that is not a whole number >= 1, above the CPU core count (CPU) or the GPU count on CUDA, and what
    ``train`` raises for bad input (rank 0's error, raised again here).""" 
    from .trainer import train

    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise VerifierInputError(f"--nproc must be a whole number >= 1, not {nproc!r}")
    if str(device).startswith("cuda") and nproc > torch.cuda.device_count():
        raise VerifierInputError(f"--nproc {nproc} on {device}: only {torch.cuda.device_count()} GPUs here "
                                 f"(one process per GPU)")
    cores = os.cpu_count() or 1
    if not str(device).startswith("cuda") and nproc > cores:
        raise VerifierInputError(f"--nproc {nproc}: this machine has {cores} CPU cores (at most one process per "
                                 f"core; for more, launch on several machines with torchrun, docs/scale.md)")
    if nproc == 1:
        return train(device=device, **kwargs)
    _check_before_spawn(kwargs)
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    results = ctx.SimpleQueue()
    mp.start_processes(_worker, args=(nproc, _free_port(), device, kwargs, results), nprocs=nproc,
                       start_method="spawn")
    status, value = results.get()
    if status == "error":
        kind, message = value
        raise kind(message)
    return value
