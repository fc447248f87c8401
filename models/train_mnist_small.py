"""Train the shipped default model `models/mnist_small.onnx` and write its properties.

Architecture (the Wong–Kolter MNIST conv net): normalise → conv 16 4×4/2 pad 1 → ReLU →
conv 32 4×4/2 pad 1 → ReLU → fc 100 → ReLU → fc 10. Trained with IBP (interval bound
propagation through the verifier's own Box domain) on the 5,000 shipped MNIST training
images, ε ramped 0 → EPS_TRAIN, κ (weight of the clean loss) 1 → 0.5.

Then writes `models/properties/mnist_<i>_eps<ε>.vnnlib` L∞ robustness properties on the
first MNIST test images. Run: `python models/train_mnist_small.py` (about a minute).
"""

from __future__ import annotations

import os
import tempfile
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

import verifier
from verifier.datasets import load_mnist
from verifier.domains import get_domain
from verifier.ir import topological_order

HERE = os.path.dirname(os.path.abspath(__file__))
MEAN, STD = 0.1307, 0.3081
EPS_TRAIN, EPOCHS, BATCH, SEED = 0.1, 12, 50, 0
PROPERTIES = [(i, eps) for i in range(5) for eps in (0.02, 0.05)] + [(5, 0.3)]


class Normalize(nn.Module):
    def forward(self, x):
        return (x - MEAN) / STD


def build() -> nn.Sequential:
    return nn.Sequential(
        Normalize(),
        nn.Conv2d(1, 16, 4, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 4, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 100), nn.ReLU(), nn.Linear(100, 10),
    )


def export(net: nn.Module, path: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, torch.zeros(1, 1, 28, 28), path, dynamo=False, input_names=["image"],
                          output_names=["logits"], dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})


def live_graph(net: nn.Sequential):
    """The verifier IR of ``net`` with its parameters bound to the live module tensors,
    so that bounds computed by the engine are differentiable in them."""
    with tempfile.TemporaryDirectory() as tmp:
        export(net, os.path.join(tmp, "net.onnx"))
        graph = verifier.load(os.path.join(tmp, "net.onnx")).graph
    layers = [m for m in net if isinstance(m, (nn.Conv2d, nn.Linear))]
    nodes = [n for n in topological_order(graph) if graph.nodes[n]["kind"] in ("conv", "linear")]
    for node_id, layer in zip(nodes, layers, strict=True):
        params = graph.nodes[node_id]["params"]
        params["weight"] = layer.weight if isinstance(layer, nn.Conv2d) else layer.weight.t()
        params["bias"] = layer.bias
    return graph


def margin_matrix(labels: torch.Tensor) -> torch.Tensor:
    """Rows ``e_y − e_j`` for all ``j`` (the row ``j = y`` is zero)."""
    eye = torch.eye(10)
    return eye[labels].unsqueeze(1) - eye.unsqueeze(0)


def main() -> None:
    torch.manual_seed(SEED)
    x_train, y_train = load_mnist("train")
    x_test, y_test = load_mnist("test")
    net = build()
    graph = live_graph(net)
    box = get_domain("box")
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    steps_per_epoch = len(x_train) // BATCH
    total = EPOCHS * steps_per_epoch
    step = 0
    for epoch in range(EPOCHS):
        perm = torch.randperm(len(x_train))
        for i in range(steps_per_epoch):
            idx = perm[i * BATCH : (i + 1) * BATCH]
            x, y = x_train[idx], y_train[idx]
            ramp = min(1.0, step / (0.6 * total))
            eps, kappa = EPS_TRAIN * ramp, 1.0 - 0.5 * ramp
            logits = net(x)
            lower = (x - eps).clamp(0, 1).unsqueeze(1)
            upper = (x + eps).clamp(0, 1).unsqueeze(1)
            lb, _ = box.bound(graph, lower, upper, margin_matrix(y))
            robust = F.cross_entropy(-lb, y)  # −lb: worst-case logits relative to the label
            loss = kappa * F.cross_entropy(logits, y) + (1 - kappa) * robust
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
        with torch.no_grad():
            xt, yt = x_test[:500], y_test[:500]
            clean = (net(xt).argmax(1) == yt).float().mean().item()
            lb, _ = box.bound(graph, (xt - 0.05).clamp(0, 1).unsqueeze(1), (xt + 0.05).clamp(0, 1).unsqueeze(1),
                              margin_matrix(yt))
            lb[torch.arange(len(yt)), yt] = float("inf")
            certified = (lb.min(1).values > 0).float().mean().item()
        print(f"epoch {epoch + 1}/{EPOCHS}: eps {eps:.3f} clean {clean:.3f} IBP-certified@0.05 {certified:.3f}")

    net.eval()
    export(net, os.path.join(HERE, "mnist_small.onnx"))
    write_properties(x_test, y_test)


def write_properties(x_test: torch.Tensor, y_test: torch.Tensor) -> None:
    """VNN-LIB L∞ robustness properties (VNN-COMP layout) on the first test images."""
    out = os.path.join(HERE, "properties")
    os.makedirs(out, exist_ok=True)
    for index, eps in PROPERTIES:
        image, label = x_test[index].reshape(-1).double(), int(y_test[index])
        lines = [f"; MNIST test image {index}, label {label}, L-infinity eps={eps}, pixels in [0, 1]", ""]
        lines += [f"(declare-const X_{i} Real)" for i in range(784)] + [""]
        lines += [f"(declare-const Y_{j} Real)" for j in range(10)] + [""]
        for i, v in enumerate(image.tolist()):
            lines.append(f"(assert (<= X_{i} {min(1.0, v + eps)!r}))")
            lines.append(f"(assert (>= X_{i} {max(0.0, v - eps)!r}))")
        lines += ["", "; unsafe if some other class scores at least as high as the label", "(assert (or"]
        lines += [f"    (and (>= Y_{j} Y_{label}))" for j in range(10) if j != label]
        lines += ["))", ""]
        with open(os.path.join(out, f"mnist_{index}_eps{eps}.vnnlib"), "w") as fh:
            fh.write("\n".join(lines))


if __name__ == "__main__":
    main()
