"""Store the bounds every built-in domain computes today, for the refactor's regression test.

Issue 12 (one walker, op tables, one relaxation table) must leave every domain's bounds
unchanged to 1e-9 in float64. This script computes, on the current commit, in float64 on
the CPU and single-threaded, ``verifier.compute_bounds`` of every built-in domain (box,
deepz, crown, crown-ibp, alpha-crown, dual-lp with their default options; lp and a few
option variants on the small models) on fixed boxes, both without ``C`` (every output)
and with a margin-style ``C``, and writes them under ``tests/data/bounds_baseline/``:

- ``index.json``: the commit, library versions, and one entry per (model, domain,
  options, C kind) naming the model and spec files (relative paths) and the arrays;
- ``<model>.npz``: the in-repo models' arrays (``C``, the box when it is not a spec's,
  and ``<key>.lb`` / ``<key>.ub`` per entry); ``models/*.onnx``: the small generated
  models (written once, so the test never depends on builder code);
- ``shared/<model>.npz``: the same for the VNN-COMP models of ``../shared`` (skipped,
  with a message, when that folder is absent).

``tests/test_bounds_regression.py`` recomputes every entry. Run this only before a
change that must preserve bounds; it refuses to overwrite a baseline unless ``--force``::

    python benchmarks/make_bounds_baseline.py            # everything
    python benchmarks/make_bounds_baseline.py --force    # recompute (on purpose!)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "tests" / "data" / "bounds_baseline"
sys.path.insert(0, str(REPO / "tests"))

import torch  # noqa: E402  (after the path set-up; verifier sets OMP_WAIT_POLICY first)

import verifier  # noqa: E402
from verifier.spec import read_vnnlib  # noqa: E402

from benchdata import benchmarks_dir  # noqa: E402

# The default domains (every model) and the extra variants (small in-repo models only).
DEFAULT_DOMAINS = [("box", {}), ("deepz", {}), ("crown", {}), ("crown-ibp", {}), ("alpha-crown", {}),
                   ("dual-lp", {})]
SMALL_VARIANTS = [
    ("crown", {"intermediate": "ibp"}),
    ("alpha-crown", {"optimise_intermediate": 0}),
    ("alpha-crown", {"intermediate": "ibp"}),
    ("dual-lp", {"projections": 8, "seed": 0}),  # the seeded random-projection estimate
    ("lp", {}),
    ("lp", {"intermediate": "crown"}),
]
SLOW_S = 20.0  # a (model, domain) pair slower than this is left out of the baseline
# pairs known to be far slower than SLOW_S (measured once, single-threaded): not even tried
KNOWN_SLOW = {("mnist_small", "lp"): "too slow (lp took 205 s without C, measured single-threaded)"}

SEED = 20240612  # generated models and their boxes


def setup_determinism() -> None:
    """What the baseline and the test share: one torch thread (the order of floating-point
    reductions does not depend on the machine's core count) and deterministic kernels."""
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)


def box_digest(lower: torch.Tensor, upper: torch.Tensor) -> str:
    """sha256 of a float64 box, so that the test notices a spec read differently."""
    h = hashlib.sha256()
    for t in (lower, upper):
        h.update(np.ascontiguousarray(t.detach().cpu().double().numpy()).tobytes())
    return h.hexdigest()


def spec_box_and_C(spec_path: Path, output_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, str]:
    """The first region's box (float64) and a margin-style C: the rows of every disjunct of
    that region when there are at least two (the property's own margins), else
    ``e_0 − e_j`` for every other output."""
    region = read_vnnlib(spec_path).regions[0]
    rows = torch.cat([d.A for d in region.disjuncts]).double()
    if rows.shape[0] >= 2:
        return region.lower.double(), region.upper.double(), rows, "spec-rows"
    return region.lower.double(), region.upper.double(), margin_C(output_size, 0), "margin-0"


def margin_C(n: int, label: int) -> torch.Tensor:
    """Rows ``e_label − e_j``, ``j ≠ label``: ``(n − 1, n)``."""
    eye = torch.eye(n, dtype=torch.float64)
    return torch.stack([eye[label] - eye[j] for j in range(n) if j != label])


# --- the generated models ------------------------------------------------------------------
def generated_models(directory: Path) -> dict[str, Path]:
    """Small models covering conv / maxpool / residual / sigmoid / tanh / leaky ReLU, written
    once to ``directory`` (existing files are kept: the stored model is the reference)."""
    from onnx_builders import GraphBuilder  # tests/onnx_builders.py
    import onnx

    N = "N"

    def conv_maxpool(rng):
        g = GraphBuilder(rng, (N, 1, 6, 6))
        h = g.op("Relu", g.op("Conv", g.x, g.weight(3, 1, 3, 3), g.rand(3, scale=0.1), pads=[1, 1, 1, 1]))
        h = g.op("MaxPool", h, kernel_shape=[2, 2], strides=[2, 2])
        h = g.op("Flatten", h, axis=1)
        h = g.op("Relu", g.op("Gemm", h, g.weight(8, 27), g.rand(8, scale=0.1), transB=1))
        return g.model(g.op("Gemm", h, g.weight(4, 8), g.rand(4, scale=0.1), transB=1))

    def conv_residual(rng):
        g = GraphBuilder(rng, (N, 2, 5, 5))
        h = g.op("Relu", g.op("Conv", g.x, g.weight(2, 2, 3, 3), g.rand(2, scale=0.1), pads=[1, 1, 1, 1]))
        h = g.op("Conv", h, g.weight(2, 2, 3, 3), g.rand(2, scale=0.1), pads=[1, 1, 1, 1])
        h = g.op("Relu", g.op("Add", h, g.x))
        h = g.op("Flatten", h, axis=1)
        return g.model(g.op("Gemm", h, g.weight(3, 50), g.rand(3, scale=0.1), transB=1))

    def mlp(op, **attrs):
        def build(rng):
            g = GraphBuilder(rng, (N, 6))
            h = g.op(op, g.op("Gemm", g.x, g.weight(8, 6), g.rand(8, scale=0.2), transB=1), **attrs)
            h = g.op(op, g.op("Gemm", h, g.weight(8, 8), g.rand(8, scale=0.2), transB=1), **attrs)
            return g.model(g.op("Gemm", h, g.weight(4, 8), g.rand(4, scale=0.2), transB=1))
        return build

    builders = {
        "gen_conv_maxpool": conv_maxpool,
        "gen_conv_residual": conv_residual,
        "gen_mlp_sigmoid": mlp("Sigmoid"),
        "gen_mlp_tanh": mlp("Tanh"),
        "gen_mlp_leakyrelu": mlp("LeakyRelu", alpha=0.1),
    }
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for i, (name, build) in enumerate(builders.items()):
        path = directory / f"{name}.onnx"
        if not path.exists():
            onnx.save(build(np.random.default_rng(SEED + i)), str(path))
        paths[name] = path
    return paths


def generated_box(model: verifier.Model, seed: int, batch: int = 2, width: float = 1.0):
    """``batch`` boxes around random centres (float64; stored with the baseline)."""
    rng = np.random.default_rng(seed)
    shape = (batch, *model.input_shape)
    centre = rng.normal(0.0, 0.5, size=shape)
    half = width / 2 * rng.random(shape)
    return torch.from_numpy(centre - half), torch.from_numpy(centre + half)


# --- computing -----------------------------------------------------------------------------
def entry_key(domain: str, options: dict, ckind: str) -> str:
    opts = ",".join(f"{k}={v}" for k, v in sorted(options.items()))
    return f"{domain}[{opts}]|{ckind}"


def run_model(name: str, group: str, model_path: Path, model_rel: str, spec_rel: str | None,
              domains: list[tuple[str, dict]], npz_path: Path, entries: list, notes: list,
              spec_path: Path | None = None, box=None, seed: int | None = None) -> None:
    model = verifier.load(model_path, check=False)
    arrays: dict[str, np.ndarray] = {}
    if spec_path is not None:
        lower, upper, C, ckind = spec_box_and_C(spec_path, model.output_size)
        box_source = {"kind": "spec", "spec": spec_rel, "region": 0, "sha256": box_digest(lower, upper)}
    else:
        lower, upper = box
        C, ckind = margin_C(model.output_size, 0), "margin-0"
        arrays["box.lower"], arrays["box.upper"] = lower.numpy(), upper.numpy()
        box_source = {"kind": "stored", "seed": seed, "batch": int(lower.shape[0])}
    arrays["C"] = C.numpy()
    for domain, options in domains:
        if (name, domain) in KNOWN_SLOW:
            notes.append({"model": name, "group": group, "domain": domain, "options": options,
                          "skipped": KNOWN_SLOW[name, domain]})
            print(f"  {name:28s} {entry_key(domain, options, ''):45s} skipped: {KNOWN_SLOW[name, domain]}", flush=True)
            continue
        start = time.perf_counter()
        results = {}
        try:
            for ck, c in (("none", None), (ckind, C)):
                t0 = time.perf_counter()
                lb, ub = verifier.compute_bounds(model, lower, upper, domain=domain, C=c, **options)
                results[ck] = (lb.detach().cpu().numpy(), ub.detach().cpu().numpy(), time.perf_counter() - t0)
        except Exception as exc:  # noqa: BLE001 - recorded: the domain does not handle this model
            notes.append({"model": name, "group": group, "domain": domain, "options": options,
                          "skipped": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"})
            print(f"  {name:28s} {entry_key(domain, options, ''):45s} skipped: {exc}".splitlines()[0], flush=True)
            continue
        elapsed = time.perf_counter() - start
        if elapsed > SLOW_S:
            notes.append({"model": name, "group": group, "domain": domain, "options": options,
                          "skipped": f"too slow ({elapsed:.1f} s > {SLOW_S} s)"})
            print(f"  {name:28s} {entry_key(domain, options, ''):45s} too slow: {elapsed:.1f} s", flush=True)
            continue
        for ck, (lb, ub, seconds) in results.items():
            key = entry_key(domain, options, ck)
            arrays[f"{key}.lb"], arrays[f"{key}.ub"] = lb, ub
            entries.append({"name": name, "group": group, "model": model_rel, "box": box_source,
                            "domain": domain, "options": options, "C": ck, "key": key,
                            "npz": npz_path.relative_to(OUT).as_posix(), "seconds": round(seconds, 3),
                            "shape": list(lb.shape)})
            print(f"  {name:28s} {key:45s} {seconds:7.3f} s  lb[0,:3]={lb.reshape(lb.shape[0], -1)[0, :3]}",
                  flush=True)
    npz_path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(npz_path, **arrays)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="overwrite an existing baseline")
    parser.add_argument("--no-shared", action="store_true", help="only the in-repo models")
    args = parser.parse_args()
    index_path = OUT / "index.json"
    if index_path.exists() and not args.force:
        print(f"{index_path.relative_to(REPO)} exists: the baseline is the reference from before a refactor; "
              f"pass --force to recompute it on purpose", file=sys.stderr)
        return 1
    setup_determinism()
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "verifier"], cwd=REPO, capture_output=True,
                           text=True).stdout.strip()
    entries: list = []
    notes: list = []
    everything = DEFAULT_DOMAINS + SMALL_VARIANTS

    print("in-repo models", flush=True)
    in_repo = [
        ("mnist_small", REPO / "models/mnist_small.onnx", REPO / "models/properties/mnist_0_eps0.05.vnnlib",
         everything),
        ("small5x3", REPO / "tests/cases/models/small5x3.onnx", None, everything),
        ("case04_model_a", REPO / "tests/cases/field/case04_matmul_3d_batched/model_a.onnx",
         REPO / "tests/cases/field/case04_matmul_3d_batched/spec_a_unsat.vnnlib", everything),
        ("case15_model_a", REPO / "tests/cases/field/case15_clip_optional_inputs/model_a.onnx",
         REPO / "tests/cases/field/case15_clip_optional_inputs/spec_a_sat.vnnlib", everything),
    ]
    in_repo += [(name, path, None, everything) for name, path in generated_models(OUT / "models").items()]
    for i, (name, path, spec, domains) in enumerate(in_repo):
        box = seed = None
        if spec is None:
            seed = SEED + 100 + i
            box = generated_box(verifier.load(path, check=False), seed)
        run_model(name, "in-repo", path, path.relative_to(REPO).as_posix(),
                  None if spec is None else spec.relative_to(REPO).as_posix(), domains, OUT / f"{name}.npz",
                  entries, notes, spec_path=spec, box=box, seed=seed)

    root = benchmarks_dir()
    shared = [
        ("acasxu_1_1", "acasxu", "onnx/ACASXU_run2a_1_1_batch_2000.onnx", DEFAULT_DOMAINS + [("lp", {})]),
        ("acasxu_4_5", "acasxu", "onnx/ACASXU_run2a_4_5_batch_2000.onnx", DEFAULT_DOMAINS + [("lp", {})]),
        ("mnist_256x2", "mnist_fc", "onnx/mnist-net_256x2.onnx", DEFAULT_DOMAINS),
        ("mnist_256x4", "mnist_fc", "onnx/mnist-net_256x4.onnx", DEFAULT_DOMAINS),
        ("mnist_256x6", "mnist_fc", "onnx/mnist-net_256x6.onnx", DEFAULT_DOMAINS),
        ("oval21_base_kw", "oval21", "onnx/cifar_base_kw.onnx", DEFAULT_DOMAINS),
    ]  # lp on acasxu only (0.5 s there; the mnist_fc and oval21 nets exceed its size limit or take minutes)
    if args.no_shared or root is None:
        print("shared benchmarks skipped" + ("" if args.no_shared else " (../shared/benchmarks/vnncomp not found)"))
        if index_path.exists():  # keep the stored shared part
            old = json.loads(index_path.read_text())
            entries += [e for e in old["entries"] if e["group"] == "shared"]
            notes += [n for n in old["notes"] if n.get("group") == "shared"]
    else:
        print("shared benchmark models", flush=True)
        import csv

        for name, bench, onnx_rel, domains in shared:
            with open(root / bench / "reference.csv", newline="") as fh:
                spec_rel = next(r["vnnlib"] for r in csv.DictReader(fh) if r["onnx"] == onnx_rel)  # first instance
            run_model(name, "shared", root / bench / onnx_rel, f"{bench}/{onnx_rel}", f"{bench}/{spec_rel}",
                      domains, OUT / "shared" / f"{name}.npz", entries, notes,
                      spec_path=root / bench / spec_rel)

    from importlib.metadata import version

    index = {
        "description": "bounds of every built-in domain before the issue-12 refactor; "
                       "written by benchmarks/make_bounds_baseline.py, checked by tests/test_bounds_regression.py",
        "commit": head,
        "verifier_sources_modified": bool(dirty),
        "dtype": "float64", "device": "cpu", "torch_threads": 1, "deterministic_algorithms": True,
        "versions": {p: version(p) for p in ("torch", "numpy", "scipy", "onnx")},
        "paths": {"in-repo": "relative to the repository root",
                  "shared": "relative to the VNN-COMP benchmarks folder (tests/benchdata.py: benchmarks_dir())"},
        "tolerance": "|new - stored| <= 1e-9 * max(1, |stored|)",
        "entries": entries,
        "notes": notes,
    }
    index_path.write_text(json.dumps(index, indent=1) + "\n")
    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"{len(entries)} entries, {len(notes)} skipped pairs; commit {head}{' (verifier/ modified!)' if dirty else ''}; "
          f"{total / 1024:.0f} KiB under {OUT.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
