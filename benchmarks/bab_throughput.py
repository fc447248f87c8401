#!/usr/bin/env python
"""ReLU-split branch-and-bound throughput: subdomains per second and verdicts per variant.

Usage::

    python benchmarks/bab_throughput.py [--timeout 20] [--variants f64,f32,auto-c3] [--threads 1]
                                        [--instances mnist_fc:0 oval21:0 acasxu:10] [--markdown] [--batch-timing]

Each instance (``BENCHMARK:ROW`` of ``../shared/benchmarks/vnncomp/<BENCHMARK>/reference.csv``)
is loaded once; α-CROWN's root bounds are computed once per region (float64, outside the
timing); then every variant runs :func:`~verifier.complete.relu_split.relu_split_bab` on the
open disjuncts of every region with the same ``--timeout`` (seconds of search per instance).
A variant (:func:`variant_options`) names the dtype the subdomains are optimised in
(``bound_dtype``) and the branching ``candidates`` budget, e.g. ``f64``, ``f32-c3``, ``auto-c5``. Printed per instance and variant:
the verdict (``timeout`` when the deadline passed), the search time, the subdomains bounded and
subdomains per second (less sensitive to the machine's load than wall time), then the solved
count and total per variant, and the load average at the start and the end of the run.

``--batch-timing`` instead times one bound of the same 128 subdomains by a float64 and a
float32-optimising engine, interleaved, best of 5 (:func:`batch_timing`): the measurement
behind :func:`~verifier.complete.relu_split.default_bound_dtype`.

Not a test: nothing is asserted; verdicts of different variants that disagree (sat against
unsat) are flagged with ``!!``.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "benchmarks" / "vnncomp"

DTYPES = {"f64": torch.float64, "f32": torch.float32, "auto": None}


def variant_options(name: str) -> dict | None:
    """``f64``, ``f32`` or ``auto`` (the search's default dtype choice), then optionally
    ``-cN`` (``candidates=N``, filtered smart branching; default 1) and ``-bN`` (``batch=N``;
    default the search's): the keyword options of
    :func:`~verifier.complete.relu_split.relu_split_bab`, or ``None`` for a bad name."""
    dtype, *rest = name.split("-")
    if dtype not in DTYPES:
        return None
    options = {"bound_dtype": DTYPES[dtype], "candidates": 1}
    for part in rest:
        key = {"c": "candidates", "b": "batch"}.get(part[:1])
        if key is None or not part[1:].isdigit() or int(part[1:]) < 1:
            return None
        options[key] = int(part[1:])
    return options


DEFAULT_INSTANCES = ["mnist_fc:0", "mnist_fc:3", "mnist_fc:30", "oval21:0", "acasxu:10", "acasxu:60"]


def _instance(name: str) -> tuple[str, Path, Path]:
    bench, row = name.split(":")
    with open(SHARED / bench / "reference.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    r = rows[int(row)]
    return f"{bench}:{row} {Path(r['onnx']).stem} {Path(r['vnnlib']).stem} ({r['expected']})", \
        SHARED / bench / r["onnx"], SHARED / bench / r["vnnlib"]


def run_variant(model, spec, roots, timeout: float, options: dict) -> tuple[str, float, int]:
    """Search every region's open disjuncts with ``options``: (verdict, seconds, subdomains)."""
    from verifier.complete.relu_split import SplitBaBStats, relu_split_bab
    from verifier.deadline import Deadline, Timeout

    stats, deadline, verdict = SplitBaBStats(), Deadline(timeout), "unsat"
    start = time.perf_counter()
    try:
        with deadline.active():
            for index, region in enumerate(spec.regions):
                root, open_disjuncts = roots[index]
                if not open_disjuncts:
                    continue
                found, _ = relu_split_bab(model, region, deadline, disjuncts=open_disjuncts, region_index=index,
                                          root=root, stats=stats, **options)
                if found == "sat":
                    verdict = "sat"
                    break
                if found == "unknown":
                    verdict = "unknown"
    except Timeout:
        verdict = "timeout"
    return verdict, time.perf_counter() - start, stats.domains_bounded


def batch_timing(model, spec, roots, rounds: int = 5, depth: int = 7) -> tuple[int, float, float] | None:
    """One β-CROWN bound of the same ``2**depth`` subdomains (the first open disjunct, split
    ``depth`` times on the BaBSR choice) by a float64 engine and by a float32-optimising one,
    interleaved ``rounds`` times: ``(ReLUs, best float64 seconds, best float32 seconds)``, or
    ``None`` when α-CROWN closed the root. The minimum over interleaved rounds is far less
    sensitive to other jobs on the machine than a whole search's time."""
    from verifier.complete.beta_crown import BetaCrown, relu_pre_activations
    from verifier.complete.relu_split import Layout

    region = spec.regions[0]
    root, open_disjuncts = roots[0]
    if not open_disjuncts:
        return None
    out_shape = tuple(model.graph.nodes[model.graph.graph["output"]]["shape"])
    lam = region.disjuncts[open_disjuncts[0]].A.reshape(1, -1, *out_shape).double()
    lower, upper = model.as_batch(region.lower.double()), model.as_batch(region.upper.double())
    engines = {dtype: BetaCrown(model.graph_for("cpu", torch.float64), lower, upper, lam, root, iterations=3,
                                fast_graph=None if dtype == torch.float64 else model.graph_for("cpu", dtype))
               for dtype in (torch.float64, torch.float32)}
    layout = Layout(relu_pre_activations(model.graph_for("cpu", torch.float64)), root)
    engine = engines[torch.float64]
    dom, record = engine.bound(engine.root_subdomain())
    for _ in range(depth):
        flat = layout.scores(dom, root, record, dom.lb.argmin(dim=1)).argmax(dim=1)
        dom = layout.split(dom, flat)
        record = {n: t.repeat(2, *[1] * (t.dim() - 1)) for n, t in record.items()}
    best = {dtype: float("inf") for dtype in engines}
    for _ in range(rounds):
        for dtype, e in engines.items():
            start = time.perf_counter()
            e.bound(dom)
            best[dtype] = min(best[dtype], time.perf_counter() - start)
    return layout.total, best[torch.float64], best[torch.float32]


def main(argv: list[str] | None = None) -> int:
    """The command line of the module docstring; returns the exit status (2: bad input)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--timeout", type=float, default=20.0)
    parser.add_argument("--variants", default="f64,f32")
    parser.add_argument("--instances", nargs="*", default=DEFAULT_INSTANCES)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--batch-timing", action="store_true",
                        help="only time one bound of 128 subdomains per instance, float64 against float32")
    args = parser.parse_args(argv)
    variants = args.variants.split(",")
    unknown = [v for v in variants if variant_options(v) is None]
    if unknown:
        print(f"error: --variants: unknown {', '.join(unknown)}; valid: f64, f32 or auto, optionally with -cN "
              f"(N ≥ 1 branching candidates) and -bN (batch N ≥ 1), e.g. f32-c3-b256", file=sys.stderr)
        return 2
    if not SHARED.is_dir():
        print(f"error: {SHARED} is missing (the shared VNN-COMP benchmarks)", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    import verifier
    from verifier.complete.methods import alpha_crown_root
    from verifier.spec import read_vnnlib

    load_start = os.getloadavg()
    rows, solved, totals = [], {v: 0 for v in variants}, {v: [0.0, 0] for v in variants}
    for name in args.instances:
        label, onnx, vnnlib = _instance(name)
        model = verifier.load(onnx)
        spec = read_vnnlib(vnnlib)
        roots = [alpha_crown_root(model, r, i, "cpu", torch.float64, []) for i, r in enumerate(spec.regions)]
        if args.batch_timing:
            timed = batch_timing(model, spec, roots)
            print(f"{label:60s} " + ("closed by alpha-crown" if timed is None else
                  f"{timed[0]:5d} ReLUs  float64 {timed[1] * 1e3:7.1f} ms  float32+certify {timed[2] * 1e3:7.1f} ms  "
                  f"ratio {timed[2] / timed[1]:.2f}"), flush=True)
            continue
        verdicts = {}
        for v in variants:
            verdict, seconds, count = run_variant(model, spec, roots, args.timeout, variant_options(v))
            verdicts[v] = verdict
            solved[v] += verdict in ("sat", "unsat")
            totals[v][0] += seconds
            totals[v][1] += count
            rows.append((label, v, verdict, seconds, count, count / max(seconds, 1e-9)))
            print(f"{label:60s} {v:8s} {verdict:8s} {seconds:7.2f}s {count:7d} subdomains {count / max(seconds, 1e-9):8.1f}/s",
                  flush=True)
        if {"sat", "unsat"} <= set(verdicts.values()):
            print(f"!! {label}: variants disagree {verdicts}", flush=True)
    end_load = os.getloadavg()
    print(f"\nload average at start {load_start[0]:.2f} (1 min), at end {end_load[0]:.2f}; timeout {args.timeout:g} s; "
          f"{args.threads} torch thread(s)")
    if args.batch_timing:
        return 0
    sep = "|" if args.markdown else " "
    print(sep.join(["variant", "solved", "search s", "subdomains", "subdomains/s"]))
    for v in variants:
        seconds, count = totals[v]
        print(sep.join([v, f"{solved[v]}/{len(args.instances)}", f"{seconds:.1f}", str(count),
                        f"{count / max(seconds, 1e-9):.1f}"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
