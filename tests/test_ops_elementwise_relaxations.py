"""The relaxation entries of the elementwise ops of issue 13, checked directly: on random
``l ≤ u`` (narrow, wide, negative, positive, straddling, equal), every sampled ``x ∈ [l, u]``
has ``f(x)`` inside the interval, between CROWN's lines (default and for random α ∈ [0, 1]
per spec row), inside the parallel band and between all LP lines; no coefficient is NaN.
Ranges where an op is undefined, and overflow, are refused with a clear message."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from verifier.errors import VerifierInputError
from verifier.ops import FORWARD
from verifier.ops.relaxation import RELAXATIONS

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# (kind, attrs, where it is defined: None, "positive", "nonnegative", "nonzero")
OPS = [("exp", {}, None), ("log", {}, "positive"), ("softplus", {}, None), ("sqrt", {}, "nonnegative"),
       ("reciprocal", {}, "nonzero"), ("sin", {}, None), ("cos", {}, None), ("erf", {}, None), ("gelu", {}, None),
       ("abs", {}, None), ("hard_swish", {}, None), ("sign", {}, None), ("floor", {}, None), ("ceil", {}, None),
       ("round", {}, None), ("elu", {"alpha": 1.0, "gamma": 1.0}, None),
       ("elu", {"alpha": 1.6732632423543772, "gamma": 1.0507009873554805}, None),
       ("elu", {"alpha": 0.25, "gamma": 2.0}, None)] + \
      [("pow", {"exponent": p}, None) for p in (2.0, 3.0, 4.0, 5.0)] + \
      [("pow", {"exponent": p}, "nonzero") for p in (-1.0, -2.0, -3.0)] + \
      [("pow", {"exponent": p}, "nonnegative") for p in (0.5, 1.5, 2.5, 0.3)] + \
      [("pow", {"exponent": p}, "positive") for p in (-0.5, -1.7)]
IDS = [f"{k}{'-' + '-'.join(f'{v:g}' for v in a.values()) if a else ''}" for k, a, _ in OPS]
SAMPLES = 48
ENTRIES = 64


def _node(kind, attrs):
    return {"kind": kind, "attrs": dict(attrs), "params": {}}


def _boxes(seed: int, domain: str | None, scale: float, dtype=torch.float64):
    """``ENTRIES`` random ranges: centres at ``scale``, widths from 0 (some exactly) to wide,
    moved into the op's domain."""
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(ENTRIES, generator=g, dtype=torch.float64) * scale
    widths = torch.tensor([0.0, 1e-9, 1e-3, 0.5, 3.0, 30.0], dtype=torch.float64)
    w = torch.rand(ENTRIES, generator=g, dtype=torch.float64) * widths[torch.randint(0, 6, (ENTRIES,), generator=g)]
    w[:4] = 0.0
    l, u = c - w / 2, c + w / 2
    if domain in ("positive", "nonnegative", "nonzero"):
        shift = 1e-3 if domain != "nonnegative" else 0.0
        a, b = l.abs() + shift, u.abs() + shift
        lo, hi = torch.minimum(a, b), torch.maximum(a, b)
        if domain == "nonnegative":
            lo[4] = 0.0  # an end exactly at 0 (√x: infinite slope there)
        if domain == "nonzero":
            neg = c < 0
            lo, hi = torch.where(neg, -hi, lo), torch.where(neg, -lo, hi)
        l, u = lo, hi
    return l.to(dtype), u.to(dtype)


def _tol(y):
    return 1e-9 * (1 + y.abs()) if y.dtype == torch.float64 else 1e-5 * (1 + y.abs())


def _within(y, lo, hi):
    return bool(((y >= lo - _tol(y)) & (y <= hi + _tol(y))).all())


def _check(kind, attrs, domain, seed, scale, dtype=torch.float64):
    node, rel, f = _node(kind, attrs), RELAXATIONS[kind], FORWARD[kind]
    l, u = _boxes(seed, domain, scale, dtype)
    if kind == "exp":
        l, u = l.clamp(max=80.0), u.clamp(max=80.0)
    t = torch.rand(SAMPLES, 1, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    t[0], t[1] = 0.0, 1.0
    x = torch.minimum(torch.maximum(l + t * (u - l), l), u)
    y = f(node, x)
    lo, hi = rel.interval(node, l, u)
    assert _within(y, lo, hi), "interval"
    lines = rel.lines(node, l, u)
    assert not any(bool(torch.isnan(v).any()) for v in lines)
    assert _within(y, lines.lower_slope * x + lines.lower_bias, lines.upper_slope * x + lines.upper_bias), "lines"
    alpha = torch.rand(1, 3, ENTRIES, generator=torch.Generator().manual_seed(seed + 1), dtype=dtype)
    alpha[0, 0, :8] = 0.0
    alpha[0, 1, :8] = 1.0
    per_row = rel.lines(node, l[None], u[None], alpha=alpha)
    xs, ys = x[:, None, :], y[:, None, :]
    assert _within(ys, per_row.lower_slope[0] * xs + per_row.lower_bias[0],
                   per_row.upper_slope[0] * xs + per_row.upper_bias[0]), "alpha lines"
    init = rel.alpha_init(node, l, u)
    assert init.shape == l.shape and bool(((init >= 0) & (init <= 1)).all())
    band = rel.band(node, l, u)
    g = y - band.slope * x
    assert _within(g, band.low, band.high), "band"
    lower, upper = rel.lp_lines(node, l, u)
    for s, b in lower:
        assert bool((y >= s * x + b - _tol(y)).all()), "lp lower"
    for s, b in upper:
        assert bool((y <= s * x + b + _tol(y)).all()), "lp upper"


SETTINGS = settings(max_examples=12, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@pytest.mark.parametrize(("kind", "attrs", "domain"), OPS, ids=IDS)
@SETTINGS
@given(seed=st.integers(0, 2**31 - 1), scale=st.sampled_from([0.3, 2.0, 6.0, 40.0]))
def test_relaxation_is_sound(kind, attrs, domain, seed, scale):
    _check(kind, attrs, domain, seed, scale)


@pytest.mark.parametrize(("kind", "attrs", "domain"), OPS, ids=IDS)
def test_relaxation_is_sound_in_float32(kind, attrs, domain):
    _check(kind, attrs, domain, 7, 3.0, torch.float32)


def test_alpha_init_reproduces_the_default_lines():
    for kind, attrs, domain in OPS:
        node, rel = _node(kind, attrs), RELAXATIONS[kind]
        l, u = _boxes(3, domain, 2.0)
        default = rel.lines(node, l, u)
        chosen = rel.lines(node, l[None], u[None], alpha=rel.alpha_init(node, l, u)[None, None])
        for a, b in zip(default, chosen):
            torch.testing.assert_close(a.expand_as(b[0, 0]), b[0, 0].expand_as(a), msg=kind)


def test_exact_intervals():
    """Box is exact for the non-monotone ops: the stationary points and the ends."""
    def interval(kind, lo, hi, **attrs):
        return [float(v) for v in RELAXATIONS[kind].interval(_node(kind, attrs), torch.tensor([lo], dtype=torch.float64),
                                                             torch.tensor([hi], dtype=torch.float64))]
    assert interval("abs", -2.0, 1.0) == [0.0, 2.0]
    assert interval("pow", -2.0, 1.0, exponent=2.0) == [0.0, 4.0]
    assert interval("hard_swish", -4.0, 1.0) == pytest.approx([-0.375, 2 / 3])
    assert interval("gelu", -3.0, 1.0)[0] == pytest.approx(-0.16997120, abs=1e-7)
    assert interval("sin", 0.0, 2 * np.pi) == pytest.approx([-1.0, 1.0], abs=1e-12)
    assert interval("cos", 0.1, 3.0) == pytest.approx([np.cos(3.0), np.cos(0.1)], abs=1e-12)
    assert interval("reciprocal", -4.0, -2.0) == pytest.approx([-0.5, -0.25])


@pytest.mark.parametrize(("kind", "attrs", "lo", "hi"), [
    ("log", {}, -1.0, 2.0), ("log", {}, 0.0, 1.0), ("sqrt", {}, -0.5, 1.0), ("reciprocal", {}, -1.0, 1.0),
    ("reciprocal", {}, 0.0, 1.0), ("pow", {"exponent": -2.0}, -1.0, 1.0), ("pow", {"exponent": 0.5}, -1.0, 1.0),
    ("pow", {"exponent": -0.5}, 0.0, 1.0)])
def test_undefined_ranges_are_refused(kind, attrs, lo, hi):
    node, rel = _node(kind, attrs), RELAXATIONS[kind]
    l, u = torch.tensor([[1.0, lo]], dtype=torch.float64), torch.tensor([[2.0, hi]], dtype=torch.float64)
    for method in (rel.interval, rel.lines, rel.band, rel.lp_lines):
        with pytest.raises(VerifierInputError, match=f"op '{kind}' is undefined or infinite .*{lo:g}, {hi:g}"):
            method(node, l, u)


def test_exp_overflow_is_refused_never_nan():
    node, rel = _node("exp", {}), RELAXATIONS["exp"]
    l, u = torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 200.0]])
    lo, hi = rel.interval(node, l, u)
    assert float(hi[0, 1]) == float("inf") and not bool(torch.isnan(lo).any())
    with pytest.raises(VerifierInputError, match="op 'exp'.*not finite in float32"):
        rel.lines(node, l, u)
    lines = rel.lines(node, l.double(), u.double())  # float64 holds e^200
    assert all(bool(torch.isfinite(v).all()) for v in lines)
