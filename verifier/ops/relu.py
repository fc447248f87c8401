"""ReLU ``y = max(x, 0)``: LeakyReLU with slope 0 (:mod:`verifier.ops.leaky_relu`), and the
op whose crossing entries the MILP encodes with one binary each (Tjeng et al. 2019, eq. 6;
the encoder lives in :mod:`verifier.complete.milp_encoders`, beside the step functions')."""

from __future__ import annotations

import torch

from . import Node, forward_op
from .leaky_relu import LeakyReluRelaxation
from .relaxation import relaxation


@forward_op("relu", monotone=True)
def relu(node: Node, x: torch.Tensor) -> torch.Tensor:
    """``y = max(x, 0)``."""
    return torch.relu(x)


@relaxation("relu")
class ReluRelaxation(LeakyReluRelaxation):
    """Dead (``u ≤ 0``) → 0; active (``l ≥ 0``) → ``x``; crossing → the chord
    ``u(x − l)/(u − l)`` above, ``αx`` below (``α ∈ [0, 1]``)."""

    piecewise_linear = True

    def slope(self, node: Node) -> float:
        return 0.0

    def interval(self, node, l, u):
        return torch.relu(l), torch.relu(u)
