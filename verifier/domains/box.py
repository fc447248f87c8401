"""Box / IBP: every value is an interval ``[l, u]`` per entry.

IBP (Gowal et al. 2018, eq. 6; Mirman et al. 2018's Box):

* linear ops ``y = L x + b``: ``c = (l+u)/2``, ``r = (u−l)/2``, ``y ∈ [Lc + b − |L| r, Lc + b + |L| r]``;
* ops declared non-decreasing (:data:`~verifier.ops.MONOTONE_KINDS`: max-pool, ``add``,
  index ops): map both endpoints;
* elementwise nonlinear ops: the exact range from their relaxation entry
  (:meth:`~verifier.ops.relaxation.Relaxation.interval`);
* softmax / log-softmax: the exact range of each output, increasing in its own input and
  decreasing in the others (:func:`~verifier.ops.softmax.softmax_interval`);
* bilinear ops (``mul``, ``matmul``, :mod:`verifier.ops.bilinear`): each scalar product
  term ``x·y`` takes its exact range ``[min, max]`` of the four corner products, and a
  matrix product sums them over ``k`` (exact for ``mul``; for ``matmul`` the interval
  matrix product, never looser than the midpoint-radius form ``c_x c_y ± (|c_x| r_y +
  r_x |c_y| + r_x r_y)``).

With a spec matrix ``C`` and a final ``linear`` op, ``C`` is folded into the last weight
(``C W`` then interval arithmetic), which is tighter than bounding ``C`` times the logit box.
"""

from __future__ import annotations

from typing import NamedTuple

import networkx as nx
import torch

from ..engine import propagate
from ..ir.graph import predecessors_by_slot
from ..linalg import batched_spec, cast_outward, interval_matmul
from ..ops import CACHE, FORWARD, LINEAR_PART, cached_while_constant, derived
from ..ops.bilinear import BILINEAR
from ..ops.categories import ANY_ELEMENTWISE, ANY_LINEAR, ANY_MONOTONE
from ..ops.relaxation import RELAXATIONS
from ..ops.softmax import SOFTMAX_KINDS, softmax_interval
from . import register_domain
from .base import Domain


class Interval(NamedTuple):
    lower: torch.Tensor
    upper: torch.Tensor


@register_domain
class BoxDomain(Domain):
    name = "box"
    description = "interval bound propagation (IBP); cheapest, loosest"

    def input_state(self, lower, upper):
        return Interval(lower, upper)

    def constant_state(self, value):
        return Interval(value, value)

    def concretize(self, state):
        return state.lower, state.upper

    def bound(self, graph: nx.DiGraph, lower, upper, C=None):
        out = graph.nodes[graph.graph["output"]]
        if C is None or out["kind"] != "linear" or out["attrs"]["side"] != "right" or any(s != 1 for s in out["shape"][:-1]):
            return super().bound(graph, lower, upper, C)
        (last_in,) = predecessors_by_slot(graph, graph.graph["output"])
        states = propagate(graph, self, lower, upper, keep=True)
        xl, xu = states[last_in]
        xl, xu = xl.reshape(xl.shape[0], -1), xu.reshape(xu.shape[0], -1)
        weight = out["params"]["weight"]  # (k_in, n): y = x W + b
        C = batched_spec(C, xl.shape[0]).to(xl)
        lb, ub = interval_matmul(C @ weight.transpose(0, 1), xl, xu)
        bias = out["params"].get("bias")
        if bias is not None:
            shift = torch.einsum("bkn,n->bk", C, bias.reshape(-1).expand(weight.shape[1]))
            lb, ub = lb + shift, ub + shift
        return lb, ub


SMALL_PRODUCT = 1 << 21  # multiply-adds below which one 9×-larger product beats seven small ops


def _signed_abs_blocks(weight: torch.Tensor) -> torch.Tensor:
    """``[[W⁺, W⁻, 0], [W⁻, W⁺, 0], [0, 0, |W|]]`` (``3k × 3n``) for ``W`` of shape ``(k, n)``:
    ``[l, u, m]`` times it is ``[lW⁺ + uW⁻, lW⁻ + uW⁺, m|W|]``."""
    pos, neg, zero = weight.clamp(min=0), weight.clamp(max=0), torch.zeros_like(weight)
    return torch.cat([torch.cat([pos, neg, zero], 1), torch.cat([neg, pos, zero], 1),
                      torch.cat([zero, zero, weight.abs()], 1)], 0)


@BoxDomain.transfer(ANY_LINEAR)
def box_linear(domain, node, x: Interval) -> Interval:
    """The interval of a linear op (:func:`interval_linear`), accumulated in float64 for a
    narrower input (float32, float16, bfloat16) that carries no gradient, then rounded
    outwards to the input's dtype (:func:`~verifier.linalg.cast_outward`).

    Why: :func:`interval_linear`'s rounding margin ``ρ`` is Higham's worst case
    ``(n + 3)·eps·(|mid| + 2|L||c| + w)``; in float32 (``eps = 2⁻²³``) and for a narrow or
    degenerate box (``w ≈ 0``) the ``|L||c|`` term dominates the width: a point on
    mnist_fc's 256x6 net came out 0.086 wide. Soundness is unchanged: a float32 (or
    narrower) number is a float64 number exactly, so the float64 evaluation is
    :func:`interval_linear`'s rigorous interval of the same op on the same box, its margin
    now with float64's ``eps = 2⁻⁵²``; rounding its ends outwards (down, up) to the input
    dtype can only widen it. The result is within an ulp or two of the input dtype of the
    exact range (for a point: of the exact value). Under autograd (IBP training) the
    narrow path is kept: outward rounding has no gradient, and float64 would double the
    cost of every training step."""
    if _widen(node, x):
        wide = cached_while_constant(node, ("box", "float64 node"), tuple(node["params"].values()),
                                     lambda: {**{k: v for k, v in node.items() if k != CACHE},
                                              "params": {k: v.double() for k, v in node["params"].items()}})
        out = interval_linear(wide, Interval(x.lower.double(), x.upper.double()))
        return Interval(*cast_outward(out.lower, out.upper, x.lower.dtype))
    return interval_linear(node, x)


NARROW = (torch.float32, torch.float16, torch.bfloat16)


TIGHTNESS = 0.01  # margin / width above which a narrow box is accumulated in float64


def _widen(node, x: Interval) -> bool:
    """Whether :func:`box_linear` accumulates in float64: a narrow input without gradient
    (parameters included), on a device with float64 (not Apple's MPS), whose rounding
    margin would matter: ``(n + 3)·eps·Σ (|l| + |u|) > TIGHTNESS · Σ (u − l)`` over the
    batch (``n`` inputs per sample), i.e. ``ρ``'s ``|L||c|`` term would add more than about
    1 % to the width. Wider boxes keep the narrow path, whose cost float64 would double
    (measured on mnist_fc 256x6, one CPU thread: 2.6 → 5.7 ms at batch 1, 24 → 60 ms at batch
    256); the choice changes tightness only, never soundness."""
    if x.lower.dtype not in NARROW or x.lower.device.type == "mps":
        return False
    tensors = [x.lower, x.upper, *node["params"].values()]
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return False
    n, eps = x.lower[0].numel(), torch.finfo(x.lower.dtype).eps
    reach = x.lower.abs().sum() + x.upper.abs().sum()  # ≥ Σ max(|l|, |u|): a heuristic, no rounding concern
    return bool((n + 3) * eps * reach > TIGHTNESS * (x.upper - x.lower).sum())


def interval_linear(node, x: Interval) -> Interval:
    """``mid = L((l+u)/2) + b``, ``w = |L|(u − l)``, ``[mid − w/2 − ρ, mid + w/2 + ρ]``.

    ``ρ`` is the rounding error of those sums (Higham's ``γ_n``: a sum of ``n`` products
    is off by at most ``(n + 3)·eps`` times the sum of their magnitudes), with ``n`` the
    input's size: ``ρ = (n + 3)·eps·(|mid| + 2|L||c| + w)``. Without it, ``mid ∓ w/2``
    cancels catastrophically where ``|c| ≫ r`` (a power-flow proxy: ``x ∈ [0, 4.4e18]``
    shifted by −9800.97 gave −9728, above every real value).

    Small dense ``y = x W + b``: ``[l', u'] = [l, u] · [[W⁺, W⁻], [W⁻, W⁺]] + [b, b]`` in one
    product with ``|W| max(|l|, |u|)`` for ``ρ`` (``ρ = (2n + 3)·eps·(|W| max(|l|, |u|) + |b|)``),
    since tiny layers cost per call, not per flop."""
    weight, bias = node["params"].get("weight"), node["params"].get("bias")
    n = x.lower[0].numel()
    eps = torch.finfo(x.lower.dtype).eps
    if (node["kind"] == "linear" and node["attrs"]["side"] == "right"
            and (bias is None or tuple(bias.shape) == (weight.shape[1],))
            and x.lower.numel() * weight.shape[1] <= SMALL_PRODUCT):
        blocks = derived(node, "weight", "signed_abs_blocks", _signed_abs_blocks)
        reach = torch.maximum(x.lower.abs(), x.upper.abs())
        out = torch.nn.functional.linear(torch.cat([x.lower, x.upper, reach], -1), blocks.t())
        low, high, size = out.chunk(3, dim=-1)
        if bias is not None:
            low, high, size = low + bias, high + bias, size + bias.abs()
        rho = (2 * n + 3) * eps * size
        return _unbounded_where_nan(low - rho, high + rho)
    centre = torch.lerp(x.lower, x.upper, 0.5)
    mid = FORWARD[node["kind"]](node, centre)
    width, size = LINEAR_PART[node["kind"]](node, torch.cat([x.upper - x.lower, centre.abs()]), True).chunk(2)
    half = width / 2 + (n + 3) * eps * (mid.abs() + 2 * size + width)
    return _unbounded_where_nan(mid - half, mid + half)


def _unbounded_where_nan(lower: torch.Tensor, upper: torch.Tensor) -> Interval:
    """``[−∞, ∞]`` where interval arithmetic met an infinite input (``∞ − ∞`` or ``0·∞``
    give NaN): sound, and never a NaN bound that a comparison would silently pass."""
    return Interval(torch.where(torch.isnan(lower), -torch.inf, lower), torch.where(torch.isnan(upper), torch.inf, upper))


@BoxDomain.transfer(ANY_MONOTONE)
def box_monotone(domain, node, *xs: Interval) -> Interval:
    """Non-decreasing in every input entry: ``f(l) ≤ f(x) ≤ f(u)``."""
    fn = FORWARD[node["kind"]]
    return Interval(fn(node, *[x.lower for x in xs]), fn(node, *[x.upper for x in xs]))


@BoxDomain.transfer(ANY_ELEMENTWISE)
def box_elementwise(domain, node, x: Interval) -> Interval:
    """The exact range of ``f`` over ``[l, u]`` (the relaxation table's ``interval``)."""
    return Interval(*RELAXATIONS[node["kind"]].interval(node, x.lower, x.upper))


@BoxDomain.transfer(*SOFTMAX_KINDS)
def box_softmax(domain, node, x: Interval) -> Interval:
    """The exact range of each softmax / log-softmax output (:func:`~verifier.ops.softmax.softmax_interval`)."""
    return Interval(*softmax_interval(node["kind"], x.lower, x.upper))


@BoxDomain.transfer(*BILINEAR)
def box_bilinear(domain, node, x: Interval, y: Interval) -> Interval:
    """Sum over the product terms of their exact corner ranges (module docstring)."""
    return Interval(*BILINEAR[node["kind"]].interval(x.lower, x.upper, y.lower, y.upper))
