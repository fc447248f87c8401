#!/usr/bin/env python
"""Seed 004 (CROWN-IBP, Zhang et al. 2020): IBP vs CROWN tightness, at initialisation
and on an IBP-trained network.

(a) At initialisation. The paper: "IBP bounds are very loose during the initial phase of
    training" (abstract, §1, §3), which is why CROWN-IBP starts from the CROWN bound
    (β = 1). Here: randomly initialised networks (PyTorch default init, several seeds) of
    three MNIST architectures — ``dm-small`` (Gowal et al.'s DM-small: Conv 16 4×4+2,
    Conv 32 4×4+1, FC 100), ``crown-ibp-b`` (the paper's Table 4 model B, used for its
    Table 1: Conv 8 4×4+2, Conv 16 4×4+2, FC 256) and ``fc-256-256-256`` — each with
    the MNIST normalisation as its first layer and a last FC 10 (the same layer lists as
    ``plugins/training/architectures.py``), exported to ONNX and imported. On the first
    ``--init-count`` test images at ε ∈ {0.1, 0.3} we bound the margins f_y − f_j with
    ``box`` (IBP), ``crown`` and ``crown-ibp`` (``--init-domains``) and report the mean
    bound width (upper − lower) and the ratio IBP / CROWN.

(b) On an IBP-trained net. The paper's Table 1: models trained with pure IBP have low
    IBP-verified error but much higher error when verified with the (typically tighter)
    convex adversarial polytope (MNIST ε = 0.1: 5.83 % vs 8.90 %; 0.2: 7.37 vs 45.37;
    0.3: 10.68 vs 97.77; 0.4: 16.76 vs 99.98). Here: ``models/mnist_small.onnx`` (trained
    12 epochs with IBP at ε = 0.1, κ 1 → 0.5) on the first ``--count`` test images at
    ε ∈ {0.02, 0.05, 0.1}: verified accuracy with ``box``, ``crown``, ``crown-ibp``,
    ``dual-lp`` and ``alpha-crown`` (α-CROWN is never looser than CROWN, so it is run only
    on the correct images CROWN leaves unverified), plus the PGD upper bound, and how many
    margins IBP bounds more tightly than CROWN. Note: the verifier's ``crown`` (and
    ``dual-lp``, ``alpha-crown``) intersect every intermediate bound with IBP's, which the
    paper's convex adversarial polytope does not; ``crown-ibp`` (IBP intermediate bounds,
    one CROWN pass for the margins) has no such advantage.

Writes ``out/seed004_tightness.{json,csv,png}`` (the CSV holds both tables, ``part`` a/b).

Usage: ``python benchmarks/reproduce/seed004_tightness.py [--seeds 3] [--init-count 100] [--count 200]``
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (MNIST_MODEL, OUT, Normalize, environment, load_torch_as_verifier, margin_matrix,  # noqa: E402
                    pgd_min_margins, print_table, write_csv, write_json, pyplot, save_figure)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import verifier  # noqa: E402
from verifier.datasets import load_mnist  # noqa: E402

PAPER_TABLE1 = {0.1: (5.83, 8.90), 0.2: (7.37, 45.37), 0.3: (10.68, 97.77), 0.4: (16.76, 99.98)}  # IBP, convex-adv %
TRAINED_DOMAINS = ("box", "crown", "crown-ibp", "dual-lp", "alpha-crown")


def build(arch: str, seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    if arch == "dm-small":
        body = [nn.Conv2d(1, 16, 4, stride=2), nn.ReLU(), nn.Conv2d(16, 32, 4, stride=1), nn.ReLU(),
                nn.Flatten(), nn.Linear(32 * 10 * 10, 100), nn.ReLU(), nn.Linear(100, 10)]
    elif arch == "crown-ibp-b":
        body = [nn.Conv2d(1, 8, 4, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 4, stride=2, padding=1), nn.ReLU(),
                nn.Flatten(), nn.Linear(16 * 7 * 7, 256), nn.ReLU(), nn.Linear(256, 10)]
    elif arch == "fc-256-256-256":
        body = [nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)]
    else:
        raise ValueError(arch)
    return nn.Sequential(Normalize(), *body).eval()


def bound(model, lo, hi, C, domain, **options):
    t = time.time()
    lb, ub = verifier.compute_bounds(model, lo, hi, domain=domain, C=C, **options)
    return lb.numpy(), ub.numpy(), time.time() - t


def part_a(args, x, y) -> list[dict]:
    C, _ = margin_matrix(y)
    rows = []
    for arch in args.archs:
        for seed in range(args.seed, args.seed + args.seeds):
            model = load_torch_as_verifier(build(arch, seed), (1, 28, 28))
            for eps in args.init_eps:
                lo, hi = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
                row = {"part": "a", "model": arch, "seed": seed, "eps": eps, "images": len(x)}
                for d in args.init_domains:
                    lb, ub, s = bound(model, lo, hi, C, d)
                    row[f"{d}_width"] = float(np.mean(ub - lb))
                    row[f"{d}_s"] = s
                    if d == "box":
                        box_w = ub - lb
                    if d == "crown":
                        row["median_elementwise_ibp/crown"] = float(np.median(box_w / (ub - lb)))
                row["ibp/crown"] = row["box_width"] / row["crown_width"]
                if "crown-ibp" in args.init_domains:
                    row["ibp/crown-ibp"] = row["box_width"] / row["crown-ibp_width"]
                rows.append(row)
                print(f"  (a) {arch} seed {seed} eps {eps}: IBP width {row['box_width']:.4g}, CROWN {row['crown_width']:.4g}, "
                      f"ratio {row['ibp/crown']:.1f}", flush=True)
    return rows


def part_b(args, x, y) -> list[dict]:
    model = verifier.load(args.model, lower=torch.zeros(1, 1, 28, 28), upper=torch.ones(1, 1, 28, 28))
    C, _ = margin_matrix(y)
    with torch.no_grad():
        correct = (model(x).argmax(1) == y).numpy()
    rows = []
    for eps in args.eps:
        lo, hi = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
        row = {"part": "b", "model": os.path.basename(args.model), "eps": eps, "images": len(x),
               "clean_acc_%": 100 * float(correct.mean())}
        t = time.time()
        attack = pgd_min_margins(model, x, y, eps, steps=args.pgd_steps, restarts=args.restarts, seed=args.seed).numpy()
        row["pgd_acc_%"] = 100 * float((correct & (attack > 0).all(1)).mean())
        row["pgd_s"] = time.time() - t
        lbs = {}
        for d in args.domains:
            if d == "alpha-crown":  # never looser than crown: only where crown fails on a correct image
                todo = np.nonzero(correct & ~(lbs["crown"] > 0).all(1))[0]
                verified = correct & (lbs["crown"] > 0).all(1)
                s = 0.0
                for start in range(0, len(todo), args.alpha_batch):
                    idx = torch.as_tensor(todo[start:start + args.alpha_batch])
                    lb, _, sec = bound(model, lo[idx], hi[idx], C[idx], d)
                    verified[idx.numpy()] = (lb > 0).all(1)
                    s += sec
                row["alpha-crown_runs"] = int(len(todo))
            else:
                lb, _, s = bound(model, lo, hi, C, d)
                lbs[d] = lb
                verified = correct & (lb > 0).all(1)
                row[f"{d}_mean_lb"] = float(np.mean(lb))
            row[f"{d}_verified_%"] = 100 * float(verified.mean())
            row[f"{d}_s"] = s
        row["margins_ibp_tighter_than_crown_%"] = 100 * float((lbs["box"] > lbs["crown"]).mean())
        if "crown-ibp" in lbs:
            row["margins_ibp_tighter_than_crown-ibp_%"] = 100 * float((lbs["box"] > lbs["crown-ibp"]).mean())
        rows.append(row)
        print(f"  (b) eps {eps}: " + ", ".join(f"{d} {row[f'{d}_verified_%']:.1f}%" for d in args.domains)
              + f", PGD {row['pgd_acc_%']:.1f}%", flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0, help="first init seed (and the attack seed)")
    ap.add_argument("--seeds", type=int, default=3, help="random initialisations per architecture")
    ap.add_argument("--archs", nargs="+", default=["dm-small", "crown-ibp-b", "fc-256-256-256"])
    ap.add_argument("--init-count", type=int, default=12, help="test images for part (a) (CROWN on dm-small: ~2 s/image)")
    ap.add_argument("--init-domains", nargs="+", default=["box", "crown", "crown-ibp"],
                    help="domains of part (a); box and crown are required (add dual-lp: as slow as crown)")
    ap.add_argument("--init-eps", type=float, nargs="+", default=[0.1, 0.3])
    ap.add_argument("--count", type=int, default=200, help="test images for part (b)")
    ap.add_argument("--eps", type=float, nargs="+", default=[0.02, 0.05, 0.1])
    ap.add_argument("--domains", nargs="+", default=list(TRAINED_DOMAINS),
                    help="domains of part (b); box and crown are required")
    ap.add_argument("--alpha-batch", type=int, default=50)
    ap.add_argument("--pgd-steps", type=int, default=40)
    ap.add_argument("--restarts", type=int, default=1)
    ap.add_argument("--skip-a", action="store_true")
    ap.add_argument("--skip-b", action="store_true")
    ap.add_argument("--model", default=MNIST_MODEL)
    ap.add_argument("--out", default=OUT)
    ap.add_argument("--tag", default="", help="suffix of the output file names (seed004_tightness<tag>.*)")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    images, labels = load_mnist("test")
    started = time.time()
    rows_a = [] if args.skip_a else part_a(args, images[: args.init_count], labels[: args.init_count])
    time_a = time.time() - started
    rows_b = [] if args.skip_b else part_b(args, images[: args.count], labels[: args.count])
    time_b = time.time() - started - time_a

    summary_a = {}
    for arch in args.archs:
        for eps in args.init_eps:
            sel = [r for r in rows_a if r["model"] == arch and r["eps"] == eps]
            if sel:
                summary_a[f"{arch}@{eps}"] = {k: float(np.mean([r[k] for r in sel])) for k in sel[0]
                                              if k.endswith("_width") or "/" in k}
    if rows_a:
        print("(a) random initialisation: mean margin-bound widths")
        print_table(rows_a, ["model", "seed", "eps", *[f"{d}_width" for d in args.init_domains],
                             *[k for k in ("ibp/crown", "ibp/crown-ibp") if k in rows_a[0]], "crown_s"])
    if rows_b:
        print("(b) IBP-trained models/mnist_small.onnx: verified accuracy (%)")
        print_table(rows_b, ["eps", "clean_acc_%", "pgd_acc_%", *[f"{d}_verified_%" for d in args.domains],
                             "margins_ibp_tighter_than_crown_%"])
        print_table(rows_b, ["eps", *[f"{d}_s" for d in args.domains], *(["alpha-crown_runs"] if "alpha-crown" in args.domains else []), "pgd_s"])
    print(f"part a {time_a:.0f} s, part b {time_b:.0f} s")
    if rows_a or rows_b:
        keys = []
        for r in rows_a + rows_b:
            keys += [k for k in r if k not in keys]
        write_csv(os.path.join(args.out, f"seed004_tightness{args.tag}.csv"), [{k: r.get(k, "") for k in keys} for r in rows_a + rows_b])
    write_json(os.path.join(args.out, f"seed004_tightness{args.tag}.json"),
               {"args": vars(args), "environment": environment(), "seconds": {"a": time_a, "b": time_b},
                "paper_table1_ibp_vs_convex_adv_verified_error_%": {str(k): v for k, v in PAPER_TABLE1.items()},
                "a_rows": rows_a, "a_summary": summary_a, "b_rows": rows_b})
    plot(rows_a, rows_b, args, os.path.join(args.out, f"seed004_tightness{args.tag}.png"))
    return 0


def plot(rows_a, rows_b, args, path) -> None:
    plt = pyplot()

    panels = int(bool(rows_a)) + int(bool(rows_b))
    if not panels:
        return
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4), squeeze=False)
    axes = list(axes[0])
    if rows_a:
        ax = axes.pop(0)
        width = 0.8 / len(args.init_eps)
        xs = np.arange(len(args.archs))
        for k, eps in enumerate(args.init_eps):
            vals = [[r["ibp/crown"] for r in rows_a if r["model"] == a and r["eps"] == eps] for a in args.archs]
            ax.bar(xs + k * width, [np.mean(v) for v in vals], width, label=f"ε={eps}",
                   yerr=[[np.mean(v) - np.min(v) for v in vals], [np.max(v) - np.mean(v) for v in vals]], capsize=3)
        ax.set_yscale("log")
        ax.axhline(1, color="k", lw=0.7)
        ax.set_xticks(xs + width * (len(args.init_eps) - 1) / 2, args.archs)
        ax.set_ylabel("mean margin-bound width: IBP / CROWN")
        ax.set_title(f"(a) at initialisation ({args.seeds} seeds, min–max bars, {args.init_count} test images)", fontsize=9)
        ax.legend(fontsize=8)
    if rows_b:
        ax = axes.pop(0)
        eps = [r["eps"] for r in rows_b]
        ax.plot(eps, [r["clean_acc_%"] for r in rows_b], "k:", label="clean")
        ax.plot(eps, [r["pgd_acc_%"] for r in rows_b], "k--", label="PGD (upper bound)")
        styles = {"box": ("tab:red", "o"), "crown": ("tab:blue", "s"), "crown-ibp": ("tab:purple", "^"),
                  "dual-lp": ("tab:green", "v"), "alpha-crown": ("tab:cyan", "D")}
        for d in args.domains:
            c, m = styles[d]
            ax.plot(eps, [r[f"{d}_verified_%"] for r in rows_b], color=c, marker=m, ms=4, lw=1,
                    label=("IBP (box)" if d == "box" else d))
        ax.set_xlabel("ε (L∞, pixels in [0,1])")
        ax.set_ylabel("verified accuracy (%)")
        ax.set_title(f"(b) IBP-trained mnist_small.onnx (trained at ε=0.1), first {args.count} test images", fontsize=9)
        ax.legend(fontsize=7)
    save_figure(fig, path)


if __name__ == "__main__":
    sys.exit(main())
