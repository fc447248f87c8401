"""Adjoints of the affine op kinds, used by the backward domains (CROWN, dual LP).

For an affine op ``y = L(x₁, …) + f₀`` (``f₀ = y`` at zero inputs), a linear form
``Λ·y`` on its output equals ``Σᵢ (Lᵢᵀ Λ)·xᵢ + Λ·f₀``. :func:`adjoint` returns the
``Lᵢᵀ Λ`` and :func:`offset` the constant ``f₀``. ``Λ`` carries two leading axes,
``(B, k, *shape)``: batch and spec row.

The transposes form a table, :data:`ADJOINTS`, one entry per op kind registered with
:func:`adjoint_op`: dense and convolution layers, reshapes, transposes and per-channel
scales have explicit ones; every other affine kind (:data:`~verifier.ops.AFFINE_KINDS`)
gets its transpose from autograd (a vector-Jacobian product at zero), so a new affine op
needs only its forward function.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from . import AFFINE_KINDS, FORWARD, Node, cached_while_constant
from .conv import conv2d_transpose_map
from .index import index_tensor

AdjointFn = Callable[[Node, torch.Tensor, list], "list[torch.Tensor] | None"]
ADJOINTS: dict[str, AdjointFn] = {}


def adjoint_op(kind: str):
    """Register an explicit transpose ``f(node, Λ, input_shapes) -> [L₁ᵀΛ, …]`` for ``kind``
    (``None`` falls back to autograd's)."""

    def register(fn: AdjointFn) -> AdjointFn:
        ADJOINTS[kind] = fn
        return fn

    return register


def offset(node: Node, input_shapes: list[tuple], like: torch.Tensor) -> torch.Tensor:
    """``f₀ = f(0, …, 0)``, shape ``(1, *output_shape)``, cached per device and dtype while
    the parameters are constants (:func:`cached_while_constant`)."""
    def zero_response():
        zeros = [torch.zeros((1, *s), dtype=like.dtype, device=like.device) for s in input_shapes]
        return FORWARD[node["kind"]](node, *zeros)

    return cached_while_constant(node, ("offset", like.device, like.dtype), tuple(node["params"].values()),
                                 zero_response)


def _fold(lam: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    return lam.reshape(lam.shape[0] * lam.shape[1], *lam.shape[2:]), (lam.shape[0], lam.shape[1])


def _unfold(t: torch.Tensor, bk: tuple[int, int]) -> torch.Tensor:
    return t.reshape(*bk, *t.shape[1:])


@adjoint_op("linear")
def _linear_adjoint(node: Node, lam: torch.Tensor, input_shapes: list[tuple]) -> list[torch.Tensor]:
    """``y = x W`` → ``Λ Wᵀ``; ``y = W x`` → ``Wᵀ Λ`` (``Λ Wᵀ``… for a per-sample vector)."""
    weight = node["params"]["weight"]
    if node["attrs"]["side"] == "right":
        return [lam @ weight.t()]
    if len(input_shapes[0]) == 1:
        return [lam @ weight]
    return [torch.matmul(weight.t(), lam)]


@adjoint_op("conv")
def _conv_adjoint(node: Node, lam: torch.Tensor, input_shapes: list[tuple]) -> list[torch.Tensor] | None:
    a = node["attrs"]
    weight = node["params"]["weight"]
    spatial = weight.dim() - 2
    pads = a["pads"]
    if spatial != 2 or pads[:spatial] != pads[spatial:]:
        return None
    flat, bk = _fold(lam)
    lead = flat.shape[1:-3]  # per-sample axes before (C, H, W), e.g. an ONNX batch axis of 1
    grad_out = flat.reshape(-1, *flat.shape[-3:])
    in_shape = input_shapes[0]
    out = conv2d_transpose_map(grad_out, weight, tuple(a["strides"]), tuple(pads[:spatial]), tuple(a["dilations"]),
                               a["group"], tuple(in_shape[-2:]))
    return [_unfold(out.reshape(flat.shape[0], *lead, *out.shape[1:]), bk)]


_CONV = {1: torch.nn.functional.conv1d, 2: torch.nn.functional.conv2d, 3: torch.nn.functional.conv3d}


@adjoint_op("conv_transpose")
def _conv_transpose_adjoint(node: Node, lam: torch.Tensor, input_shapes: list[tuple]) -> list[torch.Tensor] | None:
    """ONNX ConvTranspose (:func:`~verifier.ops.conv.conv_transpose_map`: the full transposed
    convolution with ``W`` ``(C_i, C_o/g, *k)``, then ``pads`` cropped) → its transpose: ``Λ``
    zero-padded back by the pads, then the ordinary convolution with the same ``W``, strides,
    dilations and groups (the transposed convolution is by definition the adjoint of that
    convolution; ``output_padding`` rows are the ones this convolution's floor division
    drops). ``None`` (autograd's transpose) where the result's size is not the input's.
    Autograd's form costs a forward pass on zeros and a backward kernel that runs ~10× slower
    than the convolution in float64 on the CPU."""
    a = node["attrs"]
    weight = node["params"]["weight"]
    spatial = weight.dim() - 2
    pads = a["pads"]
    flat, bk = _fold(lam)
    lead = flat.shape[1:-(spatial + 1)]
    grad_out = flat.reshape(-1, *flat.shape[-(spatial + 1):])
    widths = []
    for i in reversed(range(spatial)):  # F.pad lists the last axis first
        widths += [pads[i], pads[i + spatial]]
    if any(pads):
        grad_out = torch.nn.functional.pad(grad_out, widths)
    out = _CONV[spatial](grad_out, weight, None, a["strides"], 0, a["dilations"], a["group"])
    if tuple(out.shape[1:]) != tuple(input_shapes[0][len(lead):]):
        return None
    return [_unfold(out.reshape(flat.shape[0], *lead, *out.shape[1:]), bk)]


def _vjp_adjoint(node: Node, lam: torch.Tensor, input_shapes: list[tuple]) -> list[torch.Tensor]:
    """Autograd's vector-Jacobian product at zero (exact for an affine op); differentiable in
    ``Λ`` when ``Λ`` requires grad (α-CROWN)."""
    flat, bk = _fold(lam)
    with torch.enable_grad():
        zeros = [torch.zeros((flat.shape[0], *s), dtype=lam.dtype, device=lam.device, requires_grad=True)
                 for s in input_shapes]
        out = FORWARD[node["kind"]](node, *zeros)
        grads = torch.autograd.grad(out, zeros, grad_outputs=flat, create_graph=lam.requires_grad,
                                    allow_unused=True)
    return [_unfold(torch.zeros_like(z) if g is None else g, bk) for g, z in zip(grads, zeros)]


@adjoint_op("reshape")
def _reshape_adjoint(node: Node, lam: torch.Tensor, input_shapes: list[tuple]) -> list[torch.Tensor]:
    return [lam.reshape(*lam.shape[:2], *input_shapes[0])]


@adjoint_op("transpose")
def _transpose_adjoint(node: Node, lam: torch.Tensor, input_shapes: list[tuple]) -> list[torch.Tensor]:
    perm = node["attrs"]["perm"]
    inverse = [perm.index(i) for i in range(len(perm))]
    return [lam.permute(0, 1, *[p + 2 for p in inverse])]


@adjoint_op("scale_shift")
def _scale_shift_adjoint(node: Node, lam: torch.Tensor, input_shapes: list[tuple]) -> list[torch.Tensor]:
    """``y = s ⊙ x + t`` (``s`` broadcast) → ``Σ_broadcast s ⊙ Λ``."""
    grad = lam * node["params"]["scale"]
    return [_sum_to(grad, (*lam.shape[:2], *input_shapes[0]))]


@adjoint_op("select")
def _select_adjoint(node: Node, lam: torch.Tensor, input_shapes: list[tuple]) -> list[torch.Tensor]:
    """Transpose of ``select``: ``Λ`` ``(B, k, *out)`` is scatter-added to the inputs'
    flat positions (constant positions are dropped); returns ``[(B, k, *Sᵢ)]``."""
    sizes = [int(np.prod(s, dtype=np.int64)) for s in input_shapes]
    total = sum(sizes)
    flat = lam.reshape(*lam.shape[:2], -1)
    index = index_tensor(node, lam.device)
    if "fill" in node["params"]:
        keep = cached_while_constant(node, ("variable positions", str(lam.device)), (),
                                     lambda: torch.nonzero(index < total).reshape(-1))
        flat, index = flat.index_select(2, keep), index.index_select(0, keep)
    out = flat.new_zeros((*flat.shape[:2], total)).index_add(2, index, flat)
    return [part.reshape(*lam.shape[:2], *s) for part, s in zip(out.split(sizes, dim=2), input_shapes)]


def adjoint(node: Node, lam: torch.Tensor, input_shapes: list[tuple]) -> list[torch.Tensor]:
    """``[L₁ᵀ Λ, L₂ᵀ Λ, …]`` for ``Λ`` of shape ``(B, k, *output_shape)``, one per input, from
    :data:`ADJOINTS` (autograd's vector-Jacobian product for kinds without an entry)."""
    explicit = ADJOINTS.get(node["kind"])
    out = None if explicit is None else explicit(node, lam, input_shapes)
    return _vjp_adjoint(node, lam, input_shapes) if out is None else out


def _sum_to(t: torch.Tensor, shape: tuple) -> torch.Tensor:
    """Sum ``t`` over the axes that broadcasting expanded, down to ``shape``."""
    if tuple(t.shape) == tuple(shape):
        return t
    extra = t.dim() - len(shape)
    t = t.sum(dim=tuple(range(2, 2 + extra))) if extra > 0 else t
    dims = tuple(i for i, (a, b) in enumerate(zip(t.shape, shape)) if b == 1 and a != 1)
    return t.sum(dim=dims, keepdim=True) if dims else t


__all__ = ["ADJOINTS", "AFFINE_KINDS", "adjoint", "adjoint_op", "offset"]
