"""Convolutions (``conv``) and transposed convolutions (``conv_transpose``), 1-D to 3-D."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import Node, absolute, forward_op, linear_part
from .spatial import fold_leading, pad_spatial

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def _bias_view(bias: torch.Tensor, spatial: int) -> torch.Tensor:
    return bias.reshape(-1, *([1] * spatial))


@linear_part("conv")
def conv_map(node: Node, x: torch.Tensor, absolute_: bool = False, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-correlation ``y[o] = Σ_c W[o, c] ⋆ x_pad[c]`` (+ ``bias``); ``|W|`` when ``absolute_``."""
    a = node["attrs"]
    weight = absolute(node) if absolute_ else node["params"]["weight"]
    spatial = weight.dim() - 2
    conv = _CONV[spatial]
    pads = a["pads"]
    symmetric = pads[:spatial] == pads[spatial:]

    def run(t: torch.Tensor) -> torch.Tensor:
        if symmetric:
            return conv(t, weight, bias, a["strides"], pads[:spatial], a["dilations"], a["group"])
        t = pad_spatial(t, pads, 0.0)
        return conv(t, weight, bias, a["strides"], 0, a["dilations"], a["group"])

    return fold_leading(x, spatial, run)


@forward_op("conv")
def conv(node: Node, x: torch.Tensor) -> torch.Tensor:
    """ONNX Conv: ``y = W ⋆ pad(x) + b``."""
    return conv_map(node, x, bias=node["params"].get("bias"))


@linear_part("conv_transpose")
def conv_transpose_map(node: Node, x: torch.Tensor, absolute_: bool = False) -> torch.Tensor:
    """ONNX ConvTranspose without bias: the full transposed convolution, then the pads
    cropped from each end (``out = s(in−1) + op + (k−1)d + 1 − b − e``)."""
    a = node["attrs"]
    weight = absolute(node) if absolute_ else node["params"]["weight"]
    spatial = weight.dim() - 2
    conv_t = _CONV_T[spatial]
    pads = a["pads"]

    def run(t: torch.Tensor) -> torch.Tensor:
        y = conv_t(t, weight, None, a["strides"], 0, a["output_padding"], a["group"], a["dilations"])
        index = [slice(None), slice(None)]
        for i in range(spatial):
            index.append(slice(pads[i], y.shape[2 + i] - pads[i + spatial]))
        return y[tuple(index)]

    return fold_leading(x, spatial, run)


@forward_op("conv_transpose")
def conv_transpose(node: Node, x: torch.Tensor) -> torch.Tensor:
    """ONNX ConvTranspose: ``y = Wᵀ ⋆ x`` (cropped by the pads) ``+ b``."""
    y = conv_transpose_map(node, x)
    bias = node["params"].get("bias")
    return y if bias is None else y + _bias_view(bias, node["params"]["weight"].dim() - 2)
