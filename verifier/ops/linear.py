"""Affine ops: ``linear`` (matrix products), ``scale_shift`` (elementwise affine),
``add`` (sum of two variable tensors) and ``constant``."""

from __future__ import annotations

import torch

import torch.nn.functional as F

from . import Node, absolute, forward_op, linear_part


def _matmul(node: Node, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``x @ W`` (side ``right``) or ``W @ x`` (side ``left``), per sample.

    A per-sample vector ``x`` of shape ``(k,)`` under ``W @ x`` is the matrix-vector
    product, i.e. ``x @ W.T`` on the batched tensor.
    """
    if node["attrs"]["side"] == "right":
        return x @ weight
    if x.dim() == 2:
        return x @ weight.transpose(0, 1)
    return torch.matmul(weight, x)


@linear_part("linear")
def linear_map(node: Node, x: torch.Tensor, absolute_: bool = False) -> torch.Tensor:
    """``x ↦ x W`` or ``x ↦ W x`` without bias; ``|W|`` when ``absolute_``."""
    weight = absolute(node) if absolute_ else node["params"]["weight"]
    return _matmul(node, x, weight)


@forward_op("linear")
def linear(node: Node, x: torch.Tensor) -> torch.Tensor:
    """``y = x W + b`` (side ``right``) or ``y = W x + b`` (side ``left``)."""
    bias = node["params"].get("bias")
    weight = node["params"]["weight"]
    if node["attrs"]["side"] == "right" and (bias is None or tuple(bias.shape) == (weight.shape[1],)):
        return F.linear(x, weight.t(), bias)  # one fused kernel
    y = _matmul(node, x, weight)
    return y if bias is None else y + bias


@linear_part("scale_shift")
def scale_map(node: Node, x: torch.Tensor, absolute_: bool = False) -> torch.Tensor:
    """``x ↦ a ⊙ x`` (broadcast); ``|a| ⊙ x`` when ``absolute_``."""
    return x * (absolute(node, "scale") if absolute_ else node["params"]["scale"])


@forward_op("scale_shift")
def scale_shift(node: Node, x: torch.Tensor) -> torch.Tensor:
    """``y = a ⊙ x + b`` with constant ``a`` and ``b`` broadcast against the sample shape."""
    return x * node["params"]["scale"] + node["params"]["shift"]


def align(x: torch.Tensor, ndim: int) -> torch.Tensor:
    """View batched ``x`` (B, *S) as (B, 1, …, 1, *S) with ``ndim`` per-sample axes.

    This reproduces ONNX's right-aligned broadcasting while keeping our batch axis first.
    """
    missing = ndim - (x.dim() - 1)
    if missing <= 0:
        return x
    return x.reshape(x.shape[0], *([1] * missing), *x.shape[1:])


@forward_op("add", affine=True, monotone=True)
def add(node: Node, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``y = a + b`` for two variable tensors, with ONNX broadcasting per sample."""
    ndim = len(node["shape"])
    return align(a, ndim) + align(b, ndim)


@forward_op("constant")
def constant(node: Node, batch: int = 1) -> torch.Tensor:
    """A constant tensor repeated along the batch axis."""
    value = node["params"]["value"]
    return value.unsqueeze(0).expand(batch, *value.shape)
