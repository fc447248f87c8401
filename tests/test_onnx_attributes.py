"""Non-finite node attributes are refused at load, naming the node and the attribute
(fresh-eyes H: ``LeakyRelu(alpha=NaN)`` loaded, and ``verifier check`` exited 0).

Initializers must be finite; float attributes are parameters too, so the same rule holds for
every float, floats or tensor attribute of every op, used or not, NaN or ±inf."""

from __future__ import annotations

import math

import numpy as np
import onnx.helper as oh
import pytest

import verifier
from verifier.cli import main
from verifier.errors import ModelError

from onnx_builders import make_model, save_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BAD = [math.nan, math.inf, -math.inf]
C = 3


def _bn(attrs):
    inits = {"s": np.ones(C, np.float32), "b": np.zeros(C, np.float32),
             "m": np.zeros(C, np.float32), "v": np.ones(C, np.float32)}
    return [oh.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], name="bn", **attrs)], inits, 13


def _gemm(attrs):
    inits = {"W": np.ones((C, C), np.float32), "B": np.zeros(C, np.float32)}
    return [oh.make_node("Gemm", ["x", "W", "B"], ["y"], name="gemm", **attrs)], inits, 13


def _unary(op, opset=13):
    return lambda attrs: ([oh.make_node(op, ["x"], ["y"], name=op.lower(), **attrs)], {}, opset)


CASES = [  # (builder, attribute, node name)
    (_unary("LeakyRelu"), "alpha", "leakyrelu"),
    (_unary("Elu"), "alpha", "elu"),
    (_unary("Selu"), "gamma", "selu"),
    (_unary("HardSigmoid"), "beta", "hardsigmoid"),
    (_unary("Clip", 6), "min", "clip"),
    (_unary("Clip", 6), "max", "clip"),
    (_bn, "epsilon", "bn"),
    (_gemm, "alpha", "gemm"),
    (_gemm, "beta", "gemm"),
]


def _model(tmp_path, builder, attrs):
    nodes, inits, opset = builder(attrs)
    shape = [1, C, 2, 2] if nodes[0].op_type == "BatchNormalization" else [1, C]
    model = make_model(nodes, shape, "y", inits, opset=opset, check=False)
    return str(save_model(model, tmp_path, "attr"))


@pytest.mark.parametrize("value", BAD, ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("builder,attribute,node", CASES, ids=[f"{n}.{a}" for _, a, n in CASES])
def test_non_finite_float_attribute_is_refused(tmp_path, capsys, builder, attribute, node, value):
    path = _model(tmp_path, builder, {attribute: value})
    with pytest.raises(ModelError, match=f"node '{node}'.*'{attribute}'"):
        verifier.load(path)
    code = main(["check", path])
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2, (out, err)
    assert len(lines) == 1 and lines[0].startswith("error: ") and f"'{attribute}'" in lines[0], err
    assert "finite" in lines[0]


def test_non_finite_tensor_attribute_is_refused(tmp_path):
    """A tensor attribute (``ConstantOfShape``'s ``value``) follows the same rule, even when
    the node's output is never used."""
    value = oh.make_tensor("value", 1, [1], [math.nan])
    nodes = [oh.make_node("Shape", ["x"], ["s"]), oh.make_node("ConstantOfShape", ["s"], ["unused"], name="cos",
                                                                 value=value),
             oh.make_node("Relu", ["x"], ["y"])]
    path = str(save_model(make_model(nodes, [1, C], "y", check=False), tmp_path, "cos"))
    with pytest.raises(ModelError, match="node 'cos'.*'value'"):
        verifier.load(path)


@pytest.mark.parametrize("builder,attribute,node", CASES[:4] + CASES[7:], ids=lambda c: str(c))
def test_finite_attributes_still_load(tmp_path, builder, attribute, node):
    """Control: the same models with a finite value are not refused by this rule (an op the
    verifier does not support is still reported as unsupported, not as non-finite)."""
    path = _model(tmp_path, builder, {attribute: 0.5})
    try:
        verifier.load(path)
    except ModelError as exc:
        assert "finite" not in str(exc), exc
