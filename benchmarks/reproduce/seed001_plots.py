"""Names, colours and the two figures of ``seed001_landscape.py`` (tightness violins,
smoothness during the ε ramp)."""

from __future__ import annotations

from common import pyplot, save_figure  # the script that imports this module put common on the path

import numpy as np

METHODS = ("ibp", "crown-ibp", "landscape")
LABELS = {"ibp": "IBP", "crown-ibp": "CROWN-IBP (β=1)", "landscape": "OURS (landscape)"}
COLORS = {"ibp": "tab:blue", "crown-ibp": "tab:red", "landscape": "tab:green"}
RELAXATIONS = ("ours", "crown-ibp", "cap-ibp", "random")
RELAX_LABELS = {"ours": "OURS", "crown-ibp": "CROWN-IBP", "cap-ibp": "CAP-IBP", "random": "RANDOM"}


def plot_tightness(results, path, eps, count):
    plt = pyplot()

    names = list(results)
    fig, axes = plt.subplots(len(names), 3, figsize=(15, 3.2 * len(names)), squeeze=False)
    for row, name in enumerate(names):
        per = results[name]["per_image"]
        for col, key in enumerate(("loss", "tightness")):
            ax = axes[row][col]
            data = [per[r][key] for r in RELAXATIONS]
            parts = ax.violinplot(data, showmeans=True, showmedians=False, showextrema=False)
            for body, r in zip(parts["bodies"], RELAXATIONS):
                body.set_alpha(0.5)
            ax.boxplot(data, widths=0.12, showfliers=False)
            labels = [RELAX_LABELS[r] for r in RELAXATIONS]
            if key == "loss":
                labels = [f"{RELAX_LABELS[r]}\nver. err {100 * (1 - per[r]['verified'].mean()):.1f}%" for r in RELAXATIONS]
            ax.set_xticks(range(1, len(RELAXATIONS) + 1), labels, fontsize=8)
            ax.set_ylabel("test loss CE(−lb, y)" if key == "loss" else "tightness Σ_m s_m")
            ax.set_title(f"{key} — model trained with {LABELS[name]} (ε={eps}, {count} test images)", fontsize=9)
            ax.grid(alpha=0.3, axis="y")
        ax = axes[row][2]
        others = [r for r in RELAXATIONS if r != "ours"]
        diffs = [per[r]["tightness"] - per["ours"]["tightness"] for r in others]
        ax.violinplot(diffs, showmeans=True, showextrema=False)
        ax.boxplot(diffs, widths=0.12, showfliers=False)
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xticks(range(1, len(others) + 1),
                      [f"{RELAX_LABELS[r]} − OURS\nOURS tighter on {100 * np.mean(d > 0):.0f}%" for r, d in zip(others, diffs)],
                      fontsize=8)
        ax.set_ylabel("paired tightness difference (> 0: OURS tighter)")
        ax.set_title(f"per image, model trained with {LABELS[name]}", fontsize=9)
        ax.grid(alpha=0.3, axis="y")
    save_figure(fig, path)


def plot_smoothness(measurements, steps_by_method, info, ts, path, args):
    plt = pyplot()

    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    ax_loss, ax_var, ax_varn, ax_cos, ax_step, ax_curve = axes.flat
    W = info[METHODS[0]]["warmup_steps"]
    R = info[METHODS[0]]["ramp_steps"]
    for method in METHODS:
        ms = [m for m in measurements if m["method"] == method]
        st = np.array([m["step"] for m in ms])
        c = COLORS[method]
        ax_loss.plot(st, [m["loss"] for m in ms], color=c, label=LABELS[method])
        ax_loss.fill_between(st, [m["loss_min"] for m in ms], [m["loss_max"] for m in ms], color=c, alpha=0.3)
        ax_var.plot(st, [m["variation"] for m in ms], "o-", ms=3, color=c, label=LABELS[method])
        if "variation_norm" in ms[0]:
            ax_varn.plot(st, [m["variation_norm"] for m in ms], "o-", ms=3, color=c, label=LABELS[method])
        ax_cos.plot(st, [m["grad_cosine_paper"] for m in ms], "o-", ms=3, color=c, label=LABELS[method])
        steps = steps_by_method[method]
        sc = np.array([s["step_cosine"] for s in steps])
        k = 10
        valid = np.where(np.isnan(sc), 0.0, sc)
        smooth = np.convolve(valid, np.ones(k) / k, mode="valid")
        ax_step.plot(np.arange(len(smooth)) + k - 1, smooth, color=c, label=LABELS[method])
        late = [m for m in ms if m["ramp_fraction"] >= 0.5]
        if late:
            curves = np.array([m["curve"] for m in late])
            for cv in curves[:: max(1, len(curves) // 6)]:
                ax_curve.plot(np.r_[0, ts], np.r_[0, cv], color=c, lw=0.5, alpha=0.4)
            ax_curve.plot(np.r_[0, ts], np.r_[0, np.median(curves, 0)], color=c, lw=2.5, label=LABELS[method])
    for ax in (ax_loss, ax_var, ax_varn, ax_cos, ax_step):
        ax.axvline(W + R, color="k", lw=0.8, ls=":")
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    ax_loss.set_ylabel("robust loss L(θ₀) (band: min–max along the gradient)")
    ax_loss.set_title("Fig. 1 (left) style: robust loss, band = loss range along −η·t·g", fontsize=9)
    ax_var.set_yscale("log")
    ax_var.set_ylabel("max_t |L(θ₀ − tηg) − L(θ₀)|")
    ax_var.set_title("loss variation, eq. (8): t ∈ [0.05, 5], η = lr", fontsize=9)
    ax_varn.set_yscale("log")
    ax_varn.set_ylabel("max_t |L(θ₀ − tη√P g/‖g‖) − L(θ₀)|")
    ax_varn.set_title("loss variation along the normalised gradient", fontsize=9)
    ax_cos.set_ylabel("cos(∇L(θ(0)), ∇L(θ(1)))")
    ax_cos.set_title("gradient cosine, App. A.1 (same batch, θ(1) = θ₀ − ηg)", fontsize=9)
    ax_step.set_ylabel("cos(g_step, g_step−1), moving mean of 10")
    ax_step.set_title("cosine of consecutive training-step gradients", fontsize=9)
    ax_curve.set_xscale("symlog", linthresh=0.05)
    ax_curve.set_xlabel("t (θ = θ₀ − tηg)")
    ax_curve.set_ylabel("L(θ(t)) − L(θ₀)")
    ax_curve.set_title("Fig. 1 (right) style: landscapes, 2nd half of the ramp (thick: median)", fontsize=9)
    ax_curve.grid(alpha=0.3)
    ax_loss.legend(fontsize=8)
    ax_var.legend(fontsize=8)
    fig.suptitle(f"{args.arch}, MNIST 5,000 images, ε_train={args.eps}, {args.epochs} epochs (dotted: end of ramp)",
                 fontsize=10)
    save_figure(fig, path)
