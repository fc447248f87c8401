#!/usr/bin/env python
"""Input-split branch-and-bound, variant against variant, instance by instance (issue 14).

Usage::

    python benchmarks/input_split_ab.py [--timeout 30] [--variants fsb,lookahead,base]
                                        [--base-commit aec711e] [--instances 5_9:1 3_3:2 ...]

Each ACAS Xu instance (``NET:PROP``, e.g. ``5_9:1`` for ``ACASXU_run2a_5_9_batch_2000.onnx`` and
``prop_1.vnnlib`` of ``../shared/benchmarks/vnncomp/acasxu``) is loaded once; then every
variant runs :func:`~verifier.complete.input_split.input_split_bab` on every region with the
same ``--timeout`` (seconds of search per instance, the regions sharing it), the variants
alternating per instance so that the machine's load moves them alike. A variant is a
``split_rule`` of the current code, optionally with ``-cN`` (``candidates=N``), or ``base``:
the ``input_split.py`` of ``--base-commit``, loaded from git into this process (the
search before a change, same model objects). No attack runs first (the same for every
variant); the search's own falsification finds the ``sat`` ones. Printed per instance and
variant: the verdict (``timeout`` at the deadline), seconds, boxes bounded; then per variant
the solved count and total seconds, and the 1-minute load average at the start and end.

Not a test: nothing is asserted; verdicts that disagree (sat against unsat) are flagged ``!!``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
ACAS = ROOT.parent / "shared" / "benchmarks" / "vnncomp" / "acasxu"
DEFAULT_INSTANCES = ["5_5:1", "5_8:1", "5_9:1", "3_3:2", "4_2:2", "1_9:7", "1_1:6", "3_6:1", "3_9:1", "1_4:1",
                     "2_2:1", "4_9:1", "1_5:2", "5_3:2", "1_3:2"]


def base_module(commit: str):
    """``verifier.complete.input_split`` as it was at ``commit``, imported under another name
    in the same package (its relative imports resolve to the current modules)."""
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:verifier/complete/input_split.py"],
                            check=True, capture_output=True, text=True).stdout
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"input_split_{commit}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("verifier.complete._input_split_base", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def variant(name: str, base) -> tuple[object, dict] | None:
    """``(module, keyword options)`` of a variant name, or ``None`` for a bad one."""
    from verifier.complete import input_split

    if name == "base":
        return (base, {}) if base is not None else None
    rule, *rest = name.split("-")
    if rule not in input_split.SPLIT_RULES:
        return None
    options = {"split_rule": rule}
    for part in rest:
        if part[:1] != "c" or not part[1:].isdigit() or int(part[1:]) < 1:
            return None
        options["candidates"] = int(part[1:])
    return input_split, options


def run(module, options: dict, model, spec, timeout: float) -> tuple[str, float, int]:
    """Every region of ``spec`` searched under one deadline: (verdict, seconds, boxes)."""
    from verifier.deadline import Deadline, Timeout

    stats, deadline, verdict = module.BaBStats(), Deadline(timeout), "unsat"
    start = time.perf_counter()
    try:
        with deadline.active():
            for index, region in enumerate(spec.regions):
                found, _ = module.input_split_bab(model, region, deadline, region_index=index, stats=stats, **options)
                if found == "sat":
                    verdict = "sat"
                    break
                if found == "unknown":
                    verdict = "unknown"
    except Timeout:
        verdict = "timeout"
    return verdict, time.perf_counter() - start, stats.boxes_bounded


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds of search per instance (default 30)")
    parser.add_argument("--variants", default="fsb,base", help="comma-separated: fsb, lookahead, coefficient, "
                                                                "gradient (optionally -cN), base")
    parser.add_argument("--base-commit", default="aec711e", help="the commit whose input_split.py 'base' runs")
    parser.add_argument("--instances", nargs="+", default=DEFAULT_INSTANCES, help="NET:PROP, e.g. 5_9:1")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args(argv)
    import verifier
    from verifier.spec import read_vnnlib

    torch.set_num_threads(args.threads)
    names = args.variants.split(",")
    base = base_module(args.base_commit) if "base" in names else None
    variants = {name: variant(name, base) for name in names}
    bad = [name for name, v in variants.items() if v is None]
    if bad:
        print(f"error: --variants: unknown variant(s) {', '.join(bad)} (valid: a split rule, optionally -cN, or base)",
              file=sys.stderr)
        return 2
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    totals = {name: [0, 0.0] for name in names}
    for k, inst in enumerate(args.instances):
        net, prop = inst.split(":")
        model = verifier.load(ACAS / "onnx" / f"ACASXU_run2a_{net}_batch_2000.onnx", check=False)
        spec = read_vnnlib(ACAS / "vnnlib" / f"prop_{prop}.vnnlib")
        order = names if k % 2 == 0 else names[::-1]
        found = {}
        for name in order:
            module, options = variants[name]
            found[name] = run(module, options, model, spec, args.timeout)
        verdicts = {v for v, _, _ in found.values() if v in ("sat", "unsat")}
        flag = " !!" if len(verdicts) > 1 else ""
        cells = "  ".join(f"{name} {v} {t:6.2f} s {n:7d} boxes" for name, (v, t, n) in found.items())
        print(f"{net} prop_{prop}: {cells}{flag}  (load {os.getloadavg()[0]:.2f})", flush=True)
        for name, (v, t, _) in found.items():
            totals[name][0] += v in ("sat", "unsat")
            totals[name][1] += t
    for name, (solved, seconds) in totals.items():
        print(f"{name}: {solved}/{len(args.instances)} solved, {seconds:.1f} s")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
