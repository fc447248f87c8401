"""Sums and contractions: ReduceSum/ReduceMean (any axes, keepdims, axes as attribute or
input, noop_with_empty_axes), Resize/Upsample (nearest, linear, cubic; scales or sizes;
the coordinate transformation modes), Einsum with one variable operand and MatMul with a
batched constant (also through the einsum path): fidelity with onnxruntime and every
domain's bounds contain sampled outputs (see :mod:`index_cases`)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import verifier
from index_cases import check_model, kinds, wrap
from onnx_builders import GraphBuilder, save_model
from verifier.errors import UnsupportedModelError

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SETTINGS = settings(max_examples=4, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                           HealthCheck.data_too_large])


def _builder(shape, seed=0, opset=13):
    return GraphBuilder(np.random.default_rng(seed), (1, *shape), opset=opset)


@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=3), data=st.data(),
       op=st.sampled_from(["ReduceSum", "ReduceMean"]), opset=st.sampled_from([11, 13, 18]),
       keepdims=st.sampled_from([0, 1]), relu=st.tuples(st.booleans(), st.booleans()))
@SETTINGS
def test_reduce_sum_mean(shape, data, op, opset, keepdims, relu, tmp_path):
    g = _builder(shape, opset=opset)
    rank = len(shape) + 1
    axes = data.draw(st.lists(st.integers(-rank, rank - 1), max_size=rank, unique_by=lambda a: a % rank))
    as_input = opset >= 18 or (op == "ReduceSum" and opset >= 13)

    def reduce(h):
        if not axes:
            return g.op(op, h, keepdims=keepdims)
        if as_input:
            return g.op(op, h, g.ints(axes), keepdims=keepdims)
        return g.op(op, h, axes=axes, keepdims=keepdims)

    model = check_model(g.model(wrap(g, reduce, *relu)), tmp_path)
    assert "reduce_sum" in kinds(model)


def test_reduce_noop_with_empty_axes(tmp_path):
    g = _builder((3, 2), opset=18)
    y = g.op("ReduceMean", g.op("Relu", g.x), noop_with_empty_axes=1)
    model = check_model(g.model(y), tmp_path)
    assert "reduce_sum" not in kinds(model)


RESIZE_CASES = {
    "nearest-half_pixel-round_prefer_floor": dict(mode="nearest", nearest_mode="round_prefer_floor"),
    "nearest-asymmetric-floor": dict(mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
    "nearest-tf_half_pixel_for_nn-ceil": dict(mode="nearest", coordinate_transformation_mode="tf_half_pixel_for_nn",
                                              nearest_mode="ceil"),
    "linear-half_pixel": dict(mode="linear"),
    "linear-align_corners": dict(mode="linear", coordinate_transformation_mode="align_corners"),
    "linear-asymmetric": dict(mode="linear", coordinate_transformation_mode="asymmetric"),
    "linear-pytorch_half_pixel": dict(mode="linear", coordinate_transformation_mode="pytorch_half_pixel"),
    "cubic-half_pixel": dict(mode="cubic"),
}


@pytest.mark.parametrize("name", list(RESIZE_CASES))
@pytest.mark.parametrize("target", ["scales-up", "scales-down", "sizes"])
def test_resize(name, target, tmp_path):
    g = _builder((2, 3, 4), opset=13)
    empty = g.const(np.zeros(0, dtype=np.float32))
    if target == "sizes":
        args = (empty, empty, g.ints([1, 2, 5, 3]))
    else:
        scales = [1, 1, 2, 1.5] if target == "scales-up" else [1, 1, 0.5, 0.75]
        args = (empty, g.const(np.asarray(scales, dtype=np.float32)))
    y = wrap(g, lambda h: g.op("Resize", h, *args, **RESIZE_CASES[name]), True, True)
    check_model(g.model(y), tmp_path)


@pytest.mark.parametrize("mode", ["nearest", "linear"])
@pytest.mark.parametrize("opset", [7, 9, 10])
def test_upsample_and_opset10_resize(mode, opset, tmp_path):
    g = _builder((2, 3, 2), opset=opset)
    scales = [1.0, 1.0, 2.0, 3.0]
    if opset == 7:
        y = g.op("Upsample", g.x, mode=mode, scales=scales)
    else:
        y = g.op("Upsample" if opset == 9 else "Resize", g.x, g.const(np.asarray(scales, dtype=np.float32)), mode=mode)
    check_model(g.model(g.op("Relu", y), check=opset >= 10), tmp_path)


def test_resize_antialias_and_axes(tmp_path):
    g = _builder((1, 6, 8), opset=18)
    y = g.op("Resize", g.x, "", g.const(np.asarray([0.5, 0.5], dtype=np.float32)), mode="linear", antialias=1,
             axes=[2, 3])
    check_model(g.model(g.op("Relu", y)), tmp_path)


def test_resize_tf_crop_and_resize_is_refused_by_name(tmp_path):
    g = _builder((1, 4, 4), opset=13)
    roi = g.const(np.asarray([0, 0, 0.1, 0.1, 1, 1, 0.9, 0.9], dtype=np.float32))
    y = g.op("Resize", g.x, roi, g.const(np.asarray([1, 1, 2, 2], dtype=np.float32)), mode="linear",
             coordinate_transformation_mode="tf_crop_and_resize")
    with pytest.raises(UnsupportedModelError, match="tf_crop_and_resize"):
        verifier.load(save_model(g.model(y), tmp_path))


EINSUM_CASES = [  # equation, shape of the variable, its position, shapes of the constants
    ("bij,jk->bik", (1, 3, 4), 0, [(4, 2)]),
    ("...ij,...jk->...ik", (1, 3, 4), 0, [(2, 4, 2)]),  # batch axes broadcast
    ("jk,bij->bik", (1, 3, 4), 1, [(4, 2)]),  # the constant first
    ("bij->bji", (1, 2, 3), 0, []),
    ("bii->bi", (1, 3, 3), 0, []),
    ("bi,i->b", (1, 4), 0, [(4,)]),
    ("ab,bij,jk->aik", (1, 3, 4), 1, [(2, 1), (4, 2)]),  # the variable in the middle, two constants
    ("bij,jk", (1, 3, 4), 0, [(4, 2)]),  # implicit output
    ("bij,ij->b", (1, 2, 3), 0, [(2, 3)]),
    ("bij,jk,jl->bikl", (1, 2, 3), 0, [(3, 2), (3, 2)]),  # j summed across both constants
]


@pytest.mark.parametrize("equation, xshape, position, wshapes", EINSUM_CASES, ids=[c[0] for c in EINSUM_CASES])
def test_einsum_one_variable_operand(equation, xshape, position, wshapes, tmp_path):
    g = GraphBuilder(np.random.default_rng(0), xshape, opset=12)
    operands = [g.rand(*s) for s in wshapes]
    operands.insert(position, g.x)
    y = g.op("Relu", g.op("Add", g.op("Einsum", *operands, equation=equation), g.const(np.float32(0.1))))
    model = check_model(g.model(y), tmp_path)
    assert {"einsum", "reshape", "transpose"} & kinds(model)


def test_einsum_of_two_variables_is_refused_here(tmp_path):
    g = _builder((3,), opset=12)
    y = g.op("Einsum", g.x, g.x, equation="bi,bj->bij")
    with pytest.raises(UnsupportedModelError, match="variable operands"):
        verifier.load(save_model(g.model(y), tmp_path))


@pytest.mark.parametrize("xshape, wshape, right", [((2, 3, 4), (2, 4, 5), True), ((1, 3, 4), (3, 2, 4, 2), True),
                                                   ((3, 4), (2, 5, 3), False), ((4,), (2, 4, 3), True),
                                                   ((2, 4, 1), (3, 1, 2, 4), False)])
@pytest.mark.parametrize("lowering", ["block", "einsum"])
def test_matmul_batched_constant(xshape, wshape, right, lowering, tmp_path, monkeypatch):
    if lowering == "einsum":
        monkeypatch.setattr("verifier.ir.onnx_converters.MAX_LOWERED_WEIGHT", 0)
    g = GraphBuilder(np.random.default_rng(0), xshape)
    w = g.rand(*wshape)
    y = wrap(g, lambda h: g.op("MatMul", h, w) if right else g.op("MatMul", w, h), True, True)
    model = check_model(g.model(y), tmp_path)
    assert ("einsum" in kinds(model)) == (lowering == "einsum")
