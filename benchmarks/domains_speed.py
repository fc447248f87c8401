#!/usr/bin/env python
"""Time and tightness of every bound domain on MNIST nets, plus CROWN's memory on oval21.

Cases, all float32 with a fixed seed, ``eps = 0.02`` (input box ``clamp(x ± eps, 0, 1)``)
and the margin spec ``C`` (rows ``e_label − e_j``, ``j ≠ label``, with ``label`` the
model's prediction at the centre):

1. ``conv``: the Wong–Kolter MNIST conv net — the shipped ``models/mnist_small.onnx``
   (normalise → conv 16 4×4/2 → ReLU → conv 32 4×4/2 → ReLU → fc 100 → ReLU → fc 10);
2. ``fc``: VNN-COMP ``mnist_fc/onnx/mnist-net_256x6.onnx`` (fed the same images flattened);

centres: real MNIST test images (``verifier.datasets.load_mnist("test")``), the first
``B`` of a seeded permutation of the test set, at each batch size ``B`` (1, 10, 100).
For each domain (box, deepz, crown, crown-ibp, alpha-crown with 20 iterations, dual-lp)
the table gives the time of one ``verifier.compute_bounds(model, lo, hi, domain, C=C)``
call, that time in plain forward passes ``model(x)`` of the same batch (``×forward``:
against the median of the forward blocks timed so far in that case — five at its start,
then one between consecutive blocks of the domains), and the mean bound width
``mean(ub − lb)`` over the ``B × 9`` margin rows. Every result is checked to
enclose ``C·f(centre)``; a crash or a non-enclosing bound is listed with a command that
reproduces it.

3. ``oval21``: the peak memory of full CROWN (``crown``) at batch 1 on the oval21 model
   with the most parameters (``cifar_wide_kw``), on the box of its first vnnlib property
   in ``instances.csv`` (margin spec at its centre), with the call's time. Measured first,
   in a fresh subprocess, as the rise of the peak RSS over the call (after loading the
   model and one forward pass), so that torch's allocations count (tracemalloc does not
   see them). ``getrusage(RUSAGE_SELF).ru_maxrss`` is read before and after; on Linux it
   also carries the parent's peak across fork/exec, so where ``/proc/self/status`` exists
   the verdict uses the process image's own peak ``VmHWM`` instead, reset to the current
   RSS just before the call (``echo 5 > /proc/self/clear_refs``).

Timing follows ``bounds_speed.py``: a warm-up call (which also gives the widths and the
enclosure check), then blocks of calls interleaved with blocks of forward passes, each
block calibrated to last ≥ ``--min-block-ms``, and the median per-call time. Slow cases
get fewer blocks (``--case-budget-s``); a case whose single call takes ≥ ``--slow-s`` is
timed by one call, and when a smaller batch already predicts that, by its first (cold)
call alone (marked ¹). A case predicted to exceed ``--max-call-s`` is not run at all and
is listed as skipped; the prediction extrapolates the same domain's time from the smaller
batches as ``t · (B / B_prev)^k`` with the measured exponent ``k`` (1.5 when only one
smaller batch is known, clamped to [1, 2]): the backward domains scale super-linearly in
the batch here, as they bound the union over the batch of the unstable neurons.

4. ``anchors``: the nets and inputs of ``../shared/anchors`` (``--anchors``) on which
   auto_LiRPA and convex_adversarial were timed, our times beside their recorded ones as
   ratios (:mod:`anchor_cases`; skipped, with a message, when the folder is absent).

Usage (from the repository root)::

    python benchmarks/domains_speed.py [--quick] [--threads N] [--markdown PATH]
    python benchmarks/domains_speed.py --models anchors --threads 2   # the anchors only
    python benchmarks/domains_speed.py --max-call-s 0      # everything, batch 100 included (slow)
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import NoReturn

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the anchors were timed; read when OpenMP starts

import torch  # noqa: E402

import verifier  # noqa: E402
from verifier.datasets import load_mnist  # noqa: E402
from verifier.domains import available_domains  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import anchor_cases  # noqa: E402  (the peers' nets and times)
from anchor_cases import margin_spec  # noqa: E402
from bounds_speed import calibrate, fmt_ms, sync, time_block  # noqa: E402  (shared timing helpers)
from crown_memory import fmt_bytes, measure_memory, memory_child, memory_line, memory_peak  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BENCH_DIR = REPO_ROOT.parent / "shared" / "benchmarks" / "vnncomp"
CONV_MODEL = REPO_ROOT / "models" / "mnist_small.onnx"
FC_MODEL = Path("mnist_fc") / "onnx" / "mnist-net_256x6.onnx"  # under the bench dir
DOMAINS = ("box", "deepz", "crown", "crown-ibp", "alpha-crown", "dual-lp")
DOMAIN_OPTIONS = {"alpha-crown": {"iterations": 20}}
MODELS = ("conv", "fc", "oval21", "anchors")
DEFAULT_EXPONENT = 1.5
FORWARD_BLOCKS = 5  # forward blocks at the start of each (model, batch), before the domains'

# targets: (label, model, batch, domain, limit in seconds)
TIME_TARGETS = (
    ("CROWN, conv net, batch 10", "conv", 10, "crown", 0.250),
    ("α-CROWN (20 iterations), conv net, batch 10", "conv", 10, "alpha-crown", 10.0),
    ("dual-LP, conv net, batch 10", "conv", 10, "dual-lp", 0.150),
)
MEMORY_TARGET_BYTES = 4 * 1024 ** 3


def fail(msg: str) -> NoReturn:
    print(f"domains_speed: error: {msg}", file=sys.stderr)
    sys.exit(2)


def load_avg() -> str:
    return ", ".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"


# --- the MNIST cases ---------------------------------------------------------------------------
class Case:
    """One (model, batch): centres, box, spec, and the forward timings gathered around it."""

    def __init__(self, name: str, model, images: torch.Tensor, eps: float, device: torch.device, min_block: float):
        self.name, self.model, self.min_block = name, model, min_block
        self.x = images.reshape(images.shape[0], -1).to(device)
        self.lower, self.upper = (self.x - eps).clamp(0, 1), (self.x + eps).clamp(0, 1)
        with torch.no_grad():
            self.y = model(self.x)
        self.labels = self.y.argmax(1)
        self.C = margin_spec(self.labels, self.y.shape[1])
        self.cy = torch.einsum("bkn,bn->bk", self.C, self.y)
        self.t_forward: list[float] = []
        self.n_forward = 0

    def forward(self):
        return self.model(self.x)

    def forward_block(self, device) -> None:
        if not self.n_forward:
            self.n_forward = calibrate(self.forward, device, self.min_block)
        self.t_forward.append(time_block(self.forward, self.n_forward, device))


def run_domain(case: Case, domain: str, device: torch.device, args, predicted: float | None):
    """``(seconds per call, mean width, note, problem)``; ``problem`` is None when sound."""
    options = DOMAIN_OPTIONS.get(domain, {})

    def bound():
        return verifier.compute_bounds(case.model, case.lower, case.upper, domain=domain, C=case.C, **options)

    cold = predicted is not None and predicted >= args.slow_s
    case.forward_block(device)
    sync(device)
    t0 = time.perf_counter()
    lb, ub = bound()  # warm-up call, or the only timed call when it is predicted slow
    sync(device)
    t_first = time.perf_counter() - t0
    case.forward_block(device)

    slack = 1e-4 * (1 + case.cy.abs())
    problem = None
    if lb.shape != case.cy.shape or ub.shape != case.cy.shape:
        problem = f"bounds of shape {list(lb.shape)}/{list(ub.shape)}, expected {list(case.cy.shape)}"
    elif not bool(torch.isfinite(lb).all() and torch.isfinite(ub).all()):
        problem = "non-finite bounds"
    elif not (bool(torch.all(lb <= case.cy + slack)) and bool(torch.all(case.cy <= ub + slack))):
        bad = ((lb > case.cy + slack) | (case.cy > ub + slack))
        b, k = (int(i) for i in torch.nonzero(bad)[0])
        problem = (f"bounds do not enclose C·f(centre) in {int(bad.sum())} of {bad.numel()} entries, e.g. sample {b} "
                   f"row {k}: lb {lb[b, k].item():.6g}, C·f {case.cy[b, k].item():.6g}, ub {ub[b, k].item():.6g}")
    width = (ub - lb).mean().item()

    if cold:
        return t_first, width, "¹", problem
    if t_first >= args.slow_s:
        t_calls = [time_block(bound, 1, device)]
        case.forward_block(device)
        return t_calls[0], width, "", problem
    repeats = max(3, min(args.repeats, int(args.case_budget_s / max(t_first, 1e-9))))
    n = calibrate(bound, device, case.min_block) if t_first < case.min_block else 1
    t_calls = []
    for _ in range(repeats):
        t_calls.append(time_block(bound, n, device))
        case.forward_block(device)
    return statistics.median(t_calls), width, "", problem


def predict(times: dict[int, float], batch: int) -> float | None:
    """Extrapolated seconds per call at ``batch`` from the same domain at smaller batches."""
    known = sorted(b for b in times if b < batch)
    if not known:
        return None
    b1 = known[-1]
    k = DEFAULT_EXPONENT
    if len(known) >= 2 and known[-2] < b1:
        b0 = known[-2]
        k = math.log(max(times[b1], 1e-9) / max(times[b0], 1e-9)) / math.log(b1 / b0)
    k = min(2.0, max(1.0, k))
    return times[b1] * (batch / b1) ** k


# --- main ----------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bench_dir", nargs="?", default=str(DEFAULT_BENCH_DIR),
                   help="vnncomp directory holding mnist_fc/ and oval21/ (default: %(default)s)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: %(default)s)")
    p.add_argument("--batches", default="1,10,100", help="comma-separated batch sizes (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="batch sizes 1 and 10 only")
    p.add_argument("--domains", default=",".join(DOMAINS), help="comma-separated domains (default: %(default)s)")
    p.add_argument("--models", default=",".join(MODELS),
                   help="which of conv, fc, oval21, anchors to run (default: %(default)s)")
    p.add_argument("--anchors", default=str(anchor_cases.DEFAULT_ANCHORS),
                   help="folder of the bound-speed anchors (default: %(default)s)")
    p.add_argument("--eps", type=float, default=0.02, help="box half-width, clamped to [0, 1] (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the test-image permutation (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=7, help="most timed blocks per case (default: %(default)s)")
    p.add_argument("--min-block-ms", type=float, default=50.0,
                   help="minimum duration of one timed block (default: %(default)s)")
    p.add_argument("--case-budget-s", type=float, default=6.0,
                   help="timed blocks per case ≈ this / one call, at least 3 (default: %(default)s)")
    p.add_argument("--slow-s", type=float, default=3.0,
                   help="calls at least this slow are timed once (default: %(default)s)")
    p.add_argument("--max-call-s", type=float, default=60.0,
                   help="skip cases predicted to take longer per call; 0: no limit (default: %(default)s)")
    p.add_argument("--memory-repeats", type=int, default=3,
                   help="timed CROWN calls on oval21 after the measured one (default: %(default)s)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--markdown", metavar="PATH", help="also write the report to PATH")
    p.add_argument("--memory-child", nargs=2, metavar=("ONNX", "VNNLIB"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.memory_child:
        memory_child(*args.memory_child, args.threads, args.device, args.memory_repeats)
        return 0

    try:
        device = torch.device(args.device)
    except RuntimeError as exc:
        fail(f"bad --device {args.device!r}: {exc}")
    if device.type == "cuda" and not torch.cuda.is_available():
        fail("--device cuda requested but CUDA is not available")
    try:
        batches = sorted({int(b) for b in args.batches.split(",") if b.strip()})
    except ValueError:
        fail(f"bad --batches {args.batches!r} (expected e.g. 1,10,100)")
    if args.quick:
        batches = [1, 10]
    if not batches or min(batches) < 1:
        fail("batch sizes must be positive")
    domains = [d.strip() for d in args.domains.split(",") if d.strip()]
    installed = available_domains()
    unknown = [d for d in domains if d not in installed]
    if unknown:
        fail(f"unknown domain(s) {', '.join(unknown)}; installed: {', '.join(sorted(installed))}")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if set(models) - set(MODELS):
        fail(f"--models takes {', '.join(MODELS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    bench_dir = Path(args.bench_dir).resolve()

    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    header = (f"Bound domains on MNIST nets — device {device} ({dev_name}), torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads on {os.cpu_count()} CPUs (load average {load_avg()} at start), "
              f"float32, eps {args.eps}, seed {args.seed}, margin spec (9 rows), median of ≤ {args.repeats} blocks "
              f"≥ {args.min_block_ms:g} ms interleaved with forward blocks after a warm-up call")
    print(header, flush=True)
    if hasattr(os, "getloadavg") and device.type == "cpu" and os.getloadavg()[0] > 0.5:
        print(f"warning: the CPU is already busy (1-min load {os.getloadavg()[0]:.2f}); multi-threaded timings "
              f"are unreliable under contention — rerun on an idle machine or with --threads 1", file=sys.stderr)
    rows = ["| model | batch | domain | ms | ×forward | mean width |", "|---|---:|---|---:|---:|---:|"]

    memory = None
    if "oval21" in models and "crown" in domains:  # first, while this process is still small
        print("measuring full CROWN on the largest oval21 model in a subprocess …", flush=True)
        try:
            memory = measure_memory(bench_dir, args, Path(__file__).resolve(), REPO_ROOT)
        except FileNotFoundError as exc:
            fail(str(exc))
        print(memory_line(memory), flush=True)
    print()
    print("\n".join(rows), flush=True)

    results: dict[tuple[str, int, str], float] = {}
    max_load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    problems: list[str] = []
    skipped: list[str] = []
    t_start = time.perf_counter()

    mnist_models = []
    if "conv" in models:
        mnist_models.append(("conv", "mnist_small (conv)", CONV_MODEL))
    if "fc" in models:
        mnist_models.append(("fc", "mnist_fc 256x6", bench_dir / FC_MODEL))
    if mnist_models:
        images, _ = load_mnist("test")
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(args.seed))
        images = images[order[: max(batches)]]

    def repro(key, batch, domain):
        cmd = (f"python benchmarks/domains_speed.py --models {key} --batches {batch} --domains {domain} "
               f"--eps {args.eps} --seed {args.seed} --device {args.device}")
        return cmd + (f" {args.bench_dir}" if Path(args.bench_dir).resolve() != DEFAULT_BENCH_DIR.resolve() else "")

    for key, label, path in mnist_models:
        if not path.is_file():
            print(f"| {label} | – | – | model not found: {path} | | |", flush=True)
            continue
        model = verifier.load(path, check=False)
        per_domain: dict[str, dict[int, float]] = {d: {} for d in domains}
        for batch in batches:
            case = Case(label, model, images[:batch], args.eps, device, args.min_block_ms / 1e3)
            with torch.no_grad():
                for _ in range(3):
                    case.forward()
                for _ in range(FORWARD_BLOCKS):
                    case.forward_block(device)
                rows.append(f"| {label} | {batch} | *forward* | {fmt_ms(statistics.median(case.t_forward))} | 1 | |")
                print(rows[-1], flush=True)
                for domain in domains:
                    predicted = predict(per_domain[domain], batch)
                    if args.max_call_s > 0 and predicted is not None and predicted > args.max_call_s:
                        skipped.append(f"{label} batch {batch} {domain} (≈ {predicted:.0f} s per call)")
                        rows.append(f"| {label} | {batch} | {domain} | skipped (≈ {predicted:.0f} s predicted) | | |")
                        print(rows[-1], flush=True)
                        continue
                    try:
                        t, width, note, problem = run_domain(case, domain, device, args, predicted)
                    except Exception as exc:  # report and go on with the others
                        msg = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                        problems.append(f"{label} batch {batch} {domain}: crashed with {msg} — reproduce: "
                                        f"`{repro(key, batch, domain)}`")
                        rows.append(f"| {label} | {batch} | {domain} | crashed: {msg} | | |")
                        print(rows[-1], flush=True)
                        continue
                    per_domain[domain][batch] = t
                    results[(key, batch, domain)] = t
                    if problem:
                        problems.append(f"{label} batch {batch} {domain}: {problem} — reproduce: "
                                        f"`{repro(key, batch, domain)}`")
                        note += " ⚠ unsound"
                    max_load = max(max_load, os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0)
                    t_fwd = statistics.median(case.t_forward)  # forward blocks so far, interleaved with the domains'
                    rows.append(f"| {label} | {batch} | {domain} | {fmt_ms(t)}{note} | {t / t_fwd:,.1f} | {width:.4g} |")
                    print(rows[-1], flush=True)

    anchor_lines: list[str] = []
    if "anchors" in models:
        anchor_lines, found = anchor_cases.run(Path(args.anchors), batches,
                                               [d for d in domains if d in anchor_cases.DOMAINS],
                                               slow=args.max_call_s == 0)
        problems += found
    elapsed = time.perf_counter() - t_start

    out = ["", "\n".join(rows)]
    if any("¹" in r for r in rows):
        out.append("\n¹ timed by its first call alone (no warm-up), as a smaller batch predicted it slow.")
    if skipped:
        out.append(f"\nskipped (predicted > --max-call-s {args.max_call_s:g} s per call; rerun with "
                   f"--max-call-s 0 to measure): " + "; ".join(skipped))
    if memory is not None:
        out.append("\n" + memory_line(memory))
        if "error" in memory:
            problems.append(f"oval21/{memory['model']} crown batch 1 crashed: {memory['error']} — reproduce: "
                            f"`{' '.join(memory['cmd'])}`")
        elif not memory["sound"]:
            problems.append(f"oval21/{memory['model']} crown batch 1: bounds do not enclose C·f(centre) — "
                            f"reproduce: `{' '.join(memory['cmd'])}`")

    targets = ["", "## Targets", ""]
    for text, key, batch, domain, limit in TIME_TARGETS:
        t = results.get((key, batch, domain))
        verdict = "not measured" if t is None else ("PASS" if t < limit else "MISS")
        shown = "" if t is None else f" — {fmt_ms(t)} ms"
        targets.append(f"- {text} under {fmt_ms(limit)} ms: **{verdict}**{shown}")
    if memory is None or "error" in memory:
        targets.append("- full CROWN, largest oval21 model, batch 1, under 4 GiB peak memory: **not measured**")
    else:
        peak, what = memory_peak(memory)
        verdict = "PASS" if peak < MEMORY_TARGET_BYTES else "MISS"
        targets.append(f"- full CROWN, largest oval21 model, batch 1, under 4 GiB peak memory: **{verdict}** — "
                       f"+{fmt_bytes(peak)} {what}")
    out += targets
    if problems:
        out += ["", "## Problems", ""] + [f"- {p}" for p in problems]
    out.append(f"\ntotal {elapsed:.1f} s; load average {load_avg()} at the end, highest 1-min load seen after a "
               f"case {max_load:.2f}")
    if device.type == "cpu" and max_load > torch.get_num_threads() + 1.0:  # this run's own threads count too
        out.append(f"warning: other work competed for the CPU during the run (1-min load up to {max_load:.2f} on "
                   f"{os.cpu_count()} CPUs); rows measured then may be slower by a large factor — rerun when idle")
    print("\n".join(o for o in out[2:] if memory is None or o != "\n" + memory_line(memory)), flush=True)

    if args.markdown:
        path = Path(args.markdown)
        path.parent.mkdir(parents=True, exist_ok=True)
        anchor_block = ["\n".join(anchor_lines)] if anchor_lines else []
        path.write_text(header + "\n" + "\n".join(out[:2] + anchor_block + out[2:]) + "\n")
        print(f"report written to {path}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
