"""Start-up of ``verifier verify`` against ``python -c "import torch"`` (issue 14, deliverable 1).

Times, in one run and interleaved (so a change of machine load hits all of them alike):

* ``import torch``: ``python -c "import torch"``, the floor of any torch-based tool;
* ``verify cold``: ``verifier verify MODEL SPEC`` with an empty IR cache (a fresh
  ``VERIFIER_CACHE_DIR`` each time: the ONNX import and the onnxruntime check run, and the
  entry is written);
* ``verify warm``: the same with the cache filled (what ``prepare_instance.sh`` leaves
  for ``run_instance.sh``);
* ``verify served``: the same command with a ``verifier serve`` running (started before the
  runs on a private socket, not timed; docs/serve.md), which runs it in a forked, warmed-up
  worker: what ``run_instance.sh`` costs after ``prepare_instance.sh`` started the server.

The other rows run with ``VERIFIER_NO_SERVE=1`` (a server of this user must not answer them).

and prints each median (and minimum) wall time, the ratios to ``import torch`` (target:
warm and served ≤ 2; served ≤ nnenum's published time), the verifier's own ``time:`` line (load, check and search inside its clock), the
load average before and after, and nnenum's published time for the instance when the
benchmark's ``reference.csv`` has it (measured on the competition's machine, not here).

    python benchmarks/startup.py                        # ACAS Xu 1_1, prop_1, 5 repeats
    python benchmarks/startup.py --repeats 9 --onnx onnx/ACASXU_run2a_2_3_batch_2000.onnx --vnnlib vnnlib/prop_2.vnnlib
    python benchmarks/startup.py --baseline "python old_cli.py"   # + another version, same runs

(``old_cli.py`` puts an older checkout first on ``sys.path``, drops the editable-install
finder from ``sys.meta_path``, and calls its ``verifier.cli.main()``.)
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_BENCH = REPO.parent / "shared" / "benchmarks" / "vnncomp" / "acasxu"
TARGET = 2.0


def verifier_command() -> list[str]:
    """The installed ``verifier`` entry point beside this Python, else ``python -m verifier.cli``."""
    script = Path(sys.executable).parent / "verifier"
    return [str(script)] if script.exists() else [sys.executable, "-m", "verifier.cli"]


def timed(command: list[str], env: dict[str, str]) -> tuple[float, str]:
    """Wall seconds and stdout of one run; exits with its stderr when it fails."""
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"error: {' '.join(command)} exited with {done.returncode}: {done.stderr.strip()[-500:]}")
    return seconds, done.stdout


def start_server(verifier: list[str], env: dict[str, str], work: Path) -> subprocess.Popen:
    """``verifier serve`` on ``env``'s ``VERIFIER_SOCKET`` (log beside it), once it listens."""
    path = Path(env["VERIFIER_SOCKET"])
    with open(f"{path}.log", "w") as log:
        server = subprocess.Popen([*verifier, "serve", "--socket", str(path), "--idle-timeout", "900"], env=env,
                                  stdout=log, stderr=log, cwd=work)
    while not path.is_socket():
        if server.poll() is not None:
            sys.exit(f"error: verifier serve exited with {server.returncode}: {Path(f'{path}.log').read_text()}")
        time.sleep(0.1)
    return server


def own_time(stdout: str) -> float | None:
    """The ``time: X s`` the verifier prints (its clock: load, check, search)."""
    match = re.search(r"^time: ([0-9.]+) s", stdout, re.M)
    return float(match.group(1)) if match else None


def nnenum_time(bench: Path, onnx: str, vnnlib: str) -> str:
    """nnenum's published result and time for the instance, or ``"n/a"``."""
    reference = bench / "reference.csv"
    if not reference.is_file():
        return "n/a"
    with open(reference, newline="") as handle:
        for row in csv.DictReader(handle):
            if row.get("onnx") == onnx and row.get("vnnlib") == vnnlib and row.get("nnenum_time"):
                return f"{float(row['nnenum_time']):.2f} s ({row.get('nnenum_result', '?')}, competition machine)"
    return "n/a"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench-dir", type=Path, default=DEFAULT_BENCH, help="benchmark folder (default: acasxu)")
    parser.add_argument("--onnx", default="onnx/ACASXU_run2a_1_1_batch_2000.onnx", help="model, relative to it")
    parser.add_argument("--vnnlib", default="vnnlib/prop_1.vnnlib", help="spec, relative to it")
    parser.add_argument("--repeats", type=int, default=5, help="runs of each command (default 5)")
    parser.add_argument("--verifier", help="the verifier command to time (default: the `verifier` entry point "
                                           "beside this Python)")
    parser.add_argument("--no-served", action="store_true", help="skip the 'verify served' row")
    parser.add_argument("--baseline", help="another verifier command timed in the same interleaved runs (row "
                                           "'baseline'), e.g. a script that imports an older checkout's verifier.cli")
    args = parser.parse_args()
    model, spec = args.bench_dir / args.onnx, args.bench_dir / args.vnnlib
    for path in (model, spec):
        if not path.is_file():
            print(f"error: {path} not found (give --bench-dir / --onnx / --vnnlib)", file=sys.stderr)
            return 2
    if args.repeats < 1:
        print("error: --repeats must be at least 1", file=sys.stderr)
        return 2

    verify = [*(shlex.split(args.verifier) if args.verifier else verifier_command()), "verify", str(model), str(spec)]
    baseline = [*shlex.split(args.baseline), "verify", str(model), str(spec)] if args.baseline else None
    base_env = {k: v for k, v in os.environ.items()
                if k not in ("VERIFIER_NO_CACHE", "VERIFIER_CACHE_DIR", "VERIFIER_SOCKET")}
    base_env["VERIFIER_NO_SERVE"] = "1"
    print(f"verifier: {' '.join(verify[:-3])}" + (f"; baseline: {args.baseline}" if baseline else ""))
    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="verifier_startup_"))
    server = None
    try:
        warm_env = {**base_env, "VERIFIER_CACHE_DIR": str(work / "warm")}
        timed(verify, warm_env)  # fills the warm cache (not timed), like prepare_instance.sh
        times: dict[str, list[float]] = {"import torch": [], "verify cold": [], "verify warm": []}
        if not args.no_served:
            served_env = {k: v for k, v in warm_env.items() if k != "VERIFIER_NO_SERVE"}
            served_env["VERIFIER_SOCKET"] = str(work / "serve.sock")
            server = start_server(verify[:-3], served_env, work)
            times["verify served"] = []
        if baseline:
            times["baseline"] = []
        own: dict[str, list[float]] = {name: [] for name in times}
        for index in range(args.repeats):
            times["import torch"].append(timed([sys.executable, "-c", "import torch"], base_env)[0])
            cold_env = {**base_env, "VERIFIER_CACHE_DIR": str(work / f"cold{index}")}
            runs = [("verify cold", verify, cold_env), ("verify warm", verify, warm_env)]
            if server is not None:
                runs.append(("verify served", verify, served_env))
            if baseline:
                runs.append(("baseline", baseline, {**base_env, "VERIFIER_CACHE_DIR": str(work / f"base{index}")}))
            for name, command, env in runs:
                seconds, stdout = timed(command, env)
                times[name].append(seconds)
                if own_time(stdout) is not None:
                    own[name].append(own_time(stdout))
        if server is not None and "pid" not in (work / "serve.sock.log").read_text():
            sys.exit("error: the server answered no request (see its log)")
    finally:
        if server is not None:
            server.terminate()
            server.wait()
        shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()

    torch_median = statistics.median(times["import torch"])
    print(f"instance: {args.bench_dir.name} {args.onnx} {args.vnnlib}; {args.repeats} runs each, interleaved")
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1 min); {os.cpu_count()} CPUs")
    print(f"{'command':14s} {'median s':>9s} {'min s':>7s} {'ratio':>6s}  verifier's own time (median)")
    for name, values in times.items():
        ratio = statistics.median(values) / torch_median
        inner = f"{statistics.median(own[name]):.3f} s" if own.get(name) else ""
        print(f"{name:14s} {statistics.median(values):9.3f} {min(values):7.3f} {ratio:6.2f}  {inner}")
    best = "verify served" if "verify served" in times else "verify warm"
    ratio = statistics.median(times[best]) / torch_median
    print(f"target: {best} <= {TARGET:g} x import torch: {'met' if ratio <= TARGET else 'NOT met'} "
          f"({ratio:.2f}); {best} median {statistics.median(times[best]):.3f} s against nnenum's published time: "
          f"{nnenum_time(args.bench_dir, args.onnx, args.vnnlib)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
