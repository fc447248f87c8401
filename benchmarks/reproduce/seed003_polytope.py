#!/usr/bin/env python
"""Seed 003 (Wong & Kolter 2018), Appendix A, Figure 6: the convex outer adversarial
polytope of a random 2-100-100-100-2 ReLU network against the true reachable set.

For each random network (weights N(0, 1/sqrt(n_in)) as std, biases N(0, 1), as the paper's
appendix states) and each ε in {0.05, 0.1, 0.25}, over the input box x0 ± ε:

* true reachable set: the network on a dense grid of the box plus dense samples of its
  four edges; its convex hull area (a lower bound on the true hull's area);
* outer polytope: the support function h(c) = max c·f over the relaxation, from the upper
  bound of ``C·f`` with one row ``c = (cos θ, sin θ)`` per direction, for

  - ``dual-lp`` (Wong–Kolter dual network, the bound of the paper's figure),
  - ``lp`` (the exact triangle-relaxation LP with the same, dual-lp, intermediate bounds),
  - ``crown`` (for reference);

  the polygon is the intersection of the half-planes c·z ≤ h(c);
* ``box`` (IBP, the "layerwise" bound of the paper's eq. 42) for reference.

Writes ``out/seed003_polytope.{json,csv,png}`` and prints the areas. The paper's claims:
(1) for small ε the outer bound is an extremely good approximation of the adversarial
polytope; (2) as ε grows the bound gets substantially weaker (more ReLUs cross zero);
(3) the layerwise box bound is essentially vacuous in comparison.

Usage: ``python benchmarks/reproduce/seed003_polytope.py [--nets 3] [--directions 120] [--grid 300]``
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (OUT, environment, load_torch_as_verifier, print_table, pyplot, save_figure, write_csv,  # noqa: E402
                    write_json)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy.spatial import ConvexHull, HalfspaceIntersection  # noqa: E402
from torch import nn  # noqa: E402

import verifier  # noqa: E402
from verifier.domains import get_domain  # noqa: E402

EPSILONS = (0.05, 0.1, 0.25)
OUTER = ("dual-lp", "lp", "crown")


def random_net(seed: int, widths=(2, 100, 100, 100, 2)) -> nn.Sequential:
    gen = torch.Generator().manual_seed(seed)
    layers = []
    for i, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:])):
        lin = nn.Linear(n_in, n_out)
        with torch.no_grad():
            lin.weight.copy_(torch.randn(n_out, n_in, generator=gen) / np.sqrt(n_in))
            lin.bias.copy_(torch.randn(n_out, generator=gen))
        layers.append(lin)
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers).eval()


def sample_box(x0: torch.Tensor, eps: float, grid: int, edge: int) -> torch.Tensor:
    t = torch.linspace(-eps, eps, grid, dtype=torch.float64)
    gx, gy = torch.meshgrid(t, t, indexing="ij")
    inner = torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)
    s = torch.linspace(-eps, eps, edge, dtype=torch.float64)
    ones = torch.full_like(s, eps)
    edges = torch.cat([torch.stack([s, ones], 1), torch.stack([s, -ones], 1),
                       torch.stack([ones, s], 1), torch.stack([-ones, s], 1)])
    return x0 + torch.cat([inner, edges])


def polygon(directions: np.ndarray, support: np.ndarray, interior: np.ndarray) -> np.ndarray:
    """Vertices (counter-clockwise) of {z : c_k·z ≤ h_k for all k}."""
    halfspaces = np.hstack([directions, -support[:, None]])
    verts = HalfspaceIntersection(halfspaces, interior).intersections
    hull = ConvexHull(verts)
    return verts[hull.vertices]


def crossing_relus(model: verifier.Model, lo: torch.Tensor, hi: torch.Tensor) -> int:
    bounds = get_domain("dual-lp").intermediate_bounds(model.graph_for("cpu", torch.float64), lo, hi)
    return int(sum(((l < 0) & (u > 0)).sum() for l, u in bounds.values()))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0, help="first network seed (nets use seed, seed+1, ...)")
    ap.add_argument("--nets", type=int, default=3, help="random networks (figure columns)")
    ap.add_argument("--directions", type=int, default=120, help="directions c on the unit circle")
    ap.add_argument("--grid", type=int, default=300, help="grid points per input axis")
    ap.add_argument("--edge", type=int, default=4000, help="samples per edge of the input box")
    ap.add_argument("--eps", type=float, nargs="+", default=list(EPSILONS))
    ap.add_argument("--out", default=OUT)
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    torch.set_default_dtype(torch.float32)

    theta = np.linspace(0, 2 * np.pi, args.directions, endpoint=False)
    dirs = np.stack([np.cos(theta), np.sin(theta)], 1)
    C = torch.tensor(dirs, dtype=torch.float64)
    if args.directions % 2:
        ap.error("--directions must be even (widths pair each direction with its opposite)")
    half = args.directions // 2
    rows, panels = [], []
    started = time.time()
    for k in range(args.nets):
        seed = args.seed + k
        net = random_net(seed).double()
        model = load_torch_as_verifier(random_net(seed), (2,))
        x0 = torch.rand(1, 2, generator=torch.Generator().manual_seed(10_000 + seed), dtype=torch.float64)
        for eps in args.eps:
            lo, hi = x0 - eps, x0 + eps
            pts = sample_box(x0[0], eps, args.grid, args.edge)
            with torch.no_grad():
                ys = net(pts).numpy()
                y0 = net(x0).numpy()[0]
                y_ir = model(x0).double().numpy()[0]
            assert np.allclose(y0, y_ir, atol=1e-4), (y0, y_ir)
            proj = ys @ dirs.T
            true_width = proj.max(0) + (-proj).max(0)  # sampled width along each direction
            true_hull = ConvexHull(ys)
            true_area = float(true_hull.volume)
            row = {"net_seed": seed, "eps": eps, "crossing_relus": crossing_relus(model, lo, hi),
                   "true_hull_area": true_area}
            panel = {"net_seed": seed, "eps": eps, "x0": x0[0].tolist(), "true_hull": ys[true_hull.vertices].tolist()}
            # every sample must lie in every outer polygon (soundness)
            for name in OUTER:
                t = time.time()
                options = {"intermediate": "dual-lp"} if name == "lp" else {}
                _, ub = verifier.compute_bounds(model, lo, hi, domain=name, C=C, **options)
                h = ub[0].double().numpy()
                seconds = time.time() - t
                outside = float(np.max(ys @ dirs.T - h[None]))
                assert outside <= 1e-6, f"{name}: a sample lies {outside} outside the outer bound"
                verts = polygon(dirs, h, y0)
                area = float(ConvexHull(verts).volume)
                row[f"{name}_area"] = area
                row[f"{name}_ratio"] = area / true_area
                row[f"{name}_width_ratio"] = float(np.mean((h + np.roll(h, half)) / true_width))
                row[f"{name}_s"] = seconds
                panel[name] = verts.tolist()
            bl, bu = verifier.compute_bounds(model, lo, hi, domain="box")
            bl, bu = bl[0].double().numpy(), bu[0].double().numpy()
            row["box_area"] = float(np.prod(bu - bl))
            row["box_ratio"] = row["box_area"] / true_area
            row["box_axis_width_ratio"] = float(np.mean((bu - bl) / (ys.max(0) - ys.min(0))))
            row["sampled_range"] = [[float(ys[:, i].min()), float(ys[:, i].max())] for i in range(2)]
            row["box_range"] = [[float(bl[i]), float(bu[i])] for i in range(2)]
            panel["box"] = [bl.tolist(), bu.tolist()]
            pick = np.random.default_rng(seed).choice(len(ys), size=min(len(ys), 6000), replace=False)
            panel["samples"] = np.concatenate([ys[pick], ys[-4 * args.edge::8]]).tolist()
            rows.append(row)
            panels.append(panel)
    seconds = time.time() - started

    table = [{k: v for k, v in r.items() if not isinstance(v, list)} for r in rows]
    cols = ["net_seed", "eps", "crossing_relus", "true_hull_area", "lp_ratio", "dual-lp_ratio", "crown_ratio", "box_ratio",
            "lp_width_ratio", "dual-lp_width_ratio", "crown_width_ratio", "box_axis_width_ratio"]
    print_table(table, cols)
    summary = {}
    for eps in args.eps:
        sel = [r for r in rows if r["eps"] == eps]
        summary[str(eps)] = {f"mean_{n}_ratio": float(np.mean([r[f"{n}_ratio"] for r in sel])) for n in (*OUTER, "box")}
        summary[str(eps)].update({f"mean_{n}_width_ratio": float(np.mean([r[f"{n}_width_ratio"] for r in sel])) for n in OUTER})
        summary[str(eps)]["mean_box_axis_width_ratio"] = float(np.mean([r["box_axis_width_ratio"] for r in sel]))
        summary[str(eps)]["mean_crossing_relus"] = float(np.mean([r["crossing_relus"] for r in sel]))
    print("means per eps (area ratio = outer polygon / sampled hull; width ratio = mean over directions of outer / sampled width):")
    for eps, s in summary.items():
        print(f"  eps {eps}: " + ", ".join(f"{k[5:]}={v:.3f}" for k, v in s.items()))
    print(f"total {seconds:.1f} s")
    write_csv(os.path.join(args.out, "seed003_polytope.csv"), table)
    write_json(os.path.join(args.out, "seed003_polytope.json"),
               {"args": vars(args), "environment": environment(), "seconds": seconds, "rows": rows,
                "summary_by_eps": summary})
    plot(panels, rows, args, os.path.join(args.out, "seed003_polytope.png"))
    return 0


def plot(panels, rows, args, path) -> None:
    plt = pyplot()
    from matplotlib.patches import Polygon, Rectangle

    ne, nn_ = len(args.eps), args.nets
    fig, axes = plt.subplots(ne, nn_, figsize=(3.2 * nn_, 3.0 * ne), squeeze=False)
    for panel, row in zip(panels, rows):
        ax = axes[args.eps.index(panel["eps"]), panel["net_seed"] - args.seed]
        s = np.array(panel["samples"])
        ax.scatter(s[:, 0], s[:, 1], s=0.3, c="0.55", lw=0, rasterized=True, label="sampled reachable set")
        ax.add_patch(Polygon(panel["dual-lp"], closed=True, fill=False, ec="tab:green", lw=1.6, label="dual-lp (Wong–Kolter)"))
        ax.add_patch(Polygon(panel["lp"], closed=True, fill=False, ec="k", lw=0.8, ls="--", label="exact triangle LP"))
        ax.add_patch(Polygon(panel["crown"], closed=True, fill=False, ec="tab:blue", lw=0.8, ls=":", label="crown"))
        (bl, bu) = panel["box"]
        ax.add_patch(Rectangle(bl, bu[0] - bl[0], bu[1] - bl[1], fill=False, ec="tab:red", lw=0.8, label="box (IBP)"))
        v = np.array(panel["dual-lp"])
        lo, hi = np.minimum(v.min(0), s.min(0)), np.maximum(v.max(0), s.max(0))
        pad = 0.08 * (hi - lo)
        ax.set_xlim(lo[0] - pad[0], hi[0] + pad[0])
        ax.set_ylim(lo[1] - pad[1], hi[1] + pad[1])
        ax.set_title(f"net {panel['net_seed']}, ε={panel['eps']}: area dual/hull {row['dual-lp_ratio']:.2f}, "
                     f"box/hull {row['box_ratio']:.1e}", fontsize=7)
        ax.tick_params(labelsize=6)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=5, fontsize=7, markerscale=12, frameon=False)
    fig.suptitle("Random 2-100-100-100-2 nets: outer polytopes vs sampled reachable set "
                 "(box drawn where it fits; it usually does not)", fontsize=9)
    save_figure(fig, path, rect=(0, 0.04, 1, 0.97))


if __name__ == "__main__":
    sys.exit(main())
