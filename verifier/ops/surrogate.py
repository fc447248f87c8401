"""Surrogate gradients for gradient attacks (:mod:`verifier.attack`, input-split's descent).

Inside :func:`surrogate_gradients` some ops keep their exact values but pass another
function's gradient, where their own gives a gradient attack no direction:

* step functions (``sign``, ``floor``, ``ceil``, ``round``), whose gradient is 0 almost
  everywhere: the straight-through estimator (Bengio et al. 2013, "Estimating or
  Propagating Gradients Through Stochastic Neurons"), the identity's gradient (not Larq's
  ``ste_sign`` clipped to ``[−1, 1]``: its ``sign(sign(x) + 0.1)`` would meet 1.1 there and
  pass nothing);
* ``softmax`` at the model's output, which saturates (``1 − e^{−40}`` rounds to 1): the
  gradient of ``log softmax``, so a comparison ``p_i − p_j`` descends along the logit
  margin ``z_i − z_j`` (Carlini & Wagner 2017's loss on logits), and a threshold on one
  ``p_i`` along ``log p_i``, which moves it the same way. A softmax inside the network
  (attention) keeps its own gradient: there the surrogate's direction means nothing.

Values are unchanged bit for bit (``f(x) + (s − s)``), so every candidate is still
evaluated exactly, and confirmed by onnxruntime before it is reported.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Callable, Iterator

import networkx as nx
import torch

# None: off; else the ONNX labels of the output nodes whose surrogate applies (softmax)
_ACTIVE: contextvars.ContextVar[frozenset | None] = contextvars.ContextVar("surrogate_gradients", default=None)


@contextlib.contextmanager
def surrogate_gradients(graph: nx.DiGraph | None = None) -> Iterator[None]:
    """Turn the surrogate gradients of the module docstring on inside the block: the step
    functions' everywhere, softmax's where it is ``graph``'s output node (none without
    ``graph``)."""
    outputs: frozenset = frozenset()
    if graph is not None:
        node = graph.nodes[graph.graph["output"]]
        outputs = frozenset({node.get("source")}) if node["kind"] == "softmax" else frozenset()
    token = _ACTIVE.set(outputs)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def with_surrogate(values: torch.Tensor, x: torch.Tensor, surrogate: Callable[[torch.Tensor], torch.Tensor],
                   node: dict | None = None) -> torch.Tensor:
    """``values`` (an op's output on ``x``, same shape), with the gradient of
    ``surrogate(x)`` inside :func:`surrogate_gradients` when ``x`` needs one (and, with
    ``node``, only when it is an output that :func:`surrogate_gradients` named); ``values``
    unchanged otherwise."""
    active = _ACTIVE.get()
    if active is None or not x.requires_grad or (node is not None and node.get("source") not in active):
        return values
    s = surrogate(x)
    return values.detach() + (s - s.detach())


__all__ = ["surrogate_gradients", "with_surrogate"]
