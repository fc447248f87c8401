"""Helpers shared by convolution and pooling: ONNX padding rules and leading-axis folding."""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F


def fold_leading(x: torch.Tensor, spatial: int, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Apply ``fn`` (which expects ``(N, C, *spatial)``) to batched ``x`` of shape
    ``(B, …, C, *spatial)`` by folding every axis before the channel axis into N."""
    lead = x.shape[: x.dim() - spatial - 1]
    y = fn(x.reshape(-1, *x.shape[x.dim() - spatial - 1 :]))
    return y.reshape(*lead, *y.shape[1:])


def torch_pad_order(pads: Sequence[int]) -> list[int]:
    """ONNX pads ``[b1, …, bn, e1, …, en]`` → ``F.pad`` order ``[bn, en, …, b1, e1]``."""
    n = len(pads) // 2
    out: list[int] = []
    for axis in reversed(range(n)):
        out += [int(pads[axis]), int(pads[axis + n])]
    return out


def resolve_pads(
    auto_pad: str,
    pads: Sequence[int] | None,
    in_size: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
) -> list[int]:
    """Explicit ONNX pads for a convolution or pooling window.

    ``SAME_UPPER``/``SAME_LOWER``: output size ``ceil(in/stride)``, total padding
    ``max(0, (out−1)·s + (k−1)·d + 1 − in)``, the odd unit at the end (UPPER) or start (LOWER).
    """
    n = len(kernel)
    if auto_pad in ("", "NOTSET"):
        return [int(p) for p in pads] if pads else [0] * (2 * n)
    if auto_pad == "VALID":
        return [0] * (2 * n)
    begin, end = [], []
    for i in range(n):
        out = math.ceil(in_size[i] / strides[i])
        total = max(0, (out - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - in_size[i])
        small, large = total // 2, total - total // 2
        begin.append(small if auto_pad == "SAME_UPPER" else large)
        end.append(large if auto_pad == "SAME_UPPER" else small)
    return begin + end


def ceil_extra_pads(
    in_size: Sequence[int],
    pads: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
) -> list[int]:
    """Extra end padding so that floor-mode pooling yields the ceil-mode output size.

    ceil mode: ``out = ceil((in + b + e − ((k−1)d+1)) / s) + 1``, dropping the last window
    when it would start past the input and its begin padding (the rule shared by
    onnxruntime and PyTorch).
    """
    n = len(kernel)
    extra = []
    for i in range(n):
        span = in_size[i] + pads[i] + pads[i + n]
        eff = (kernel[i] - 1) * dilations[i] + 1
        out = math.ceil((span - eff) / strides[i]) + 1
        if (out - 1) * strides[i] >= in_size[i] + pads[i]:
            out -= 1
        extra.append(max(0, (out - 1) * strides[i] + eff - span))
    return extra


def pad_spatial(x: torch.Tensor, begin_end: Sequence[int], value: float) -> torch.Tensor:
    """Constant-pad the trailing spatial axes of ``x`` with ONNX-ordered pads."""
    if not any(begin_end):
        return x
    return F.pad(x, torch_pad_order(begin_end), value=value)
