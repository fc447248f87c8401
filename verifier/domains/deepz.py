"""DeepZ zonotopes (seed 000, App. A; ERAN's transformers).

A value is ``a + Σ_j G_j e_j`` with ``e ∈ [−1, 1]^m``: centre ``a`` ``(B, *S)`` and
generators ``G`` ``(B, m, *S)``. Generator ``j`` is the same noise symbol in every value
of one propagation, so sums and concatenations of branches stay correlated; each
nonlinear op appends fresh symbols after all symbols allocated so far.

* affine ``y = L x + f₀``: ``a' = L a + f₀``, ``G' = L G``;
* every elementwise nonlinear op takes the parallel band ``f(x) − λx ∈ [low, high]`` of
  its relaxation entry (:meth:`~verifier.ops.relaxation.Relaxation.band`, with
  ``l, u = a ∓ Σ|G|``): ``a' = λa + (low + high)/2``, ``G' = λG``, and a new symbol with
  coefficient ``(high − low)/2``. For a crossing ReLU that is ``λ = u/(u−l)``,
  ``μ = −ul/(2(u−l))``, ``a' = λa + μ`` (**not** ``λa`` as the paper's appendix prints);
  for sigmoid/tanh ``λ = min(f'(l), f'(u))``;
* max-pool: the dominating window entry when one dominates, else a fresh symbol spanning
  ``[max l, max u]``;
* softmax / log-softmax: the lower line of :mod:`verifier.ops.softmax` plus a fresh symbol
  spanning the gap to the upper line, or the constant interval where narrower;
* bilinear ``z = B(x, y)`` (``mul``, ``matmul``; DeepT, Bonaert et al. 2021, §4.3, "fast"
  variant): see :func:`deepz_bilinear`.

``latent(state)`` exposes the e-space view for COLT: points ``a + G e``.
"""

from __future__ import annotations

import math

import torch

from ..engine import propagate
from ..linalg import batched_spec, centre_radius, per_sample_rows
from ..ops import FORWARD
from ..ops.categories import ANY_AFFINE, ANY_ELEMENTWISE
from ..ops.adjoint import offset
from ..ops.bilinear import BILINEAR
from ..ops.pool import MaxPoolRelaxation
from ..ops.relaxation import RELAXATIONS
from ..ops.softmax import SOFTMAX_KINDS, SoftmaxRelaxation
from ..resources import require_memory
from . import register_domain
from .base import Domain


class Zonotope:
    """``a + Σ_j G_j e_j``: centre ``a`` ``(B, *S)``; generators ``G`` ``(B, m, *S)``, held
    either dense or factored as ``G[b, j] = scale[b, j]·shared[j]`` with ``shared``
    ``(m, *S)`` common to the batch. The input box starts factored (``shared`` = one-hot
    rows, ``scale`` = radii) and affine maps keep it so, because ``L(s·E) = s·L(E)``: a
    batch of ``B`` images costs one ``m``-row pass instead of ``B·m`` rows. Anything else
    reads :attr:`generators`, which materialises the dense tensor (cached)."""

    __slots__ = ("centre", "_dense", "scale", "shared")

    def __init__(self, centre: torch.Tensor, generators: torch.Tensor | None = None, *,
                 scale: torch.Tensor | None = None, shared: torch.Tensor | None = None):
        if (generators is None) == (scale is None or shared is None):
            raise ValueError("a zonotope takes dense generators or (scale, shared), not both")
        self.centre, self._dense, self.scale, self.shared = centre, generators, scale, shared

    @property
    def factored(self) -> bool:
        return self._dense is None

    @property
    def num_symbols(self) -> int:
        return self.shared.shape[0] if self.factored else self._dense.shape[1]

    @property
    def generators(self) -> torch.Tensor:
        if self._dense is None:
            reserve(self.scale.shape[0], self.num_symbols, self.shared.shape[1:], self.shared)
            self._dense = self._broadcast_scale() * self.shared.unsqueeze(0)
        return self._dense

    def _broadcast_scale(self) -> torch.Tensor:
        return self.scale.reshape(*self.scale.shape, *([1] * (self.shared.dim() - 1)))

    def combine(self, e: torch.Tensor) -> torch.Tensor:
        """``Σ_j e[b, j]·G[b, j]`` for ``e`` ``(B, m)``: shape ``(B, *S)``."""
        if self._dense is not None:
            return torch.einsum("bm...,bm->b...", self._dense, e.to(self._dense))
        flat = (e.to(self.scale) * self.scale) @ self._shared_rows()
        return flat.reshape(self.centre.shape)

    def _shared_rows(self) -> torch.Tensor:
        """The shared generators as ``(m, prod(S))`` (explicit sizes: ``m`` is 0 for a point box)."""
        return self.shared.reshape(self.shared.shape[0], math.prod(self.shared.shape[1:]))

    def bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._dense is not None:
            radius = self._dense.abs().sum(dim=1)
        else:
            radius = (self.scale.abs() @ self._shared_rows().abs()).reshape(self.centre.shape)
        return self.centre - radius, self.centre + radius


def reserve(batch: int, symbols: int, shape, like: torch.Tensor) -> None:
    """Refuse (:func:`~verifier.resources.require_memory`) dense generators ``(batch, symbols,
    *shape)`` that would not fit in memory: on large convolutional nets, where every
    crossing neuron adds a symbol, DeepZ's state grows as symbols × values."""
    require_memory(batch * symbols * math.prod(shape), like.dtype, like.device,
                   f"DeepZ's generators ({batch} × {symbols} symbols × {math.prod(shape)} values)",
                   "bound this model with crown, crown-ibp or box")


def _padded(z: Zonotope, m: int) -> torch.Tensor:
    g = z.generators
    if g.shape[1] == m:
        return g
    pad = torch.zeros((g.shape[0], m - g.shape[1], *g.shape[2:]), dtype=g.dtype, device=g.device)
    return torch.cat([g, pad], 1)


@register_domain
class DeepZDomain(Domain):
    name = "deepz"
    description = "DeepZ zonotopes (one new error term per crossing neuron)"

    def __init__(self):
        self.symbols = 0

    def input_state(self, lower, upper):
        centre, radius = centre_radius(lower, upper)
        B = lower.shape[0]
        flat = radius.reshape(B, -1)
        active = torch.nonzero((flat > 0).any(0)).reshape(-1)  # one symbol per input that can move
        reserve(1, len(active), flat.shape[1:], lower)
        one_hot = torch.zeros((len(active), flat.shape[1]), dtype=lower.dtype, device=lower.device)
        one_hot[torch.arange(len(active), device=lower.device), active] = 1
        self.symbols = len(active)
        return Zonotope(centre, scale=flat[:, active], shared=one_hot.reshape(len(active), *lower.shape[1:]))

    def constant_state(self, value):
        return Zonotope(value, value.new_zeros((value.shape[0], 0, *value.shape[1:])))

    def concretize(self, state):
        return state.bounds()

    def bound(self, graph, lower, upper, C=None):
        """Exact range of ``C(a + G e)`` over ``e ∈ [−1, 1]^m``: ``Ca ± Σ_j |C G_j|``."""
        if C is None:
            return super().bound(graph, lower, upper, C)
        z = propagate(graph, self, lower, upper)
        B = z.centre.shape[0]
        C = batched_spec(C, B).to(z.centre)
        centre = torch.einsum("bkn,bn->bk", C, z.centre.reshape(B, -1))
        if z.factored:
            shared = z.shared.reshape(z.num_symbols, -1)
            radius = (torch.einsum("bkn,mn->bkm", C, shared) * z.scale.unsqueeze(1)).abs().sum(-1)
        else:
            radius = torch.einsum("bkn,bmn->bkm", C, z.generators.reshape(B, z.num_symbols, -1)).abs().sum(-1)
        return centre - radius, centre + radius

    def fresh(self, coefficients: torch.Tensor) -> torch.Tensor:
        """New symbols for the non-zero entries of ``coefficients`` ``(B, *S)``: ``(B, c, *S)``
        with ``c`` the largest count in any sample, each symbol on one entry. Samples are
        independent, so each numbers its own new symbols; they go after all symbols
        allocated so far (callers pad older generators to ``self.symbols``)."""
        B = coefficients.shape[0]
        flat = coefficients.reshape(B, -1)
        index = per_sample_rows(flat != 0)
        new = torch.zeros((B, index.shape[1], flat.shape[1]), dtype=flat.dtype, device=flat.device)
        new.scatter_(2, index.unsqueeze(2), flat.gather(1, index).unsqueeze(2))
        return new.reshape(B, index.shape[1], *coefficients.shape[1:])

    def extend(self, scaled: torch.Tensor, centre: torch.Tensor, coefficients: torch.Tensor) -> Zonotope:
        """``centre + scaled·e + coefficients·e_new``, aligning ``scaled`` to all symbols."""
        z = Zonotope(centre, scaled)
        new_count = int((coefficients.reshape(coefficients.shape[0], -1) != 0).sum(1).max()) if coefficients.numel() else 0
        reserve(centre.shape[0], self.symbols + new_count, centre.shape[1:], centre)
        old = _padded(z, self.symbols)
        new = self.fresh(coefficients)
        self.symbols += new.shape[1]
        return Zonotope(centre, torch.cat([old, new], 1))


def latent(state: Zonotope, e: torch.Tensor) -> torch.Tensor:
    """The point ``a + G e`` for ``e`` ``(B, m)`` in ``[−1, 1]^m`` (COLT's latent view)."""
    return state.centre + state.combine(e)


@DeepZDomain.transfer(ANY_AFFINE)
def deepz_affine(domain, node, *xs: Zonotope) -> Zonotope:
    fn = FORWARD[node["kind"]]
    centre = fn(node, *[x.centre for x in xs])
    if len(xs) == 1 and xs[0].factored:  # L(s·E) = s·L(E): one pass over the shared rows
        shared = xs[0].shared
        reserve(1, shared.shape[0], centre.shape[1:], centre)  # rows × values: 11 GiB for a 64×64 RGB conv
        out = fn(node, shared) - offset(node, [tuple(shared.shape[1:])], centre)
        return Zonotope(centre, scale=xs[0].scale, shared=out)
    m = max(x.num_symbols for x in xs)
    B = centre.shape[0]
    gens = [_padded(x, m) for x in xs]
    folded = [g.reshape(B * m, *g.shape[2:]) for g in gens]
    if m == 0:
        return Zonotope(centre, centre.new_zeros((B, 0, *centre.shape[1:])))
    reserve(B, m, centre.shape[1:], centre)
    f0 = offset(node, [tuple(g.shape[2:]) for g in gens], centre)
    out = fn(node, *folded) - f0
    return Zonotope(centre, out.reshape(B, m, *out.shape[1:]))


def _band(domain, x: Zonotope, slope: torch.Tensor, low: torch.Tensor, high: torch.Tensor):
    """``y = slope·x + [low, high]`` elementwise: centre ``slope·a + (low+high)/2``, generators
    ``slope·G``, and a fresh symbol of size ``(high−low)/2``."""
    centre = slope * x.centre + (low + high) / 2
    return domain.extend(slope.unsqueeze(1) * x.generators, centre, (high - low) / 2)


@DeepZDomain.transfer(ANY_ELEMENTWISE)
def deepz_elementwise(domain, node, x: Zonotope) -> Zonotope:
    """The relaxation entry's parallel band on ``[l, u] = a ∓ Σ|G|`` (module docstring)."""
    l, u = domain.concretize(x)
    band = RELAXATIONS[node["kind"]].band(node, l, u)
    return _band(domain, x, band.slope, band.low, band.high)


@DeepZDomain.transfer("maxpool")
def deepz_maxpool(domain, node, x: Zonotope) -> Zonotope:
    l, u = domain.concretize(x)
    rel = MaxPoolRelaxation(node, l, u)
    dom = rel.dominates
    picked_c = rel.gather(x.centre.unsqueeze(1))[:, 0]
    picked_g = rel.gather(x.generators)
    lower_sel = rel.gather(l.unsqueeze(1))[:, 0]
    # not dominated: a fresh symbol spanning [max l, max u] (max l is the selected lower bound)
    centre = torch.where(dom, picked_c, (lower_sel + rel.max_u) / 2)
    scaled = torch.where(dom.unsqueeze(1), picked_g, torch.zeros_like(picked_g))
    return domain.extend(scaled, centre, torch.where(dom, torch.zeros_like(centre), (rel.max_u - lower_sel) / 2))


@DeepZDomain.transfer(*SOFTMAX_KINDS)
def deepz_softmax(domain, node, x: Zonotope) -> Zonotope:
    """Between the lines ``A_l x + b_l ≤ y ≤ A_u x + b_u`` of
    :class:`~verifier.ops.softmax.SoftmaxRelaxation`: ``y = A_l x + b_l + w/2 + (w/2)·e_new``
    with ``w`` the largest gap ``(A_u − A_l) x + b_u − b_l`` over the zonotope; per entry,
    the constant ``[L, U]`` (a fresh symbol only) where that is narrower."""
    l, u = domain.concretize(x)
    rel = SoftmaxRelaxation(node["kind"], l, u)
    gens = torch.einsum("b...ij,bm...j->bm...i", rel.lower_weight, x.generators)
    gap_weight = rel.upper_weight - rel.lower_weight
    gap = (torch.einsum("b...ij,b...j->b...i", gap_weight, x.centre) + rel.upper_bias - rel.lower_bias
           + torch.einsum("b...ij,bm...j->bm...i", gap_weight, x.generators).abs().sum(1)).clamp(min=0)
    constant_radius = (rel.upper - rel.lower) / 2
    linear = gens.abs().sum(1) + gap / 2 < constant_radius
    centre = torch.where(linear, rel.apply(x.centre, "lower") + gap / 2, (rel.lower + rel.upper) / 2)
    gens = torch.where(linear.unsqueeze(1), gens, torch.zeros_like(gens))
    return domain.extend(gens, centre, torch.where(linear, gap / 2, constant_radius))


@DeepZDomain.transfer(*BILINEAR)
def deepz_bilinear(domain, node, x: Zonotope, y: Zonotope) -> Zonotope:
    """``x = a_x + Σ_s g_s e_s``, ``y = a_y + Σ_s h_s e_s`` (``B`` linear in each argument):

        ``B(x, y) = B(a_x, a_y) + Σ_s [B(g_s, a_y) + B(a_x, h_s)] e_s + Σ_{s,t} B(g_s, h_t) e_s e_t``.

    The quadratic part: the diagonal ``Σ_s p_s e_s²`` with ``p_s = B(g_s, h_s)`` and
    ``e_s² ∈ [0, 1]`` lies in ``[Σ min(0, p_s), Σ max(0, p_s)]``; the rest in ``±(Q − A)``
    where ``Q = B(Σ_s|g_s|, Σ_t|h_t|)`` bounds ``Σ_{s,t}|B(g_s, h_t)|`` entrywise and
    ``A = Σ_s |p_s|``. So it lies in ``P/2 ± (Q − A/2)`` (``P = Σ_s p_s``): the centre
    moves by ``P/2`` and one fresh symbol per entry gets ``Q − A/2 ≥ 0``."""
    op = BILINEAR[node["kind"]]
    m = max(x.num_symbols, y.num_symbols)
    gx, gy = _padded(x, m), _padded(y, m)
    ax, ay = x.centre.unsqueeze(1), y.centre.unsqueeze(1)
    diagonal = op.product(gx, gy)  # (B, m, *S_z): p_s
    quadratic = op.product(gx.abs().sum(1), gy.abs().sum(1))
    centre = op.product(x.centre, y.centre) + diagonal.sum(1) / 2
    scaled = op.product(gx, ay) + op.product(ax, gy)
    return domain.extend(scaled, centre, (quadratic - diagonal.abs().sum(1) / 2).abs())
