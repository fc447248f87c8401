"""How far past ``--timeout T`` does ``verifier verify`` print its last line?

Issue 11, class 11: ``--timeout`` covers the whole run after start-up (model load and
fidelity check included), so the verdict line must come within 1 s of ``T``. This runs
every method on hard instances of the shared VNN-COMP 2022 benchmarks (mnist_fc 256x6 at
ε 0.05, and oval21, where no method decides in a few seconds) and prints, per run, the
in-tool time the CLI reports (``time:``, measured from the start of the clock, i.e. after
Python start-up, imports and the one-time warm-up) and the process wall time.

    python benchmarks/timeout_overrun.py [--timeout 2] [--bench ../shared/benchmarks/vnncomp] [--json out.json]

Run it on a quiet machine: the numbers are wall-clock times.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time

INSTANCES = [
    ("mnist_fc", "onnx/mnist-net_256x6.onnx", "vnnlib/prop_0_0.05.vnnlib"),
    ("oval21", "onnx/cifar_deep_kw.onnx", None),  # the first oval21 property of that net
]
METHODS = ["auto", "box", "deepz", "crown", "alpha-crown", "dual-lp", "input-split", "relu-split", "milp", "lp"]


def _first_property(bench: str, folder: str, onnx: str) -> str:
    with open(os.path.join(bench, folder, "instances.csv"), encoding="utf-8") as fh:
        for line in fh:
            parts = line.strip().split(",")
            if len(parts) >= 2 and parts[0] == onnx:
                return parts[1]
    raise SystemExit(f"error: no instance of {onnx} in {folder}/instances.csv")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=2.0)
    parser.add_argument("--bench", default=os.environ.get("VERIFIER_BENCHMARKS", "../shared/benchmarks/vnncomp"))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--json", help="also write the rows as JSON here")
    args = parser.parse_args()
    if not os.path.isdir(args.bench):
        print(f"error: benchmarks folder {args.bench} not found (--bench or VERIFIER_BENCHMARKS)", file=sys.stderr)
        return 2
    rows = []
    print(f"{'instance':42s} {'method':12s} {'result':8s} {'in-tool s':>9s} {'over T':>7s} {'wall s':>7s}")
    for folder, onnx, spec in INSTANCES:
        spec = spec or _first_property(args.bench, folder, onnx)
        model, prop = os.path.join(args.bench, folder, onnx), os.path.join(args.bench, folder, spec)
        for method in args.methods.split(","):
            start = time.monotonic()
            proc = subprocess.run([sys.executable, "-m", "verifier.cli", "verify", model, prop, "--domain", method,
                                   "--timeout", str(args.timeout)], capture_output=True, text=True)
            wall = time.monotonic() - start
            found = re.search(r"^time: ([0-9.]+) s", proc.stdout, re.M)
            result = re.search(r"^result: (\w+)", proc.stdout, re.M)
            in_tool = float(found.group(1)) if found else float("nan")
            row = {"instance": f"{folder}/{os.path.basename(onnx)}/{os.path.basename(spec)}", "method": method,
                   "result": result.group(1) if result else f"exit {proc.returncode}", "in_tool_s": in_tool,
                   "over_s": in_tool - args.timeout, "wall_s": wall, "timeout_s": args.timeout}
            if proc.returncode != 0:
                row["error"] = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""
            rows.append(row)
            print(f"{row['instance'][:42]:42s} {method:12s} {row['result']:8s} {in_tool:9.2f} {row['over_s']:7.2f} "
                  f"{wall:7.2f}" + (f"  {row['error']}" if "error" in row else ""), flush=True)
    worst = max((r["over_s"] for r in rows if r["in_tool_s"] == r["in_tool_s"]), default=float("nan"))
    print(f"worst overrun past T={args.timeout:g} s: {worst:.2f} s (in-tool)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(rows, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
