"""Ops that only move, select or pad entries: ``reshape``, ``transpose``, ``concat``,
``slice`` and ``pad``. Each is monotone in every input entry."""

from __future__ import annotations

import torch

from . import Node, forward_op
from .spatial import torch_pad_order


@forward_op("reshape", affine=True, monotone=True)
def reshape(node: Node, x: torch.Tensor) -> torch.Tensor:
    """Row-major reshape of each sample to ``node['shape']`` (Flatten, Reshape, Squeeze,
    Unsqueeze all become this)."""
    return x.reshape(x.shape[0], *node["shape"])


@forward_op("transpose", affine=True, monotone=True)
def transpose(node: Node, x: torch.Tensor) -> torch.Tensor:
    """Permute the per-sample axes by ``perm``."""
    return x.permute(0, *[p + 1 for p in node["attrs"]["perm"]])


@forward_op("concat", affine=True, monotone=True)
def concat(node: Node, *xs: torch.Tensor) -> torch.Tensor:
    """Join the inputs along per-sample ``axis``."""
    return torch.cat(xs, dim=node["attrs"]["axis"] + 1)


@forward_op("slice", affine=True, monotone=True)
def slice_(node: Node, x: torch.Tensor) -> torch.Tensor:
    """Select ``indices[axis]`` (explicit index lists, any step sign) along each axis."""
    for axis, index in node["attrs"]["indices"].items():
        x = x.index_select(axis + 1, torch.as_tensor(index, device=x.device, dtype=torch.long))
    return x


@forward_op("pad", affine=True, monotone=True)
def pad(node: Node, x: torch.Tensor) -> torch.Tensor:
    """Constant padding (negative pads crop) of the per-sample axes."""
    a = node["attrs"]
    return torch.nn.functional.pad(x, torch_pad_order(a["pads"]), value=a["value"])
