"""Softmax / LogSoftmax as one op kind (:mod:`verifier.ops.softmax`).

The class of fault fixed here: a lowering through ``e^{x_j − x_i}`` overflowed to ``inf``
(then ``0·∞ = NaN``) on large logits, so quantised nets with a Softmax head disagreed with
onnxruntime at load and bounds became NaN. Properties:

* the relaxation's interval and both lines contain the exact (float64) value at sampled
  and corner points, for narrow, wide, huge-logit and mixed boxes, float32 and float64;
* a model whose logits reach ±10⁴ loads (fidelity check against onnxruntime) and every
  domain's bounds contain onnxruntime's outputs;
* the interval is exact: its ends are attained at box corners.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import verifier
from verifier.ops.softmax import SoftmaxRelaxation, softmax_interval
from onnx_builders import DOUBLE, FLOAT, GraphBuilder, Reference, save_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SETTINGS = settings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
KINDS = ("softmax", "log_softmax")
EXACT = {"softmax": torch.softmax, "log_softmax": torch.log_softmax}


def _box(seed: int, n: int, scale: float, width: float, dtype: torch.dtype):
    g = torch.Generator().manual_seed(seed)
    centre = torch.randn(2, 3, n, generator=g, dtype=torch.float64) * scale
    radius = torch.rand(2, 3, n, generator=g, dtype=torch.float64) * width
    return (centre - radius).to(dtype), (centre + radius).to(dtype)


def _points(l: torch.Tensor, u: torch.Tensor, count: int, seed: int) -> torch.Tensor:
    """Uniform samples and every box corner of the first entries, ``(count + corners, *l.shape)``, float64."""
    g = torch.Generator().manual_seed(seed)
    l64, u64 = l.double(), u.double()
    inside = l64 + (u64 - l64) * torch.rand(count, *l.shape, generator=g, dtype=torch.float64)
    n = l.shape[-1]
    corners = torch.tensor([[(c >> j) & 1 for j in range(n)] for c in range(2 ** n)], dtype=torch.float64)
    corner_points = l64 + (u64 - l64) * corners.reshape(-1, 1, 1, n)
    return torch.cat([inside, corner_points])


@SETTINGS
@given(kind=st.sampled_from(KINDS), seed=st.integers(0, 2**31 - 1), n=st.integers(1, 6),
       scale=st.sampled_from([0.0, 1.0, 30.0, 1e3, 1e4]), width=st.sampled_from([0.0, 1e-6, 0.1, 3.0, 100.0]),
       dtype=st.sampled_from([torch.float32, torch.float64]))
def test_interval_and_lines_contain_the_exact_value(kind, seed, n, scale, width, dtype):
    l, u = _box(seed, n, scale, width, dtype)
    rel = SoftmaxRelaxation(kind, l, u)
    x = _points(l, u, 300, seed)
    y = EXACT[kind](x, dim=-1)
    y_lo, y_hi = y - 1e-12 * y.abs(), y + 1e-12 * y.abs()  # float64's own rounding of the reference
    for name, value in (("lower", rel.lower), ("upper", rel.upper), ("lower_bias", rel.lower_bias)):
        assert torch.isfinite(value).all() or kind == "log_softmax", name
    below = torch.einsum("...ij,...j->...i", rel.lower_weight.double(), x) + rel.lower_bias.double()
    above = torch.einsum("...ij,...j->...i", rel.upper_weight.double(), x) + rel.upper_bias.double()
    assert bool((rel.lower.double() <= y_hi).all()) and bool((y_lo <= rel.upper.double()).all())
    assert bool((below <= y_hi).all()), float((below - y).max())
    assert bool((y_lo <= above).all()), float((y - above).max())


@SETTINGS
@given(kind=st.sampled_from(KINDS), seed=st.integers(0, 2**31 - 1), n=st.integers(2, 5),
       width=st.sampled_from([0.01, 1.0, 10.0]))
def test_interval_is_attained_at_corners(kind, seed, n, width):
    """``yᵢ`` is smallest at ``(xᵢ = lᵢ, x_j = u_j)`` and largest at the opposite corner."""
    l, u = _box(seed, n, 2.0, width, torch.float64)
    lower, upper = softmax_interval(kind, l, u)
    eye = torch.eye(n, dtype=torch.bool)
    worst = EXACT[kind](torch.where(eye, l.unsqueeze(-2), u.unsqueeze(-2)), dim=-1).diagonal(dim1=-2, dim2=-1)
    best = EXACT[kind](torch.where(eye, u.unsqueeze(-2), l.unsqueeze(-2)), dim=-1).diagonal(dim1=-2, dim2=-1)
    assert bool((lower <= worst).all()) and bool((upper >= best).all())
    torch.testing.assert_close(lower, worst, rtol=1e-12, atol=1e-12)  # only the rounding pad apart
    torch.testing.assert_close(upper, best, rtol=1e-12, atol=1e-12)


def _huge_logit_model(tmp_path, op: str, elem_type: int, axis: int | None = None):
    """``x (N, 3) → Gemm (weights ~ 3000) → op → Gemm``: logits reach ±10⁴, where
    ``e^{x_j − x_i}`` overflows in float32 and float64."""
    g = GraphBuilder(np.random.default_rng(3), ["N", 3], elem_type=elem_type)
    h = g.op("Gemm", g.x, g.rand(5, 3, scale=3000.0), transB=1)
    h = g.op(op, h, **({} if axis is None else {"axis": axis}))
    return save_model(g.model(g.op("Gemm", h, g.weight(2, 5), transB=1)), tmp_path)


@pytest.mark.parametrize("elem_type", [FLOAT, DOUBLE])
@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
def test_huge_logits_load_and_every_domain_contains_onnxruntime(tmp_path, op, elem_type):
    path = _huge_logit_model(tmp_path, op, elem_type)
    model = verifier.load(path)  # the fidelity check against onnxruntime
    np_type = np.float32 if elem_type == FLOAT else np.float64
    rng = np.random.default_rng(0)
    centre = rng.normal(size=(1, 1, 3))
    lo, hi = (centre - 0.01).astype(np_type), (centre + 0.01).astype(np_type)
    x = (lo + (hi - lo) * rng.random((2000, 1, 3))).astype(np_type)
    ys = Reference(path).run(x.reshape(-1, 3))
    for domain, options in {"box": {}, "deepz": {}, "crown": {}, "alpha-crown": {"iterations": 5}, "lp": {}}.items():
        lb, ub = verifier.compute_bounds(model, torch.as_tensor(lo), torch.as_tensor(hi), domain=domain, **options)
        lb, ub = lb.double().numpy().reshape(1, -1), ub.double().numpy().reshape(1, -1)
        assert np.isfinite(lb).all() and np.isfinite(ub).all(), domain
        slack = 1e-5 * (1 + np.abs(ys))
        assert (ys >= lb - slack).all() and (ys <= ub + slack).all(), domain


def test_linear_bounds_beat_the_interval_on_a_narrow_box(tmp_path):
    """Where the box is narrow, CROWN through the softmax's lines is tighter than IBP
    (the lines carry the correlation between the outputs that an interval loses)."""
    g = GraphBuilder(np.random.default_rng(0), ["N", 3], elem_type=DOUBLE)
    h = g.op("Softmax", g.op("Gemm", g.x, g.weight(5, 3), transB=1))
    model = verifier.load(save_model(g.model(g.op("Gemm", h, g.weight(2, 5), transB=1)), tmp_path))
    lo, hi = torch.full((1, 1, 3), -0.05, dtype=torch.float64), torch.full((1, 1, 3), 0.05, dtype=torch.float64)
    box = verifier.compute_bounds(model, lo, hi, domain="box")
    crown = verifier.compute_bounds(model, lo, hi, domain="crown")
    assert bool(((crown[1] - crown[0]) < 0.7 * (box[1] - box[0])).all())


@SETTINGS
@given(kind=st.sampled_from(KINDS), seed=st.integers(0, 2**31 - 1), n=st.integers(1, 5),
       scale=st.sampled_from([0.0, 1.0, 30.0]), width=st.sampled_from([1e-6, 0.1, 3.0]))
def test_every_tangent_point_alpha_gives_sound_lines(kind, seed, n, scale, width):
    """α-CROWN moves the tangent points anywhere in ``[0, 1]``: the lines stay sound for
    random α, one set per spec row (``k = 2``), and CROWN's α reproduces CROWN's lines."""
    from verifier.ops.softmax import softmax_alpha_init

    l, u = _box(seed, n, scale, width, torch.float64)
    g = torch.Generator().manual_seed(seed)
    alpha = torch.rand(l.shape[0], 2, *l.shape[1:], n + 1, generator=g, dtype=torch.float64)
    rel = SoftmaxRelaxation(kind, l, u, alpha=alpha)
    x = _points(l, u, 200, seed).unsqueeze(2)  # (samples, B, 1, P, n)
    y = EXACT[kind](x, dim=-1)
    below = torch.einsum("...ij,...j->...i", rel.lower_weight, x) + rel.lower_bias
    above = torch.einsum("...ij,...j->...i", rel.upper_weight, x) + rel.upper_bias
    assert bool((below <= y + 1e-12 * y.abs()).all()) and bool((y - 1e-12 * y.abs() <= above).all())
    default = SoftmaxRelaxation(kind, l, u)
    again = SoftmaxRelaxation(kind, l, u, alpha=softmax_alpha_init({"kind": kind}, l, u).unsqueeze(1))
    torch.testing.assert_close(again.lower_bias[:, 0], default.lower_bias, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(again.upper_weight[:, 0], default.upper_weight, rtol=1e-9, atol=1e-12)
