"""The bound-speed anchors: our times on the nets and inputs the peers were timed on.

``../shared/anchors/`` (``--anchors``) holds Wong–Kolter MNIST conv nets (``wk_random``:
randomly initialised, thousands of crossing ReLUs at ε = 0.02; ``wk_trained``: few) as
``<net>/net.onnx`` with inputs ``<net>/x.npy`` ``(100, 1, 28, 28)``, and a ``README.md``
whose table records auto_LiRPA's (IBP, CROWN, α-CROWN) and convex_adversarial's (dual LP)
times in the same setting. The setting, as there: the first ``B`` inputs, the box
``[clip(x − 0.02, 0, 1), clip(x + 0.02, 0, 1)]``, the margin spec ``C`` ``(B, 9, 10)`` with
rows ``e_pred − e_j`` for the net's prediction, float32, the median of 5 calls after a
warm-up (α-CROWN: one call of 20 iterations). Each row prints our time, the recorded
anchor time and their ratio (the issue's target: ≤ 0.5 for CROWN, α-CROWN and the dual
LP); every bound is checked to enclose ``C·f(x)``. The recorded times were measured on
another day: compare ratios, and rerun when the machine is idle (the load is printed).

Used by ``domains_speed.py --models anchors`` (or ``python benchmarks/anchor_cases.py``).
"""

from __future__ import annotations

import argparse
import builtins
import os
import re
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the anchors were measured; read when OpenMP starts

import numpy as np  # noqa: E402
import torch  # noqa: E402

import verifier  # noqa: E402

DEFAULT_ANCHORS = Path(__file__).resolve().parent.parent.parent / "shared" / "anchors"
NETS = ("wk_random", "wk_trained")
DOMAINS = ("box", "crown", "alpha-crown", "dual-lp")
OPTIONS = {"alpha-crown": {"iterations": 20}}
METHODS = {"IBP": "box", "CROWN": "crown", "α-CROWN": "alpha-crown", "dual LP": "dual-lp"}  # README's words
EPS = 0.02
TARGET = 0.5


def recorded_times(readme: Path) -> dict[tuple[str, int, str], float]:
    """``(net, batch, domain) → anchor ms`` from the README's table (rows
    ``| net | batch | method | anchor ms | … |``); empty when there is none."""
    times = {}
    if not readme.is_file():
        return times
    for line in readme.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 4 or not cells[1].isdigit():
            continue
        domain = next((d for word, d in METHODS.items() if cells[2].startswith(word)), None)
        ms = re.sub(r"[^0-9.]", "", cells[3])
        if domain and ms:
            times[(cells[0], int(cells[1]), domain)] = float(ms)
    return times


def margin_spec(labels: torch.Tensor, n_out: int) -> torch.Tensor:
    """``C`` ``(B, n_out − 1, n_out)``: rows ``e_label − e_j``, ``j ≠ label``."""
    eye = torch.eye(n_out, dtype=torch.float32, device=labels.device)
    rows = eye[labels].unsqueeze(1) - eye.unsqueeze(0)
    keep = torch.ones(len(labels), n_out, dtype=torch.bool, device=labels.device)
    keep[torch.arange(len(labels), device=labels.device), labels] = False
    return rows[keep].reshape(len(labels), n_out - 1, n_out)


def time_domain(model, lower, upper, C, cy, domain: str, repeats: int) -> tuple[float, str | None]:
    """Median seconds per call (one call for α-CROWN) and a problem, or ``None`` when the
    bounds enclose ``C·f(x)``."""
    options = OPTIONS.get(domain, {})

    def call():
        return verifier.compute_bounds(model, lower, upper, domain=domain, C=C, **options)

    calls = 1 if domain == "alpha-crown" else repeats
    if domain != "alpha-crown":
        call()  # warm-up
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        lb, ub = call()
        times.append(time.perf_counter() - t0)
    slack = 1e-4 * (1 + cy.abs())
    problem = None
    if not (bool(torch.all(lb <= cy + slack)) and bool(torch.all(cy <= ub + slack))):
        problem = f"bounds do not enclose C·f(x) in {int(((lb > cy + slack) | (cy > ub + slack)).sum())} entries"
    return statistics.median(times), problem


def run(anchors: Path, batches: list[int], domains: list[str], repeats: int = 5,
        slow: bool = False) -> tuple[list[str], list[str]]:
    """Print the anchor table; return its lines and the problems found (crashes, bounds
    that do not enclose ``C·f(x)``). α-CROWN runs only where an anchor time is recorded,
    unless ``slow`` (minutes per call at batch 100)."""
    lines: list[str] = []

    def print(text, flush=True):  # noqa: A001  (print and keep for the markdown report)
        lines.append(text)
        builtins.print(text, flush=flush)

    if not anchors.is_dir():
        print(f"anchors: folder not found: {anchors} — skipped (pass --anchors DIR)", flush=True)
        return lines, []
    recorded = recorded_times(anchors / "README.md")
    print(f"\nAnchors ({anchors}): {torch.get_num_threads()} threads, OMP_WAIT_POLICY="
          f"{os.environ.get('OMP_WAIT_POLICY')}, load average {os.getloadavg()[0]:.2f} at start", flush=True)
    print("| net | batch | domain | ms | anchor ms | ours / anchor |\n|---|---:|---|---:|---:|---:|", flush=True)
    problems = []
    for net in NETS:
        if not (anchors / net / "net.onnx").is_file():
            print(f"| {net} | – | – | not found: {anchors / net / 'net.onnx'} | | |", flush=True)
            continue
        model = verifier.load(anchors / net / "net.onnx", check=False)
        inputs = torch.as_tensor(np.load(anchors / net / "x.npy"), dtype=torch.float32)
        for batch in batches:
            x = inputs[:batch]
            lower, upper = (x - EPS).clamp(0, 1), (x + EPS).clamp(0, 1)
            with torch.no_grad():
                y = model(x).reshape(batch, -1)
            C = margin_spec(y.argmax(1), y.shape[1])
            cy = torch.einsum("bkn,bn->bk", C, y)
            for domain in domains:
                if domain == "alpha-crown" and not slow and (net, batch, domain) not in recorded:
                    print(f"| {net} | {batch} | {domain} | skipped (no anchor time; --slow runs it) | | |")
                    continue
                try:
                    seconds, problem = time_domain(model, lower, upper, C, cy, domain, repeats)
                except Exception as exc:  # report and go on
                    problems.append(f"{net} batch {batch} {domain}: crashed: {type(exc).__name__}: {exc}")
                    print(f"| {net} | {batch} | {domain} | crashed | | |", flush=True)
                    continue
                if problem:
                    problems.append(f"{net} batch {batch} {domain}: {problem}")
                anchor = recorded.get((net, batch, domain))
                ratio = "—" if anchor is None else f"{seconds * 1e3 / anchor:.2f}"
                mark = "" if anchor is None or domain == "box" else \
                    (" ✓" if seconds * 1e3 / anchor <= TARGET else " ✗")
                print(f"| {net} | {batch} | {domain} | {seconds * 1e3:,.1f}{' ⚠' if problem else ''} | "
                      f"{'—' if anchor is None else f'{anchor:,.1f}'} | {ratio}{mark} |", flush=True)
    print(f"(✓/✗: ours / anchor ≤ {TARGET}; load average {os.getloadavg()[0]:.2f} at the end)", flush=True)
    return lines, problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--anchors", default=str(DEFAULT_ANCHORS), help="anchors folder (default: %(default)s)")
    p.add_argument("--batches", default="1,10,100", help="comma-separated batch sizes (default: %(default)s)")
    p.add_argument("--domains", default=",".join(DOMAINS), help="comma-separated domains (default: %(default)s)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default: %(default)s, as recorded)")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per case (default: %(default)s)")
    p.add_argument("--slow", action="store_true", help="also α-CROWN where no anchor time is recorded")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        batches = [int(b) for b in args.batches.split(",") if b.strip()]
    except ValueError:
        print(f"anchor_cases: error: bad --batches {args.batches!r} (expected e.g. 1,10,100)", file=sys.stderr)
        return 2
    _, problems = run(Path(args.anchors), batches, [d.strip() for d in args.domains.split(",") if d.strip()],
                      args.repeats, args.slow)
    for line in problems:
        print(f"problem: {line}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
