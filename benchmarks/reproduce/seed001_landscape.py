#!/usr/bin/env python
"""Seed 001 ("Loss Landscape Matters", ICLR 2021 submission): tightness of the one-step
gradient-chosen lower slopes (Fig. 4, App. P) and smoothness of the loss landscape during
the ε ramp (Fig. 1, Fig. 2, App. A.1, App. H), at CPU scale.

    python benchmarks/reproduce/seed001_landscape.py                          # crown-ibp-a, ε 0.2: 8–13 min
    python benchmarks/reproduce/seed001_landscape.py --arch fc-100-100 --tag _fc  # 2.5–3.5 min

Training (part B's runs; part A reuses the trained models). Three copies of the same
initial network (``build_model(arch, seed=seed)``; default ``crown-ibp-a``, seed 004's
small model A: Conv(4, 4×4, stride 2, pad 1), Conv(8, 4×4, 2, 1), FC 128, FC 10, ReLUs,
MNIST normalisation inside; ``fc-100-100``: FC 100, FC 100, FC 10) are trained on the 5,000 shipped MNIST training images
with the objectives of ``verifier_plugins.training.objectives`` (``make_objective``):
``ibp`` (IBP), ``crown-ibp`` with β fixed at 1 (CROWN-IBP_{1→1}) and ``landscape``
(OURS: CROWN-IBP whose crossing-ReLU lower slopes α are one signed projected gradient
step, η = 1, on the robust loss from α₀ ~ U[0, 1], β = 1). All three use one schedule,
``default_schedule("landscape", eps, epochs, lr=1e-3, batch=100)``: Adam, lr 1e-3 (the
paper's App. A.1), batch 100 (the paper's MNIST batch), 1 warm-up epoch at ε = 0, a
linear ε ramp 0 → ε_train over 0.6·epochs epochs, κ (clean-loss weight) 1 → 0 over the
ramp, β = 1 throughout (IBP ignores β), lr ×0.5 every 0.1·epochs epochs after the ramp.
The loop is ``trainer.train``'s (per-epoch generators seeded ``seed·100003 + epoch`` for the
batch order and the random α₀), written out here so that the measurements can be taken
between the loss and the optimiser step; the measurements use their own generators and
restore the parameters, so the training trajectory does not depend on them.

Part B — smoothness (Fig. 1, Fig. 2, App. A.1, App. H). Every ``--measure-every`` steps of
the ε ramp, on the current training batch (B = 100) at the current ε, with the robust loss
``L(θ) = CE(−lb_θ(x, y, ε), y)`` (κ = 0; lb the method's margin lower bound; for OURS the
random start α₀ is redrawn from the same seed at every θ below, so L is a deterministic
function of θ — the paper fixes CAP's random matrix for the same reason), g = ∇_θ L(θ₀):

* loss variation, the paper's eq. (8): θ(t) = θ₀ − t·η·g with η the learning rate and
  t on ten log-spaced points of [0.05, 5];
  ``variation = max_t |L(θ(t)) − L(θ₀)|`` (also stored: the range max_t L − min_t L over
  t ∈ {0} ∪ grid, the band of Fig. 1 left, and the relative variation /L(θ₀));
* the same along the normalised gradient, θ(t) = θ₀ − t·η·√P·g/‖g‖ (P parameters: η√P is
  the length of an Adam step that moves every coordinate by η), same t grid
  (``variation_norm``), which removes the dependence on ‖g‖;
* gradient cosine and gradient difference of App. A.1 / App. H: ``cos(∇L(θ(0)), ∇L(θ(1)))``
  and ``‖∇L(θ(0)) − ∇L(θ(1))‖`` with θ(1) = θ₀ − η·g (same batch, same α₀);
* the share of crossing ReLUs (IBP pre-activation bounds l < 0 < u; Fig. 2 bottom).

Besides, at every training step: the cosine between the training-loss gradients of two
consecutive optimiser steps (different batches; what ``Landscape.diagnostics`` logs as
``grad_cosine``). Summaries over the ramp: percentiles 10/50/90 of the variation, mean
cosines. (``objectives.loss_variation`` is the plugin's one-number version of the first
measure, along the normalised gradient.)

Part A — tightness (Fig. 4, App. P). On the landscape-trained model (and, as App. P, on
the ibp- and crown-ibp-trained ones), on the first ``--count`` test images at ε_train:
IBP intermediate bounds (``CrownIBPDomain.intermediate_bounds``) and one CROWN backward
pass (``CrownIBPDomain.lower_bound(graph, lo, hi, C, alpha, bounds)``) with the crossing-ReLU
lower slopes α of OURS (``Landscape.robust_lb`` itself, β = 1), CROWN-IBP α = 1[u > −l],
CAP-IBP α = u⁺/(u⁺ − l⁻), RANDOM α ~ U[0, 1]. lb_j bounds f_y − f_j from below, so the
paper's s_j = −lb_j, tightness = Σ_j s_j (s_y = 0; lower is tighter), test loss CE(−lb, y),
verified = all lb_{j≠y} > 0. Reported: mean / median tightness and loss, verified error,
and the share of images on which OURS is strictly tighter than each other relaxation.
The explicit CROWN-IBP α is checked against the domain's own adaptive rule (α = None).

Writes ``out/seed001_landscape.json`` (arguments, environment, timings, summaries, the
paper's statements), ``out/seed001_landscape_tightness.csv`` (one row per trained model
and relaxation), ``out/seed001_landscape_smoothness.csv`` (one row per method and
measurement step), ``out/seed001_landscape_tightness.png`` (violins, Fig. 4 style) and
``out/seed001_landscape_smoothness.png`` (vs training step, Fig. 1/2 style).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import OUT, environment, print_table, write_csv, write_json  # noqa: E402  (verifier before torch)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from verifier.domains.crown import CrownIBPDomain  # noqa: E402
from verifier.ir import topological_order  # noqa: E402
from verifier.ir.graph import predecessors_by_slot  # noqa: E402
from verifier_plugins.training.architectures import build_model  # noqa: E402
from verifier_plugins.training.data import load_data  # noqa: E402
from verifier_plugins.training.live import LiveModel, margin_matrix  # noqa: E402
from verifier_plugins.training.objectives import Context, box_around, make_objective  # noqa: E402
from verifier_plugins.training.schedules import default_schedule  # noqa: E402
from seed001_plots import LABELS, METHODS, RELAX_LABELS, RELAXATIONS, plot_smoothness, plot_tightness  # noqa: E402


PAPER = {
    "fig4_sec6": ("Tightness [...] We define a tightness measure as a sum over the worst-case margin for each class m, "
                  "sum_m s_m(x, y, eps; theta) [...] we evaluate multiple methods on a single fixed model pre-trained "
                  "with the proposed training method. The compared methods are, from left to right, OURS, CROWN-IBP "
                  "(Zhang et al., 2019b), CAP-IBP, and RANDOM. [...] In both figures, our method shows the lowest "
                  "value on average, which indicates that a single gradient step in (6) is sufficient to obtain "
                  "tighter bounds compared to other relaxation methods."),
    "fig4_caption": ("Figure 4: Violin plots of the test loss with the corresponding verified error (Left) and of "
                     "tightness (Right) for various linear relaxations. Lower is better."),
    "app_p": ("The proposed method achieves the best results in terms of loss and tightness followed by CROWN-IBP, "
              "CAP-IBP, and RANDOM. Figure 17 (a)-(b), (c)-(d), and (e)-(f) show the tightness evaluated on the "
              "model trained by CROWN-IBP1->0, CROWN-IBP1->1 and IBP, respectively."),
    "sec4_1": ("We find that linear relaxation-based methods have large variations, while IBP maintains a small "
               "variation throughout the entire training phase."),
    "sec6_smoothness": ("Figure 1 shows that the proposed method has small loss variations along the gradient as with "
                        "IBP, whereas CROWN-IBP (beta = 1) has a wide range of loss values."),
    "fig2": ("In particular, in the middle of the ramp-up period, CROWN-IBP has a large number of unstable ReLUs and "
             "exhibits abrupt changes in gradient steps. It often has deviation angles larger than 90 degrees"),
    "app_a1": ("We take steps of different lengths in the direction of the gradient and measure the loss values "
               "obtained at each step. [...] theta(t) = theta0 - t eta grad L(s(theta0)) for t in [0, 5], [...] eta "
               "is the learning rate. For the step of length t, we sample ten points from a range of [0,5] on a log "
               "scale. [Fig. 2:] cos(grad L(s(theta(0))), grad L(s(theta(1))))"),
    "app_h": ("We empirically measure the non-smoothness of the loss landscape with the difference between the two "
              "consecutive loss gradients at theta1 = theta(0) and theta2 = theta(1) in (8), says gradient difference"),
    "setting_fig1": "CIFAR-10, Medium model, eps_train = 8/255, 200 epochs (10 warm-up, 120 ramp-up), Adam lr 1e-3",
}


# --- helpers -------------------------------------------------------------------------------
def params_of(module):
    return [p for p in module.parameters() if p.requires_grad]


def flat(tensors, params):
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(tensors, params)])


def robust_loss(objective, x, y, eps, beta, seed, clip, grad=False):
    """The method's robust loss CE(−lb, y) at the current parameters (κ = 0), α₀ of OURS drawn
    from ``seed`` (the same draw at every θ); with ``grad`` also ∇_θ (flattened)."""
    params = params_of(objective.module)
    ctx = Context(eps=eps, kappa=0.0, beta=beta, generator=torch.Generator().manual_seed(seed), clip=clip)
    if grad:
        loss, _ = objective.loss(x, y, ctx)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        return float(loss.detach()), flat(grads, params).detach()
    # The parameters keep requires_grad: with it off, the verifier caches each affine node's
    # offset f(0) keyed by the ids of its parameter tensors only (ops/adjoint.py ``offset``), and
    # the in-place moves θ₀ → θ(t) below would then read stale offsets. OURS differentiates
    # in α internally, so it runs with autograd on; the others under no_grad.
    if objective.name == "landscape":
        loss, _ = objective.loss(x, y, ctx)
    else:
        with torch.no_grad():
            loss, _ = objective.loss(x, y, ctx)
    return float(loss.detach()), None


def set_params(params, vector):
    with torch.no_grad():
        offset = 0
        for p in params:
            n = p.numel()
            p.copy_(vector[offset:offset + n].reshape(p.shape))
            offset += n


def crossing_share(live, x, eps, clip):
    """Share of ReLUs whose IBP pre-activation bounds cross 0 (batch mean)."""
    graph = live.refresh()
    lo, hi = box_around(x, eps, clip)
    with torch.no_grad():
        bounds = CrownIBPDomain().intermediate_bounds(graph, lo.unsqueeze(1), hi.unsqueeze(1))
    crossing = total = 0
    for n in topological_order(graph):
        if graph.nodes[n]["kind"] == "relu":
            (p,) = predecessors_by_slot(graph, n)
            l, u = bounds[p]
            crossing += int(((l < 0) & (u > 0)).sum())
            total += l.numel()
    return crossing / max(1, total)


def measure(objective, live, x, y, eps, beta, lr, seed, clip, ts, normalised=True) -> dict:
    """Part B's measurements at the current θ₀ (see the module docstring); θ₀ is restored."""
    params = params_of(objective.module)
    theta0 = torch.cat([p.detach().reshape(-1) for p in params]).clone()
    P = theta0.numel()
    l0, g0 = robust_loss(objective, x, y, eps, beta, seed, clip, grad=True)
    gnorm = float(g0.norm())
    out = {"loss": l0, "grad_norm": gnorm}
    try:
        curves = {}
        directions = {"": lr * g0}
        if normalised:
            directions["_norm"] = lr * math.sqrt(P) * g0 / (gnorm + 1e-12)
        for key, d in directions.items():
            losses = []
            for t in ts:
                set_params(params, theta0 - t * d)
                losses.append(robust_loss(objective, x, y, eps, beta, seed, clip)[0])
            set_params(params, theta0)
            losses = np.array(losses)
            curves[key] = losses
            out[f"variation{key}"] = float(np.max(np.abs(losses - l0)))
            out[f"range{key}"] = float(max(losses.max(), l0) - min(losses.min(), l0))
            out[f"loss_min{key}"], out[f"loss_max{key}"] = float(min(losses.min(), l0)), float(max(losses.max(), l0))
            out[f"curve{key}"] = [float(v - l0) for v in losses]
        set_params(params, theta0 - lr * g0)  # θ(1) of eq. (8)
        _, g1 = robust_loss(objective, x, y, eps, beta, seed, clip, grad=True)
        out["grad_cosine_paper"] = float(F.cosine_similarity(g0, g1, dim=0))
        out["grad_difference"] = float((g0 - g1).norm())
    finally:
        set_params(params, theta0)
    out["relative_variation"] = out["variation"] / max(l0, 1e-12)
    out["crossing_relus"] = crossing_share(live, x, eps, clip)
    return out


# --- training (part B) ---------------------------------------------------------------------------
def train_and_measure(method, data, schedule, batch, args, ts):
    module = build_model(args.arch, data.input_shape, data.classes, seed=args.seed)
    live = LiveModel(module, data.input_shape)
    objective = make_objective(method, live, data.classes)
    optimizer = torch.optim.Adam(module.parameters(), lr=schedule.lr)
    x_train, y_train = data.x_train, data.y_train
    S = max(1, len(y_train) // batch)
    W, R = int(round(schedule.warmup * S)), int(round(schedule.ramp * S))
    steps, measurements, previous = [], [], None
    step, t_measure, started = 0, 0.0, time.time()
    for epoch in range(args.epochs):
        lr = schedule.lr_at(epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        gen = torch.Generator().manual_seed(args.seed * 100003 + epoch)
        ctx = Context(eps=0.0, epoch=epoch, epochs=args.epochs, steps_per_epoch=S, generator=gen, clip=data.clip)
        objective.prepare_epoch(ctx)
        perm = torch.randperm(len(y_train), generator=gen)
        module.train()
        for i in range(S):
            idx = perm[i * batch:(i + 1) * batch]
            xb, yb = x_train[idx], y_train[idx]
            ctx.eps = schedule.epsilon(step, S)
            ctx.kappa = schedule.kappa_at(step, S)
            ctx.beta = schedule.beta_at(step, S)
            ctx.step, ctx.stats = step, {}
            if W <= step < W + R and ctx.eps > 0 and (step - W) % args.measure_every == 0:
                t0 = time.time()
                m = measure(objective, live, xb, yb, ctx.eps, ctx.beta, lr, args.seed * 7919 + step, data.clip, ts,
                            normalised=not args.no_normalised)
                t_measure += time.time() - t0
                m.update(method=method, step=step, epoch=epoch, eps=ctx.eps, ramp_fraction=(step - W) / max(1, R))
                measurements.append(m)
            loss, _ = objective.loss(xb, yb, ctx)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            params = params_of(module)
            g = flat([p.grad for p in params], params).detach()
            cosine = float(F.cosine_similarity(g, previous, dim=0)) if previous is not None else float("nan")
            previous = g
            optimizer.step()
            steps.append({"step": step, "eps": ctx.eps, "kappa": ctx.kappa, "loss": float(loss.detach()),
                          "step_cosine": cosine, "in_ramp": bool(W <= step < W + R)})
            step += 1
        print(f"  [{method}] epoch {epoch + 1}/{args.epochs} eps {ctx.eps:.3f} loss {np.mean([s['loss'] for s in steps[-S:]]):.3f}"
              f" ({time.time() - started:.0f} s, measuring {t_measure:.0f} s)", flush=True)
    return module, live, objective, steps, measurements, {"train_s": time.time() - started - t_measure,
                                                          "measure_s": t_measure, "steps_per_epoch": S,
                                                          "warmup_steps": W, "ramp_steps": R}


# --- tightness (part A) --------------------------------------------------------------------------
def relaxation_bounds(live, objective, x, y, eps, clip, seed) -> dict:
    """lb (B, k) of f_y − f_j for each relaxation of the final pass (IBP intermediate bounds)."""
    domain = CrownIBPDomain()
    graph = live.refresh()
    lo, hi = box_around(x, eps, clip)
    lo, hi = lo.unsqueeze(1), hi.unsqueeze(1)
    C = margin_matrix(y, objective.classes).to(x)
    out = {}
    with torch.no_grad():
        bounds = domain.intermediate_bounds(graph, lo, hi)
        relus = [n for n in topological_order(graph) if graph.nodes[n]["kind"] == "relu"]
        gen = torch.Generator().manual_seed(seed + 1)  # RANDOM: an independent draw (not OURS' α₀)
        alphas = {"crown-ibp": {}, "cap-ibp": {}, "random": {}}
        for n in relus:
            (p,) = predecessors_by_slot(graph, n)
            l, u = bounds[p]
            shape = (l.shape[0], 1, *l.shape[1:])
            up, ln = u.clamp(min=0), l.clamp(max=0)
            alphas["crown-ibp"][n] = (up + ln > 0).to(l).reshape(shape)
            alphas["cap-ibp"][n] = torch.where(up - ln > 0, up / (up - ln).clamp(min=1e-12), torch.zeros_like(u)).reshape(shape)
            alphas["random"][n] = torch.rand(shape, generator=gen).to(l)
        for name, alpha in alphas.items():
            out[name] = domain.lower_bound(graph, lo, hi, C, alpha, bounds)
        adaptive = domain.lower_bound(graph, lo, hi, C, None, bounds)
        assert torch.allclose(adaptive, out["crown-ibp"], atol=1e-4, rtol=1e-4), "explicit CROWN-IBP α ≠ domain's rule"
    ctx = Context(eps=eps, kappa=0.0, beta=1.0, generator=torch.Generator().manual_seed(seed), clip=clip)
    out["ours"] = objective.robust_lb(x, y, ctx).detach()  # needs autograd (∂L/∂α); θ keeps requires_grad
    return out


def tightness(live, module, data, eps, count, seed, batch=100) -> dict:
    landscape = make_objective("landscape", live, data.classes)
    x_all, y_all = data.x_test[:count], data.y_test[:count]
    per = {r: {"tightness": [], "loss": [], "verified": []} for r in RELAXATIONS}
    module.eval()
    with torch.no_grad():
        clean = float((module(x_all).argmax(1) == y_all).float().mean())
        lo, hi = box_around(x_all, eps, data.clip)
        lb_box, _ = live.bounds("box", lo, hi, margin_matrix(y_all, data.classes), lower_only=True)
        ibp_verified = float(((lb_box + 1e9 * F.one_hot(y_all, data.classes)) > 0).all(1).float().mean())
    for start in range(0, len(y_all), batch):
        x, y = x_all[start:start + batch], y_all[start:start + batch]
        lbs = relaxation_bounds(live, landscape, x, y, eps, data.clip, seed * 1000 + start)
        for r in RELAXATIONS:
            lb = lbs[r]
            per[r]["tightness"].append((-lb).sum(1))
            per[r]["loss"].append(F.cross_entropy(-lb, y, reduction="none"))
            others = lb + 1e9 * F.one_hot(y, data.classes)
            per[r]["verified"].append((others > 0).all(1).float())
    per = {r: {k: torch.cat(v).numpy() for k, v in d.items()} for r, d in per.items()}
    return {"per_image": per, "clean_acc": clean, "ibp_verified": ibp_verified}


def summarise_tightness(name, res) -> list[dict]:
    per = res["per_image"]
    rows = []
    for r in RELAXATIONS:
        d = per[r]
        row = {"trained_with": name, "relaxation": RELAX_LABELS[r], "images": len(d["loss"]),
               "tightness_mean": float(np.mean(d["tightness"])), "tightness_median": float(np.median(d["tightness"])),
               "loss_mean": float(np.mean(d["loss"])), "loss_median": float(np.median(d["loss"])),
               "verified_err_%": 100 * (1 - float(np.mean(d["verified"])))}
        if r != "ours":
            row["ours_tighter_%"] = 100 * float(np.mean(per["ours"]["tightness"] < d["tightness"]))
            row["ours_lower_loss_%"] = 100 * float(np.mean(per["ours"]["loss"] < d["loss"]))
        else:
            row["ours_tighter_%"] = row["ours_lower_loss_%"] = float("nan")
        row["clean_err_%"] = 100 * (1 - res["clean_acc"])
        row["ibp_verified_err_%"] = 100 * (1 - res["ibp_verified"])
        rows.append(row)
    return rows


def summarise_smoothness(measurements, steps, method) -> dict:
    ms = [m for m in measurements if m["method"] == method]
    out = {"method": LABELS[method], "measurements": len(ms)}
    for key in ("variation", "variation_norm", "relative_variation"):
        vals = np.array([m[key] for m in ms if key in m])
        if len(vals):
            for q in (10, 50, 90):
                out[f"{key}_p{q}"] = float(np.percentile(vals, q))
    late = [m for m in ms if m["ramp_fraction"] >= 0.5]  # 2nd half of the ramp (cf. Fig. 1 right: epochs 50-130)
    out["variation_p50_late"] = float(np.median([m["variation"] for m in late])) if late else float("nan")
    if late and "variation_norm" in late[0]:
        out["variation_norm_p50_late"] = float(np.median([m["variation_norm"] for m in late]))
    out["grad_cos_paper_mean"] = float(np.mean([m["grad_cosine_paper"] for m in ms]))
    out["grad_cos_paper_mean_late"] = float(np.mean([m["grad_cosine_paper"] for m in late])) if late else float("nan")
    out["grad_cos_paper_min"] = float(np.min([m["grad_cosine_paper"] for m in ms]))
    out["grad_diff_median"] = float(np.median([m["grad_difference"] for m in ms]))
    out["grad_norm_median"] = float(np.median([m["grad_norm"] for m in ms]))
    ramp = np.array([s["step_cosine"] for s in steps if s["in_ramp"] and not math.isnan(s["step_cosine"])])
    out["step_cos_mean"] = float(np.mean(ramp))
    out["step_cos_neg_%"] = 100 * float(np.mean(ramp < 0))
    out["crossing_relus_mean_%"] = 100 * float(np.mean([m["crossing_relus"] for m in ms]))
    out["loss_end_of_ramp"] = float(np.mean([s["loss"] for s in steps if s["in_ramp"]][-20:]))
    return out


# --- plots --------------------------------------------------------------------------------------
# --- main ---------------------------------------------------------------------------------------
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="crown-ibp-a", help="architecture name (plugins/training/architectures.py)")
    ap.add_argument("--eps", type=float, default=0.2, help="ε_train (also the test ε of part A)")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--train-count", type=int, default=5000)
    ap.add_argument("--count", type=int, default=500, help="test images of part A")
    ap.add_argument("--measure-every", type=int, default=20, help="steps between part-B measurements (ramp only)")
    ap.add_argument("--no-normalised", action="store_true", help="skip the normalised-gradient variation")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=OUT)
    ap.add_argument("--tag", default="", help="suffix of the output names (seed001_landscape<tag>*)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    os.makedirs(args.out, exist_ok=True)
    started = time.time()
    data = load_data("mnist", args.train_count, args.count)
    schedule, batch = default_schedule("landscape", args.eps, args.epochs, lr=args.lr, batch=args.batch)
    ts = np.geomspace(0.05, 5.0, 10)
    print(f"schedule: {schedule.to_dict()}, batch {batch}")

    measurements, steps_by_method, info, trained = [], {}, {}, {}
    for method in METHODS:
        module, live, objective, steps, ms, meta = train_and_measure(method, data, schedule, batch, args, ts)
        measurements += ms
        steps_by_method[method] = steps
        info[method] = meta
        trained[method] = (module, live)
    t_train = time.time() - started

    smooth_rows = [summarise_smoothness(measurements, steps_by_method[m], m) for m in METHODS]
    print("\nPart B — smoothness during the ε ramp (robust loss, current ε)")
    print_table(smooth_rows, ["method", "measurements", "variation_p10", "variation_p50", "variation_p90",
                              "variation_p50_late", "relative_variation_p50", "grad_norm_median"])
    if not args.no_normalised:
        print_table(smooth_rows, ["method", "variation_norm_p10", "variation_norm_p50", "variation_norm_p90",
                                  "variation_norm_p50_late"])
    print_table(smooth_rows, ["method", "grad_cos_paper_mean", "grad_cos_paper_mean_late", "grad_cos_paper_min", "grad_diff_median",
                              "step_cos_mean", "step_cos_neg_%", "crossing_relus_mean_%", "loss_end_of_ramp"])

    t0 = time.time()
    tight_results, tight_rows = {}, []
    for method in ("landscape", "crown-ibp", "ibp"):
        module, live = trained[method]
        res = tightness(live, module, data, args.eps, args.count, args.seed)
        tight_results[method] = res
        tight_rows += summarise_tightness(LABELS[method], res)
    t_tight = time.time() - t0
    print(f"\nPart A — tightness at ε = {args.eps} on {args.count} test images (lower is tighter)")
    print_table(tight_rows, ["trained_with", "relaxation", "tightness_mean", "tightness_median", "loss_mean",
                             "loss_median", "verified_err_%", "ours_tighter_%", "ours_lower_loss_%"])
    print_table([r for r in tight_rows if r["relaxation"] == "OURS"], ["trained_with", "clean_err_%", "ibp_verified_err_%"])

    total = time.time() - started
    print(f"\ntraining+measuring {t_train:.0f} s, tightness {t_tight:.0f} s, total {total:.0f} s")
    prefix = os.path.join(args.out, f"seed001_landscape{args.tag}")
    write_csv(prefix + "_tightness.csv", tight_rows)
    flat_ms = [{k: v for k, v in m.items() if not k.startswith("curve")} for m in measurements]
    keys = []
    for m in flat_ms:
        keys += [k for k in m if k not in keys]
    order = ["method", "step", "epoch", "eps", "ramp_fraction"]
    keys = order + [k for k in keys if k not in order]
    write_csv(prefix + "_smoothness.csv", [{k: m.get(k, "") for k in keys} for m in flat_ms])
    write_json(prefix + ".json", {
        "args": vars(args), "environment": environment(), "schedule": schedule.to_dict(), "batch": batch,
        "t_grid": ts.tolist(), "seconds": {"train_and_measure": t_train, "tightness": t_tight, "total": total},
        "per_method_timing": info, "smoothness_summary": smooth_rows, "tightness_summary": tight_rows,
        "measurements": measurements,
        "steps": {m: [{k: s[k] for k in ("step", "eps", "loss", "step_cosine")} for s in v] for m, v in steps_by_method.items()},
        "paper": PAPER})
    plot_tightness(tight_results, prefix + "_tightness.png", args.eps, args.count)
    plot_smoothness(measurements, steps_by_method, info, ts, prefix + "_smoothness.png", args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
