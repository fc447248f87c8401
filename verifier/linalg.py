"""Linear algebra shared by the domains."""

from __future__ import annotations

import torch


def centre_radius(lower: torch.Tensor, upper: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``c = (l + u)/2``, ``r = (u − l)/2``."""
    return (upper + lower) / 2, (upper - lower) / 2


def batched_spec(C: torch.Tensor, batch: int) -> torch.Tensor:
    """A spec matrix ``(k, n)`` or a batch of them ``(B, k, n)`` as ``(B, k, n)``."""
    if C.dim() == 2:
        return C.unsqueeze(0).expand(batch, *C.shape)
    if C.dim() != 3 or C.shape[0] not in (1, batch):
        raise ValueError(f"C must be (k, n) or (B, k, n) with B={batch}; got {tuple(C.shape)}")
    return C.expand(batch, *C.shape[1:])


def interval_matmul(C: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact range of ``C y`` over the box ``y ∈ [lower, upper]`` (rows of ``(B, n)``):
    ``C c ± |C| r``."""
    C = batched_spec(C, lower.shape[0]).to(lower)
    c, r = centre_radius(lower, upper)
    mid = torch.einsum("bkn,bn->bk", C, c)
    rad = torch.einsum("bkn,bn->bk", C.abs(), r)
    return mid - rad, mid + rad
