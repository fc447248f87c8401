"""Index and shape ops with constant indices (Gather, GatherElements, GatherND, Split, Slice,
Expand, Tile, Where, ScatterND/ScatterElements, Pad, DepthToSpace/SpaceToDepth, Compress,
Trilu, constant broadcasts in Add/Sub/Mul/Div): each loads with the fidelity check and
every domain's bounds contain onnxruntime's outputs on sampled points (see
:mod:`index_cases`), with hypothesis-drawn shapes, axes and indices where it helps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from index_cases import check_model, kinds, wrap
from onnx_builders import DOUBLE, GraphBuilder

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SETTINGS = settings(max_examples=4, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                           HealthCheck.data_too_large])
shapes = st.lists(st.integers(1, 4), min_size=1, max_size=3)
relus = st.tuples(st.booleans(), st.booleans())


def _builder(shape, seed=0, opset=13):
    return GraphBuilder(np.random.default_rng(seed), (1, *shape), opset=opset)


@given(shape=shapes, data=st.data(), relu=relus)
@SETTINGS
def test_gather_any_axis_negative_indices(shape, data, relu, tmp_path):
    g = _builder(shape)
    rank = len(shape) + 1
    axis = data.draw(st.integers(-rank + 1, rank - 1).filter(lambda a: a != 0 and a != -rank))
    n = (1, *shape)[axis]
    ishape = data.draw(st.lists(st.integers(1, 3), max_size=2))
    idx = np.asarray(data.draw(st.lists(st.integers(-n, n - 1), min_size=int(np.prod(ishape)),
                                        max_size=int(np.prod(ishape))))).reshape(ishape)
    y = wrap(g, lambda h: g.op("Gather", h, g.ints(idx), axis=axis), *relu)
    check_model(g.model(y), tmp_path)


def test_gather_scalar_index_on_batch_axis(tmp_path):
    g = _builder((3, 2))
    check_model(g.model(g.op("Gather", g.x, g.ints(np.array(0)), axis=0)), tmp_path)


@given(shape=st.lists(st.integers(1, 4), min_size=2, max_size=3), data=st.data(), relu=relus)
@SETTINGS
def test_gather_elements(shape, data, relu, tmp_path):
    g = _builder(shape)
    axis = data.draw(st.integers(-len(shape), len(shape)))
    axis = axis if axis in range(1, len(shape) + 1) or axis < 0 else 1
    full = (1, *shape)
    ishape = list(full)
    ishape[axis] = data.draw(st.integers(1, 4))
    idx = np.random.default_rng(data.draw(st.integers(0, 99))).integers(-full[axis], full[axis], size=ishape)
    y = wrap(g, lambda h: g.op("GatherElements", h, g.ints(idx), axis=axis), *relu)
    check_model(g.model(y), tmp_path)


@pytest.mark.parametrize("batch_dims, idx", [(0, [[0, 1, 1], [0, 2, 0]]), (0, [[0, 2]]), (1, [[[1, 0]], [[0, 1]]])])
def test_gather_nd(batch_dims, idx, tmp_path):
    g = GraphBuilder(np.random.default_rng(0), (1, 3, 2) if batch_dims == 0 else (2, 2, 3))
    y = wrap(g, lambda h: g.op("GatherND", h, g.ints(idx), batch_dims=batch_dims), True, True)
    check_model(g.model(y), tmp_path)


@pytest.mark.parametrize("opset, how", [(11, "attribute"), (13, "input"), (18, "input"), (18, "num_outputs"),
                                        (13, "equal")])
@pytest.mark.parametrize("axis", [1, -1])
def test_split(opset, how, axis, tmp_path):
    g = _builder((4, 6), opset=opset)
    sizes = [1, 2, 1] if axis == 1 else [2, 1, 3]
    if how == "attribute":
        parts = g.op("Split", g.x, outputs=3, axis=axis, split=sizes)
    elif how == "input":
        parts = g.op("Split", g.x, g.ints(sizes), outputs=3, axis=axis)
    elif how == "num_outputs":
        parts = g.op("Split", g.x, outputs=2, axis=axis, num_outputs=2)
    else:
        parts = g.op("Split", g.x, outputs=2, axis=axis)
    y = g.op("Concat", *[g.op("Relu", p) for p in reversed(parts)], axis=axis)
    model = check_model(g.model(y), tmp_path)
    assert "select" not in kinds(model)


@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=3), data=st.data(), relu=relus)
@SETTINGS
def test_slice_steps_negative_axes(shape, data, relu, tmp_path):
    g = _builder(shape)
    rank = len(shape) + 1
    axes = data.draw(st.lists(st.integers(1, rank - 1), min_size=1, max_size=rank - 1, unique=True))
    starts, ends, steps = [], [], []
    for a in axes:
        n = (1, *shape)[a]
        step = data.draw(st.sampled_from([1, 2, -1, -2, 3]))
        start = data.draw(st.integers(-n - 1, n))
        end = data.draw(st.integers(-n - 2, n + 1))
        if not list(range(*slice(start, end, step).indices(n))):
            start, end = (0, n) if step > 0 else (n - 1, -n - 1)
        starts.append(start), ends.append(end), steps.append(step)
    negative = [a - rank if data.draw(st.booleans()) else a for a in axes]
    y = wrap(g, lambda h: g.op("Slice", h, g.ints(starts), g.ints(ends), g.ints(negative), g.ints(steps)), *relu)
    check_model(g.model(y), tmp_path)


@given(shape=shapes, data=st.data(), relu=relus)
@SETTINGS
def test_expand_and_tile(shape, data, relu, tmp_path):
    g = _builder(shape)
    full = [1, *shape]
    extra = data.draw(st.lists(st.integers(1, 3), max_size=1))
    target = extra + [d if d > 1 else data.draw(st.integers(1, 3)) for d in full]
    repeats = [data.draw(st.integers(1, 2)) for _ in full]
    y = wrap(g, lambda h: g.op("Tile", g.op("Expand", h, g.ints(target)), g.ints([1] * len(extra) + repeats)), *relu)
    check_model(g.model(y), tmp_path)


@pytest.mark.parametrize("form", ["x,c", "c,x", "x,y", "x,y-broadcast", "x,c-float64"])
def test_where_constant_condition(form, tmp_path):
    g = _builder((3, 4)) if "float64" not in form else GraphBuilder(np.random.default_rng(0), (1, 3, 4),
                                                                    elem_type=DOUBLE)
    cond = g.const(np.random.default_rng(1).random((3, 4)) < 0.5, dtype=bool)
    other = g.op("Relu", g.op("Mul", g.x, g.const(np.float32(-2.0))))
    if form.startswith("x,c"):
        args = (g.x, g.rand(3, 4))
    elif form == "c,x":
        args = (g.rand(4), g.x)
    elif form == "x,y":
        args = (g.x, other)
    else:
        cond = g.const(np.array([True, False, False, True]), dtype=bool)
        args = (g.op("Gather", g.x, g.ints([0]), axis=2), other)  # (1, 3, 1) against (1, 3, 4)
    y = g.op("Relu", g.op("Where", cond, *args))
    check_model(g.model(y), tmp_path)


def test_gather_by_variable_indices_is_refused(tmp_path):
    import verifier
    from onnx_builders import save_model
    from verifier.errors import UnsupportedModelError
    g = _builder((3,))
    idx = g.op("Reshape", g.x, g.ints([3]))
    y = g.op("Gather", g.rand(4, 2), idx, axis=0)
    with pytest.raises(UnsupportedModelError, match="not affine"):
        verifier.load(save_model(g.model(y, check=False), tmp_path))


def test_where_with_a_variable_condition_is_refused(tmp_path):
    from verifier.errors import UnsupportedModelError
    import verifier
    from onnx_builders import save_model
    g = _builder((3,))
    y = g.op("Where", g.op("Greater", g.x, g.const(np.float32(0))), g.x, g.rand(3))
    with pytest.raises(UnsupportedModelError, match="Greater|condition"):
        verifier.load(save_model(g.model(y), tmp_path))


@pytest.mark.parametrize("variable", ["data", "updates", "both"])
@pytest.mark.parametrize("op", ["ScatterND", "ScatterElements"])
def test_scatter(variable, op, tmp_path):
    g = _builder((4, 3))
    if op == "ScatterND":
        idx, upd_shape = [[0, 2], [0, 0]], (2, 3)
    else:
        idx, upd_shape = [[[2, 0, 1]]], (1, 1, 3)
    updates = (g.op("Reshape", g.op("Slice", g.x, g.ints([0]), g.ints([upd_shape[-2] if op == "ScatterND" else 1]),
                                    g.ints([1])), g.ints(upd_shape))
               if variable != "data" else g.rand(*upd_shape))
    data = g.x if variable != "updates" else g.rand(1, 4, 3)
    attrs = {"axis": 1} if op == "ScatterElements" else {}
    y = g.op("Relu", g.op(op, data, g.ints(idx), updates, **attrs))
    check_model(g.model(y), tmp_path)


@pytest.mark.parametrize("mode, opset", [("reflect", 13), ("edge", 13), ("edge", 18), ("wrap", 19), ("reflect", 7),
                                         ("constant", 18)])
def test_pad_modes(mode, opset, tmp_path):
    g = _builder((3, 4), opset=opset)
    if opset == 7:
        y = g.op("Pad", g.x, mode=mode, pads=[0, 1, 2, 0, 2, 1])
    elif opset == 18:
        y = g.op("Pad", g.x, g.ints([1, 2, 2, 0]), g.const(np.float32(0.5)), g.ints([-2, 2]), mode=mode)
    else:
        y = g.op("Pad", g.x, g.ints([0, 2, 1, 0, 1, 3]), mode=mode)
    check_model(g.model(wrap(g, lambda h: y, False, True), check=opset > 7), tmp_path)


@pytest.mark.parametrize("op, attrs, shape", [("DepthToSpace", {"blocksize": 2, "mode": "DCR"}, (8, 2, 3)),
                                              ("DepthToSpace", {"blocksize": 2, "mode": "CRD"}, (4, 3, 2)),
                                              ("SpaceToDepth", {"blocksize": 2}, (2, 4, 2))])
def test_depth_space(op, attrs, shape, tmp_path):
    g = _builder(shape)
    check_model(g.model(wrap(g, lambda h: g.op(op, h, **attrs), True, True)), tmp_path)


def test_compress_and_trilu(tmp_path):
    g = _builder((3, 4), opset=14)
    y = g.op("Compress", g.x, g.const(np.array([True, False, True]), dtype=bool), axis=1)
    y = g.op("Trilu", g.op("Relu", y), g.ints(np.array(1)), upper=0)
    check_model(g.model(y), tmp_path)


@pytest.mark.parametrize("op", ["Sub", "Add", "Mul", "Div"])
@pytest.mark.parametrize("xshape, cshape", [((12, 1), (5,)), ((3,), (2, 1, 3)), ((2, 1, 3), (4, 1))])
def test_constant_broadcast_expands_the_variable(op, xshape, cshape, tmp_path):
    """``Sub(x[1, 226, 1], c[54])`` (ml4acopf) in small: the variable is copied out first."""
    g = _builder(xshape)
    c = g.rand(*cshape, scale=2.0, low=0.5)
    model = check_model(g.model(g.op("Relu", g.op(op, g.x, c))), tmp_path)
    assert "select" in kinds(model)


def test_select_adjoint_is_the_transpose(tmp_path):
    """The explicit adjoint of ``select`` equals autograd's vector-Jacobian product."""
    import verifier
    from onnx_builders import save_model
    from verifier.ops import FORWARD
    from verifier.ir.graph import predecessors_by_slot
    from verifier.ops.adjoint import adjoint
    g = _builder((3, 4))
    y = g.op("Where", g.const(np.eye(3, 4) > 0, dtype=bool), g.x,
             g.op("Relu", g.op("Gather", g.x, g.ints([2, 0, 0, 1]), axis=2)))
    y = g.op("Where", g.const(np.eye(3, 4) < 1, dtype=bool), y, g.rand(3, 4))  # constant entries too
    model = verifier.load(save_model(g.model(y), tmp_path))
    selects = [n for n, d in model.graph.nodes(data=True) if d["kind"] == "select"]
    assert len(selects) == 3
    for nid in selects:
        node = model.graph.nodes[nid]
        shapes = [tuple(model.graph.nodes[p]["shape"]) for p in predecessors_by_slot(model.graph, nid)]
        lam = torch.randn(2, 3, *node["shape"], dtype=torch.float64)
        xs = [torch.zeros(6, *s, dtype=torch.float64, requires_grad=True) for s in shapes]
        node64 = dict(node, params={k: v.double() for k, v in node["params"].items()}, _constant_cache={})
        grads = torch.autograd.grad(FORWARD["select"](node64, *xs), xs, lam.reshape(6, *node["shape"]))
        for got, want in zip(adjoint(node64, lam, shapes), grads):
            assert torch.allclose(got.reshape(want.shape), want)


def test_center_crop_pad_and_legacy_scatter(tmp_path):
    """CenterCropPad (opset 18: crops one axis, pads the other) and the opset-9 Scatter."""
    g = _builder((4, 3), opset=18)
    y = g.op("CenterCropPad", g.x, g.ints([1, 2, 5]))
    check_model(g.model(wrap(g, lambda h: y, False, True)), tmp_path)
    g = _builder((4, 3), opset=9)
    y = g.op("Scatter", g.x, g.ints([[[2, 0, 1]]]), g.rand(1, 1, 3), axis=1)
    check_model(g.model(wrap(g, lambda h: y, False, True), check=False), tmp_path)
