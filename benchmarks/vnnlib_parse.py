"""VNN-LIB reader on huge files: parse time and peak memory.

Two files are generated (into a temporary folder unless ``--keep DIR``):

* ``valid``: ``--boxes`` disjuncts (default 1,689) in the ACAS-style layout
  ``(assert (or (and (>= X_0 a) (<= X_0 b) … (<= Y_0 Y_1) …) (and …) …))``, one atom a line,
  ``--inputs`` inputs (default 784) and 10 outputs: about 50 MB. It must parse in seconds,
  in memory proportional to the boxes.
* ``huge``: one box and ``--huge-disjuncts`` (default 1.27 M) one-row output disjuncts
  ``(or (and (<= Y_0 c)) …)``, about 50 MB. It must stop early with the "more than MAX_DISJUNCTS" error.

Each parse runs in a fresh subprocess so that its peak resident memory (``ru_maxrss``) is its
own. Usage: ``python benchmarks/vnnlib_parse.py [--boxes N] [--inputs N] [--keep DIR]``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time


def write_acas_style(path: str, boxes: int, inputs: int, outputs: int = 10, seed: int = 0) -> int:
    """Write a valid spec of ``boxes`` disjuncts (own box and output rows each); its size in bytes."""
    rng = random.Random(seed)
    with open(path, "w") as fh:
        for i in range(inputs):
            fh.write(f"(declare-const X_{i} Real)\n")
        for j in range(outputs):
            fh.write(f"(declare-const Y_{j} Real)\n")
        fh.write("(assert (or\n")
        for _ in range(boxes):
            fh.write("  (and\n")
            for i in range(inputs):
                lo = rng.random() * 0.9
                fh.write(f"    (>= X_{i} {lo:.6f})\n    (<= X_{i} {lo + 0.05:.6f})\n")
            label = rng.randrange(outputs)
            for j in range(outputs):
                if j != label:
                    fh.write(f"    (<= Y_{label} Y_{j})\n")
            fh.write("  )\n")
        fh.write("))\n")
    return os.path.getsize(path)


def write_many_disjuncts(path: str, disjuncts: int, seed: int = 0) -> int:
    """Write a spec with one box and ``disjuncts`` one-row output disjuncts; its size in bytes."""
    rng = random.Random(seed)
    with open(path, "w") as fh:
        fh.write("(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n")
        fh.write("(assert (>= X_0 0))\n(assert (<= X_0 1))\n(assert (or\n")
        for _ in range(disjuncts):
            fh.write(f"  (and (<= Y_0 {rng.random():.12f}))\n")
        fh.write("))\n")
    return os.path.getsize(path)


def _measure(path: str) -> dict:
    code = (
        "import json, resource, sys, time\n"
        "from verifier.spec import read_vnnlib\n"
        "from verifier.errors import SpecError\n"
        "t = time.perf_counter()\n"
        "try:\n"
        "    s = read_vnnlib(sys.argv[1]); out = {'regions': len(s.regions),"
        " 'disjuncts': sum(len(r.disjuncts) for r in s.regions)}\n"
        "except SpecError as e:\n"
        "    out = {'error': str(e)[-160:]}\n"
        "out['seconds'] = round(time.perf_counter() - t, 2)\n"
        "out['peak_rss_mb'] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)\n"
        "print(json.dumps(out))\n"
    )
    base = subprocess.run([sys.executable, "-c", "import resource, torch, numpy;"
                           "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)"],
                          capture_output=True, text=True, check=True)
    run = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True, check=True)
    out = json.loads(run.stdout)
    out["import_rss_mb"] = int(base.stdout)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--boxes", type=int, default=1689)
    parser.add_argument("--inputs", type=int, default=784)
    parser.add_argument("--huge-disjuncts", type=int, default=1_270_000)
    parser.add_argument("--keep", help="write the files into this folder and keep them")
    args = parser.parse_args()
    folder = args.keep or tempfile.mkdtemp(prefix="vnnlib_parse_")
    os.makedirs(folder, exist_ok=True)
    try:
        valid = os.path.join(folder, "valid_acas_style.vnnlib")
        t = time.perf_counter()
        size = write_acas_style(valid, args.boxes, args.inputs)
        print(f"valid: {args.boxes} boxes x {args.inputs} inputs, {size / 1e6:.1f} MB "
              f"(written in {time.perf_counter() - t:.1f} s)")
        print("  ", json.dumps(_measure(valid)))
        huge = os.path.join(folder, "huge_disjuncts.vnnlib")
        size = write_many_disjuncts(huge, args.huge_disjuncts)
        print(f"huge: {args.huge_disjuncts} disjuncts, {size / 1e6:.1f} MB")
        print("  ", json.dumps(_measure(huge)))
    finally:
        if not args.keep:
            for name in os.listdir(folder):
                os.remove(os.path.join(folder, name))
            os.rmdir(folder)


if __name__ == "__main__":
    main()
