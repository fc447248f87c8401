"""Adjoints of the affine op kinds, used by the backward domains (CROWN, dual LP).

For an affine op ``y = L(x₁, …) + f₀`` (``f₀ = y`` at zero inputs), a linear form
``Λ·y`` on its output equals ``Σᵢ (Lᵢᵀ Λ)·xᵢ + Λ·f₀``. :func:`adjoint` returns the
``Lᵢᵀ Λ`` and :func:`offset` the constant ``f₀``. ``Λ`` carries two leading axes,
``(B, k, *shape)``: batch and spec row.

Dense and convolution layers have explicit transposes; every other affine kind gets its
transpose from autograd (a vector-Jacobian product at zero), so a new affine op needs
only its forward function.
"""

from __future__ import annotations

import torch

from . import FORWARD, LINEAR_PART, Node, cached_while_constant

AFFINE_KINDS = frozenset(LINEAR_PART) | {"reshape", "transpose", "concat", "slice", "pad", "add"}


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


def _linear_adjoint(node: Node, lam: torch.Tensor, input_shapes: list[tuple]) -> list[torch.Tensor]:
    """``y = x W`` → ``Λ Wᵀ``; ``y = W x`` → ``Wᵀ Λ`` (``Λ Wᵀ``… for a per-sample vector)."""
    weight = node["params"]["weight"]
    if node["attrs"]["side"] == "right":
        return [lam @ weight.t()]
    if len(input_shapes[0]) == 1:
        return [lam @ weight]
    return [torch.matmul(weight.t(), lam)]


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
    n = grad_out.shape[0]
    out = torch.nn.grad.conv2d_input((n, *in_shape[-3:]), weight, grad_out, a["strides"], pads[:spatial],
                                     a["dilations"], a["group"])
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


def _reshape_adjoint(node: Node, lam: torch.Tensor, input_shapes: list[tuple]) -> list[torch.Tensor]:
    return [lam.reshape(*lam.shape[:2], *input_shapes[0])]


def _transpose_adjoint(node: Node, lam: torch.Tensor, input_shapes: list[tuple]) -> list[torch.Tensor]:
    perm = node["attrs"]["perm"]
    inverse = [perm.index(i) for i in range(len(perm))]
    return [lam.permute(0, 1, *[p + 2 for p in inverse])]


def adjoint(node: Node, lam: torch.Tensor, input_shapes: list[tuple]) -> list[torch.Tensor]:
    """``[L₁ᵀ Λ, L₂ᵀ Λ, …]`` for ``Λ`` of shape ``(B, k, *output_shape)``, one per input."""
    kind = node["kind"]
    if kind == "linear":
        return _linear_adjoint(node, lam, input_shapes)
    if kind == "conv":
        out = _conv_adjoint(node, lam, input_shapes)
        if out is not None:
            return out
    if kind == "reshape":
        return _reshape_adjoint(node, lam, input_shapes)
    if kind == "transpose":
        return _transpose_adjoint(node, lam, input_shapes)
    if kind == "scale_shift":
        grad = lam * node["params"]["scale"]
        target = (*lam.shape[:2], *input_shapes[0])
        return [_sum_to(grad, target)]
    return _vjp_adjoint(node, lam, input_shapes)


def _sum_to(t: torch.Tensor, shape: tuple) -> torch.Tensor:
    """Sum ``t`` over the axes that broadcasting expanded, down to ``shape``."""
    if tuple(t.shape) == tuple(shape):
        return t
    extra = t.dim() - len(shape)
    t = t.sum(dim=tuple(range(2, 2 + extra))) if extra > 0 else t
    dims = tuple(i for i, (a, b) in enumerate(zip(t.shape, shape)) if b == 1 and a != 1)
    return t.sum(dim=dims, keepdim=True) if dims else t


def dot(lam: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """``Λ·v`` per (batch, row): ``Λ`` ``(B, k, *S)``, ``v`` ``(B or 1, *S)`` → ``(B, k)``."""
    if tuple(value.shape[1:]) != tuple(lam.shape[2:]):  # broadcast inside the sample shape
        return (lam * value.unsqueeze(1)).reshape(lam.shape[0], lam.shape[1], -1).sum(-1)
    dtype = torch.promote_types(lam.dtype, value.dtype)
    flat = lam.reshape(lam.shape[0], lam.shape[1], -1).to(dtype)
    return torch.matmul(flat, value.reshape(value.shape[0], -1, 1).to(dtype)).squeeze(-1)  # one gemv per sample


__all__ = ["AFFINE_KINDS", "adjoint", "dot", "offset"]
