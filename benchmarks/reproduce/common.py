"""Shared helpers of the seed-paper reproduction scripts (not part of the package).

Import this module before torch in a script: importing ``verifier`` first sets
``OMP_WAIT_POLICY=PASSIVE``, without which torch ops crawl on a loaded 2-core machine.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import csv  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import verifier  # noqa: E402  (before torch: see above)
import torch  # noqa: E402
from torch import nn  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
OUT = os.path.join(HERE, "out")
MNIST_MODEL = os.path.join(ROOT, "models", "mnist_small.onnx")
MEAN, STD = 0.1307, 0.3081  # MNIST normalisation, as inside models/mnist_small.onnx


class Normalize(nn.Module):
    def forward(self, x):
        return (x - MEAN) / STD


def export_onnx(net: nn.Module, input_shape: tuple[int, ...], path: str | None = None) -> str:
    """Export ``net`` (eval mode, float32) to ONNX with the TorchScript exporter; a
    temporary file when ``path`` is None. Returns the path."""
    if path is None:
        fd, path = tempfile.mkstemp(suffix=".onnx", prefix="reproduce_")
        os.close(fd)
    net = net.eval()
    torch.onnx.export(net, torch.zeros(1, *input_shape), path, input_names=["input"], output_names=["output"],
                      dynamo=False)
    return path


def load_torch_as_verifier(net: nn.Module, input_shape: tuple[int, ...]) -> verifier.Model:
    """``net`` exported to ONNX and imported (checked against onnxruntime)."""
    path = export_onnx(net, input_shape)
    try:
        return verifier.load(path)
    finally:
        os.remove(path)


def margin_matrix(labels: torch.Tensor, classes: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """``C`` of shape ``(B, classes-1, classes)`` with rows ``e_y − e_j`` for every ``j ≠ y``,
    and the targets ``j`` ``(B, classes-1)``."""
    eye = torch.eye(classes)
    rows, targets = [], []
    for y in labels.tolist():
        others = [j for j in range(classes) if j != y]
        rows.append(eye[y] - eye[others])
        targets.append(others)
    return torch.stack(rows), torch.tensor(targets)


def pgd_min_margins(forward, x: torch.Tensor, labels: torch.Tensor, eps: float, steps: int = 50,
                    restarts: int = 2, samples: int = 32, seed: int = 0, lo: float = 0.0, hi: float = 1.0) -> torch.Tensor:
    """Smallest margin ``f_y − f_j`` found for every wrong class ``j`` (targeted PGD on that
    margin, sign gradients with a cosine-decaying step from ε/2, ``restarts`` random starts
    plus the clean point, and ``samples`` uniform random points in the box). Returns
    ``(B, classes-1)``: the attack's upper estimate of the true minimum margin."""
    gen = torch.Generator().manual_seed(seed)
    lower, upper = (x - eps).clamp(lo, hi), (x + eps).clamp(lo, hi)
    C, _ = margin_matrix(labels)
    B, K = C.shape[:2]
    best = torch.full((B, K), float("inf"))
    with torch.no_grad():
        for _ in range(samples):
            z = lower + (upper - lower) * torch.rand(x.shape, generator=gen)
            best = torch.minimum(best, torch.einsum("bkc,bc->bk", C, forward(z)))
    # one PGD run per (image, target) pair: batch B*K
    Cf = C.reshape(B * K, -1)
    xl, xu = lower.repeat_interleave(K, 0), upper.repeat_interleave(K, 0)
    for r in range(restarts + 1):
        z = x.repeat_interleave(K, 0).clone() if r == 0 else xl + (xu - xl) * torch.rand(xl.shape, generator=gen)
        for step in range(steps):
            z.requires_grad_(True)
            m = (Cf * forward(z)).sum(1)
            grad, = torch.autograd.grad(m.sum(), z)
            with torch.no_grad():
                best = torch.minimum(best, m.detach().reshape(B, K))
                size = 0.5 * eps * (1 + torch.cos(torch.tensor(torch.pi * step / steps))) / 2 + 1e-3 * eps
                z = torch.max(torch.min(z.detach() - size * grad.sign(), xu), xl)
        with torch.no_grad():
            best = torch.minimum(best, (Cf * forward(z)).sum(1).reshape(B, K))
    return best


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (the optional ``[bench]`` extra)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str, dpi: int = 80, rect: tuple | None = None) -> None:
    """Lay out ``fig`` (inside ``rect`` when given), write it to ``path`` and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout(**({} if rect is None else {"rect": rect}))
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def write_csv(path: str, rows: list[dict]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def write_json(path: str, obj) -> None:
    with open(path, "w") as fh:
        json.dump(obj, fh, indent=1, default=float)


def environment() -> dict:
    return {"python": sys.version.split()[0], "torch": torch.__version__, "machine": platform.machine(),
            "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d %H:%M")}


def print_table(rows: list[dict], columns: list[str] | None = None) -> None:
    columns = columns or list(rows[0])
    def fmt(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)
    cells = [[fmt(r[c]) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.rjust(w) for c, w in zip(columns, widths)))
    for row in cells:
        print("  ".join(v.rjust(w) for v, w in zip(row, widths)))
