"""Falsification: random sampling and PGD inside an input box, against a region's
unsafe set, with every hit re-checked by onnxruntime before it counts."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .api import Model
from .deadline import Deadline
from .ir.fidelity import run_onnxruntime
from .spec.model import InputRegion


@dataclass
class Counterexample:
    """An input (flattened, as onnxruntime consumed it) and onnxruntime's output."""

    x: np.ndarray
    y: np.ndarray
    region_index: int


def _inside_box(x: np.ndarray, lower: np.ndarray, upper: np.ndarray, dtype) -> np.ndarray:
    """Round ``x`` to ``dtype`` and nudge any entry that rounding pushed outside ``[lower, upper]``
    back inside (one ulp at a time)."""
    xr = x.astype(dtype)
    for _ in range(4):
        below, above = xr.astype(np.float64) < lower, xr.astype(np.float64) > upper
        if not (below.any() or above.any()):
            break
        xr = np.where(below, np.nextafter(xr, dtype(np.inf)), xr)
        xr = np.where(above, np.nextafter(xr, dtype(-np.inf)), xr)
    return xr


def confirm(model: Model, region: InputRegion, x: torch.Tensor, region_index: int = 0) -> Counterexample | None:
    """Re-evaluate candidate inputs ``x`` ``(B, n)`` with onnxruntime in the model's own
    precision; return the first that lies in the box and whose output is unsafe."""
    dtype = np.float64 if model.graph.graph["model_dtype"] == torch.float64 else np.float32
    lower, upper = region.lower.numpy(), region.upper.numpy()
    for row in x.detach().cpu().double().numpy():
        xr = _inside_box(np.clip(row, lower, upper), lower, upper, dtype)
        xd = xr.astype(np.float64)
        if np.any(xd < lower) or np.any(xd > upper):
            continue
        y = run_onnxruntime(model.graph, xr.reshape(1, *model.input_shape)).reshape(-1)
        if float(region.violation(torch.as_tensor(y.astype(np.float64))[None])[0]) <= 0.0:
            return Counterexample(xr, y, region_index)
    return None


def confirm_candidates(model: Model, region: InputRegion, x: torch.Tensor, region_index: int = 0,
                       limit: int = 8) -> Counterexample | None:
    """Evaluate candidate inputs ``x`` ``(B, n)`` and :func:`confirm` (at most ``limit`` of)
    those whose output is unsafe — the check branch-and-bound runs on box centres and
    relaxation minimisers."""
    with torch.no_grad():
        violation = region.violation(model(x.to(model.graph.graph["model_dtype"])).double())
    unsafe = violation <= 0
    return confirm(model, region, x[unsafe][:limit], region_index) if bool(unsafe.any()) else None


def attack_region(model: Model, region: InputRegion, deadline: Deadline, region_index: int = 0,
                  samples: int = 512, restarts: int = 16, steps: int = 60, seed: int = 0,
                  device: str | torch.device = "cpu") -> Counterexample | None:
    """Search the box for an input whose output is unsafe.

    Minimises the region's violation ``v(y) = min_d max_i (A_di y − b_di)`` (``v ≤ 0`` means
    unsafe): first over ``samples`` uniform points (plus the box centre), then by
    projected sign-gradient descent from the ``restarts`` best points, step size decaying
    from a quarter of the box width. Candidates with ``v ≤ 0`` are confirmed with
    onnxruntime.
    """
    gen = torch.Generator().manual_seed(seed)
    dtype = model.graph.graph["model_dtype"]
    lower = region.lower.to(device=device, dtype=dtype)
    upper = region.upper.to(device=device, dtype=dtype)
    width = upper - lower
    points = lower + width * torch.rand((samples, lower.numel()), generator=gen, dtype=dtype).to(device)
    points = torch.cat([((lower + upper) / 2)[None], points])

    def violation(x: torch.Tensor) -> torch.Tensor:
        return region.violation(model(x).double())

    with torch.no_grad():
        v = violation(points)
    order = torch.argsort(v)
    hit = confirm(model, region, points[order[: min(8, int((v <= 0).sum()))]], region_index) if bool((v <= 0).any()) else None
    if hit is not None or deadline.expired():
        return hit

    x = points[order[:restarts]].clone()
    best_x, best_v = x.clone(), v[order[:restarts]].clone()
    for step in range(steps):
        if deadline.expired():
            break
        x.requires_grad_(True)
        vx = violation(x)
        grad, = torch.autograd.grad(vx.sum(), x)
        with torch.no_grad():
            improved = vx < best_v
            best_x[improved], best_v[improved] = x.detach()[improved], vx.detach()[improved]
            if bool((vx <= 0).any()):
                hit = confirm(model, region, x.detach()[vx <= 0], region_index)
                if hit is not None:
                    return hit
            size = 0.25 * width * (1 + np.cos(np.pi * step / steps)) / 2
            x = torch.max(torch.min(x.detach() - size * grad.sign(), upper), lower)
    with torch.no_grad():
        v = violation(x)
    if bool((v <= 0).any()):
        return confirm(model, region, x[v <= 0], region_index)
    return None
