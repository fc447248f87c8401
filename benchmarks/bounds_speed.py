#!/usr/bin/env python
"""Speed of Box bounds relative to a plain forward pass, on the shared VNN-COMP models.

For every model (a few ACAS Xu networks by default, all 45 with ``--all``; all of
mnist_fc; all of oval21) and each batch size (1 and 256), this measures in one run

* ``forward``: ``model(x)`` under ``torch.no_grad()`` — the same IR the bounds walk;
* ``box``:     ``verifier.compute_bounds(model, x - eps, x + eps, domain="box")``
  (also under ``torch.no_grad()``, through the public API, input checks included);

and prints a markdown table ``model | batch | forward ms | box ms | ratio`` with
``ratio = box / forward``, then a summary line with the largest ratio. The project's
target is Box under 3 forward passes (ratio < 3).

Method: float32, fixed seed, centres uniform in ``[0, 1]`` with ``eps = 0.01``. Each
case is warmed up, then the number of calls per timed block is calibrated so that a
block lasts at least ``--min-block-ms``; forward and box blocks are interleaved
(``--repeats`` of each, so both see the same machine noise) and the per-call time is
the median over blocks (``time.perf_counter``; CUDA is synchronised around each block).

Usage (from the repository root)::

    python benchmarks/bounds_speed.py [BENCH_DIR] [--all] [--device cuda] [--markdown PATH]

``BENCH_DIR`` defaults to ``../shared/benchmarks/vnncomp`` relative to the repository
root and must hold ``acasxu/onnx``, ``mnist_fc/onnx`` and ``oval21/onnx``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import NoReturn

import torch

import verifier

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BENCH_DIR = REPO_ROOT.parent / "shared" / "benchmarks" / "vnncomp"
BENCHMARKS = ("acasxu", "mnist_fc", "oval21")
ACASXU_SUBSET = ("ACASXU_run2a_1_1_batch_2000.onnx", "ACASXU_run2a_3_3_batch_2000.onnx",
                 "ACASXU_run2a_5_9_batch_2000.onnx")
TARGET_RATIO = 3.0


def fail(msg: str) -> NoReturn:
    print(f"bounds_speed: error: {msg}", file=sys.stderr)
    sys.exit(2)


def find_models(bench_dir: Path, all_acasxu: bool) -> list[tuple[str, Path]]:
    if not bench_dir.is_dir():
        fail(f"benchmark directory not found: {bench_dir} (pass the vnncomp directory as the first argument)")
    models: list[tuple[str, Path]] = []
    for bench in BENCHMARKS:
        onnx_dir = bench_dir / bench / "onnx"
        files = sorted(onnx_dir.glob("*.onnx")) if onnx_dir.is_dir() else []
        if not files:
            fail(f"no ONNX models in {onnx_dir}")
        if bench == "acasxu" and not all_acasxu:
            chosen = [f for f in files if f.name in ACASXU_SUBSET]
            files = chosen or files[:: max(1, len(files) // 3)][:3]
        models += [(bench, f) for f in files]
    return models


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fmt_ms(seconds: float) -> str:
    ms = seconds * 1e3
    return f"{ms:.3f}" if ms < 10 else f"{ms:.1f}" if ms < 1000 else f"{ms:,.0f}"


def time_block(fn, n: int, device: torch.device) -> float:
    """Seconds per call of ``fn`` over a block of ``n`` back-to-back calls."""
    sync(device)
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / n


def calibrate(fn, device: torch.device, min_block_s: float, cap: int = 10_000) -> int:
    """Calls per block so that one block lasts at least ``min_block_s``."""
    n = 1
    while True:
        per_call = time_block(fn, n, device)
        if per_call * n >= min_block_s or n >= cap:
            return n
        n = min(cap, max(2 * n, int(1.2 * min_block_s / max(per_call, 1e-9)) + 1))


def measure(model, batch: int, device: torch.device, args) -> tuple[float, float]:
    """Median seconds per call of (forward, box bounds) at ``batch``."""
    gen = torch.Generator().manual_seed(args.seed)  # same centres for a model whatever else runs
    centre = torch.rand((batch, *model.input_shape), generator=gen, dtype=torch.float32).to(device)
    lower, upper = centre - args.eps, centre + args.eps

    def forward():
        return model(centre)

    def box():
        return verifier.compute_bounds(model, lower, upper, domain="box")

    with torch.no_grad():
        # sanity: the bounds must enclose the forward pass at the centre
        y = forward()
        lb, ub = box()
        slack = 1e-4 * (1 + y.abs())
        if not (bool(torch.all(lb <= y + slack)) and bool(torch.all(y <= ub + slack))):
            print(f"warning: box bounds do not enclose f(centre) for {Path(model.path).name}", file=sys.stderr)
        for _ in range(args.warmup):
            forward()
            box()
        min_block = args.min_block_ms / 1e3
        n_fwd = calibrate(forward, device, min_block)
        n_box = calibrate(box, device, min_block)
        t_fwd, t_box = [], []
        for _ in range(args.repeats):
            t_fwd.append(time_block(forward, n_fwd, device))
            t_box.append(time_block(box, n_box, device))
    return statistics.median(t_fwd), statistics.median(t_box)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bench_dir", nargs="?", default=str(DEFAULT_BENCH_DIR),
                   help="vnncomp directory holding acasxu/, mnist_fc/, oval21/ (default: %(default)s)")
    p.add_argument("--all", action="store_true", help="all 45 ACAS Xu networks (default: a subset of 3)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: %(default)s)")
    p.add_argument("--batches", default="1,256", help="comma-separated batch sizes (default: %(default)s)")
    p.add_argument("--eps", type=float, default=0.01, help="box half-width around each centre (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed for the centres (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=3, help="warm-up calls of each op per case (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=11, help="timed blocks per op per case (default: %(default)s)")
    p.add_argument("--min-block-ms", type=float, default=20.0,
                   help="minimum duration of one timed block; short calls are repeated within it (default: %(default)s)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--markdown", metavar="PATH", help="also write the table (and summary) to PATH")
    args = p.parse_args(argv)

    try:
        device = torch.device(args.device)
    except RuntimeError as exc:
        fail(f"bad --device {args.device!r}: {exc}")
    if device.type == "cuda" and not torch.cuda.is_available():
        fail("--device cuda requested but CUDA is not available")
    try:
        batches = [int(b) for b in args.batches.split(",") if b.strip()]
    except ValueError:
        fail(f"bad --batches {args.batches!r} (expected e.g. 1,256)")
    if args.threads:
        torch.set_num_threads(args.threads)

    models = find_models(Path(args.bench_dir).resolve(), args.all)

    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    load = "n/a"
    if hasattr(os, "getloadavg"):
        load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    header = (f"Box bounds vs forward pass — device {device} ({dev_name}), torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads on {os.cpu_count()} CPUs (load average {load} at start), float32, "
              f"eps {args.eps}, seed {args.seed}, median of {args.repeats} interleaved blocks ≥ {args.min_block_ms:g} ms "
              f"after {args.warmup} warm-up calls")
    rows = ["| model | batch | forward ms | box ms | ratio |", "|---|---:|---:|---:|---:|"]
    print(header, flush=True)
    if hasattr(os, "getloadavg") and device.type == "cpu" and os.getloadavg()[0] > 0.5:
        print(f"warning: the CPU is already busy (1-min load {os.getloadavg()[0]:.2f}); multi-threaded timings "
              f"are unreliable under contention — rerun on an idle machine or with --threads 1", file=sys.stderr)
    print()
    print("\n".join(rows), flush=True)

    results = []
    t_start = time.perf_counter()
    for bench, path in models:
        try:
            model = verifier.load(path, check=False)
        except Exception as exc:  # report and go on with the others
            print(f"| {bench}/{path.stem} | – | load failed: {type(exc).__name__}: {exc} | | |", flush=True)
            continue
        for batch in batches:
            t_fwd, t_box = measure(model, batch, device, args)
            ratio = t_box / t_fwd
            name = f"{bench}/{path.stem}"
            results.append((name, batch, t_fwd, t_box, ratio))
            flag = " ⚠" if ratio >= TARGET_RATIO else ""
            row = f"| {name} | {batch} | {t_fwd * 1e3:.4f} | {t_box * 1e3:.4f} | {ratio:.2f}{flag} |"
            rows.append(row)
            print(row, flush=True)
    elapsed = time.perf_counter() - t_start

    if not results:
        fail("no model could be measured")
    worst = max(results, key=lambda r: r[4])
    over = [r for r in results if r[4] >= TARGET_RATIO]
    summary = (f"max ratio {worst[4]:.2f} ({worst[0]}, batch {worst[1]}); "
               f"{len(over)}/{len(results)} cases at or above the target of {TARGET_RATIO:g} forward passes"
               + (": " + ", ".join(f"{r[0]}@{r[1]}" for r in over) if over else "")
               + f"; total {elapsed:.1f} s")
    print()
    print(summary)

    if args.markdown:
        out = Path(args.markdown)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(header + "\n\n" + "\n".join(rows) + "\n\n" + summary + "\n")
        print(f"table written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
