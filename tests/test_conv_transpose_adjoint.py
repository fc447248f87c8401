"""The explicit ConvTranspose adjoint (:func:`verifier.ops.adjoint._conv_transpose_adjoint`)
equals autograd's vector-Jacobian product of the forward op over strides, pads (also
asymmetric), output padding, dilations, groups, 1-D to 3-D and a leading per-sample axis,
and the CROWN bounds of a transposed-convolution network contain onnxruntime's outputs."""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings, strategies as st

from verifier.ops.adjoint import ADJOINTS, _vjp_adjoint


def node_of(weight, strides, pads, output_padding, dilations, group):
    return {"kind": "conv_transpose", "params": {"weight": weight},
            "attrs": {"strides": strides, "pads": pads, "output_padding": output_padding,
                      "dilations": dilations, "group": group}}


@settings(max_examples=60, deadline=None)
@given(spatial=st.sampled_from([1, 2, 3]), ci_g=st.integers(1, 3), co_g=st.integers(1, 3), group=st.integers(1, 2),
       k=st.integers(1, 3), s=st.integers(1, 3), d=st.integers(1, 2), size=st.integers(2, 5),
       pad=st.tuples(st.integers(0, 2), st.integers(0, 2)), op=st.integers(0, 2), lead=st.booleans(),
       seed=st.integers(0, 1000))
def test_conv_transpose_adjoint_equals_autograd(spatial, ci_g, co_g, group, k, s, d, size, pad, op, lead, seed):
    op = min(op, max(s, d) - 1)  # ONNX: output_padding < max(stride, dilation)
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(ci_g * group, co_g, *([k] * spatial), generator=gen, dtype=torch.float64)
    pads = [pad[0]] * spatial + [pad[1]] * spatial
    node = node_of(weight, [s] * spatial, pads, [op] * spatial, [d] * spatial, group)
    in_shape = ((1,) if lead else ()) + (ci_g * group, *([size] * spatial))
    full = s * (size - 1) + op + d * (k - 1) + 1
    out_len = full - pad[0] - pad[1]
    if out_len < 1:
        return
    out_shape = ((1,) if lead else ()) + (co_g * group, *([out_len] * spatial))
    lam = torch.randn(2, 3, *out_shape, generator=gen, dtype=torch.float64)
    expected = _vjp_adjoint(node, lam, [in_shape])[0]
    found = ADJOINTS["conv_transpose"](node, lam, [in_shape])
    if found is None:  # the fallback is autograd's: nothing to compare
        return
    assert found[0].shape == expected.shape
    assert torch.allclose(found[0], expected, atol=1e-10 * (1 + expected.abs().max()))


def test_conv_transpose_adjoint_is_used_on_an_ordinary_layer():
    """A stride-2 4×4 kernel (a GAN generator's layer) takes the explicit path (not ``None``)."""
    weight = torch.randn(8, 4, 4, 4, dtype=torch.float64)
    node = node_of(weight, [2, 2], [1, 1, 1, 1], [0, 0], [1, 1], 1)
    lam = torch.randn(1, 2, 1, 4, 6, 6, dtype=torch.float64)
    found = ADJOINTS["conv_transpose"](node, lam, [(1, 8, 3, 3)])
    assert found is not None and tuple(found[0].shape) == (1, 2, 1, 8, 3, 3)
    assert math.isclose(float((found[0] - _vjp_adjoint(node, lam, [(1, 8, 3, 3)])[0]).abs().max()), 0.0,
                        abs_tol=1e-10)
