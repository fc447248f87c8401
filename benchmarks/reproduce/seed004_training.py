"""Seed 004 (CROWN-IBP) training claims at CPU scale: at an equal number of epochs,
CROWN-IBP certifies more than pure IBP, and how each trained net certifies with every
bound (IBP/box, CROWN-IBP, CROWN).

    python benchmarks/reproduce/seed004_training.py [--eps 0.1] [--epochs 12] [--count 200] [--tag _eps0.1]

Trains the Wong–Kolter MNIST conv net twice with ``verifier_plugins.training.train`` on the
5,000 shipped training images (batch 50, lr 1e-3, κ 1 → 0; CROWN-IBP also β 1 → 0), then
certifies the exported ONNX models on the first ``count`` test images with every bound.
Writes ``out/seed004_training{tag}.{csv,json,png}``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import environment, print_table, write_csv, write_json, pyplot, save_figure  # noqa: E402  (imports verifier before torch)

import torch  # noqa: E402

import verifier  # noqa: E402
from verifier_plugins.training.certify import certify_model  # noqa: E402
from verifier_plugins.training.data import load_data  # noqa: E402
from verifier_plugins.training.trainer import train  # noqa: E402

DOMAINS = ("box", "crown-ibp", "crown")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--train-eps", type=float, default=None,
                        help="training ε (default --eps; the paper trains MNIST ε 0.3 models at 0.4)")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--count", type=int, default=200, help="test images certified")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tag", default="", help="suffix of the output files (e.g. _eps0.3)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "out"))
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    data = load_data("mnist", None, args.count)
    rows = []
    train_eps = args.train_eps or args.eps
    with tempfile.TemporaryDirectory() as tmp:
        for method in ("ibp", "crown-ibp"):
            start = time.time()
            result = train("wong-kolter", method, train_eps, args.epochs, os.path.join(tmp, method), data=data,
                           eps_test=args.eps, batch_size=50, lr=1e-3, kappa=(1.0, 0.0), test_count=0, eval_count=0,
                           seed=args.seed, progress=False, certify_domain="box")
            seconds = time.time() - start
            model = verifier.load(result["onnx"])
            row = {"method": method, "eps_train": train_eps, "eps": args.eps, "epochs": args.epochs,
                   "train_s": round(seconds, 1)}
            for domain in DOMAINS:
                cert = certify_model(model, data.x_test, data.y_test, args.eps, domain=domain)
                row["clean_%"] = round(100 * cert.clean_accuracy, 1)
                row[f"{domain}_%"] = round(100 * cert.certified_accuracy, 1)
            rows.append(row)
    print_table(rows)
    write_csv(os.path.join(args.out, f"seed004_training{args.tag}.csv"), rows)
    write_json(os.path.join(args.out, f"seed004_training{args.tag}.json"), {"rows": rows, "args": vars(args),
                                                                 "environment": environment()})
    plot(rows, os.path.join(args.out, f"seed004_training{args.tag}.png"))
    return 0


def plot(rows, path):
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(5, 3))
    width = 0.35
    for k, row in enumerate(rows):
        ax.bar([i + k * width for i in range(len(DOMAINS))], [row[f"{d}_%"] for d in DOMAINS], width,
               label=f"{row['method']}-trained ({row['train_s']:.0f} s)")
    ax.set_xticks([i + width / 2 for i in range(len(DOMAINS))], [d if d != "box" else "IBP (box)" for d in DOMAINS])
    ax.set_ylabel("certified accuracy (%)")
    ax.set_title(f"Wong–Kolter net, trained at ε={rows[0]['eps_train']}, certified at ε={rows[0]['eps']}, "
                 f"{rows[0]['epochs']} epochs each", fontsize=9)
    ax.legend(fontsize=7)
    save_figure(fig, path)


if __name__ == "__main__":
    torch.manual_seed(0)
    sys.exit(main())
