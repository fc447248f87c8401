"""Seed 000 (COLT) claims at CPU scale: each stage of convex layerwise adversarial
training raises robustness against latent adversarial attacks in deeper layers and the
certified accuracy; certifying with optimised slopes plus a MILP certifies more than the
zonotope alone.

    python benchmarks/reproduce/seed000_colt.py [--model fc-100-100] [--eps 0.1]
        [--epochs-per-stage 3] [--count 200] [--milp-count 100] [--milp-timeout 20]

Trains ``model`` with ``verifier_plugins.training.train(method="colt")`` on the 5,000
shipped MNIST training images (batch 50, Adam 1e-3, ``latent_steps`` 5, the plugin's
L1 and ReLU-stability regularisers) and stops after every stage (stage 0 is PGD
training = the paper's "Stage 1"; stage l ≥ 1 trains the layers above the l-th ReLU on
latent adversarial points of the DeepZ zonotope there). After each stage, on the first
``count`` test images:

* latent robustness at layer l: the fraction of points still classified correctly after
  the latent attack at layer l (l = 0: PGD in input space, 40 steps; l ≥ 1: 40 projected
  sign-gradient steps of size 0.25 in the zonotope's error space, the paper's
  "PGD in the latent space"), out of all points;
* certified accuracy with DeepZ (the zonotope COLT trains against), IBP (box) and CROWN.

On the final model, points DeepZ leaves open are tried with α-CROWN (optimised slopes)
and then with the complete MILP (``verify(..., domain="milp")``: big-M from α-CROWN
bounds, HiGHS, ``milp-timeout`` seconds each) on the first ``milp-count`` images.
Writes ``out/seed000_colt.{csv,json,png}``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import OUT, environment, print_table, write_csv, write_json, pyplot, save_figure  # noqa: E402  (verifier before torch)

import torch  # noqa: E402

import verifier  # noqa: E402
from verifier.api import compute_bounds  # noqa: E402
from verifier.spec.linf import linf_robustness_spec  # noqa: E402
from verifier.verify import verify  # noqa: E402
from verifier_plugins.training import build_model  # noqa: E402
from verifier_plugins.training.certify import verified_mask  # noqa: E402
from verifier_plugins.training.data import load_data  # noqa: E402
from verifier_plugins.training.live import LiveModel, evaluate_from, export_onnx, margin_matrix  # noqa: E402
from verifier_plugins.training.objectives import Context, box_around, make_objective  # noqa: E402
from verifier_plugins.training.trainer import train  # noqa: E402

DOMAINS = ("deepz", "box", "crown")


def latent_robustness(attack, x, y, eps, layer: int, seed: int) -> float:
    """Fraction of points classified correctly after COLT's latent attack at ``layer``
    (0: input-space PGD), i.e. ``y = argmax f_{>l}(a + G e*)`` for the ascent's ``e*``;
    ``attack`` is a COLT objective on the model (its ``latent_point``)."""
    module, live = attack.module, attack.live
    ctx = Context(eps=eps, generator=torch.Generator().manual_seed(seed))
    correct = 0
    for start in range(0, len(y), 50):
        xb, yb = x[start:start + 50], y[start:start + 50]
        node, point = attack.latent_point(layer, xb, yb, ctx)
        with torch.no_grad():
            logits = module(point) if node is None else evaluate_from(live.refresh(), node, point)
            clean = module(xb)
        correct += int(((logits.argmax(1) == yb) & (clean.argmax(1) == yb)).sum())
    return correct / len(y)


def certified_masks(model: verifier.Model, x, y, eps) -> dict[str, torch.Tensor]:
    shape = model.input_shape
    x = x.double()
    with torch.no_grad():
        correct = model(x.reshape(-1, *shape)).argmax(1) == y
    lo, hi = box_around(x, eps)
    C = margin_matrix(y, model.output_size).double()
    masks = {}
    for domain in DOMAINS:
        with torch.no_grad():
            lb, _ = compute_bounds(model, lo.reshape(-1, *shape), hi.reshape(-1, *shape), domain=domain, C=C)
        masks[domain] = verified_mask(lb, y) & correct
    masks["correct"] = correct
    return masks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="fc-100-100")
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--epochs-per-stage", type=int, default=3)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--milp-count", type=int, default=100)
    parser.add_argument("--milp-timeout", type=float, default=20.0)
    parser.add_argument("--attack-steps", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=OUT)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    data = load_data("mnist", None, args.count)
    x, y = data.x_test, data.y_test
    rows, stage_rows = [], []
    with tempfile.TemporaryDirectory() as tmp:
        probe = make_objective("colt", LiveModel(build_model(args.model), data.input_shape), 10)
        stages, layers = probe.stages, len(probe.latents)
        epochs = stages * args.epochs_per_stage
        steps_per_epoch = len(data.y_train) // 50
        start = time.time()
        for stage in range(stages):
            result = train(args.model, "colt", args.eps, epochs, os.path.join(tmp, "run"), data=data, batch_size=50,
                           lr=1e-3, test_count=0, eval_count=0, seed=args.seed, progress=False, resume=True,
                           certify_domain="deepz", method_options={"latent_steps": 5},
                           max_steps=(stage + 1) * args.epochs_per_stage * steps_per_epoch)
            train_s = time.time() - start
            module = result["module"].eval()
            for p in module.parameters():
                p.requires_grad_(True)
            path = os.path.join(tmp, f"stage{stage}.onnx")
            export_onnx(module, data.input_shape, path)
            model = verifier.load(path)
            masks = certified_masks(model, x, y, args.eps)
            attack = make_objective("colt", result["live"], 10, pgd_steps=args.attack_steps,
                                    latent_steps=args.attack_steps, latent_step_size=0.25)
            row = {"stage": stage, "trained_layers": f"> ReLU {stage}" if stage else "all (PGD)",
                   "train_s": round(train_s, 1), "clean_%": round(100 * float(masks["correct"].double().mean()), 1)}
            for layer in range(layers + 1):
                row[f"latent_robust_L{layer}_%"] = round(
                    100 * latent_robustness(attack, x, y, args.eps, layer, args.seed), 1)
            for domain in DOMAINS:
                row[f"{domain}_%"] = round(100 * float(masks[domain].double().mean()), 1)
            stage_rows.append(row)
            print_table(stage_rows)
        # final model: zonotope alone vs optimised slopes vs optimised slopes + MILP
        n = min(args.milp_count, len(y))
        masks = {k: v[:n] for k, v in masks.items()}  # the last stage's masks, first n points
        deepz = masks["deepz"]
        alpha = deepz.clone()
        open_points = [i for i in range(n) if masks["correct"][i] and not deepz[i]]
        shape = model.input_shape
        t_alpha = time.time()
        if open_points:
            idx = torch.tensor(open_points)
            lo, hi = box_around(x[idx].double(), args.eps)
            lb, _ = compute_bounds(model, lo.reshape(-1, *shape), hi.reshape(-1, *shape), domain="alpha-crown",
                                   C=margin_matrix(y[idx], 10).double())
            alpha[idx] = verified_mask(lb, y[idx])
        t_alpha = time.time() - t_alpha
        milp = alpha.clone()
        statuses = {}
        t_milp = time.time()
        for i in range(n):
            if masks["correct"][i] and not alpha[i]:
                spec = linf_robustness_spec(x[i], int(y[i]), args.eps, 10)
                status = verify(model, spec, domain="milp", timeout=args.milp_timeout).status
                statuses[status] = statuses.get(status, 0) + 1
                milp[i] = status == "unsat"
        t_milp = time.time() - t_milp
        rows = [{"certifier": "DeepZ (zonotope)", "certified_%": round(100 * float(deepz.double().mean()), 1),
                 "seconds": None},
                {"certifier": "+ alpha-CROWN (optimised slopes)", "certified_%": round(100 * float(alpha.double().mean()), 1),
                 "seconds": round(t_alpha, 1)},
                {"certifier": "+ MILP (complete)", "certified_%": round(100 * float(milp.double().mean()), 1),
                 "seconds": round(t_milp, 1)}]
        print_table(rows)
        print("MILP statuses on the points alpha-CROWN left open:", statuses)
    write_csv(os.path.join(args.out, "seed000_colt.csv"), stage_rows)
    write_json(os.path.join(args.out, "seed000_colt.json"), {"stages": stage_rows, "certification": rows, "points": n,
                                                         "milp_statuses": statuses, "args": vars(args),
                                                         "environment": environment()})
    plot(stage_rows, rows, layers, args, os.path.join(args.out, "seed000_colt.png"))
    return 0


def plot(stage_rows, cert_rows, layers, args, path):
    plt = pyplot()

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.4))
    for row in stage_rows:
        ax.plot(range(layers + 1), [row[f"latent_robust_L{l}_%"] for l in range(layers + 1)], marker="o",
                label=f"after stage {row['stage']} (DeepZ cert. {row['deepz_%']:.0f} %)")
    ax.set_xticks(range(layers + 1), ["0 (input)"] + [f"{l} (ReLU {l})" for l in range(1, layers + 1)])
    ax.set_xlabel("layer attacked")
    ax.set_ylabel("robust accuracy vs latent attack (%)")
    ax.set_title(f"COLT, {args.model}, MNIST ε={args.eps}", fontsize=9)
    ax.legend(fontsize=7)
    bx.bar(range(len(cert_rows)), [r["certified_%"] for r in cert_rows], color=["C0", "C1", "C2"])
    bx.set_xticks(range(len(cert_rows)), ["DeepZ", "+α-CROWN", "+MILP"])
    bx.set_ylabel("certified accuracy (%)")
    bx.set_title(f"final model, first {args.milp_count} test images", fontsize=9)
    save_figure(fig, path)


if __name__ == "__main__":
    torch.manual_seed(0)
    sys.exit(main())
