"""CROWN (Zhang et al. 2018) and CROWN-IBP (Zhang et al. 2020), and the backward transfer
of every op kind, which all backward domains share (registered on
:class:`~verifier.domains.backward.BackwardDomain`).

For ``Λ`` the coefficients of a node's output (``(B, k, *shape)``):

* affine ``y = Σ Lᵢ xᵢ + f₀``: ``Λ_{xᵢ} += Lᵢᵀ Λ`` (the adjoint table,
  :mod:`verifier.ops.adjoint`), constant ``Λ·f₀``;
* elementwise nonlinear ``y = f(x)`` with the relaxation entry's lines
  ``a_l x + b_l ≤ f(x) ≤ a_u x + b_u``: ``Λ_x += Λ⁺ a_l + Λ⁻ a_u``, constant
  ``Λ⁺·b_l + Λ⁻·b_u`` (Zhang et al. 2018, Thm. 3.2);
* max-pool (DeepPoly, Singh et al. 2019, §4.4): below by the window entry with the largest
  lower bound, above by that entry when it dominates the window (``l_j ≥ max_{i≠j} u_i``),
  else by ``max u``.

``crown``: intermediate bounds of every pre-activation by its own backward pass to the
input (intersected with IBP), then one backward pass for ``C·f``. ``crown-ibp``: the
intermediate bounds come from IBP (Box), as in CROWN-IBP training. Lower slopes of
crossing ReLUs follow the adaptive rule (1 if ``u > −l`` else 0).

α-CROWN lives in :mod:`verifier.domains.alpha_crown`, the Wong–Kolter dual LP in
:mod:`verifier.domains.dual_lp`.
"""

from __future__ import annotations

import torch

from ..linalg import dot
from ..ops.categories import ANY_AFFINE, ANY_ELEMENTWISE
from ..ops.adjoint import adjoint, offset
from . import register_domain
from .backward import BackwardDomain, BackwardPass


@BackwardDomain.backward_transfer(ANY_AFFINE)
def crown_affine(domain, context: BackwardPass, n: str, lam: torch.Tensor):
    """``[Lᵢᵀ Λ]`` and ``Λ·f₀``."""
    node, shapes = context.graph.nodes[n], context.input_shapes(n)
    constant = dot(lam, offset(node, shapes, lam))
    return adjoint(node, lam, shapes), constant


@BackwardDomain.backward_transfer(ANY_ELEMENTWISE)
def crown_elementwise(domain, context: BackwardPass, n: str, lam: torch.Tensor):
    """``Λ⁺ a_l + Λ⁻ a_u`` and ``Λ⁺·b_l + Λ⁻·b_u`` (lines per spec row when α is per row)."""
    rel = context.lines(n)
    pos, neg = lam.clamp(min=0), lam.clamp(max=0)
    a_l, b_l, a_u, b_u = rel
    if a_l.dim() == lam.dim() - 1:  # shared by the rows: (B, *S) → (B, 1, *S)
        a_l, a_u = a_l.unsqueeze(1), a_u.unsqueeze(1)
    if b_l.dim() == lam.dim() - 1:
        b_l, b_u = b_l.unsqueeze(1), b_u.unsqueeze(1)
    constant = (pos * b_l + neg * b_u).reshape(*lam.shape[:2], -1).sum(-1)
    return [pos * a_l + neg * a_u], constant


@BackwardDomain.backward_transfer("maxpool")
def crown_maxpool(domain, context: BackwardPass, n: str, lam: torch.Tensor):
    """DeepPoly's max-pool rule (module docstring)."""
    rel = context.pool(n)
    pos, neg = lam.clamp(min=0), lam.clamp(max=0)
    dom = rel.dominates.unsqueeze(1)
    through = pos + torch.where(dom, neg, torch.zeros_like(neg))
    constant = dot(torch.where(dom, torch.zeros_like(neg), neg), rel.max_u)
    return [rel.adjoint(through)], constant


@register_domain
class CrownDomain(BackwardDomain):
    name = "crown"
    description = "CROWN back-substitution, intermediate bounds by CROWN (intermediate='ibp': CROWN-IBP)"


@register_domain
class CrownIBPDomain(BackwardDomain):
    name = "crown-ibp"
    description = "CROWN final pass on IBP intermediate bounds (the CROWN-IBP bound)"

    def __init__(self, norm: float = float("inf")):
        super().__init__("ibp", norm)
