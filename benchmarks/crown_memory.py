"""The oval21 memory case of ``domains_speed.py``: the peak memory of full CROWN at batch 1
on the oval21 model with the most parameters, measured in a fresh subprocess (the
``--memory-child`` mode of ``domains_speed.py``) as the rise of the peak RSS over the call
(``VmHWM`` reset just before it where ``/proc/self/status`` exists, else ``ru_maxrss``), or
the GPU's peak allocation on cuda. See ``domains_speed.py``'s docstring, case 3."""

from __future__ import annotations

import csv
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

import verifier
from anchor_cases import margin_spec
from bounds_speed import fmt_ms, sync, time_block


def maxrss_bytes() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024  # kB on Linux, bytes on macOS


def proc_status() -> dict[str, int] | None:
    """``VmRSS``/``VmHWM`` of this process in bytes (Linux), else None."""
    try:
        with open("/proc/self/status") as fh:
            fields = dict(line.split(":", 1) for line in fh if line.startswith(("VmRSS", "VmHWM")))
        return {k: int(v.split()[0]) * 1024 for k, v in fields.items()}
    except (OSError, ValueError):
        return None


def reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux ≥ 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def fmt_bytes(n: int) -> str:
    return f"{n / 1024 ** 3:.2f} GiB" if n >= 1024 ** 3 else f"{n / 1024 ** 2:.0f} MiB"


def largest_oval21(bench_dir: Path) -> tuple[Path, int]:
    best = None
    for f in sorted((bench_dir / "oval21" / "onnx").glob("*.onnx")):
        model = verifier.load(f, check=False)
        n = sum(v.numel() for _, d in model.graph.nodes(data=True) for v in d["params"].values())
        if best is None or n > best[1]:
            best = (f, n)
    if best is None:
        raise FileNotFoundError(f"no ONNX models in {bench_dir / 'oval21' / 'onnx'}")
    return best


def first_property(bench_dir: Path, onnx_path: Path) -> Path:
    with open(bench_dir / "oval21" / "instances.csv", newline="") as fh:
        for row in csv.reader(fh):
            if row and Path(row[0]).name == onnx_path.name:
                return bench_dir / "oval21" / row[1].strip()
    raise FileNotFoundError(f"no property for {onnx_path.name} in {bench_dir / 'oval21' / 'instances.csv'}")


def memory_child(onnx_path: str, vnnlib_path: str, threads: int | None, device: str, repeats: int) -> None:
    """Run in a fresh process: print one JSON line with CROWN's peak-RSS increase and time."""
    from verifier.spec import read_vnnlib

    if threads:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    model = verifier.load(onnx_path, check=False)
    region = read_vnnlib(vnnlib_path).regions[0]
    lower = torch.as_tensor(region.lower, dtype=torch.float32).reshape(1, -1).to(dev)
    upper = torch.as_tensor(region.upper, dtype=torch.float32).reshape(1, -1).to(dev)
    with torch.no_grad():
        y = model((lower + upper) / 2)
        C = margin_spec(y.argmax(1), y.shape[1])
        cy = torch.einsum("bkn,bn->bk", C, y)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        before = maxrss_bytes()
        status_before = proc_status()
        reset = reset_peak_rss()
        if status_before is not None and reset:
            status_before = proc_status()  # VmHWM now equals VmRSS
        sync(dev)
        t0 = time.perf_counter()
        lb, ub = verifier.compute_bounds(model, lower, upper, domain="crown", C=C)
        sync(dev)
        t_first = time.perf_counter() - t0
        after = maxrss_bytes()
        status_after = proc_status()
        gpu_peak = torch.cuda.max_memory_allocated(dev) if dev.type == "cuda" else None
        times = [time_block(lambda: verifier.compute_bounds(model, lower, upper, domain="crown", C=C), 1, dev)
                 for _ in range(repeats)]
    slack = 1e-4 * (1 + cy.abs())
    sound = bool(torch.all(lb <= cy + slack)) and bool(torch.all(cy <= ub + slack))
    own = None
    if status_before is not None and status_after is not None:
        base = status_before["VmRSS"] if reset else status_before["VmHWM"]
        own = {"rss_before": status_before["VmRSS"], "hwm_after": status_after["VmHWM"], "reset": reset,
               "increase": max(0, status_after["VmHWM"] - base)}
    print(json.dumps({"before": before, "after": after, "own": own, "gpu_peak": gpu_peak, "t_first": t_first,
                      "t_median": statistics.median(times) if times else t_first, "repeats": len(times),
                      "threads": torch.get_num_threads(),
                      "width": (ub - lb).mean().item(), "sound": sound}))


def measure_memory(bench_dir: Path, args, script: Path, cwd: Path) -> dict:
    """CROWN's peak memory and time on the largest oval21 model, measured by ``script
    --memory-child`` in a fresh process (:func:`memory_child`)."""
    onnx_path, n_params = largest_oval21(bench_dir)
    prop = first_property(bench_dir, onnx_path)
    cmd = [sys.executable, str(script), "--memory-child", str(onnx_path), str(prop),
           "--device", args.device, "--memory-repeats", str(args.memory_repeats)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
    result = {"model": onnx_path.stem, "params": n_params, "property": prop.name, "cmd": cmd}
    if proc.returncode != 0:
        result["error"] = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        return result
    result.update(json.loads(proc.stdout.strip().splitlines()[-1]))
    return result


def memory_peak(memory: dict) -> tuple[int, str]:
    """The memory the CROWN call added at its peak, and what was measured."""
    if memory.get("gpu_peak") is not None:
        return memory["gpu_peak"], "GPU memory allocated at the peak"
    if memory.get("own") is not None:
        return memory["own"]["increase"], "peak RSS over the call (VmHWM)"
    return max(0, memory["after"] - memory["before"]), "ru_maxrss over the call"


def memory_line(memory: dict) -> str:
    name = f"full CROWN on oval21/{memory['model']} ({memory['params']:,} parameters, the largest), batch 1"
    if "error" in memory:
        return f"{name}: crashed: {memory['error']}"
    peak, what = memory_peak(memory)
    own = memory.get("own")
    detail = (f"; RSS {fmt_bytes(own['rss_before'])} before the call, peak {fmt_bytes(own['hwm_after'])}"
              if own else "")
    return (f"{name}, box of {memory['property']}, margin spec: +{fmt_bytes(peak)} {what}{detail}; "
            f"ru_maxrss {fmt_bytes(memory['before'])} → {fmt_bytes(memory['after'])}; "
            f"first call {fmt_ms(memory['t_first'])} ms, then median {fmt_ms(memory['t_median'])} ms of "
            f"{memory['repeats']}; mean width {memory['width']:.4g}{'' if memory['sound'] else ' ⚠ unsound'}")
