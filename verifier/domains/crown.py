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
  else by ``max u``;
* softmax / log-softmax: the linear bounds of :mod:`verifier.ops.softmax`, one row of
  coefficients on the whole input vector per output (:func:`crown_softmax`);
* bilinear ``z = B(x, y)`` (``mul``, ``matmul``; :mod:`verifier.ops.bilinear`): McCormick's
  planes per scalar product term, mixed per output entry (:func:`crown_bilinear`).

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
from ..ops.adjoint import adjoint, offset
from ..ops.bilinear import BILINEAR, LOWER_CORNERS, UPPER_CORNERS
from ..ops.categories import ANY_AFFINE, ANY_ELEMENTWISE
from ..ops.relaxation import RELAXATIONS
from ..ops.softmax import SOFTMAX_KINDS, SoftmaxRelaxation, softmax_alpha_init
from . import register_domain
from .backward import BackwardDomain, BackwardPass, relaxed
from .patches import needs_grad, patch_form

MCCORMICK_MIX = 0.5  # CROWN's weight of the first lower / upper plane (α-CROWN starts here)


@BackwardDomain.backward_transfer(ANY_AFFINE)
@patch_form("affine")
def crown_affine(domain, context: BackwardPass, n: str, lam: torch.Tensor):
    """``[Lᵢᵀ Λ]`` and ``Λ·f₀``."""
    node, shapes = context.graph.nodes[n], context.input_shapes(n)
    constant = dot(lam, offset(node, shapes, lam))
    return adjoint(node, lam, shapes), constant


@BackwardDomain.backward_transfer(ANY_ELEMENTWISE)
@relaxed(optimisable=lambda node: RELAXATIONS[node["kind"]].optimisable,
         alpha_init=lambda node, bounds: RELAXATIONS[node["kind"]].alpha_init(node, *bounds))
@patch_form("elementwise")
def crown_elementwise(domain, context: BackwardPass, n: str, lam: torch.Tensor):
    """``Λ⁺ a_l + Λ⁻ a_u`` and ``Λ⁺·b_l + Λ⁻·b_u`` (lines per spec row when α is per row)."""
    rel = context.lines(n)
    a_l, b_l, a_u, b_u = rel
    if a_l.dim() == lam.dim() - 1:  # shared by the rows: (B, *S) → (B, 1, *S)
        a_l, a_u = a_l.unsqueeze(1), a_u.unsqueeze(1)
    if b_l.dim() == lam.dim() - 1:
        b_l, b_u = b_l.unsqueeze(1), b_u.unsqueeze(1)
    if context.mirror is not None:  # one slope: also the constant of the rows −Λ, Σ −Λ⁻b_l − Λ⁺b_u
        if rel[0] is not rel[2]:
            raise RuntimeError(f"mirrored backward pass through '{n}', whose two lines have different slopes")
        neg = lam.clamp(max=0)
        if b_l.shape[1] == 1 and b_u.shape[1] == 1 and not bool(b_l.any()):  # ReLU's band: Λ⁻·b_u and −Λ⁺·b_u
            constant, total = dot(neg, b_u.squeeze(1)), dot(lam, b_u.squeeze(1))
            context.mirror.append(constant - (total - constant))
            return [lam * a_l], constant
        pos = lam.clamp(min=0)
        constant = (pos * b_l + neg * b_u).reshape(*lam.shape[:2], -1).sum(-1)
        context.mirror.append(constant - (neg * b_l + pos * b_u).reshape(*lam.shape[:2], -1).sum(-1))
        return [lam * a_l], constant
    if context.fast and not needs_grad(lam, *rel):  # Λa_u + Λ⁺(a_l − a_u): no where(), which is slow here
        pos = lam.clamp(min=0)
        lam_x = lam * a_l if rel[0] is rel[2] else torch.addcmul(lam * a_u, pos, a_l - a_u)
        if b_l.shape[1] == 1 and b_u.shape[1] == 1 and not bool(b_l.any()):
            return [lam_x], dot(lam, b_u.squeeze(1)) - dot(pos, b_u.squeeze(1))
        return [lam_x], (pos * b_l + (lam - pos) * b_u).reshape(*lam.shape[:2], -1).sum(-1)
    if not needs_grad(lam, *rel):  # the same values in fewer passes: one slope (dual LP), zero b_l (ReLU)
        neg = lam.clamp(max=0)
        if rel[0] is rel[2]:
            lam_x = lam * a_l
        else:
            lam_x = torch.where(lam >= 0, a_l, a_u) * lam
        # the offsets summed as below (same rounding: α-CROWN's steps meet these bounds as near-ties)
        if b_l.shape[1] == 1 and not bool(b_l.any()):
            return [lam_x], (neg * b_u).reshape(*lam.shape[:2], -1).sum(-1)
        return [lam_x], (lam.clamp(min=0) * b_l + neg * b_u).reshape(*lam.shape[:2], -1).sum(-1)
    pos, neg = lam.clamp(min=0), lam.clamp(max=0)  # under autograd: clamp's gradient at Λ = 0 (α-CROWN)
    constant = (pos * b_l + neg * b_u).reshape(*lam.shape[:2], -1).sum(-1)
    return [pos * a_l + neg * a_u], constant


@BackwardDomain.backward_transfer("maxpool")
@patch_form("pool")
@relaxed()
def crown_maxpool(domain, context: BackwardPass, n: str, lam: torch.Tensor):
    """DeepPoly's max-pool rule (module docstring)."""
    rel = context.pool(n)
    pos, neg = lam.clamp(min=0), lam.clamp(max=0)
    dom = rel.dominates.unsqueeze(1)
    through = pos + torch.where(dom, neg, torch.zeros_like(neg))
    constant = dot(torch.where(dom, torch.zeros_like(neg), neg), rel.max_u)
    return [rel.adjoint(through)], constant


@BackwardDomain.backward_transfer(*SOFTMAX_KINDS)
@relaxed(refine=lambda l, u: l < u, optimisable=lambda node: True,
         alpha_init=lambda node, bounds: softmax_alpha_init(node, *bounds))
def crown_softmax(domain, context: BackwardPass, n: str, lam: torch.Tensor):
    """The lines of :class:`~verifier.ops.softmax.SoftmaxRelaxation` (one row of
    coefficients on the ``n`` inputs per output; α-CROWN moves their tangent points):
    ``Λ_x = Λ⁺A_l + Λ⁻A_u``, constant ``Λ⁺·b_l + Λ⁻·b_u``."""
    alpha = context.free(n)
    if alpha is None:
        rel = context.relaxation(n, lambda node, l, u: SoftmaxRelaxation(node["kind"], l, u))
    else:
        (bounds,) = context.input_bounds(n)
        rel = SoftmaxRelaxation(context.graph.nodes[n]["kind"], *bounds, alpha=alpha)
    pos, neg = lam.clamp(min=0), lam.clamp(max=0)
    lower_w, upper_w = rel.lower_weight, rel.upper_weight
    if lower_w.dim() == lam.dim() + 1 and lower_w.shape[1] == 1:  # one α shared by every row
        lower_w, upper_w = lower_w.squeeze(1), upper_w.squeeze(1)
    pattern = "bk...i,b...ij->bk...j" if lower_w.dim() == lam.dim() else "bk...i,bk...ij->bk...j"
    lam_x = torch.einsum(pattern, pos, lower_w) + torch.einsum(pattern, neg, upper_w)
    return [lam_x], _bias_dot(pos, rel.lower_bias) + _bias_dot(neg, rel.upper_bias)


def _bias_dot(lam: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``Λ·b`` ``(B, k)`` for ``b`` ``(B, *S)`` (shared by the rows) or ``(B, k', *S)`` (per row)."""
    if bias.dim() == lam.dim():
        return (lam * bias).reshape(lam.shape[0], lam.shape[1], -1).sum(-1)
    return dot(lam, bias)


def mccormick_init(node: dict, x_bounds, y_bounds) -> torch.Tensor:
    """CROWN's mixing weights ``(α, β)`` of :func:`crown_bilinear`, ``(B, 2, *shape_of_z)``,
    all :data:`MCCORMICK_MIX`."""
    like = x_bounds[0]
    return torch.full((like.shape[0], 2, *node["shape"]), MCCORMICK_MIX, dtype=like.dtype, device=like.device)


@BackwardDomain.backward_transfer(*BILINEAR)
@relaxed(refine=lambda l, u: l < u, optimisable=lambda node: True, alpha_init=mccormick_init)
def crown_bilinear(domain, context: BackwardPass, n: str, lam: torch.Tensor):
    """McCormick's planes (:mod:`verifier.ops.bilinear`; Shi et al. 2020, §3.2): each scalar
    product term ``x·y`` of output entry ``z_o`` is bounded by tangent planes at corners,

        ``x·y ≥ α·T_{(l_x, l_y)} + (1 − α)·T_{(u_x, u_y)}``,
        ``x·y ≤ β·T_{(l_x, u_y)} + (1 − β)·T_{(u_x, l_y)}``,  ``T_c = y_c x + x_c y − x_c y_c``,

    with one ``(α_o, β_o) ∈ [0, 1]²`` per output entry (and spec row, under α-CROWN; CROWN
    uses :data:`MCCORMICK_MIX`; Shi et al.'s choice is ``α = β = 1``). ``Λ⁺`` takes the
    lower, ``Λ⁻`` the upper combination; since a plane at corner ``c`` is linear in
    ``(x, y)`` with coefficients ``(y_c, x_c)``, summing over the terms of ``z = B(x, y)``
    gives, with weights ``W_c`` = ``Λ⁺α``, ``Λ⁺(1 − α)``, ``Λ⁻β``, ``Λ⁻(1 − β)`` at the
    corners ``(l,l), (u,u), (l,u), (u,l)``:

        ``Λ_x = Σ_c Bᵀ_x(W_c, y_c)``, ``Λ_y = Σ_c Bᵀ_y(W_c, x_c)``, constant ``−Σ_c W_c·B(x_c, y_c)``,

    matrix products of the size of ``Λ`` (no tensor of the ``M·K·N`` terms)."""
    node = context.graph.nodes[n]
    op = BILINEAR[node["kind"]]
    (lx, ux), (ly, uy) = ((b[0].unsqueeze(1), b[1].unsqueeze(1)) for b in context.input_bounds(n))
    xs, ys = {"l": lx, "u": ux}, {"l": ly, "u": uy}
    mix = context.free(n)
    a, b = (MCCORMICK_MIX, MCCORMICK_MIX) if mix is None else (mix[:, :, 0], mix[:, :, 1])
    pos, neg = lam.clamp(min=0), lam.clamp(max=0)
    weights = {LOWER_CORNERS[0]: pos * a, LOWER_CORNERS[1]: pos * (1 - a),
               UPPER_CORNERS[0]: neg * b, UPPER_CORNERS[1]: neg * (1 - b)}
    by_y = {e: sum(w for (_, yc), w in weights.items() if yc == e) for e in "lu"}  # Λ_x's weight on y_c = e
    by_x = {e: sum(w for (xc, _), w in weights.items() if xc == e) for e in "lu"}  # Λ_y's weight on x_c = e
    shapes = context.input_shapes(n)
    grads = [op.adjoints(by_y[c], ys[c], by_x[c], xs[c], shapes) for c in "lu"]
    constant = -sum(dot(w, op.product(xs[xc], ys[yc]).squeeze(1)) for (xc, yc), w in weights.items())
    return [grads[0][0] + grads[1][0], grads[0][1] + grads[1][1]], constant


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
