"""Pooling: ``maxpool``, ``avgpool`` and ``global_avgpool``."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import Node, forward_op, linear_part
from .spatial import fold_leading, pad_spatial

_MAX = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_AVG = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


def _all_pads(node: Node) -> list[int]:
    """Explicit pads followed by the extra end padding that ceil mode needs."""
    a = node["attrs"]
    n = len(a["kernel"])
    return list(a["pads"][:n]) + [e + x for e, x in zip(a["pads"][n:], a["ceil_extra"])]


@forward_op("maxpool")
def maxpool(node: Node, x: torch.Tensor) -> torch.Tensor:
    """``y = max`` over each (dilated) window of ``x`` padded with −∞."""
    a = node["attrs"]
    spatial = len(a["kernel"])
    pool = _MAX[spatial]
    pads = _all_pads(node)

    def run(t: torch.Tensor) -> torch.Tensor:
        t = pad_spatial(t, pads, float("-inf"))
        return pool(t, a["kernel"], a["strides"], 0, a["dilations"])

    return fold_leading(x, spatial, run)


def _window_sum(node: Node, x: torch.Tensor, pads: list[int], pad_value: float = 0.0) -> torch.Tensor:
    a = node["attrs"]
    spatial = len(a["kernel"])
    pool = _AVG[spatial]
    volume = 1
    for k in a["kernel"]:
        volume *= k

    def run(t: torch.Tensor) -> torch.Tensor:
        t = pad_spatial(t, pads, pad_value)
        return pool(t, a["kernel"], a["strides"], 0) * volume

    return fold_leading(x, spatial, run)


def avgpool_divisor(node: Node, like: torch.Tensor) -> torch.Tensor:
    """Per-window element count: the window volume, or (``count_include_pad=0``) only the
    elements inside the input; the ceil-mode overhang is never counted."""
    a = node["attrs"]
    spatial = len(a["kernel"])
    n = spatial
    ones = torch.ones((1, 1, *like.shape[like.dim() - spatial :]), dtype=like.dtype, device=like.device)
    if a["count_include_pad"]:
        ones = pad_spatial(ones, list(a["pads"]), 1.0)
        pads = [0] * n + list(a["ceil_extra"])
    else:
        pads = _all_pads(node)
    return _window_sum(node, ones, pads)[0, 0]


@linear_part("avgpool")
def avgpool_map(node: Node, x: torch.Tensor, absolute_: bool = False) -> torch.Tensor:
    """Window mean; all weights are non-negative, so ``absolute_`` changes nothing."""
    return _window_sum(node, x, _all_pads(node)) / avgpool_divisor(node, x)


@forward_op("avgpool")
def avgpool(node: Node, x: torch.Tensor) -> torch.Tensor:
    """ONNX AveragePool (explicit pads, ceil mode, ``count_include_pad``)."""
    return avgpool_map(node, x)


@linear_part("global_avgpool")
def global_avgpool_map(node: Node, x: torch.Tensor, absolute_: bool = False) -> torch.Tensor:
    """Mean over every axis after the channel axis, kept with size 1."""
    dims = tuple(range(3, x.dim()))  # x is (B, N, C, *spatial)
    return x.mean(dim=dims, keepdim=True)


@forward_op("global_avgpool")
def global_avgpool(node: Node, x: torch.Tensor) -> torch.Tensor:
    """ONNX GlobalAveragePool."""
    return global_avgpool_map(node, x)
