"""Bilinear ops of two variable tensors: ``mul`` (elementwise product with ONNX
broadcasting) and ``matmul`` (matrix product, batched over any leading axes, as in
attention's ``Q·Kᵀ`` and ``softmax·V``).

Each kind registers its forward function and a :class:`Bilinear` entry in
:data:`BILINEAR`, from which every domain takes what it needs: the product ``B(x, y)``
itself (linear in each argument), its two transposes (``Λ ↦ ∂(Λ·B(x, y))/∂x`` for a fixed
``y`` and the other way round) and the exact interval range of each scalar product term
``x_ik·y_kj``. Both operands have the same rank (the converter aligns them) and
broadcast against each other; a product ``B(a, b)`` is taken on tensors with any number
of leading axes in common (batch, spec row or noise symbol).

The relaxation every linear-bound domain uses is McCormick's (McCormick 1976; for
neural networks Shi et al. 2020, "Robustness verification for transformers", §3.2, and
Bonaert et al. 2021, DeepT): on the box ``[l_x, u_x] × [l_y, u_y]`` the tangent plane
of ``z = x·y`` at a corner ``(x_c, y_c)``,

    ``T_c(x, y) = y_c·x + x_c·y − x_c·y_c``  (so ``x·y − T_c = (x − x_c)(y − y_c)``),

lies below ``x·y`` at the corners ``(l_x, l_y)`` and ``(u_x, u_y)`` (both factors of the
gap have the same sign) and above it at ``(l_x, u_y)`` and ``(u_x, l_y)``. Any convex
combination of the two lower (upper) planes is again a lower (upper) plane:
:data:`LOWER_CORNERS` and :data:`UPPER_CORNERS` list them, and :func:`tangent_plane`
evaluates one. A matrix product is a sum of scalar products ``Σ_k x_ik·y_kj``, each
bounded by the same combination of its own planes.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch

from . import Node, forward_op

MAX_TERMS = 1 << 22  # scalar product terms materialised at once by an exact interval matmul


def _check_ranks(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.dim() != y.dim():
        raise ValueError(f"operands of ranks {x.dim() - 1} and {y.dim() - 1}: the importer aligns them first")


@forward_op("mul")
def mul(node: Node, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``z = x ⊙ y`` (ONNX Mul of two variables; both operands of the same rank, broadcast)."""
    _check_ranks(x, y)
    return x * y


@forward_op("matmul")
def matmul(node: Node, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``z = x @ y`` per sample: ``(…, M, K) @ (…, K, N)``, leading axes broadcast (ONNX
    MatMul of two variables, 1-D operands promoted by the importer)."""
    _check_ranks(x, y)
    return torch.matmul(x, y)


def reduce_to(t: torch.Tensor, shape: tuple) -> torch.Tensor:
    """Sum ``t`` over the trailing axes that broadcasting expanded from size 1 in ``shape``
    (the leading axes of ``t`` beyond ``len(shape)`` are kept)."""
    lead = t.dim() - len(shape)
    dims = tuple(lead + i for i, s in enumerate(shape) if s == 1 and t.shape[lead + i] != 1)
    return t.sum(dim=dims, keepdim=True) if dims else t


def product_range(a_lo: torch.Tensor, a_hi: torch.Tensor, b_lo: torch.Tensor,
                  b_hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact range ``[min, max]`` of ``a·b`` over ``[a_lo, a_hi] × [b_lo, b_hi]``
    (elementwise, broadcast): the extremes of the four corner products (a bilinear
    function takes them at vertices), with ``0·∞ = 0``."""
    corners = []
    for a in (a_lo, a_hi):
        for b in (b_lo, b_hi):
            p = a * b
            corners.append(torch.where((a == 0) | (b == 0), torch.zeros_like(p), p))
    stacked = torch.stack(torch.broadcast_tensors(*corners))
    return stacked.min(0).values, stacked.max(0).values


class Bilinear(NamedTuple):
    """One bilinear op ``z = B(x, y)``: ``product(a, b)`` evaluates ``B`` on tensors with
    common leading axes; ``left(Λ, b)`` and ``right(Λ, a)`` are its transposes before the
    reduction to the operand's shape (``Λ·B(x, b) = left(Λ, b)·x`` and
    ``Λ·B(a, y) = right(Λ, a)·y``); ``interval(l_x, u_x, l_y, u_y)`` is the sum, per output
    entry, of the exact ranges of its scalar product terms."""

    product: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    left: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    right: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    interval: Callable[..., tuple[torch.Tensor, torch.Tensor]]

    def adjoints(self, lam_x: torch.Tensor, y: torch.Tensor, lam_y: torch.Tensor, x: torch.Tensor,
                 shapes: list[tuple]) -> list[torch.Tensor]:
        """``[left(Λ_x, y), right(Λ_y, x)]`` reduced to the operands' shapes ``shapes``."""
        return [reduce_to(self.left(lam_x, y), shapes[0]), reduce_to(self.right(lam_y, x), shapes[1])]


def _transpose(t: torch.Tensor) -> torch.Tensor:
    return t.transpose(-1, -2)


def _matmul_interval(lx, ux, ly, uy):
    """``Σ_k [min, max] of x_ik·y_kj`` over the box, in chunks of rows ``i`` so that at
    most about :data:`MAX_TERMS` terms ``(…, i, k, j)`` are held at once."""
    lead = torch.broadcast_shapes(lx.shape[:-2], ly.shape[:-2])
    M, K, N = lx.shape[-2], lx.shape[-1], ly.shape[-1]
    per_row = max(1, K * N * int(torch.Size(lead).numel()))
    chunk = max(1, MAX_TERMS // per_row)
    lows, highs = [], []
    ly_t, uy_t = ly.unsqueeze(-3), uy.unsqueeze(-3)  # (…, 1, K, N)
    for start in range(0, M, chunk):
        rows = slice(start, start + chunk)
        lo, hi = product_range(lx[..., rows, :, None], ux[..., rows, :, None], ly_t, uy_t)
        lows.append(lo.sum(-2))
        highs.append(hi.sum(-2))
    return torch.cat(lows, -2), torch.cat(highs, -2)


BILINEAR: dict[str, Bilinear] = {
    "mul": Bilinear(torch.mul, torch.mul, torch.mul, product_range),
    "matmul": Bilinear(torch.matmul, lambda lam, b: torch.matmul(lam, _transpose(b)),
                       lambda lam, a: torch.matmul(_transpose(a), lam), _matmul_interval),
}

# McCormick's planes as tangent planes at corners: (x corner, y corner) ∈ {l, u}² by name.
LOWER_CORNERS = (("l", "l"), ("u", "u"))
UPPER_CORNERS = (("l", "u"), ("u", "l"))


def tangent_plane(x: torch.Tensor, y: torch.Tensor, xc: torch.Tensor, yc: torch.Tensor) -> torch.Tensor:
    """``T_c(x, y) = y_c·x + x_c·y − x_c·y_c``, the tangent plane of ``x·y`` at ``(x_c, y_c)``."""
    return yc * x + xc * y - xc * yc


__all__ = ["BILINEAR", "Bilinear", "LOWER_CORNERS", "MAX_TERMS", "UPPER_CORNERS", "matmul", "mul", "product_range",
           "reduce_to", "tangent_plane"]
