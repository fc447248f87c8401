"""Linear algebra shared by the domains."""

from __future__ import annotations

import math

import torch


def centre_radius(lower: torch.Tensor, upper: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``c = (l + u)/2``, ``r = (u − l)/2``."""
    return (upper + lower) / 2, (upper - lower) / 2


def cast_outward(lower: torch.Tensor, upper: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """``[lower, upper]`` (any shape, a wider dtype) in ``dtype``, rounded outwards: the cast
    entry moves one ulp down (up) wherever rounding to nearest went above (below), so the
    cast interval contains the original."""
    lo, hi = lower.to(dtype), upper.to(dtype)
    wide = torch.promote_types(lower.dtype, dtype)
    lo = torch.where(lo.to(wide) > lower, torch.nextafter(lo, torch.full_like(lo, -math.inf)), lo)
    hi = torch.where(hi.to(wide) < upper, torch.nextafter(hi, torch.full_like(hi, math.inf)), hi)
    return lo, hi


def batched_spec(C: torch.Tensor, batch: int) -> torch.Tensor:
    """A spec matrix ``(k, n)`` or a batch of them ``(B, k, n)`` as ``(B, k, n)``."""
    if C.dim() == 2:
        return C.unsqueeze(0).expand(batch, *C.shape)
    if C.dim() != 3 or C.shape[0] not in (1, batch):
        raise ValueError(f"C must be (k, n) or (B, k, n) with B={batch}; got {tuple(C.shape)}")
    return C.expand(batch, *C.shape[1:])


def spec_matrix(C: torch.Tensor | None, n: int, like: torch.Tensor) -> torch.Tensor:
    """``C`` as ``(B, k, n)`` on ``like``'s device and dtype (``B = like.shape[0]``); the
    identity (bounds on every output) when ``C`` is ``None``."""
    if C is None:
        C = torch.eye(n, dtype=like.dtype, device=like.device)
    return batched_spec(C.to(like), like.shape[0])


def per_sample_rows(mask: torch.Tensor) -> torch.Tensor:
    """``(B, R)`` flattened indices, per sample, of the entries where ``mask`` ``(B, n)`` is
    set, ``R`` the largest count; shorter rows are padded with other (unmasked) entries,
    whose bounds are merely computed too."""
    count = int(mask.sum(dim=1).max())
    order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)
    return order[:, :count]


def selection_rows(shape: tuple, index: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``Λ`` ``(B, R, *shape)`` with ``Λ[b, r] = e_{index[b, r]}`` (one-hot rows)."""
    B, R = index.shape
    lam = torch.zeros((B, R, math.prod(shape)), dtype=like.dtype, device=like.device)
    lam.scatter_(2, index.unsqueeze(2), 1.0)
    return lam.reshape(B, R, *shape)


def interval_matmul(C: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact range of ``C y`` over the box ``y ∈ [lower, upper]`` (rows of ``(B, n)``):
    ``C c ± |C| r``."""
    C = batched_spec(C, lower.shape[0]).to(lower)
    c, r = centre_radius(lower, upper)
    mid = torch.einsum("bkn,bn->bk", C, c)
    rad = torch.einsum("bkn,bn->bk", C.abs(), r)
    return mid - rad, mid + rad


def crossing(lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """The crossing (unstable) entries ``l < 0 < u`` of a pre-activation box: where a
    piecewise-linear activation is not linear on ``[l, u]`` (a boolean tensor of ``l``'s shape)."""
    return (lower < 0) & (upper > 0)


def dot(lam: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """``Λ·v`` per (batch, row): ``Λ`` ``(B, k, *S)``, ``v`` ``(B or 1, *S)`` → ``(B, k)``."""
    if tuple(value.shape[1:]) != tuple(lam.shape[2:]):  # broadcast inside the sample shape
        return (lam * value.unsqueeze(1)).reshape(lam.shape[0], lam.shape[1], -1).sum(-1)
    dtype = torch.promote_types(lam.dtype, value.dtype)
    flat = lam.reshape(lam.shape[0], lam.shape[1], -1).to(dtype)
    return torch.matmul(flat, value.reshape(value.shape[0], -1, 1).to(dtype)).squeeze(-1)  # one gemv per sample
