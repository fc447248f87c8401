"""Elementwise activations: ``relu``, ``leaky_relu``, ``sigmoid``, ``tanh``."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import Node, forward_op


@forward_op("relu")
def relu(node: Node, x: torch.Tensor) -> torch.Tensor:
    """``y = max(x, 0)``."""
    return torch.relu(x)


@forward_op("leaky_relu")
def leaky_relu(node: Node, x: torch.Tensor) -> torch.Tensor:
    """``y = x`` for ``x ≥ 0``, ``α·x`` otherwise."""
    return F.leaky_relu(x, node["attrs"]["alpha"])


@forward_op("sigmoid")
def sigmoid(node: Node, x: torch.Tensor) -> torch.Tensor:
    """``y = 1 / (1 + e^{−x})``."""
    return torch.sigmoid(x)


@forward_op("tanh")
def tanh(node: Node, x: torch.Tensor) -> torch.Tensor:
    """``y = tanh(x)``."""
    return torch.tanh(x)
