"""Small ReLU networks and one-row output regions for the distributed branch-and-bound
tests (``tests/test_cluster_ray.py``)."""

from __future__ import annotations

from pathlib import Path


def gemm_relu_net(path: Path, layers: list[tuple[list, list]]) -> Path:
    """An ONNX net ``x → (Gemm → Relu)* → Gemm`` with the given ``(W, b)`` layers."""
    import onnx

    from onnx_builders import gemm_relu_model

    onnx.save(gemm_relu_model(layers), path)
    return path


def one_row_region(lower, upper, a: list[float], b: float, lower_strict=None):
    """Unsafe ``a·y ≤ b`` over the box."""
    import torch

    from verifier.spec.model import Conjunction, InputRegion

    return InputRegion(torch.tensor(lower, dtype=torch.float64), torch.tensor(upper, dtype=torch.float64),
                       [Conjunction(torch.tensor([a], dtype=torch.float64), torch.tensor([b], dtype=torch.float64))],
                       None if lower_strict is None else torch.tensor(lower_strict))


def mlp_with_top(tmp_path_factory, seed: int, widths: tuple):
    """A random ReLU MLP of ``widths`` (one output) on ``[-1, 1]^n`` and its largest output
    over 20,000 random points."""
    import numpy as np
    import torch

    import verifier
    from test_domain_ordering import relu_mlp

    path = tmp_path_factory.mktemp("relu") / "m.onnx"
    relu_mlp(path, np.random.default_rng(seed), widths)
    model = verifier.load(path)
    points = torch.rand(20000, widths[0], dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    return model, float(model(points)[:, 0].max())


def above(top: float, offset: float, n: int):
    """The region "y_0 ≥ top + offset" (unsafe) over ``[-1, 1]^n``."""
    return one_row_region([-1.0] * n, [1.0] * n, [-1.0], -(top + offset))
