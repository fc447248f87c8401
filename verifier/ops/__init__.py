"""Concrete semantics of every IR op kind, in torch, in one place.

Conventions (shared by every domain):

* An IR node holds ``kind``, ``params`` (torch tensors), ``attrs`` (plain Python values)
  and ``shape``: the per-sample shape as ONNX computes it with every batch dimension
  set to 1.
* Every value flowing through the IR carries one extra leading axis of our own, the
  batch axis: a node of shape ``S`` holds a tensor of shape ``(B, *S)``. Each op is the
  ONNX op applied independently to each of the ``B`` samples, so a model's batch
  dimension (written 0, 1 or a symbol) never needs to be guessed.

``FORWARD[kind](node, *inputs)`` evaluates a node. Linear ops also register
``LINEAR_PART[kind](node, x, absolute)``: the map without its bias, with ``|W|`` in
place of ``W`` when ``absolute`` is true (what interval arithmetic needs).
"""

from __future__ import annotations

from typing import Callable

import torch

Node = dict
ForwardFn = Callable[..., torch.Tensor]

FORWARD: dict[str, ForwardFn] = {}
LINEAR_PART: dict[str, Callable[[Node, torch.Tensor, bool], torch.Tensor]] = {}


def derived(node: Node, name: str, label: str, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``fn(params[name])``, cached on the node under ``label`` while the parameter is a
    constant (no grad, unchanged version); recomputed, differentiably, when trainable."""
    param = node["params"][name]
    if param.requires_grad:
        return fn(param)
    cache = node.setdefault("_derived_cache", {})
    hit = cache.get((name, label))  # (the parameter itself, its version, fn(param))
    if hit is None or hit[0] is not param or hit[1] != param._version:
        hit = cache[(name, label)] = (param, param._version, fn(param))
    return hit[2]


def absolute(node: Node, name: str = "weight") -> torch.Tensor:
    """``|params[name]|`` (cached, see :func:`derived`)."""
    return derived(node, name, "abs", torch.abs)


def forward_op(kind: str):
    """Register the concrete evaluation of op ``kind``."""

    def register(fn: ForwardFn) -> ForwardFn:
        FORWARD[kind] = fn
        return fn

    return register


def linear_part(kind: str):
    """Register the bias-free (optionally absolute-valued) map of a linear op ``kind``."""

    def register(fn):
        LINEAR_PART[kind] = fn
        return fn

    return register


from . import activation, conv, linear, pool, shape  # noqa: E402,F401  (fill the registries)

__all__ = ["FORWARD", "LINEAR_PART", "absolute", "derived", "forward_op", "linear_part"]
