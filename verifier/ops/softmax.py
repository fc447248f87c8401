"""``softmax`` and ``log_softmax`` over the last axis, and their relaxations.

Forward: ``torch.softmax`` / ``torch.log_softmax`` (the max-shifted, overflow-free
evaluation onnxruntime does too). The converter moves the ONNX axis last.

Both are ``yᵢ = f(sᵢ)`` with ``sᵢ = Σ_j e^{z_ij}``, ``z_ij = x_j − x_i`` (so ``z_ii = 0`` and
``sᵢ ≥ 1``) and ``f`` convex and decreasing on ``s > 0``: ``f(s) = 1/s`` (softmax) or
``f(s) = −log s`` (log-softmax). On the box ``x ∈ [l, u]``:

* **interval** (:func:`softmax_interval`, exact): ``yᵢ`` increases with ``xᵢ`` and decreases
  with every other ``x_j``, so ``log yᵢ ≥ lᵢ − log(e^{lᵢ} + Σ_{j≠i} e^{u_j})`` and
  ``log yᵢ ≤ uᵢ − log(e^{uᵢ} + Σ_{j≠i} e^{l_j})``, evaluated by ``logsumexp`` (no overflow).
* **linear bounds** (:class:`SoftmaxRelaxation`; the composition CROWN would back-substitute
  through ``exp``, a sum and ``f``, as in Shi et al. 2020, §3.3, and Bonaert et al. 2021,
  §4.4, done here in one op so no intermediate ``e^{z}`` overflows): each
  ``z_ij ∈ [l_j − uᵢ, u_j − lᵢ]``, where ``e^z`` lies below its chord and above its tangent
  parallel to the chord, so ``S^l(x) ≤ sᵢ ≤ S^u(x)`` (linear in ``x``) and
  ``sᵢ ∈ [sₗ, sᵤ] = [Σ_j e^{min z_ij}, Σ_j e^{max z_ij}]``. Then, ``f`` being convex and
  decreasing, ``yᵢ ≥ f(t) + f'(t)(S^u(x) − t)`` (the tangent at ``t``, where it is parallel to
  ``f``'s chord: ``t = √(sₗ sᵤ)`` for ``1/s``, the logarithmic mean for ``−log s``) and
  ``yᵢ ≤ f(sₗ) + c (S^l(x) − sₗ)`` (the chord, slope ``c ≤ 0``). Where a coefficient is not
  finite (``e^{u_j − lᵢ}`` beyond float64) or ``[sₗ, sᵤ]`` is a point, the row falls back to
  the exact constant bound of the interval. Computed in float64, returned in the input's
  dtype with biases padded outwards by a few ulps of ``|b| + Σ|A||x|``.
"""

from __future__ import annotations

import math

import torch

from ..linalg import cast_outward
from . import Node, forward_op
from .curvature import FLAT, pad
from .surrogate import with_surrogate

SOFTMAX_KINDS = ("softmax", "log_softmax")
TANGENT_MAX = 700.0  # largest tangent point of e^z (e^700 is finite in float64)


@forward_op("softmax")
def softmax(node: Node, x: torch.Tensor) -> torch.Tensor:
    """``yᵢ = e^{xᵢ} / Σ_j e^{x_j}`` over the last axis (with log-softmax's gradient under
    :func:`~verifier.ops.surrogate.surrogate_gradients` when it is the model's output)."""
    return with_surrogate(torch.softmax(x, dim=-1), x, lambda z: torch.log_softmax(z, dim=-1), node)


@forward_op("log_softmax")
def log_softmax(node: Node, x: torch.Tensor) -> torch.Tensor:
    """``yᵢ = xᵢ − log Σ_j e^{x_j}`` over the last axis."""
    return torch.log_softmax(x, dim=-1)


def _with_diagonal(off: torch.Tensor, diagonal: torch.Tensor) -> torch.Tensor:
    """``(…, n, n)``: row ``i`` is ``off`` ``(…, n)`` with entry ``i`` replaced by ``diagonal[i]``."""
    n = off.shape[-1]
    eye = torch.eye(n, dtype=torch.bool, device=off.device)
    return torch.where(eye, diagonal.unsqueeze(-1), off.unsqueeze(-2))


def softmax_interval(kind: str, l: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact bounds ``(…, n)`` of ``softmax`` or ``log_softmax`` (``kind``) over the box
    ``[l, u]`` ``(…, n)`` (module docstring), in float64 padded by a few ulps, then cast to
    ``l``'s dtype outwards; ``nan`` (``∞ − ∞`` for infinite inputs) becomes the trivial
    bound (``[0, 1]``, or ``[−∞, 0]``)."""
    l64, u64 = l.double(), u.double()
    log_lo = l64 - torch.logsumexp(_with_diagonal(u64, l64), dim=-1)
    log_hi = u64 - torch.logsumexp(_with_diagonal(l64, u64), dim=-1)
    return _interval_from_logs(kind, log_lo, log_hi, l, u)


def _interval_from_logs(kind: str, log_lo: torch.Tensor, log_hi: torch.Tensor, l: torch.Tensor,
                        u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The interval of :func:`softmax_interval` from float64 bounds on ``log yᵢ``: padded by
    ``logsumexp``'s rounding, NaN made trivial, exponentiated for softmax, cast outwards."""
    reach = torch.maximum(l.double().abs(), u.double().abs()).nan_to_num(0.0, 0.0, 0.0).amax(-1, keepdim=True)
    log_lo, log_hi = pad(log_lo, log_hi, l.shape[-1] * reach)
    log_lo = torch.nan_to_num(log_lo, nan=-math.inf)
    log_hi = torch.nan_to_num(log_hi, nan=0.0).clamp(max=0.0)
    if kind == "softmax":  # e^x is within half an ulp; in the subnormal range that is absolute
        tiny = torch.finfo(torch.float64).tiny * torch.finfo(torch.float64).eps
        log_lo, log_hi = (torch.exp(log_lo) - tiny).clamp(min=0.0), (torch.exp(log_hi) + tiny).clamp(max=1.0)
    return cast_outward(log_lo, log_hi, l.dtype)


class SoftmaxRelaxation:
    """Linear bounds ``A_l x + b_l ≤ y ≤ A_u x + b_u`` of ``softmax``/``log_softmax`` over the
    box ``[l, u]`` ``(B, *P, n)`` (module docstring): :attr:`lower_weight`,
    :attr:`upper_weight` ``(B, *P, n, n)`` (row ``i`` holds output ``i``'s coefficients on
    ``x``), :attr:`lower_bias`, :attr:`upper_bias` ``(B, *P, n)``, and the exact interval
    :attr:`lower`, :attr:`upper` ``(B, *P, n)``.

    ``alpha`` ``(B, k, *P, n, n + 1)`` in ``[0, 1]`` (α-CROWN's free parameters, one set per
    spec row; default :func:`softmax_alpha_init`, CROWN's choice, without the ``k`` axis):
    entry ``[…, i, j]`` places the tangent of ``e^z`` below ``z_ij`` at
    ``d = zl + α(zu − zl)`` (the upper line of ``yᵢ``), entry ``[…, i, n]`` the tangent of
    ``f`` at ``t = sₗ^{1−α} sᵤ^α`` (the lower line). Every choice is sound. With ``alpha``
    every attribute gains its ``k`` axis after ``B``."""

    def __init__(self, kind: str, l: torch.Tensor, u: torch.Tensor, alpha: torch.Tensor | None = None):
        if alpha is not None:
            l, u = l.unsqueeze(1).expand(alpha.shape[:-1]), u.unsqueeze(1).expand(alpha.shape[:-1])
        n = l.shape[-1]
        points = _Points(kind, l, u)
        # log yᵢ ∈ [−log sᵤ, −log sₗ]: the exact interval, from the sums the lines use
        self.lower, self.upper = _interval_from_logs(kind, -points.log_su, -points.log_sl, l, u)
        alpha = points.default_alpha() if alpha is None else alpha.double()
        s_above = points.exp_chord()
        s_below = points.exp_tangent(alpha[..., :n])
        t = torch.exp(points.log_sl + alpha[..., n] * (points.log_su - points.log_sl))
        if kind == "softmax":
            f = lambda s: 1.0 / s  # noqa: E731
            df = lambda s: -1.0 / (s * s)  # noqa: E731
            chord = -torch.exp(-(points.log_sl + points.log_su))
        else:
            f = lambda s: -torch.log(s)  # noqa: E731
            df = lambda s: -1.0 / s  # noqa: E731
            gap = points.log_su - points.log_sl
            chord = torch.where(points.flat, 0.0, -gap / torch.where(points.flat, 1.0, points.su - points.sl))
        reach = torch.maximum(points.x_l.abs(), points.x_u.abs()).unsqueeze(-2)  # max |x_j|, per row
        lw, lb, lm = _compose(f(t), df(t), t, s_above, reach)
        uw, ub, um = _compose(f(points.sl), chord, points.sl, s_below, reach)
        self.lower_weight, self.lower_bias = _finish(lw, lb, lm, ~points.flat, self.lower, l.dtype, lower=True)
        self.upper_weight, self.upper_bias = _finish(uw, ub, um, ~points.flat, self.upper, l.dtype, lower=False)
        self._prefer_constants(l, u)

    def _prefer_constants(self, l: torch.Tensor, u: torch.Tensor) -> None:
        """Rows whose two lines lie further apart somewhere in the box than the interval's
        width (wide boxes, where the chords of ``e^z`` are poor) take the constant bounds."""
        centre, radius = (l + u) / 2, (u - l) / 2
        gap_weight = self.upper_weight - self.lower_weight
        gap = (torch.einsum("...ij,...j->...i", gap_weight, centre) + torch.einsum("...ij,...j->...i",
               gap_weight.abs(), radius) + self.upper_bias - self.lower_bias)
        worse = (gap >= self.upper - self.lower).detach()
        self.lower_weight = torch.where(worse.unsqueeze(-1), 0.0, self.lower_weight)
        self.upper_weight = torch.where(worse.unsqueeze(-1), 0.0, self.upper_weight)
        self.lower_bias = torch.where(worse, self.lower, self.lower_bias)
        self.upper_bias = torch.where(worse, self.upper, self.upper_bias)

    def apply(self, x: torch.Tensor, which: str) -> torch.Tensor:
        """``A x + b`` for ``x`` of the inputs' shape with the ``which`` (``"lower"``/``"upper"``) line."""
        weight, bias = (self.lower_weight, self.lower_bias) if which == "lower" else (self.upper_weight, self.upper_bias)
        return torch.einsum("...ij,...j->...i", weight, x) + bias


class _Points:
    """The float64 quantities both lines are built from: ``z_ij ∈ [zl, zu]`` ``(…, n, n)``,
    ``sᵢ ∈ [sₗ, sᵤ]`` (and their logs) ``(…, n)``, and where either range is a point."""

    def __init__(self, kind: str, l: torch.Tensor, u: torch.Tensor):
        self.kind = kind
        self.x_l, self.x_u = l.double(), u.double()
        n = l.shape[-1]
        eye = torch.eye(n, dtype=torch.bool, device=l.device)
        self.zl = torch.where(eye, 0.0, self.x_l.unsqueeze(-2) - self.x_u.unsqueeze(-1))  # [i, j]: l_j − u_i
        self.zu = torch.where(eye, 0.0, self.x_u.unsqueeze(-2) - self.x_l.unsqueeze(-1))  # [i, j]: u_j − l_i
        self.log_sl, self.log_su = torch.logsumexp(self.zl, -1), torch.logsumexp(self.zu, -1)
        self.sl, self.su = torch.exp(self.log_sl), torch.exp(self.log_su)
        self.flat = (self.su - self.sl) <= FLAT * torch.clamp(self.su, min=1.0)
        width = self.zu - self.zl
        self.z_flat = width <= FLAT * torch.clamp(torch.maximum(self.zl.abs(), self.zu.abs()), min=1.0)
        self.z_width = torch.where(self.z_flat, 1.0, width)

    def exp_chord(self):
        """``(slope, bias)`` ``(…, n, n)`` of the chord of ``e^z`` (the constant ``e^{zu}`` where flat)."""
        el, eu = torch.exp(self.zl), torch.exp(self.zu)
        slope = torch.where(self.z_flat, 0.0, (eu - el) / self.z_width)
        return slope, torch.where(self.z_flat, eu, el - slope * self.zl)

    def exp_tangent(self, alpha: torch.Tensor):
        """``(slope, bias)`` of the tangent of ``e^z`` at ``d = zl + α(zu − zl)``, kept at most
        :data:`TANGENT_MAX` (any tangent lies below ``e^z``; the constant ``e^{zl}`` where flat)."""
        d = torch.clamp(self.zl + alpha * (self.zu - self.zl), max=TANGENT_MAX)
        ed = torch.exp(d)
        return torch.where(self.z_flat, 0.0, ed), torch.where(self.z_flat, torch.exp(self.zl), ed * (1 - d))

    def default_alpha(self) -> torch.Tensor:
        """CROWN's points ``(…, n, n + 1)``: the tangent of ``e^z`` parallel to its chord (at
        ``d = log`` of the chord's slope, computed in log space), and ``t`` where ``f``'s
        tangent is parallel to its chord (``√(sₗ sᵤ)`` for ``1/s``, the logarithmic mean
        ``(sᵤ − sₗ)/log(sᵤ/sₗ)`` for ``−log s``)."""
        log_slope = (self.zu + torch.log1p(-torch.exp(torch.where(self.z_flat, -1.0, self.zl - self.zu)))
                     - torch.log(self.z_width))
        a_d = torch.where(self.z_flat, 0.5, ((log_slope - self.zl) / self.z_width).clamp(0.0, 1.0))
        if self.kind == "softmax":
            a_t = torch.full_like(self.sl, 0.5)
        else:
            gap = torch.where(self.flat, 1.0, self.log_su - self.log_sl)
            log_mean = torch.log(torch.where(self.flat, 1.0, self.su - self.sl)) - torch.log(gap)
            a_t = torch.where(self.flat, 0.5, ((log_mean - self.log_sl) / gap).clamp(0.0, 1.0))
        return torch.cat([a_d, a_t.unsqueeze(-1)], -1)


def softmax_alpha_init(node: dict, l: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """CROWN's tangent points as α ``(B, *P, n, n + 1)`` (see :class:`SoftmaxRelaxation`)."""
    return _Points(node["kind"], l, u).default_alpha().to(l.dtype)


def _compose(f_at: torch.Tensor, slope: torch.Tensor, at: torch.Tensor, s_line, reach: torch.Tensor):
    """``f_at + slope·(S(x) − at)`` with ``S(x) = Σ_j a_ij (x_j − x_i) + Σ_j b_ij`` as
    ``(W, b, magnitude)``: ``W[i, j] = slope_i (a_ij − δ_ij Σ_k a_ik)``; ``magnitude`` bounds
    the absolute size of every term summed into ``b`` and ``W x`` (its rounding scale)."""
    a, b = s_line
    n = a.shape[-1]
    eye = torch.eye(n, dtype=a.dtype, device=a.device)
    weight = slope.unsqueeze(-1) * (a - eye * a.sum(-1, keepdim=True))
    magnitude = n * (f_at.abs() + slope.abs() * (b.abs().sum(-1) + 2 * (a.abs() * reach).sum(-1) + at.abs()))
    return weight, f_at + slope * (b.sum(-1) - at), magnitude


def _finish(weight, bias, magnitude, usable, constant, dtype, lower: bool):
    """Cast to ``dtype``, pad the bias outwards by ``magnitude``'s rounding, and fall back
    to the constant bound where the line is unusable or not finite."""
    ok = usable & torch.isfinite(bias) & torch.isfinite(weight).all(-1) & torch.isfinite(magnitude.to(dtype))
    weight = torch.where(ok.unsqueeze(-1), weight, 0.0).to(dtype)
    bias = torch.where(ok, bias, 0.0).to(dtype)
    lo, hi = pad(bias, bias, torch.where(ok, magnitude, 0.0).to(dtype))
    return weight, torch.where(ok, lo if lower else hi, constant)


__all__ = ["SOFTMAX_KINDS", "SoftmaxRelaxation", "log_softmax", "softmax", "softmax_alpha_init", "softmax_interval"]
