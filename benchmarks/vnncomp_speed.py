"""Where a VNN-COMP run's wall time goes, beside the published tools (issue 14).

    python benchmarks/vnncomp_speed.py ../shared/benchmarks/vnncomp/acasxu --timeout 30
    python benchmarks/vnncomp_speed.py BENCH --timeout-scale 0.25 --limit 20 --keep runs/x
    python benchmarks/vnncomp_speed.py BENCH --timeout 30 --markdown     # tables for README.md

Runs ``verifier vnncomp``'s runner (:func:`verifier.vnncomp.run_benchmark`, in-process,
every instance in ``instances.csv`` order, default strategy, float64, CPU) in a child
Python process and splits the wall time, all measured (nothing estimated):

* **start-up**: from spawning the child to the end of its imports (``torch``,
  ``verifier.cli``, ``verifier.vnncomp``: what ``verifier vnncomp`` imports before its
  first instance); paid once per process;
* per instance, from the runner's timings CSV (docs/outputs.md): **load** (ONNX import or
  IR-cache read, ~0 for a model already loaded in this run), **parse** (VNN-LIB),
  **check** (the onnxruntime fidelity check), **search** (``verify``; the CSV's
  ``run_time``), and the subdomains (boxes) the branch-and-bound reported bounding;
* **runner**: the rest of the run itself (validating the plan, the imports the runner
  and ``verify`` make on first use, result files, CSV rows);
* **exit**: from the end of the run to the child's exit (interpreter teardown).

With ``--per-process`` it instead runs every instance the way VNN-COMP does, through the
competition scripts: ``scripts/vnncomp/prepare_instance.sh`` (untimed, as in the
competition; it fills the IR cache; run with ``VERIFIER_NO_KILL=1`` so that it stops no
other process) and then ``run_instance.sh`` (timed) with ``verify --json``, whose record
gives each instance's **load** (files and fidelity check), **search** and the
subdomains; **start-up + exit** is the rest of that instance's wall time (bash, Python
start, imports, teardown).

Then it prints the solved / wrong / timeout counts beside every tool of the benchmark's
``reference.csv`` (their published times, on their machines, at the competition's full
timeouts: :mod:`verifier.report`), and the 1-minute load average sampled every 5 s
during the run (other jobs on a shared machine slow every number down; say so when
quoting them). The IR cache starts empty (a fresh ``VERIFIER_CACHE_DIR``) unless
``--warm-cache`` is given, so model imports and fidelity checks are all inside the
measured time.

Exit codes: 0, 1 when any verdict contradicts the reference, 2 for bad input (one
``error:`` line).
"""

from __future__ import annotations

import time

SPAWNED_AT = time.time()  # in the child: as soon as the interpreter runs this file

import argparse  # noqa: E402  (after the clock above)
import csv  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DEFAULT_BENCH = REPO.parent / "shared" / "benchmarks" / "vnncomp" / "acasxu"
STEPS = ("load", "parse", "check", "search")


def child(config: dict) -> int:
    """In the child process: the imports (timed), then the run; writes ``startup.json``."""
    imports_start = time.time()
    import torch  # noqa: F401
    import verifier.cli  # noqa: F401  (what `verifier vnncomp` imports before any instance)
    from verifier.vnncomp import run_benchmark

    marks = {"python_up": SPAWNED_AT, "imports_start": imports_start, "imported": time.time()}
    run_benchmark(config["bench"], instances_csv=config["instances"], timeout_scale=config["scale"],
                  output=config["output"], results_dir=config["results"], timings=config["timings"],
                  progress=False, cache=True)
    marks["finished"] = time.time()
    Path(config["startup"]).write_text(json.dumps(marks))
    return 0


class LoadSampler:
    """The 1-minute load average every ``every`` seconds, in a background thread."""

    def __init__(self, every: float = 5.0):
        self.every, self.samples, self._stop = every, [os.getloadavg()[0]], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.samples.append(os.getloadavg()[0])

    def __enter__(self) -> "LoadSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append(os.getloadavg()[0])


def instances_with_timeout(bench: Path, seconds: float, target: Path) -> None:
    """``bench/instances.csv`` with every timeout replaced by ``seconds`` (paths unchanged:
    the runner reads them relative to the benchmark folder)."""
    with open(bench / "instances.csv", newline="", encoding="utf-8-sig") as handle:
        rows = [row for row in csv.reader(handle) if any(cell.strip() for cell in row)]
    with open(target, "w", newline="") as handle:
        csv.writer(handle).writerows([row[0], row[1], f"{seconds:g}"] for row in rows)


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def seconds(cell: str) -> float:
    return float(cell) if cell else 0.0


def split_table(timings: list[dict[str, str]], startup: float, run: float, wall: float, markdown: bool) -> str:
    """The wall-time split: start-up once, the sums (and medians) of each step, the rest of
    the run (``run``: seconds from the end of the imports to the end of the run), the exit."""
    sums = {step: sum(seconds(t[step]) for t in timings) for step in STEPS}
    medians = {step: statistics.median(seconds(t[step]) for t in timings) for step in STEPS}
    rows = [("start-up (spawn + imports, once)", startup, None)]
    rows += [(f"{step} (all instances)", sums[step], medians[step]) for step in STEPS]
    rows.append(("runner (plan, lazy imports, files)", run - sum(sums.values()), None))
    rows.append(("exit (interpreter teardown)", wall - startup - run, None))
    rows.append(("wall time", wall, None))
    lines = ["| part | seconds | share | median per instance |", "|---|---:|---:|---:|"] if markdown else \
        [f"{'part':34s} {'seconds':>9s} {'share':>6s} {'median/inst':>11s}"]
    for name, value, median in rows:
        med = "" if median is None else f"{median:.3f}"
        share = f"{100 * value / wall:.1f}%" if wall > 0 else ""
        lines.append(f"| {name} | {value:.1f} | {share} | {med} |" if markdown else
                     f"{name:34s} {value:9.1f} {share:>6s} {med:>11s}")
    return "\n".join(lines)


def process_table(timings: list[dict[str, str]], wall: float, markdown: bool) -> str:
    """The per-process split: start-up + exit, load (files and check) and search, summed
    and median per instance."""
    parts = [("start-up + exit (per process)", "startup"), ("load + check", "load"), ("search", "search")]
    lines = ["| part | seconds | share | median per instance |", "|---|---:|---:|---:|"] if markdown else \
        [f"{'part':34s} {'seconds':>9s} {'share':>6s} {'median/inst':>11s}"]
    for label, key in parts:
        value = sum(seconds(t[key]) for t in timings)
        median = statistics.median(seconds(t[key]) for t in timings)
        share = f"{100 * value / wall:.1f}%" if wall > 0 else ""
        lines.append(f"| {label} | {value:.1f} | {share} | {median:.3f} |" if markdown else
                     f"{label:34s} {value:9.1f} {share:>6s} {median:11.3f}")
    lines.append(f"| wall time (run_instance.sh calls) | {wall:.1f} | | |" if markdown else
                 f"{'wall time (run_instance.sh calls)':34s} {wall:9.1f}")
    return "\n".join(lines)


def throughput_line(timings: list[dict[str, str]]) -> str:
    """Subdomains per second of search, over the instances whose search reported a count."""
    counted = [t for t in timings if t["subdomains"]]
    if not counted:
        return "subdomains/s: no search reported a branch-and-bound count"
    total, spent = sum(int(t["subdomains"]) for t in counted), sum(seconds(t["search"]) for t in counted)
    rates = [int(t["subdomains"]) / seconds(t["search"]) for t in counted if seconds(t["search"]) > 0]
    return (f"subdomains/s: {total / spent:,.0f} overall ({total:,} subdomains in {spent:.1f} s of search, "
            f"{len(counted)} instances with branch-and-bound; median {statistics.median(rates):,.0f} per instance)")


def slowest(timings: list[dict[str, str]], count: int = 8) -> str:
    """The ``count`` instances with the most load + parse + check + search, one line each."""
    def spent(t: dict[str, str], steps=STEPS) -> float:
        return sum(seconds(t[s]) for s in steps)

    ranked = sorted(timings, key=lambda t: -spent(t))[:count]
    return "\n".join(f"  {t['result']:8s} {spent(t):7.2f} s  (search {seconds(t['search']):.2f}, "
                     f"load+parse+check {spent(t, STEPS[:3]):.2f})  {t['onnx']} {t['vnnlib']}" for t in ranked)


def per_process(bench: Path, instances: Path, scale: float, name: str, work: Path, env: dict[str, str]
                ) -> tuple[list[dict[str, str]], list[dict[str, str]], float]:
    """Every instance through the competition scripts (module docstring): results rows
    (the runner's CSV layout), timings rows (load = the record's ``load`` with the parse,
    check 0 as it is inside load, search = its ``verify``, ``startup`` = wall − ``total``)
    and the summed wall time of the ``run_instance.sh`` calls."""
    from verifier.vnncomp_instance import bounded_count

    scripts = REPO / "scripts" / "vnncomp"
    env = {**env, "VERIFIER_NO_KILL": "1", "PYTHON": sys.executable, "VERIFIER_ARGS": "--json"}
    results, timings, total = [], [], 0.0
    (work / "results").mkdir(exist_ok=True)
    with open(instances, newline="") as handle:
        rows = [row for row in csv.reader(handle) if row]
    for index, (onnx, vnnlib, timeout) in enumerate(rows):
        timeout = f"{float(timeout) * scale:g}"
        paths = [str(bench / onnx), str(bench / vnnlib)]
        subprocess.run(["bash", str(scripts / "prepare_instance.sh"), "v1", name, *paths], env=env,
                       capture_output=True, text=True)
        result_file = work / "results" / f"{index}.txt"
        start = time.time()
        done = subprocess.run(["bash", str(scripts / "run_instance.sh"), "v1", name, *paths, str(result_file),
                               timeout], env=env, capture_output=True, text=True)
        wall = time.time() - start
        total += wall
        verdict = result_file.read_text().split("\n", 1)[0].strip() if result_file.is_file() else "error"
        verdict = {"holds": "unsat", "violated": "sat"}.get(verdict, verdict)
        record = next((json.loads(line) for line in reversed(done.stdout.splitlines()) if line.startswith("{")), None)
        times = record["time"] if record else {}
        subdomains = bounded_count(record["notes"]) if record else None
        results.append({"benchmark": name, "onnx": onnx, "vnnlib": vnnlib, "prepare_time": "0", "result": verdict,
                        "run_time": f"{wall:.3f}"})
        timings.append({"onnx": onnx, "vnnlib": vnnlib, "result": verdict, "load": f"{times.get('load', 0):.3f}",
                        "parse": "0", "check": "0", "search": f"{times.get('verify', 0):.3f}",
                        "subdomains": "" if subdomains is None else str(subdomains),
                        "startup": f"{wall - times.get('total', 0):.3f}"})
    return results, timings, total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bench", nargs="?", type=Path, default=DEFAULT_BENCH, help="benchmark folder (default acasxu)")
    limit = parser.add_mutually_exclusive_group()
    limit.add_argument("--timeout", type=float, help="every instance's timeout, seconds (e.g. 30)")
    limit.add_argument("--timeout-scale", type=float, default=1.0, help="factor on instances.csv's timeouts")
    parser.add_argument("--limit", type=int, help="only the first N instances")
    parser.add_argument("--keep", type=Path, help="keep the run's CSVs and result files in this new folder")
    parser.add_argument("--warm-cache", action="store_true", help="use the IR cache as it is (default: empty)")
    parser.add_argument("--markdown", action="store_true", help="markdown tables")
    parser.add_argument("--per-process", action="store_true",
                        help="each instance through prepare_instance.sh + run_instance.sh (VNN-COMP's way)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(json.loads(args.child))
    try:
        problem = validate(args)
    except OSError as exc:
        problem = f"{exc.filename}: {exc.strerror}"
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    from verifier.logs import configure

    configure("default")
    work = args.keep or Path(tempfile.mkdtemp(prefix="vnncomp_speed_"))
    work.mkdir(parents=True, exist_ok=True)
    name = args.bench.resolve().name
    instances, scale = work / "instances.csv", args.timeout_scale
    if args.timeout is not None:
        instances_with_timeout(args.bench, args.timeout, instances)
        scale = 1.0
    else:
        shutil.copy(args.bench / "instances.csv", instances)
    if args.limit:
        instances.write_text("".join(instances.read_text().splitlines(keepends=True)[:args.limit]))
    config = {"bench": str(args.bench), "instances": str(instances), "scale": scale,
              "output": str(work / f"{name}.csv"), "results": str(work / f"{name}_results"),
              "timings": str(work / f"{name}_timings.csv"), "startup": str(work / "startup.json")}
    env = dict(os.environ)
    if not args.warm_cache:
        env["VERIFIER_CACHE_DIR"] = str(work / "ir_cache")
        env.pop("VERIFIER_NO_CACHE", None)
    if args.per_process:
        with LoadSampler() as load:
            results, timings, wall = per_process(args.bench, instances, scale, name, work, env)
        return finish(args, name, work, load, results, timings, None, wall)
    with LoadSampler() as load:
        spawned = time.time()
        done = subprocess.run([sys.executable, __file__, "--child", json.dumps(config)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        wall = time.time() - spawned
    if done.returncode != 0:
        print(f"error: the run failed (exit {done.returncode}): {done.stdout.strip()[-800:]}", file=sys.stderr)
        return 2
    marks = json.loads(Path(config["startup"]).read_text())
    startup, run = marks["imported"] - spawned, marks["finished"] - marks["imported"]
    timings, results = read_rows(Path(config["timings"])), read_rows(Path(config["output"]))
    return finish(args, name, work, load, results, timings, (startup, run), wall)


def finish(args, name: str, work: Path, load: LoadSampler, results: list[dict[str, str]],
           timings: list[dict[str, str]], once: tuple[float, float] | None, wall: float) -> int:
    """Print the tables (``once``: the in-process run's start-up and run seconds; ``None``
    per process) and remove the work folder unless ``--keep``; the exit code."""
    from verifier.report import BRIEF_COLUMNS, benchmark_report, format_table, load_reference

    reference = args.bench / "reference.csv"
    report = benchmark_report(name, results, load_reference(reference) if reference.is_file() else None)
    mine = report.summaries[0]
    print(f"{name}: {len(results)} instances, timeouts "
          + (f"{args.timeout:g} s each" if args.timeout is not None else f"{args.timeout_scale:g} x instances.csv")
          + f"; IR cache {'as it was' if args.warm_cache else 'empty at the start'}; {os.cpu_count()} CPUs, "
          f"load average (1 min) during the run: mean {statistics.mean(load.samples):.1f}, "
          f"max {max(load.samples):.1f} ({len(load.samples)} samples)")
    print()
    if once is not None:
        startup = once[0]
        print(split_table(timings, startup, once[1], wall, args.markdown))
    else:
        startup = sum(seconds(t["startup"]) for t in timings)
        print(process_table(timings, wall, args.markdown))
    print()
    print(throughput_line(timings))
    print()
    print(format_table(name, report.summaries, report.missing, args.markdown, columns=BRIEF_COLUMNS))
    print("(published tools: their machines, the competition's full timeouts; ours: this machine, the timeouts above)")
    search = sum(seconds(t["search"]) for t in timings)
    print(f"\nours: solved {mine.solved}, wrong {mine.wrong}, wall time {wall:.1f} s in total (start-up "
          f"{startup:.1f} s {'once' if once else 'summed over the processes'}; search {search:.1f} s)")
    print("slowest instances (load + parse + check + search):\n" + slowest(timings))
    print(f"files: {work}" if args.keep else "")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if mine.wrong else 0


def validate(args) -> str | None:
    """The first problem with the arguments, as an ``error:`` line's text, or ``None``."""
    if not (args.bench / "instances.csv").is_file():
        return f"{args.bench}/instances.csv not found (give a VNN-COMP benchmark folder)"
    if args.timeout is not None and not (0 < args.timeout < float("inf")):
        return f"--timeout must be a finite number of seconds > 0, got {args.timeout}"
    if not (0 < args.timeout_scale < float("inf")):
        return f"--timeout-scale must be a finite number > 0, got {args.timeout_scale}"
    if args.limit is not None and args.limit < 1:
        return f"--limit must be at least 1, got {args.limit}"
    if args.keep is not None and args.keep.exists() and any(args.keep.iterdir()):
        return f"--keep {args.keep}: not empty (give a new or empty folder)"
    return None


if __name__ == "__main__":
    sys.exit(main())
