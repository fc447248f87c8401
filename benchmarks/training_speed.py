"""Epoch cost of the training objectives on a fixed MNIST subset, measured in one run.

    python benchmarks/training_speed.py [--model wong-kolter] [--count 500] [--batch 50] [--device cpu]

Times one pass over the first ``count`` training images (ε = 0.1 at full ramp, κ = 0.5,
β = 0.5) for each method, after one warm-up batch, and prints seconds per epoch and the
ratios IBP/standard and every other method over IBP.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: see verifier/__init__.py
import torch  # noqa: E402

from verifier.datasets import load_mnist
from verifier_plugins.training import LiveModel, build_model
from verifier_plugins.training.objectives import Context, make_objective

METHODS = {"standard": {}, "pgd": {}, "ibp": {}, "crown-ibp": {}, "dual-lp": {"projections": 10},
           "double-margin": {}, "landscape": {}, "colt": {"latent_steps": 5}}


def epoch_seconds(method, model, count, batch, device, options) -> float:
    torch.manual_seed(0)
    net = build_model(model).to(device)
    live = LiveModel(net, (1, 28, 28))
    objective = make_objective(method, live, 10, pgd_steps=5, **options)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    x, y = load_mnist("train")
    x, y = x[:count].to(device), y[:count].to(device)
    ctx = Context(eps=0.1, kappa=0.5, beta=0.5, epoch=1, epochs=2, steps_per_epoch=count // batch,
                  generator=torch.Generator().manual_seed(0))
    objective.prepare_epoch(ctx)  # COLT: stage 1 (latent space after the first ReLU)

    def step(i):
        loss, _ = objective.loss(x[i:i + batch], y[i:i + batch], ctx)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step(0)
    if device != "cpu":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(0, count - batch + 1, batch):
        step(i)
    if device != "cpu":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="wong-kolter")
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--json", help="also write the seconds and ratios to this JSON file")
    args = parser.parse_args()
    seconds = {}
    for method in args.methods.split(","):
        seconds[method] = epoch_seconds(method, args.model, args.count, args.batch, args.device, METHODS[method])
        print(f"{method:10s} {seconds[method]:8.2f} s per {args.count} images", flush=True)
    ratios = {}
    for name, num, den in (("IBP / standard", "ibp", "standard"), ("CROWN-IBP / IBP", "crown-ibp", "ibp"),
                           ("dual-LP (K=10) / IBP", "dual-lp", "ibp"), ("COLT (stage 1) / IBP", "colt", "ibp"),
                           ("PGD (5 steps) / IBP", "pgd", "ibp"), ("DoubleMargin / IBP", "double-margin", "ibp"),
                           ("landscape / IBP", "landscape", "ibp")):
        if num in seconds and den in seconds:
            ratios[name] = seconds[num] / seconds[den]
            print(f"{name:22s} {ratios[name]:6.2f}x")
    if args.json:
        import json
        import platform

        with open(args.json, "w") as fh:
            json.dump({"model": args.model, "count": args.count, "batch": args.batch, "device": args.device,
                       "seconds_per_epoch_of_count": seconds, "ratios": ratios, "torch": torch.__version__,
                       "machine": platform.machine(), "threads": torch.get_num_threads(),
                       "date": time.strftime("%Y-%m-%d %H:%M")}, fh, indent=1)
    return seconds


if __name__ == "__main__":
    main()
