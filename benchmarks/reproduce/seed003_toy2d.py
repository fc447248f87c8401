#!/usr/bin/env python
"""Seed 003 (Wong & Kolter 2018), Section 4.1 / Figure 3: the 2-D toy example. Standard
training fits the training points but leaves adversarial examples inside their ε-boxes;
robust training with the dual-LP bound reaches zero robust (certified) error on them.

    python benchmarks/reproduce/seed003_toy2d.py [--eps 0.08] [--points 12] [--epochs 1000] [--seed 0]

Setting (paper, App. B.1): ``points`` points drawn one by one uniformly in [0, 1]², a draw
kept only if it is at least ``--spacing`` = 0.16 (= 2ε, so neighbouring ε-boxes never
overlap) from every kept point in ℓ∞, each given a random label (independent fair coin,
redrawn until both classes occur); a 2-100-100-100-100-2 ReLU net (``fc-100-100-100-100``);
Adam, lr 1e-3, full batch (one step per epoch, so ``epochs`` = optimiser steps; the paper
gives no count, the authors' 2-D notebook uses 1000 steps); ε = 0.08. (The "4ε" spacing of
``tests/test_training.py::_toy`` is 0.16 at that test's ε = 0.04; 12 points 0.32 apart do
not fit in the unit square.) Both nets are trained with ``verifier_plugins.training.train``
from the same initialisation (``seed``): ``standard`` (clean cross-entropy) and ``dual-lp``
(the robust loss CE(−J_ε) at the full ε from the first step: ramp 0, κ = 0; the plugin's
MNIST default ramps ε from ε/2 over half the epochs, the toy section describes no schedule).

Evaluated on the training points (no notion of generalisation here, as in the paper), each
net exported to ONNX and loaded with ``verifier.load``:

* clean error;
* PGD error at ε: sign-gradient descent on the margin f_y − f_{1−y}, ``--pgd-steps`` steps
  (step size cosine-decayed from ε/2) from the clean point, the four box corners and
  ``--restarts`` uniform random starts;
* grid error: the margin on a ``--box-grid``² grid of every box (in 2-D this is close to an
  exhaustive search; a lower estimate of the true robust error too);
* certified error with the verifier's sound bounds, ``dual-lp`` (the paper's certificate)
  and ``crown``, via ``verifier.api.compute_bounds`` (cross-checked against
  ``certify_model``); a point is certified when every margin's lower bound is > 0.

Soundness is asserted: no point is both certified and attacked (PGD or grid), so
attack error ≤ certified error. Deviation from the paper: the ε-boxes are clipped to the
input domain [0, 1]² (``Data.clip``, as everywhere in the plugin) for training, attack and
certification; the paper does not say whether it clips. Writes ``out/seed003_toy2d.{csv,json,png}``
(the PNG is Figure 3: decision regions over a ``--grid``² grid of the unit square, the
points coloured by label, their ε-boxes with a green edge if dual-lp certifies them, red if
not, and × at the attack's adversarial points).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import OUT, environment, print_table, write_csv, write_json, pyplot, save_figure  # noqa: E402  (imports verifier before torch)

import numpy as np  # noqa: E402
import torch  # noqa: E402

import verifier  # noqa: E402
from verifier.api import compute_bounds  # noqa: E402
from verifier_plugins.training.certify import certify_model, verified_mask  # noqa: E402
from verifier_plugins.training.data import Data  # noqa: E402
from verifier_plugins.training.live import margin_matrix  # noqa: E402
from verifier_plugins.training.trainer import train  # noqa: E402

ARCH = "fc-100-100-100-100"  # 2-100-100-100-100-2
METHODS = ("standard", "dual-lp")
DOMAINS = ("dual-lp", "crown")
CLIP = (0.0, 1.0)


def toy(n: int, spacing: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Paper App. B.1: points in [0, 1]² at least ``spacing`` apart (ℓ∞), random labels."""
    rng = np.random.default_rng(seed)
    pts: list[np.ndarray] = []
    while len(pts) < n:
        p = rng.uniform(0.0, 1.0, 2)
        if all(np.abs(p - q).max() >= spacing for q in pts):
            pts.append(p)
    labels = rng.integers(0, 2, n)
    while labels.min() == labels.max():
        labels = rng.integers(0, 2, n)
    return torch.tensor(np.array(pts), dtype=torch.float32), torch.tensor(labels, dtype=torch.int64)


def signed_margin(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """f_y − f_{1−y} (two classes)."""
    return out.gather(1, y[:, None])[:, 0] - out.gather(1, (1 - y)[:, None])[:, 0]


def pgd_attack_margin(forward, x, y, eps, steps, restarts, seed):
    """Smallest margin found per point and where: targeted PGD on f_y − f_{1−y} from the clean
    point, the 4 box corners and ``restarts`` random starts, all run together."""
    gen = torch.Generator().manual_seed(seed)
    lo, hi = (x - eps).clamp(*CLIP), (x + eps).clamp(*CLIP)
    corners = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]], dtype=x.dtype)
    starts = [x] + [lo + (hi - lo) * c for c in corners] + \
             [lo + (hi - lo) * torch.rand(x.shape, generator=gen, dtype=x.dtype) for _ in range(restarts)]
    S, B = len(starts), len(x)
    z = torch.cat(starts)  # (S*B, 2)
    L, H, Y = lo.repeat(S, 1), hi.repeat(S, 1), y.repeat(S)
    best = torch.full((B,), float("inf"), dtype=x.dtype)
    best_z = x.clone()

    def keep(m, pts):
        nonlocal best
        m, pts = m.reshape(S, B), pts.reshape(S, B, -1)
        k = m.argmin(0)
        mk = m[k, torch.arange(B)]
        better = mk < best
        best = torch.where(better, mk, best)
        best_z[better] = pts[k, torch.arange(B)][better]

    for step in range(steps + 1):
        z.requires_grad_(True)
        m = signed_margin(forward(z), Y)
        grad, = torch.autograd.grad(m.sum(), z)
        with torch.no_grad():
            keep(m.detach(), z.detach())
            if step == steps:
                break
            size = 0.5 * eps * (1 + np.cos(np.pi * step / steps)) / 2 + 1e-3 * eps
            z = torch.max(torch.min(z.detach() - size * grad.sign(), H), L)
    return best, best_z


def grid_attack_margin(forward, x, y, eps, k):
    """Smallest margin over a k×k grid of every (clipped) box, and where."""
    lo, hi = (x - eps).clamp(*CLIP), (x + eps).clamp(*CLIP)
    t = torch.linspace(0, 1, k, dtype=x.dtype)
    g = torch.stack(torch.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 2)  # (k², 2)
    best, best_z = [], []
    with torch.no_grad():
        for i in range(len(x)):
            pts = lo[i] + (hi[i] - lo[i]) * g
            m = signed_margin(forward(pts), y[i].expand(len(pts)))
            j = int(m.argmin())
            best.append(m[j])
            best_z.append(pts[j])
    return torch.stack(best), torch.stack(best_z)


def evaluate(model: verifier.Model, x, y, eps, args) -> tuple[dict, dict]:
    """Per-point clean/attack/certificate results on the exported model (float64)."""
    xd = x.double()

    def forward(t):
        return model(t.reshape(t.shape[0], 2))

    row, point = {}, {}
    with torch.no_grad():
        clean_margin = signed_margin(forward(xd), y)
    t = time.time()
    pgd_m, pgd_z = pgd_attack_margin(forward, xd, y, eps, args.pgd_steps, args.restarts, args.seed)
    row["pgd_s"] = round(time.time() - t, 2)
    t = time.time()
    grid_m, grid_z = grid_attack_margin(forward, xd, y, eps, args.box_grid)
    row["grid_s"] = round(time.time() - t, 2)
    attack_m = torch.minimum(pgd_m, grid_m)
    attack_z = torch.where((pgd_m <= grid_m)[:, None], pgd_z, grid_z)
    clean_wrong, pgd_wrong, grid_wrong = clean_margin <= 0, pgd_m <= 0, grid_m <= 0
    n = len(y)
    row["clean_err_%"] = round(100 * float(clean_wrong.float().mean()), 1)
    row["pgd_err_%"] = round(100 * float(pgd_wrong.float().mean()), 1)
    row["grid_err_%"] = round(100 * float(grid_wrong.float().mean()), 1)
    point.update(clean_margin=clean_margin.tolist(), pgd_margin=pgd_m.tolist(), grid_margin=grid_m.tolist(),
                 attack_point=attack_z.tolist())
    lo, hi = (xd - eps).clamp(*CLIP), (xd + eps).clamp(*CLIP)
    C = margin_matrix(y, 2).double()
    for domain in DOMAINS:
        t = time.time()
        with torch.no_grad():
            lb, _ = compute_bounds(model, lo, hi, domain=domain, C=C)
        seconds = time.time() - t
        ok = verified_mask(lb, y)
        # soundness: a certified point has no adversarial example (clean, PGD or grid)
        bad = ok & (clean_wrong | pgd_wrong | grid_wrong)
        assert not bool(bad.any()), f"{domain} certified points {bad.nonzero().flatten().tolist()} that the attack broke"
        lb_margin = lb.clone()
        lb_margin[torch.arange(n), y] = float("inf")
        lb_margin = lb_margin.min(1).values
        assert bool((lb_margin <= attack_m + 1e-6).all()), f"{domain}: lower bound above an attained margin"
        cert = certify_model(model, x, y, eps, domain=domain, clip=CLIP, data="toy2d")  # the plugin's own count
        assert round(cert.certified_accuracy * n) == int(ok.sum()), (domain, cert, ok)
        row[f"{domain}_cert_err_%"] = round(100 * (1 - float(ok.float().mean())), 1)
        row[f"{domain}_s"] = round(seconds, 3)
        point[f"{domain}_certified"] = ok.tolist()
        point[f"{domain}_margin_lb"] = lb_margin.tolist()
    row["points_attacked"] = int((pgd_wrong | grid_wrong).sum())
    row["points_certified"] = int(torch.tensor(point["dual-lp_certified"]).sum())
    return row, point


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--eps", type=float, default=0.08)
    ap.add_argument("--points", type=int, default=12)
    ap.add_argument("--spacing", type=float, default=0.16, help="minimum ℓ∞ distance between points (paper: 0.16)")
    ap.add_argument("--epochs", type=int, default=1000, help="full-batch Adam steps per method")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0, help="data, initialisation and attack seed")
    ap.add_argument("--pgd-steps", type=int, default=200)
    ap.add_argument("--restarts", type=int, default=20, help="random PGD starts (plus the clean point and 4 corners)")
    ap.add_argument("--box-grid", type=int, default=101, help="grid points per axis searched in every ε-box")
    ap.add_argument("--grid", type=int, default=300, help="grid points per axis of the decision-region plot")
    ap.add_argument("--out", default=OUT)
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    started = time.time()
    x, y = toy(args.points, args.spacing, args.seed)
    data = Data(x, y, x, y, name="toy2d", clip=CLIP)  # evaluated on the training points
    rows, points, regions = [], {}, {}
    t = torch.linspace(0, 1, args.grid, dtype=torch.float64)
    gx, gy = torch.meshgrid(t, t, indexing="xy")
    plane = torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)
    with tempfile.TemporaryDirectory() as tmp:
        for method in METHODS:
            t0 = time.time()
            result = train(ARCH, method, args.eps, args.epochs, os.path.join(tmp, method), data=data,
                           batch_size=len(y), lr=args.lr, ramp=0.0, eps_start_fraction=1.0, test_count=0,
                           eval_count=0, seed=args.seed, progress=False, certify_domain="dual-lp")
            train_s = time.time() - t0
            model = verifier.load(result["onnx"])
            with torch.no_grad():  # the exported model matches the trained module
                ref = result["module"].eval()(x)
                assert torch.allclose(model(x.double()).float(), ref, atol=1e-4)
            row = {"method": method, "points": len(y), "eps": args.eps, "epochs": args.epochs,
                   "train_s": round(train_s, 1), "final_loss": float(result["log"][-1]["loss"])}
            ev, point = evaluate(model, x, y, args.eps, args)
            row.update(ev)
            rows.append(row)
            points[method] = point
            with torch.no_grad():
                regions[method] = signed_margin(model(plane), torch.ones(len(plane), dtype=torch.int64))
    seconds = time.time() - started
    cols = ["method", "epochs", "train_s", "final_loss", "clean_err_%", "pgd_err_%", "grid_err_%",
            "dual-lp_cert_err_%", "crown_cert_err_%", "pgd_s", "dual-lp_s", "crown_s"]
    print_table(rows, cols)
    std, rob = rows
    claim = {"robust_zero_certified_error": rob["dual-lp_cert_err_%"] == 0.0,
             "standard_fits_points": std["clean_err_%"] == 0.0,
             "standard_has_adversarial_points": std["points_attacked"] > 0,
             "standard_not_certified": std["dual-lp_cert_err_%"] > 0.0}
    claim["holds"] = all(claim.values())
    print("claim check:", ", ".join(f"{k}={v}" for k, v in claim.items()))
    print(f"total {seconds:.1f} s")
    write_csv(os.path.join(args.out, "seed003_toy2d.csv"), rows)
    write_json(os.path.join(args.out, "seed003_toy2d.json"),
               {"args": vars(args), "environment": environment(), "seconds": round(seconds, 1), "architecture": ARCH,
                "clip": CLIP, "x": x.tolist(), "y": y.tolist(), "rows": rows, "per_point": points, "claim": claim})
    plot(x, y, rows, points, regions, args, os.path.join(args.out, "seed003_toy2d.png"))
    return 0


def plot(x, y, rows, points, regions, args, path) -> None:
    plt = pyplot()
    from matplotlib.colors import ListedColormap
    from matplotlib.lines import Line2D
    from matplotlib.patches import Rectangle

    colours = ("tab:blue", "tab:orange")
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.9))
    for ax, row in zip(axes, rows):
        method = row["method"]
        margin = regions[method].reshape(args.grid, args.grid).numpy()  # f_1 − f_0
        ax.imshow((margin > 0).astype(float), origin="lower", extent=(0, 1, 0, 1), interpolation="nearest",
                  cmap=ListedColormap(["#c6dbef", "#fdd0a2"]), vmin=0, vmax=1)
        ax.contour(np.linspace(0, 1, args.grid), np.linspace(0, 1, args.grid), margin, levels=[0.0], colors="k",
                   linewidths=0.6)
        cert = points[method]["dual-lp_certified"]
        for i, (p, label) in enumerate(zip(x.tolist(), y.tolist())):
            lo = np.clip(np.array(p) - args.eps, *CLIP)
            hi = np.clip(np.array(p) + args.eps, *CLIP)
            ax.add_patch(Rectangle(lo, *(hi - lo), fill=False, ec="tab:green" if cert[i] else "tab:red", lw=1.6))
            ax.scatter([p[0]], [p[1]], s=30, c=colours[label], edgecolors="k", linewidths=0.6, zorder=3)
            if min(points[method]["pgd_margin"][i], points[method]["grid_margin"][i]) <= 0:
                a = points[method]["attack_point"][i]
                ax.scatter([a[0]], [a[1]], marker="x", s=40, c="tab:red", linewidths=1.5, zorder=4)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect("equal")
        ax.tick_params(labelsize=7)
        title = "standard training" if method == "standard" else "robust training (dual-LP loss)"
        ax.set_title(f"{title}\nclean err {row['clean_err_%']:.0f}%, PGD err {row['pgd_err_%']:.0f}%, "
                     f"certified err dual-lp {row['dual-lp_cert_err_%']:.0f}% / crown {row['crown_cert_err_%']:.0f}%",
                     fontsize=8)
    handles = [Line2D([], [], marker="o", ls="", mfc=colours[0], mec="k", label="label 0"),
               Line2D([], [], marker="o", ls="", mfc=colours[1], mec="k", label="label 1"),
               Rectangle((0, 0), 1, 1, fill=False, ec="tab:green", lw=1.6, label="ε-box certified (dual-lp)"),
               Rectangle((0, 0), 1, 1, fill=False, ec="tab:red", lw=1.6, label="ε-box not certified"),
               Line2D([], [], marker="x", ls="", c="tab:red", label="adversarial point found")]
    fig.legend(handles=handles, loc="lower center", ncol=5, fontsize=7, frameon=False)
    fig.suptitle(f"Seed 003 Fig. 3: {args.points} points ≥ {args.spacing:g} apart, 2-100-100-100-100-2 net, "
                 f"ε = {args.eps:g}, {args.epochs} Adam steps each", fontsize=9)
    save_figure(fig, path, dpi=90, rect=(0, 0.05, 1, 0.97))


if __name__ == "__main__":
    torch.set_num_threads(1)
    torch.manual_seed(0)
    sys.exit(main())
