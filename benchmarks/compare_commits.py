#!/usr/bin/env python
"""Run a speed benchmark against an earlier commit and the current tree in one go; compare the ratios.

Usage (from anywhere inside the repository)::

    python benchmarks/compare_commits.py REF [--script domains_speed.py|bounds_speed.py] [--rounds N]
                                             [--threshold 1.10] [-- ARGS FOR THE BENCHMARK SCRIPT]

``REF`` (any commit-ish: ``HEAD~1``, a hash, a branch) is checked out with
``git worktree add --detach`` into a temporary folder, which is removed at the end (also on an
error or Ctrl-C). The *same* benchmark file — the current one in ``benchmarks/``, with the current
``benchmarks/`` helpers it imports (``domains_speed.py`` takes its timing code from
``bounds_speed.py``) — runs in a subprocess for each side; only the imported package differs:
``PYTHONPATH`` holds a folder of links ``verifier -> <tree>/verifier`` and
``verifier_plugins -> <tree>/plugins`` (the ``package-dir`` of the tree's ``pyproject.toml``)
for that side's tree. ``PYTHONPATH`` entries come before the editable install's meta-path finder,
so ``import verifier`` resolves to that tree; this is checked once per side (the resolved package
folders are printed) and the run stops if the REF side would import the current tree.
Everything the benchmark reads relative to its own file (``models/``, ``../shared/benchmarks``)
comes from the current checkout for both sides; its working directory is the current
repository root, so relative paths in ARGS mean the same on both sides.

Sides alternate (REF, current, REF, current, … for ``--rounds`` rounds) so that drift of the
machine's load spreads over both; each run writes its report with ``--markdown`` to a temporary
file. At the end the reports are printed (labelled with the commit ids), then one table: for every
row of the benchmark's table (matched by its key cells — the columns before the first measured
one: model, batch[, domain]) and every ratio column (header containing ``×`` or ``ratio``:
``ratio`` of bounds_speed.py, ``×forward`` of domains_speed.py), the REF value, the current value
and current / REF, flagged ``⚠`` above ``--threshold`` (default 1.10, i.e. more than 10 % slower
relative to a forward pass). With several rounds each side's value is the median over its rounds.
Rows whose key cell is in italics (``*forward*``, ×forward = 1 by definition) are left out. Other
measured columns that are not times (domains_speed.py's mean width) are compared too and listed
when they differ by more than 1e-4 relative: the bounds themselves changed.

Exit status: 0 when every ratio is within the threshold, 1 when one is not (or a row could not be
measured on the current side, or a benchmark run failed), 2 for bad input.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import NoReturn

BENCH_DIR = Path(__file__).resolve().parent
SCRIPTS = ("domains_speed.py", "bounds_speed.py")
DEFAULT_PACKAGE_DIRS = {"verifier": "verifier", "verifier_plugins": "plugins"}
NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
MEASURED = re.compile(r"\bms\b|×|ratio|width|\btime\b|\bs\b", re.IGNORECASE)
TIME_COLUMN = re.compile(r"\bms\b|\btime\b|\bs\b", re.IGNORECASE)


def fail(msg: str, status: int = 2) -> NoReturn:
    print(f"compare_commits: error: {msg}", file=sys.stderr)
    sys.exit(status)


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, not usage + message
        fail(message)


def git(*args: str, cwd: Path, check: bool = True) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {(proc.stderr.strip().splitlines() or ['failed'])[-1]}")
    return proc.stdout.strip()


# --- markdown tables -------------------------------------------------------------------------------
def split_row(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def parse_report(text: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the first markdown table in ``text``."""
    lines = text.splitlines()
    for i in range(len(lines) - 1):
        if lines[i].lstrip().startswith("|") and re.fullmatch(r"\s*\|?[\s:|-]+\|?\s*", lines[i + 1]) \
                and "-" in lines[i + 1]:
            header = split_row(lines[i])
            rows = []
            for line in lines[i + 2:]:
                if not line.lstrip().startswith("|"):
                    break
                cells = split_row(line)
                rows.append((cells + [""] * len(header))[: len(header)])
            return header, rows
    return [], []


def number(cell: str) -> float | None:
    """The number a cell starts with (``1,021.7`` → 1021.7, ``577.6¹`` → 577.6, ``4.08 ⚠`` → 4.08)."""
    m = NUMBER.match(cell.replace(",", "").strip())
    return float(m.group()) if m else None


def key_width(header: list[str]) -> int:
    for i, h in enumerate(header):
        if MEASURED.search(h):
            return i
    return 1


# --- the two sides -----------------------------------------------------------------------------------
def package_dirs(tree: Path) -> dict[str, str]:
    """``package-dir`` of the tree's pyproject.toml for the top-level packages (fallback: the known ones)."""
    try:
        import tomllib

        data = tomllib.loads((tree / "pyproject.toml").read_text())
        dirs = data["tool"]["setuptools"]["package-dir"]
        found = {k: v for k, v in dirs.items() if k and "." not in k}
        if found:
            return found
    except Exception:
        pass
    return dict(DEFAULT_PACKAGE_DIRS)


def make_path_dir(tree: Path, dest: Path) -> dict[str, Path]:
    """A folder of links, one per top-level package of ``tree``; returns package → real folder."""
    dest.mkdir(parents=True)
    linked = {}
    for name, rel in package_dirs(tree).items():
        src = (tree / rel).resolve()
        if (src / "__init__.py").is_file():
            (dest / name).symlink_to(src, target_is_directory=True)
            linked[name] = src
    if "verifier" not in linked:
        fail(f"no verifier package in {tree}")
    return linked


def side_env(path_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(path_dir)  # replaces any PYTHONPATH of the caller: nothing else may shadow it
    env["PYTHONUNBUFFERED"] = "1"
    return env


def check_imports(label: str, env: dict[str, str], linked: dict[str, Path], other: dict[str, Path],
                  cwd: Path) -> None:
    """Print where each package resolves on this side; stop if it is not this side's tree."""
    # sys.path[0] as for `python benchmarks/<script>.py` (with -c it would be the working directory)
    code = (f"import importlib, os, sys\nsys.path[0] = {str(BENCH_DIR)!r}\n"
            "for name in sys.argv[1:]:\n"
            "    m = importlib.import_module(name)\n"
            "    print(name, os.path.realpath(os.path.dirname(m.__file__)))\n")
    proc = subprocess.run([sys.executable, "-c", code, *linked], env=env, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        fail(f"{label}: importing {', '.join(linked)} failed: "
             f"{(proc.stderr.strip().splitlines() or ['?'])[-1]}", 1)
    for line in proc.stdout.strip().splitlines():
        name, where = line.split(" ", 1)
        print(f"  {label}: {name} -> {where}")
        if Path(where) != linked[name]:
            fail(f"{label}: {name} resolves to {where}, not to {linked[name]}", 1)
        if name in other and Path(where) == other[name] and linked[name] != other[name]:
            fail(f"{label}: {name} resolves to the other side's tree", 1)


def run_side(label: str, script: Path, bench_args: list[str], env: dict[str, str], out: Path,
             cwd: Path, procs: list) -> tuple[int, str | None]:
    cmd = [sys.executable, str(script), *bench_args, "--markdown", str(out)]
    print(f"\n=== {label}: {' '.join(cmd[1:])}", flush=True)
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1)
    procs.append(proc)
    for line in proc.stdout:
        print(f"  [{label}] {line}", end="", flush=True)
    status = proc.wait()
    procs.remove(proc)
    return status, out.read_text() if out.is_file() else None


# --- comparison --------------------------------------------------------------------------------------
def fmt(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v:,.4f}".rstrip("0").rstrip(".") if abs(v) < 1e4 else f"{v:,.0f}"


def median_values(reports: list[str]) -> tuple[list[str], list[tuple], dict[tuple, dict[str, float | None]]]:
    """Header, row keys in order, and per key the median over reports of every measured column."""
    header: list[str] = []
    order: list[tuple] = []
    values: dict[tuple, dict[str, list[float]]] = {}
    seen: dict[tuple, int] = {}
    for text in reports:
        h, rows = parse_report(text)
        if not h:
            continue
        header = header or h
        k = key_width(h)
        for row in rows:
            key = tuple(row[:k])
            if key not in values:
                order.append(key)
                values[key] = {}
            seen[key] = seen.get(key, 0) + 1
            for col, cell in zip(h[k:], row[k:]):
                v = number(cell)
                values[key].setdefault(col, [])
                if v is not None:
                    values[key][col].append(v)
    med = {key: {col: (statistics.median(vs) if vs else None) for col, vs in cols.items()}
           for key, cols in values.items()}
    return header, order, med


def compare(ref_label: str, cur_label: str, ref_reports: list[str], cur_reports: list[str],
            threshold: float) -> int:
    h_ref, order_ref, ref = median_values(ref_reports)
    h_cur, order_cur, cur = median_values(cur_reports)
    header = h_cur or h_ref
    if not header:
        fail("no markdown table found in the reports", 1)
    k = key_width(header)
    ratio_cols = [c for c in header[k:] if "×" in c or "ratio" in c.lower()]
    other_cols = [c for c in header[k:] if c not in ratio_cols and not TIME_COLUMN.search(c)]
    order = order_ref + [key for key in order_cur if key not in ref]

    def name(key: tuple) -> str:  # "mnist_small (conv), batch 10, domain crown"
        return ", ".join([key[0]] + [f"{h} {v}" for h, v in zip(header[1:k], key[1:])])

    rounds = max(len(ref_reports), len(cur_reports))

    print(f"\n## Comparison: previous = {ref_label}, current = {cur_label}"
          + (f" (median of {len(ref_reports)} / {len(cur_reports)} runs per side)" if rounds > 1 else ""))
    print()
    print("| " + " | ".join(header[:k]) + " | column | previous | current | current / previous | |")
    print("|" + "---|" * k + "---|---:|---:|---:|---|")
    compared, over, missing, gone = [], [], [], []
    for key in order:
        if any(cell.startswith("*") and cell.endswith("*") and len(cell) > 1 for cell in key):
            continue  # reference row (*forward*: 1 by definition)
        for col in ratio_cols:
            a = ref.get(key, {}).get(col)
            b = cur.get(key, {}).get(col)
            if a is None or b is None:
                where = {(True, True): "no value on either side", (True, False): "no value on REF side",
                         (False, True): "no value on current side"}[(a is None, b is None)]
                if key not in ref or key not in cur:
                    where = f"row not on {'REF' if key not in ref else 'current'} side"
                (missing if a is not None else gone).append((key, col, where))
                flag, q = where, None
            else:
                q = b / a if a > 0 else float("inf")
                flag = f"⚠ > {threshold:g}" if q > threshold else ("faster" if q < 1 / threshold else "")
                compared.append((q, key, col, a, b))
                if q > threshold:
                    over.append((q, key, col, a, b))
            print("| " + " | ".join(key) + f" | {col} | {fmt(a)} | {fmt(b)} | "
                  f"{'–' if q is None else f'{q:.3f}'} | {flag} |")

    print()
    changed = []
    for key in order:
        for col in other_cols:
            a, b = ref.get(key, {}).get(col), cur.get(key, {}).get(col)
            if a is not None and b is not None and abs(b - a) > 1e-4 * max(abs(a), abs(b), 1e-12):
                changed.append(f"{name(key)}, {col}: {fmt(a)} → {fmt(b)}")
    if changed:
        print(f"note: {len(changed)} non-time value(s) differ by more than 1e-4 relative (the bounds changed): "
              + "; ".join(changed))
    if gone:
        print(f"note: {len(gone)} ratio(s) without a REF value (nothing to compare): "
              + "; ".join(f"{name(k)}, {c} ({f})" for k, c, f in gone))
    if missing:
        print(f"warning: {len(missing)} ratio(s) measured on the REF side but not now: "
              + "; ".join(f"{name(k)}, {c} ({f})" for k, c, f in missing))
    if not compared:
        print("no ratio could be compared")
        return 1
    worst = max(compared, key=lambda r: r[0])
    print(f"worst: current / previous {worst[0]:.3f} — {name(worst[1])}, {worst[2]}: "
          f"{fmt(worst[3])} → {fmt(worst[4])}")
    if over:
        print(f"RESULT: {len(over)}/{len(compared)} ratios more than {100 * (threshold - 1):.0f} % above "
              f"{ref_label}: " + "; ".join(f"{name(r[1])}, {r[2]}: ×{r[0]:.3f}" for r in sorted(over, key=lambda r: -r[0])))
    else:
        print(f"RESULT: all {len(compared)} ratios within {100 * (threshold - 1):.0f} % of {ref_label} "
              f"(current / previous ≤ {threshold:g})" + (" — but some rows are missing now" if missing else ""))
    return 1 if over or missing else 0


# --- main --------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    bench_args: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, bench_args = argv[:i], argv[i + 1:]
    p = Parser(prog="compare_commits.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("ref", metavar="REF", help="the commit to compare against, e.g. HEAD~1")
    p.add_argument("--script", default="domains_speed.py", help=f"one of {', '.join(SCRIPTS)} (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=1, help="runs per side, alternating; medians compared (default: 1)")
    p.add_argument("--threshold", type=float, default=1.10,
                   help="flag current / previous above this (default: %(default)s)")
    args = p.parse_args(argv)

    name = Path(args.script).name
    name = name if name.endswith(".py") else name + ".py"
    if name not in SCRIPTS:
        fail(f"unknown --script {args.script!r}; choose one of {', '.join(SCRIPTS)}")
    script = BENCH_DIR / name
    if not script.is_file():
        fail(f"{script} not found")
    if args.rounds < 1:
        fail("--rounds must be at least 1")
    if not args.threshold > 1:
        fail("--threshold must be above 1")
    if any(a == "--markdown" or a.startswith("--markdown=") for a in bench_args):
        fail("--markdown is set by compare_commits.py; leave it out of the benchmark's arguments")
    if shutil.which("git") is None:
        fail("git not found")
    try:
        repo = Path(git("rev-parse", "--show-toplevel", cwd=BENCH_DIR))
    except RuntimeError as exc:
        fail(str(exc))
    if args.ref.startswith("-"):
        fail(f"unknown REF {args.ref!r}")
    try:
        ref_sha = git("rev-parse", "--verify", "--quiet", f"{args.ref}^{{commit}}", cwd=repo)
    except RuntimeError:
        ref_sha = ""
    if not ref_sha:
        fail(f"unknown REF {args.ref!r} (not a commit in {repo})")
    head_sha = git("rev-parse", "HEAD", cwd=repo)
    dirty = bool(git("status", "--porcelain", cwd=repo))
    ref_label = f"{args.ref} ({ref_sha[:10]})" if args.ref != ref_sha else ref_sha[:10]
    cur_label = f"working tree ({head_sha[:10]}{' + uncommitted changes' if dirty else ''})"
    if ref_sha == head_sha and not dirty:
        print(f"warning: {args.ref} is HEAD and the tree is clean: both sides run the same code", file=sys.stderr)

    tmp = Path(tempfile.mkdtemp(prefix="compare_commits_"))
    tree = tmp / "tree"
    procs: list[subprocess.Popen] = []
    added = False

    def on_signal(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    old_handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        try:
            git("worktree", "add", "--detach", str(tree), ref_sha, cwd=repo)
            added = True
        except RuntimeError as exc:
            fail(str(exc), 1)
        ref_pkgs = make_path_dir(tree, tmp / "path-ref")
        cur_pkgs = make_path_dir(repo, tmp / "path-current")
        envs = {"ref": side_env(tmp / "path-ref"), "current": side_env(tmp / "path-current")}
        labels = {"ref": ref_label, "current": cur_label}
        print(f"{name}: previous = {ref_label} in {tree}; current = {cur_label} in {repo}")
        print(f"benchmark file (both sides): {script}; arguments: {' '.join(bench_args) or '(defaults)'}")
        check_imports(ref_label, envs["ref"], ref_pkgs, cur_pkgs, repo)
        check_imports(cur_label, envs["current"], cur_pkgs, ref_pkgs, repo)

        reports: dict[str, list[str]] = {"ref": [], "current": []}
        for r in range(1, args.rounds + 1):
            for side in ("ref", "current"):
                label = f"{labels[side]}, round {r}/{args.rounds}" if args.rounds > 1 else labels[side]
                out = tmp / "reports" / f"{side}-{r}.md"
                status, text = run_side(label, script, bench_args, envs[side], out, repo, procs)
                if text is None:
                    fail(f"{label}: {name} exited with status {status} and wrote no report (its output is above)",
                         status if status == 2 else 1)
                if status != 0:
                    print(f"note: {label}: {name} exited with status {status} (problems listed in its report)")
                reports[side].append(text)

        print("\n" + "=" * 100)
        for r in range(args.rounds):
            for side in ("ref", "current"):
                suffix = f", round {r + 1}/{args.rounds}" if args.rounds > 1 else ""
                print(f"\n## {name} report — {'previous' if side == 'ref' else 'current'}: {labels[side]}{suffix}\n")
                print(reports[side][r].rstrip())
        return compare(ref_label, cur_label, reports["ref"], reports["current"], args.threshold)
    except KeyboardInterrupt:
        print("\ncompare_commits: interrupted; cleaning up", file=sys.stderr)
        return 130
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        if added:
            proc = subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=repo,
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"warning: git worktree remove failed: {proc.stderr.strip()}", file=sys.stderr)
        shutil.rmtree(tmp, ignore_errors=True)
        if added:
            subprocess.run(["git", "worktree", "prune"], cwd=repo, capture_output=True)
        for s, h in old_handlers.items():
            signal.signal(s, h)


if __name__ == "__main__":
    sys.exit(main())
