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

Each op declares its properties where it registers its forward function, and the
domains read them from these sets, never from lists of their own: :data:`AFFINE_KINDS`
(``y = Σᵢ Lᵢ xᵢ + f₀``; every linear-part op is one), :data:`MONOTONE_KINDS` (non-decreasing
in every input entry, so IBP maps endpoints). Elementwise nonlinear ops register a
relaxation entry (:mod:`verifier.ops.relaxation`).
"""

from __future__ import annotations

from typing import Callable

import torch

Node = dict
ForwardFn = Callable[..., torch.Tensor]

FORWARD: dict[str, ForwardFn] = {}
LINEAR_PART: dict[str, Callable[[Node, torch.Tensor, bool], torch.Tensor]] = {}
AFFINE_KINDS: set[str] = set()
MONOTONE_KINDS: set[str] = set()


CACHE = "_constant_cache"  # node attribute holding values derived from constant parameters


def cached_while_constant(node: Node, key, params: tuple, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
    """``compute()``, cached on ``node`` under ``key`` while every tensor of ``params`` is a
    constant: no grad, and the very same tensor objects at the same versions as when the
    entry was made (the entry keeps them, so an in-place update or a new tensor that
    reuses a freed one's ``id`` never gets a stale value); recomputed, differentiably,
    whenever one is trainable."""
    if any(p.requires_grad for p in params):
        return compute()
    cache = node.setdefault(CACHE, {})
    versions = tuple(p._version for p in params)
    hit = cache.get(key)
    if hit is None or hit[1] != versions or any(a is not b for a, b in zip(hit[0], params)):
        hit = cache[key] = (params, versions, compute())
    return hit[2]


def derived(node: Node, name: str, label: str, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``fn(params[name])``, cached under ``label`` (see :func:`cached_while_constant`)."""
    param = node["params"][name]
    return cached_while_constant(node, ("derived", name, label), (param,), lambda: fn(param))


def absolute(node: Node, name: str = "weight") -> torch.Tensor:
    """``|params[name]|`` (cached, see :func:`derived`)."""
    return derived(node, name, "abs", torch.abs)


def forward_op(kind: str, *, affine: bool = False, monotone: bool = False):
    """Register the concrete evaluation of op ``kind``; ``affine``/``monotone`` declare it
    affine in its inputs / non-decreasing in every input entry."""

    def register(fn: ForwardFn) -> ForwardFn:
        FORWARD[kind] = fn
        if affine:
            AFFINE_KINDS.add(kind)
        if monotone:
            MONOTONE_KINDS.add(kind)
        return fn

    return register


def linear_part(kind: str):
    """Register the bias-free (optionally absolute-valued) map of a linear op ``kind``."""

    def register(fn):
        LINEAR_PART[kind] = fn
        AFFINE_KINDS.add(kind)
        return fn

    return register


from . import bilinear, conv, index, leaky_relu, linear, pool, relu, s_shaped, shape  # noqa: E402,F401  (fill the registries)
from . import curvature, elu, exp_log, gaussian, kinked, power, softmax, steps, trig  # noqa: E402,F401  (elementwise ops)

__all__ = ["AFFINE_KINDS", "FORWARD", "LINEAR_PART", "MONOTONE_KINDS", "absolute", "derived", "forward_op",
           "linear_part"]
