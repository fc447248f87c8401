#!/usr/bin/env python
"""Seed 003 (Wong & Kolter 2018) on MNIST: the chain of bounds and errors.

On ``models/mnist_small.onnx`` (IBP-trained at ε = 0.1, normalisation inside) and the
first ``--count`` MNIST test images, for every image and every wrong class j, with the
margin m_j(x) = f_y(x) − f_j(x) over the L∞ ball (clipped to [0, 1]):

    dual-lp lower bound  ≤  LP optimum  ≤  true minimum  ≤  attack minimum

* ``dual-lp``: ``verifier.compute_bounds(..., domain="dual-lp", C)`` (float64), the
  Wong–Kolter dual network bound J (seed 003, eq. 7);
* LP optimum: the triangle-relaxation LP of ``verifier.domains.lp`` (the ``lp`` domain's
  own encoding, ``relaxation_problem``) with the same (dual-lp) intermediate bounds, only
  the minimisation, solved by HiGHS interior point + crossover (``highs-ipm``; the ``lp``
  domain's default simplex takes ~15× longer on this conv net — same optimum, checked on
  ``--lp-domain-check`` pairs through the ``lp`` domain itself). Slow: on the first
  ``--lp-count`` images only;
* attack minimum: targeted PGD on every margin plus uniform samples.

and, over all images: clean error ≤ PGD error ≤ robust-error bound (not certified by
dual-lp). Violations of any inequality are counted (each must be 0).

The paper: Table 1 (MNIST, robust model, ε = 0.1): test error 1.80 %, FGSM 3.93 %,
PGD 4.11 %, robust error bound 5.82 %; Appendix B.2 / Figure 11: on the robustly trained
model the dual bound is extremely close to the exact primal LP.

Writes ``out/seed003_mnist_bounds.{csv,json,png}``.

Usage: ``python benchmarks/reproduce/seed003_mnist_bounds.py [--count 100] [--eps 0.1 0.05] [--lp-count 8]``
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (MNIST_MODEL, OUT, environment, margin_matrix, pgd_min_margins, print_table,  # noqa: E402
                    write_csv, write_json, pyplot, save_figure)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy.optimize import linprog  # noqa: E402

import verifier  # noqa: E402
from verifier.datasets import load_mnist  # noqa: E402
from verifier.domains.lp import LPDomain
from verifier.domains.lp_encoding import relaxation_problem  # noqa: E402
from verifier.ir.graph import output_node  # noqa: E402

PAPER = {"clean_error": 1.80, "fgsm_error": 3.93, "pgd_error": 4.11, "robust_error_bound": 5.82}  # Table 1, %


def lp_minima(model: verifier.Model, lo: torch.Tensor, hi: torch.Tensor, C: torch.Tensor) -> tuple[np.ndarray, float, float]:
    """min c·f over the triangle LP (dual-lp intermediate bounds) for every row c of ``C``
    (one box ``lo``/``hi`` of batch 1). Returns minima, build seconds, solve seconds."""
    graph = model.graph_for("cpu", torch.float64)
    t = time.time()
    bounds = LPDomain(intermediate="dual-lp").intermediate_bounds(graph, lo, hi)
    problem = relaxation_problem(graph, lo, hi, bounds)
    build = time.time() - t
    out = output_node(graph)
    box = list(zip(problem.var_lo, problem.var_hi))
    minima = []
    t = time.time()
    for row in C.double().numpy():
        cost = np.zeros(problem.total)
        cost[problem.block(out)] = row
        res = linprog(cost, A_ub=problem.a_ub, b_ub=problem.b_ub, A_eq=problem.a_eq, b_eq=problem.b_eq,
                      bounds=box, method="highs-ipm")
        if res.status != 0:
            raise RuntimeError(f"LP not solved: {res.message}")
        minima.append(res.fun)
    return np.array(minima), build, time.time() - t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0, help="attack seed")
    ap.add_argument("--count", type=int, default=100, help="first test images")
    ap.add_argument("--eps", type=float, nargs="+", default=[0.1, 0.05])
    ap.add_argument("--lp-count", type=int, default=8, help="images (first ones) whose 9 margins get the exact LP")
    ap.add_argument("--lp-domain-check", type=int, default=1,
                    help="(image, margin) pairs re-solved through verifier.compute_bounds(domain='lp') at the first eps")
    ap.add_argument("--pgd-steps", type=int, default=60)
    ap.add_argument("--restarts", type=int, default=3, help="random PGD restarts (plus one from the clean image)")
    ap.add_argument("--samples", type=int, default=32, help="uniform random points per image")
    ap.add_argument("--model", default=MNIST_MODEL)
    ap.add_argument("--out", default=OUT)
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    tol = 1e-4

    model = verifier.load(args.model, lower=torch.zeros(1, 1, 28, 28), upper=torch.ones(1, 1, 28, 28))
    images, labels = load_mnist("test")
    x, y = images[: args.count], labels[: args.count]
    C, targets = margin_matrix(y)
    with torch.no_grad():
        pred = model(x).argmax(1)
    correct = pred == y

    pairs, summaries, lp_checks = [], [], []
    for eps in args.eps:
        lo, hi = (x - eps).clamp(0, 1).double(), (x + eps).clamp(0, 1).double()
        t = time.time()
        dual, _ = verifier.compute_bounds(model, lo, hi, domain="dual-lp", C=C.double())
        dual_s = time.time() - t
        t = time.time()
        attack = pgd_min_margins(model, x, y, eps, steps=args.pgd_steps, restarts=args.restarts,
                                 samples=args.samples, seed=args.seed).double()
        attack_s = time.time() - t
        dual, attack = dual.numpy(), attack.numpy()
        lp = np.full_like(dual, np.nan)
        build_s = solve_s = 0.0
        for i in range(min(args.lp_count, args.count)):
            lp[i], b, s = lp_minima(model, lo[i:i + 1], hi[i:i + 1], C[i])
            build_s, solve_s = build_s + b, solve_s + s
        has_lp = ~np.isnan(lp)
        scale = np.maximum(1.0, np.abs(attack))
        certified = correct.numpy() & (dual > 0).all(1)
        attacked = (~correct.numpy()) | (attack < 0).any(1)
        s = {
            "eps": eps, "images": args.count, "margins": int(dual.size), "lp_margins": int(has_lp.sum()),
            "clean_error_%": 100 * float((~correct).float().mean()),
            "pgd_error_%": 100 * float(attacked.mean()),
            "robust_error_bound_%": 100 * float(1 - certified.mean()),
            "viol_dual>attack": int((dual > attack + tol * scale).sum()),
            "viol_dual>lp": int((dual[has_lp] > lp[has_lp] + tol * scale[has_lp]).sum()),
            "viol_lp>attack": int((lp[has_lp] > attack[has_lp] + tol * scale[has_lp]).sum()),
            "viol_clean>pgd>bound": int(not (float((~correct).float().mean()) <= attacked.mean() <= 1 - certified.mean())),
            "mean_lp-dual": float(np.mean(lp[has_lp] - dual[has_lp])) if has_lp.any() else float("nan"),
            "mean_rel_lp-dual": float(np.mean((lp[has_lp] - dual[has_lp]) / np.abs(lp[has_lp]))) if has_lp.any() else float("nan"),
            "mean_attack-lp": float(np.mean(attack[has_lp] - lp[has_lp])) if has_lp.any() else float("nan"),
            "mean_attack-dual": float(np.mean(attack - dual)),
            "dual_s": dual_s, "attack_s": attack_s, "lp_build_s": build_s, "lp_solve_s": solve_s,
            "lp_s_per_margin": (build_s + solve_s) / max(1, int(has_lp.sum())),
        }
        summaries.append(s)
        for i in range(args.count):
            for k in range(C.shape[1]):
                pairs.append({"eps": eps, "image": i, "label": int(y[i]), "target": int(targets[i, k]),
                              "dual_lp": float(dual[i, k]), "lp": float(lp[i, k]), "attack_min": float(attack[i, k])})
        if eps == args.eps[0] and args.lp_domain_check:
            # the lp domain itself (min and max, default simplex) on the tightest margins with an LP value
            order = np.argsort(np.where(has_lp, lp, np.inf), axis=None)[: args.lp_domain_check]
            for flat in order:
                i, k = divmod(int(flat), C.shape[1])
                t = time.time()
                lb, _ = verifier.compute_bounds(model, lo[i:i + 1], hi[i:i + 1], domain="lp", C=C[i:i + 1, k:k + 1].double(),
                                                intermediate="dual-lp", time_limit=600)
                lp_checks.append({"eps": eps, "image": i, "target": int(targets[i, k]), "lp_domain": float(lb[0, 0]),
                                  "highs_ipm": float(lp[i, k]), "seconds": time.time() - t})

    print_table(summaries, ["eps", "images", "lp_margins", "clean_error_%", "pgd_error_%", "robust_error_bound_%",
                            "viol_dual>attack", "viol_dual>lp", "viol_lp>attack", "viol_clean>pgd>bound"])
    print_table(summaries, ["eps", "mean_lp-dual", "mean_rel_lp-dual", "mean_attack-lp", "mean_attack-dual",
                            "dual_s", "attack_s", "lp_s_per_margin"])
    for c in lp_checks:
        print(f"lp domain check (eps {c['eps']}, image {c['image']}, target {c['target']}): "
              f"lp domain {c['lp_domain']:.6f} vs highs-ipm {c['highs_ipm']:.6f} ({c['seconds']:.0f} s)")
    write_csv(os.path.join(args.out, "seed003_mnist_bounds.csv"), pairs)
    write_json(os.path.join(args.out, "seed003_mnist_bounds.json"),
               {"args": vars(args), "environment": environment(), "paper_table1_robust_mnist_eps0.1_%": PAPER,
                "summary": summaries, "lp_domain_checks": lp_checks})
    plot(pairs, summaries, os.path.join(args.out, "seed003_mnist_bounds.png"))
    return 0


def plot(pairs, summaries, path) -> None:
    plt = pyplot()

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8))
    colors = {0.1: "tab:blue", 0.05: "tab:orange"}
    ax = axes[0]
    for s in summaries:
        e = s["eps"]
        p = [r for r in pairs if r["eps"] == e and not np.isnan(r["lp"])]
        ax.scatter([r["lp"] for r in p], [r["dual_lp"] for r in p], s=8, c=colors.get(e), label=f"ε={e}")
    lim = ax.get_xlim()
    ax.plot(lim, lim, "k--", lw=0.7)
    ax.set_xlabel("exact LP optimum (primal)")
    ax.set_ylabel("dual-lp lower bound")
    ax.set_title("dual bound vs LP (cf. paper Fig. 11 left)", fontsize=9)
    ax.legend(fontsize=7)
    ax = axes[1]
    for s in summaries:
        e = s["eps"]
        p = [r for r in pairs if r["eps"] == e]
        ax.scatter([r["attack_min"] for r in p], [r["dual_lp"] for r in p], s=3, c=colors.get(e), alpha=0.5, label=f"ε={e}")
    lim = ax.get_xlim()
    ax.plot(lim, lim, "k--", lw=0.7)
    ax.set_xlabel("attack (PGD + samples) minimum margin")
    ax.set_ylabel("dual-lp lower bound")
    ax.set_title("every margin: bound ≤ attack (below the diagonal)", fontsize=9)
    ax.legend(fontsize=7)
    ax = axes[2]
    names = ["clean_error_%", "pgd_error_%", "robust_error_bound_%"]
    width = 0.8 / (len(summaries) + 1)
    xs = np.arange(len(names))
    ax.bar(xs, [PAPER["clean_error"], PAPER["pgd_error"], PAPER["robust_error_bound"]], width, color="0.6",
           label="paper (WK conv net, ε=0.1)")
    for k, s in enumerate(summaries):
        ax.bar(xs + (k + 1) * width, [s[n] for n in names], width, color=colors.get(s["eps"]),
               label=f"ours mnist_small, ε={s['eps']}")
    ax.set_xticks(xs + width * len(summaries) / 2, ["clean", "PGD", "robust bound\n(dual-lp)"])
    ax.set_ylabel("error (%)")
    ax.set_title("clean ≤ PGD ≤ certified bound", fontsize=9)
    ax.legend(fontsize=7)
    save_figure(fig, path)


if __name__ == "__main__":
    sys.exit(main())
