"""Scaling of the cluster paths with 1 and 2 workers (issue 15; not a test).

Measures, on a local Ray instance (and local gloo processes for training):

* ``vnncomp``: instances per second of ``run_benchmark`` over the first ``--instances``
  instances of a VNN-COMP benchmark (default mnist_fc, timeouts scaled by
  ``--timeout-scale``), one process (one torch thread, as each worker) vs 1 and 2 Ray
  workers, after an untimed warm-up of both (Ray's start is timed separately);
* input-splitting branch-and-bound: boxes (subdomains) bounded per second during
  ``--bab-seconds`` of a search that does not finish in that time (ACAS Xu 5_8 prop_1 by
  default), in one process and on 1 and 2 Ray workers;
* ReLU-splitting branch-and-bound: subdomains bounded per second during ``--bab-seconds``
  of the search of an instance that needs branching (mnist_fc 256x4 prop_6_0.03 by
  default, ``--relu-onnx``/``--relu-vnnlib``), in one process and on 1 and 2 Ray workers;
* Ray overheads: one call to a warm worker and back (a no-op, and one carrying a shard's
  region), and sending the model to a worker through the object store;
* DDP training: samples per second of the training steps (``train_seconds`` of the log,
  without start-up or evaluation) for one process with 1 and 2 threads and two gloo
  processes with 1 thread each.

Prints one table (markdown) for ``docs/scale.md``. The numbers are wall-clock times on
whatever machine runs it: on a shared or loaded machine they are noisy.

    python benchmarks/scaling.py                     # everything, ~5 minutes on 2 cores
    python benchmarks/scaling.py --skip ddp --skip bab --first 60   # the 20 first 256x6 instances
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "benchmarks" / "vnncomp"


def vnncomp_rates(bench: Path, first: int, count: int, scale: float,
                  workers: list[int]) -> list[tuple[str, float, str]]:
    """Instances per second over rows ``first .. first + count - 1`` of ``instances.csv``,
    one process and on each number of Ray workers."""
    from verifier.cluster.ray_vnncomp import ray_executor
    from verifier.vnncomp import run_benchmark

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        lines = (bench / "instances.csv").read_text().splitlines()[first:first + count]
        chosen = Path(tmp) / "instances.csv"
        chosen.write_text("\n".join(lines) + "\n")
        common = dict(instances_csv=chosen, timeout_scale=scale, progress=False)
        # warm-up (not timed): the IR cache, one-time imports here and in the workers
        run_benchmark(bench, output=Path(tmp) / "warm.csv", limit=max(workers), **common)
        run_benchmark(bench, output=Path(tmp) / "warm.csv", limit=max(workers),
                      executor=ray_executor(workers=max(workers)), **common)
        for label, executor in [("one process, 1 thread", None)] + [(f"{n} Ray worker(s)", ray_executor(workers=n))
                                                                     for n in workers]:
            start = time.perf_counter()
            _, counts = run_benchmark(bench, output=Path(tmp) / f"{len(rows)}.csv", executor=executor, **common)
            seconds = time.perf_counter() - start
            summary = ", ".join(f"{k} {v}" for k, v in counts.items() if v)
            rows.append((f"vnncomp {bench.name} rows {first + 1}-{first + len(lines)}, {label}", len(lines) / seconds,
                         f"inst/s ({seconds:.1f} s; {summary})"))
    return rows


def bab_rates(bench: Path, onnx: str, vnnlib: str, seconds: float, workers: list[int]) -> list[tuple[str, float, str]]:
    """Boxes bounded per second in ``seconds`` of input-split search."""
    import verifier
    from verifier.cluster.ray_bab import ShardStats, WorkerPool
    from verifier.cluster.ray_input_split import distributed_input_split
    from verifier.complete.input_split import BaBStats, input_split_bab
    from verifier.deadline import Deadline, Timeout
    from verifier.spec import read_vnnlib

    model = verifier.load(bench / onnx)
    region = read_vnnlib(bench / vnnlib).regions[0]
    rows = []
    stats = BaBStats()
    start = time.perf_counter()
    try:
        status, _ = input_split_bab(model, region, Deadline(seconds), stats=stats)
    except Timeout:
        status = "timeout"
    spent = time.perf_counter() - start
    rows.append((f"input-split {Path(onnx).stem[11:]} {Path(vnnlib).stem}, one process, 1 thread",
                 stats.boxes_bounded / spent,
                 f"boxes/s ({status} after {spent:.1f} s)"))
    for n in workers:
        pool = WorkerPool(model, workers=n)
        pool.actors()
        shards = ShardStats()
        start = time.perf_counter()
        try:
            status, _ = distributed_input_split(pool, region, Deadline(seconds), stats=shards)
        except Timeout:
            status = "timeout"
        spent = time.perf_counter() - start
        rows.append((f"input-split, {n} Ray worker(s)", shards.boxes_bounded / spent,
                     f"boxes/s ({status} after {spent:.1f} s; {shards.shards} shards, {shards.sliced} split again)"))
    return rows


def relu_bab_rates(bench: Path, onnx: str, vnnlib: str, seconds: float,
                   workers: list[int]) -> list[tuple[str, float, str]]:
    """Subdomains bounded per second in ``seconds`` of ReLU-split search of the first
    region's open disjuncts (α-CROWN's root bounds computed once, outside the timing), in
    one process and on each number of Ray workers, each after an untimed 5 s warm-up search
    (imports and first bounds; the workers' process start)."""
    import verifier
    from verifier.cluster.ray_bab import ShardStats, WorkerPool
    from verifier.cluster.ray_relu_split import distributed_relu_split
    from verifier.complete.methods import alpha_crown_root
    from verifier.complete.relu_split import SplitBaBStats, relu_split_bab
    from verifier.deadline import Deadline, Timeout
    from verifier.spec import read_vnnlib

    model = verifier.load(bench / onnx)
    region = read_vnnlib(bench / vnnlib).regions[0]
    root, open_disjuncts = alpha_crown_root(model, region, 0, "cpu", torch.float64, [])
    name = f"relu-split {Path(onnx).stem[10:]} {Path(vnnlib).stem} ({len(open_disjuncts)} open disjuncts)"
    for timed in (False, True):  # the same untimed 5 s warm-up as the workers get
        stats = SplitBaBStats()
        start = time.perf_counter()
        try:
            status, _ = relu_split_bab(model, region, Deadline(seconds if timed else 5.0), disjuncts=open_disjuncts,
                                       root=root, stats=stats)
        except Timeout:
            status = "timeout"
        spent = time.perf_counter() - start
    rows = [(f"{name}, one process, 1 thread", stats.domains_bounded / spent,
             f"subdomains/s ({status} after {spent:.1f} s)")]
    for n in workers:
        pool = WorkerPool(model, workers=n)
        for timed in (False, True):
            shards = ShardStats()
            start = time.perf_counter()
            try:
                status, _ = distributed_relu_split(pool, region, root, open_disjuncts,
                                                   Deadline(seconds if timed else 5.0), stats=shards)
            except Timeout:
                status = "timeout"
            spent = time.perf_counter() - start
        rows.append((f"relu-split, {n} Ray worker(s)", shards.boxes_bounded / spent,
                     f"subdomains/s ({status} after {spent:.1f} s; {shards.shards} shards, "
                     f"{shards.sliced} split again)"))
    return rows


def _noop(state: dict, payload=None) -> None:
    return None


def ray_overheads(bench: Path, onnx: str, vnnlib: str) -> list[tuple[str, float, str]]:
    """Milliseconds per call to a warm worker, and to send a model through the object store."""
    import ray

    import verifier
    from verifier.cluster.ray_session import connect, portable_model, workers
    from verifier.spec import read_vnnlib

    connect("local")
    actor = workers(ray, 1)[0]
    ray.get(actor.call.remote(_noop))
    region = read_vnnlib(bench / vnnlib).regions[0]

    def per_call(payload, repeats=200) -> float:
        start = time.perf_counter()
        for _ in range(repeats):
            ray.get(actor.call.remote(_noop, payload))
        return (time.perf_counter() - start) / repeats * 1e3

    rows = [("Ray call to a warm worker (no-op)", per_call(None), "ms per task, round trip"),
            ("Ray call carrying one shard's region", per_call(region), "ms per task, round trip")]
    for path in (bench / onnx, REPO / "models" / "mnist_small.onnx"):
        model = portable_model(verifier.load(path))
        times = []
        for _ in range(5):
            start = time.perf_counter()
            ray.get(actor.call.remote(_fetch, [ray.put(model)]))
            times.append((time.perf_counter() - start) * 1e3)
        rows.append((f"model {path.name} to a worker (object store)", statistics.median(times), "ms"))
    return rows


def _fetch(state: dict, shared: list) -> int:
    """Fetch the model behind ``shared[0]`` (as a worker does once per model)."""
    import ray

    return len(ray.get(shared[0]).graph)


def ddp_rates(steps: int) -> list[tuple[str, float, str]]:
    """Training samples per second (steps only), one process with 1 and 2 threads, two gloo processes."""
    from verifier_plugins.training.data import load_data
    from verifier_plugins.training.distributed import launch

    batch = 100
    data = load_data("mnist", batch * steps, 10)
    kwargs = dict(model="crown-ibp-a", method="ibp", eps=0.1, epochs=1, data=data, eval_count=0, batch_size=batch,
                  progress=False, export=False, seed=0, warmup=0, ramp=1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            log = launch(1, out=os.path.join(tmp, f"one{threads}"), **kwargs)["log"]
            rows.append((f"DDP crown-ibp-a ibp, 1 process × {threads} thread(s)",
                         steps * batch / log[0]["train_seconds"], "samples/s"))
        log = launch(2, out=os.path.join(tmp, "two"), **kwargs)["log"]
        rows.append(("DDP, 2 gloo processes × 1 thread", steps * batch / log[0]["train_seconds"], "samples/s"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", type=Path, default=SHARED / "mnist_fc")
    parser.add_argument("--instances", type=int, default=20)
    parser.add_argument("--first", type=int, default=0, help="first instances.csv row (0-based; 60: the 256x6 net)")
    parser.add_argument("--timeout-scale", type=float, default=0.05)
    parser.add_argument("--bab-bench", type=Path, default=SHARED / "acasxu")
    parser.add_argument("--bab-onnx", default="onnx/ACASXU_run2a_5_8_batch_2000.onnx")
    parser.add_argument("--bab-vnnlib", default="vnnlib/prop_1.vnnlib")
    parser.add_argument("--bab-seconds", type=float, default=20.0)
    parser.add_argument("--relu-bench", type=Path, default=SHARED / "mnist_fc")
    parser.add_argument("--relu-onnx", default="onnx/mnist-net_256x4.onnx")
    parser.add_argument("--relu-vnnlib", default="vnnlib/prop_6_0.03.vnnlib")
    parser.add_argument("--ddp-steps", type=int, default=20)
    parser.add_argument("--skip", action="append", default=[], choices=["vnncomp", "bab", "relu", "overhead", "ddp"])
    args = parser.parse_args()

    from verifier.cluster.ray_session import connect

    torch.set_num_threads(1)  # one process is compared with workers of one thread each
    load_before = os.getloadavg()[0]
    rows = []
    if {"vnncomp", "bab", "relu", "overhead"} - set(args.skip):
        start = time.perf_counter()
        connect("local")
        rows.append(("start a local Ray instance", time.perf_counter() - start, "s"))
    if "overhead" not in args.skip:
        rows += ray_overheads(args.bab_bench, args.bab_onnx, args.bab_vnnlib)
    if "vnncomp" not in args.skip:
        rows += vnncomp_rates(args.bench, args.first, args.instances, args.timeout_scale, [1, 2])
    if "bab" not in args.skip:
        rows += bab_rates(args.bab_bench, args.bab_onnx, args.bab_vnnlib, args.bab_seconds, [1, 2])
    if "relu" not in args.skip:
        rows += relu_bab_rates(args.relu_bench, args.relu_onnx, args.relu_vnnlib, args.bab_seconds, [1, 2])
    if "ddp" not in args.skip:
        rows += ddp_rates(args.ddp_steps)
    print(f"\nmachine: {os.cpu_count()} CPUs, load average {load_before:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after (shared machine: noisy)\n")
    print("| measurement | value | unit |\n|---|---:|---|")
    for name, value, unit in rows:
        print(f"| {name} | {value:.3g} | {unit} |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
