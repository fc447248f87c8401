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


SUBPIXEL_MAX_CHANNELS = 4  # transposed 2-D convolutions onto this few channels run as sub-pixel convolutions


def _subpixel_weight(weight: torch.Tensor, stride: tuple[int, int]) -> torch.Tensor:
    """``W`` ``(C_o, C_i, k₀, k₁)`` as the weight ``(C_i·s₀·s₁, C_o, q₀, q₁)`` of the ordinary
    convolution whose output, pixel-shuffled, is the stride-``s`` transposed convolution
    with ``W`` (``q = ⌈k/s⌉`` taps per output phase, flipped; Shi et al. 2016, "Real-Time
    Single Image and Video Super-Resolution", §2.2)."""
    co, ci, k0, k1 = weight.shape
    (s0, s1), q0, q1 = stride, -(-k0 // stride[0]), -(-k1 // stride[1])
    padded = F.pad(weight, (0, q1 * s1 - k1, 0, q0 * s0 - k0))
    taps = padded.reshape(co, ci, q0, s0, q1, s1).permute(1, 3, 5, 0, 2, 4).flip(-1, -2)
    return taps.reshape(ci * s0 * s1, co, q0, q1)


def conv2d_transpose_map(lam: torch.Tensor, weight: torch.Tensor, stride: tuple[int, int],
                         padding: tuple[int, int], dilation: tuple[int, int], groups: int,
                         in_hw: tuple[int, int]) -> torch.Tensor:
    """``Wᵀ`` applied to ``lam`` ``(N, C_o, H_o, W_o)``: the adjoint of the 2-D convolution
    with ``weight`` ``(C_o, C_i/g, k₀, k₁)`` whose input is ``(C_i, *in_hw)``; returns
    ``(N, C_i, *in_hw)``. Onto few channels (:data:`SUBPIXEL_MAX_CHANNELS`) as one ordinary
    convolution and a pixel shuffle, else as a channels-last ``conv_transpose2d`` (oneDNN's
    kernels: several times faster on many rows than ``convolution_backward``)."""
    ci = weight.shape[1] * groups
    extra = [size - ((o - 1) * s - 2 * p + d * (k - 1) + 1)  # output_padding that recovers the input size
             for size, o, s, p, d, k in zip(in_hw, lam.shape[-2:], stride, padding, dilation, weight.shape[-2:])]
    if not all(0 <= e < max(s, d) for e, s, d in zip(extra, stride, dilation)):
        return torch.nn.grad.conv2d_input((lam.shape[0], ci, *in_hw), weight, lam, stride, padding, dilation, groups)
    if groups == 1 and tuple(dilation) == (1, 1) and ci <= SUBPIXEL_MAX_CHANNELS:
        sub = _subpixel_weight(weight, stride)
        q0, q1 = sub.shape[-2:]
        y = F.pixel_shuffle(F.conv2d(lam, sub, None, 1, (q0 - 1, q1 - 1)), stride[0]) if stride[0] == stride[1] \
            else None
        if y is not None:  # cropped by the padding; input rows no output reads (output_padding) get 0
            y = y[..., padding[0]:padding[0] + in_hw[0], padding[1]:padding[1] + in_hw[1]]
            return F.pad(y, (0, in_hw[1] - y.shape[-1], 0, in_hw[0] - y.shape[-2]))
    return F.conv_transpose2d(lam.contiguous(memory_format=torch.channels_last), weight, None, stride, padding,
                              extra, groups, dilation).contiguous()  # one copy back, not one per later reshape


@forward_op("conv_transpose")
def conv_transpose(node: Node, x: torch.Tensor) -> torch.Tensor:
    """ONNX ConvTranspose: ``y = Wᵀ ⋆ x`` (cropped by the pads) ``+ b``."""
    y = conv_transpose_map(node, x)
    bias = node["params"].get("bias")
    return y if bias is None else y + _bias_view(bias, node["params"]["weight"].dim() - 2)
