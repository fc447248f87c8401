"""Proof certificates on the shared ReLU benchmarks (issue 16): certificate size and
checking time against verification time.

For each ``unsat`` instance of the chosen benchmarks' ``reference.csv`` (ACAS Xu and
MNIST-FC of ``../shared/benchmarks/vnncomp`` or ``$VERIFIER_BENCHMARKS``), in one process:
``verify`` (default strategy, ``--timeout`` seconds) with the proof recorder active, then
the certificate written and checked by :func:`verifier.proofcheck.check.check_proof`.
Also, on the same instance, ``verify`` without recording (the search differs slightly:
recording keeps the best-step α/β of each subdomain and no inherited bound), so the cost
of recording shows. Times are CPU seconds of this process (``time.process_time``: on a
shared machine wall time moves with the other jobs' load); "reading" is the checker's own
wall-clock count of hashing and parsing; the summary also gives the wall-clock ratio
(``verify`` may run torch's intra-op threads, the checker runs one BLAS thread). Prints one markdown row per instance and a
summary (medians, the largest certificate, how many check, the check/verify ratio;
targets: ratio ≤ 0.5, ≤ 10 MB per certificate).

    python benchmarks/proof_check.py                                 # 6 ACAS Xu + 6 MNIST-FC unsat
    python benchmarks/proof_check.py --count 20 --timeout 60 --benchmarks acasxu
    python benchmarks/proof_check.py --method milp --benchmarks mnist_fc --count 3 --no-baseline

``--method milp`` decides what α-CROWN leaves open with HiGHS's MILP, whose disjuncts the
certificate writer turns into an LP branch-and-bound the checker verifies
(verifier/proof/milp_tree.py): the last column then says how many disjuncts got one, its
LPs and the writer's CPU seconds (or that a disjunct stayed trusted to HiGHS).
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def bench_root() -> Path:
    env = os.environ.get("VERIFIER_BENCHMARKS")
    return Path(env) if env else REPO.parent / "shared" / "benchmarks" / "vnncomp"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmarks", nargs="+", default=["acasxu", "mnist_fc"])
    parser.add_argument("--count", type=int, default=6, help="unsat instances per benchmark (spread over the list)")
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--no-baseline", action="store_true", help="skip the verify run without recording")
    parser.add_argument("--method", default="auto", help="verify's --method (default auto; milp: the MILP's disjuncts "
                                                         "get the writer's LP tree)")
    args = parser.parse_args(argv)

    import verifier
    from verifier.proof.record import ProofRecorder, recording
    from verifier.proof.writer import build_certificate, write_certificate
    from verifier.proofcheck.check import check_proof
    from verifier.spec import read_vnnlib
    from verifier.verify import verify

    root = bench_root()
    if not root.is_dir():
        print(f"no benchmarks at {root} (set VERIFIER_BENCHMARKS)", file=sys.stderr)
        return 2
    print(f"load average {os.getloadavg()[0]:.1f}; timeout {args.timeout:g} s")
    print("| instance | verify CPU (s) | without proof CPU (s) | result | leaves | certificate (kB) | check CPU (s) "
          "| of which reading (s) | check / verify | bounding / verify | checked |")
    print("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---|")
    rows, walls = [], []  # walls: check / verify in wall-clock time
    with tempfile.TemporaryDirectory() as tmp:
        for bench in args.benchmarks:
            with open(root / bench / "reference.csv", newline="") as fh:
                unsat = [r for r in csv.DictReader(fh) if r["expected"] == "unsat"]
            step = max(1, len(unsat) // max(1, args.count))
            for row in unsat[::step][: args.count]:
                onnx, spec_path = str(root / bench / row["onnx"]), str(root / bench / row["vnnlib"])
                model, spec = verifier.load(onnx), read_vnnlib(spec_path)
                base = None
                if not args.no_baseline:
                    start = time.process_time()
                    verify(model, spec, domain=args.method, timeout=args.timeout)
                    base = time.process_time() - start
                recorder = ProofRecorder()
                start, wall = time.process_time(), time.perf_counter()
                with recording(recorder):
                    result = verify(model, spec, domain=args.method, timeout=args.timeout)
                seconds, wall = time.process_time() - start, time.perf_counter() - wall
                name = f"{bench}/{Path(row['onnx']).stem}/{Path(row['vnnlib']).stem}"
                if result.status != "unsat":
                    print(f"| {name} | {seconds:.2f} | {base or 0:.2f} | {result.status} | | | | | | | |", flush=True)
                    continue
                start = time.process_time()
                index, arrays = build_certificate(recorder, onnx, spec_path, len(spec.regions), result.status)
                writing = time.process_time() - start
                path = os.path.join(tmp, "proof")
                size = write_certificate(path, index, arrays)
                start = time.process_time()
                report = check_proof(onnx, spec_path, path)
                checking = time.process_time() - start
                walls.append(report.seconds / wall)
                verdict = "valid" if report.valid else report.message
                if report.trusted:
                    verdict += f" ({len(report.trusted)} trusted)"
                trees = [d["lp_tree"] for e in index["regions"] for d in e.get("disjuncts", []) if d.get("lp_tree")]
                if trees:
                    verdict += (f"; {len(trees)} MILP disjuncts by LP trees of {sum(t['nodes'] for t in trees)} LPs, "
                                f"written in {writing:.2f} s")
                bounding = max(0.0, checking - report.reading)
                rows.append((seconds, size, checking, report.valid, bounding))
                print(f"| {name} | {seconds:.2f} | {'' if base is None else f'{base:.2f}'} | unsat | {report.leaves} | "
                      f"{size / 1e3:.1f} | {checking:.2f} | {report.reading:.2f} | {checking / seconds:.2f} | "
                      f"{bounding / seconds:.2f} | {verdict} |", flush=True)
    if rows:
        ratios = [c / v for v, _, c, _, _ in rows]
        bounding = [b / v for v, _, _, _, b in rows]
        print(f"\n{len(rows)} unsat: {sum(r[3] for r in rows)} check; median check/verify {statistics.median(ratios):.2f} "
              f"(max {max(ratios):.2f}), bounding only {statistics.median(bounding):.2f} (max {max(bounding):.2f}); "
              f"largest certificate {max(r[1] for r in rows) / 1e6:.2f} MB; wall-clock check/verify median "
              f"{statistics.median(walls):.2f}; load average {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
