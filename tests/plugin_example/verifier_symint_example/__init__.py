"""An example third-party domain: forward symbolic intervals (ReluVal-style).

Each value carries a lower and an upper *linear function of the input*,
``A_l x + b_l ≤ v ≤ A_u x + b_u``. It is registered through the entry point
``verifier.domains: symint = verifier_symint_example:SymbolicIntervalDomain`` and uses
only the public plugin API: :class:`verifier.domains.base.Domain`, its ``transfer``
decorator, and the op semantics in :mod:`verifier.ops`.

Affine ops ``L x + f₀``: ``L⁺ = (L + |L|)/2`` and ``L⁻ = (L − |L|)/2`` send lower to lower
(``L⁺A_l + L⁻A_u``) and upper to upper. ReLU: dead → 0, active → identity, crossing →
lower function 0, upper function ``λ(A_u x + b_u − l_U)`` with ``λ = u_U/(u_U − l_U)`` from
the upper function's own concrete range.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from verifier.domains.base import Domain
from verifier.ops import FORWARD, LINEAR_PART


class SymbolicInterval(NamedTuple):
    lower_coef: torch.Tensor  # (B, N, *S): d(lower)/d(input_j)
    lower_bias: torch.Tensor  # (B, *S)
    upper_coef: torch.Tensor
    upper_bias: torch.Tensor


class SymbolicIntervalDomain(Domain):
    name = "symint"
    description = "symbolic intervals (example plugin)"

    def input_state(self, lower, upper):
        self.lower, self.upper = lower.reshape(lower.shape[0], -1), upper.reshape(upper.shape[0], -1)
        B, N = self.lower.shape
        eye = torch.eye(N, dtype=lower.dtype, device=lower.device).expand(B, N, N).reshape(B, N, *lower.shape[1:])
        zero = torch.zeros_like(lower)
        return SymbolicInterval(eye, zero, eye, zero)

    def constant_state(self, value):
        B = value.shape[0]
        coef = value.new_zeros((B, self.lower.shape[1], *value.shape[1:]))
        return SymbolicInterval(coef, value, coef, value)

    def _range(self, coef, bias, upper: bool):
        """Concrete max (``upper``) or min of ``coef·x + bias`` over the input box."""
        c = coef.reshape(coef.shape[0], coef.shape[1], -1)
        pos, neg = c.clamp(min=0), c.clamp(max=0)
        hi_x, lo_x = (self.upper, self.lower) if upper else (self.lower, self.upper)
        value = torch.einsum("bnk,bn->bk", pos, hi_x) + torch.einsum("bnk,bn->bk", neg, lo_x)
        return value.reshape(bias.shape) + bias

    def concretize(self, state):
        return (self._range(state.lower_coef, state.lower_bias, False),
                self._range(state.upper_coef, state.upper_bias, True))


def _apply(node, t: torch.Tensor, sign: int) -> torch.Tensor:
    """``L⁺ t`` (sign +1) or ``L⁻ t`` (sign −1) on a batch with one extra leading axis."""
    B, N = t.shape[:2]
    flat = t.reshape(B * N, *t.shape[2:])
    out = (LINEAR_PART[node["kind"]](node, flat, False) + sign * LINEAR_PART[node["kind"]](node, flat, True)) / 2
    return out.reshape(B, N, *out.shape[1:])


@SymbolicIntervalDomain.transfer(*LINEAR_PART)
def symint_linear(domain, node, x: SymbolicInterval) -> SymbolicInterval:
    zero = torch.zeros_like(x.lower_bias)
    f0 = FORWARD[node["kind"]](node, zero)  # the bias
    part = LINEAR_PART[node["kind"]]
    pos_b = lambda t: (part(node, t, False) + part(node, t, True)) / 2  # noqa: E731
    neg_b = lambda t: (part(node, t, False) - part(node, t, True)) / 2  # noqa: E731
    return SymbolicInterval(
        _apply(node, x.lower_coef, 1) + _apply(node, x.upper_coef, -1),
        pos_b(x.lower_bias) + neg_b(x.upper_bias) + f0,
        _apply(node, x.upper_coef, 1) + _apply(node, x.lower_coef, -1),
        pos_b(x.upper_bias) + neg_b(x.lower_bias) + f0,
    )


@SymbolicIntervalDomain.transfer("reshape")
def symint_reshape(domain, node, x: SymbolicInterval) -> SymbolicInterval:
    B, N = x.lower_coef.shape[:2]
    shape = tuple(node["shape"])
    return SymbolicInterval(x.lower_coef.reshape(B, N, *shape), x.lower_bias.reshape(B, *shape),
                            x.upper_coef.reshape(B, N, *shape), x.upper_bias.reshape(B, *shape))


@SymbolicIntervalDomain.transfer("relu")
def symint_relu(domain, node, x: SymbolicInterval) -> SymbolicInterval:
    lo = domain._range(x.lower_coef, x.lower_bias, False)  # min of the lower function
    up_lo = domain._range(x.upper_coef, x.upper_bias, False)  # range of the upper function
    up_hi = domain._range(x.upper_coef, x.upper_bias, True)
    dead, active = up_hi <= 0, lo >= 0
    crossing = ~dead & ~active
    lam = torch.where(up_lo < 0, up_hi / torch.where(up_hi > up_lo, up_hi - up_lo, torch.ones_like(up_hi)),
                      torch.ones_like(up_hi))
    shift = torch.where(up_lo < 0, -lam * up_lo, torch.zeros_like(up_lo))
    keep_lower = active.to(lo.dtype)
    upper_scale = torch.where(dead, torch.zeros_like(lam), torch.where(crossing, lam, torch.ones_like(lam)))
    upper_shift = torch.where(crossing, shift, torch.zeros_like(shift))
    return SymbolicInterval(
        x.lower_coef * keep_lower.unsqueeze(1), x.lower_bias * keep_lower,
        x.upper_coef * upper_scale.unsqueeze(1), x.upper_bias * upper_scale + upper_shift,
    )
