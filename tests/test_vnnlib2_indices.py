"""VNN-LIB 2.0 tensor indices: each must lie in ``0 .. n-1`` of its dimension.

The ``vnnlib`` package (1.0.2) checks the number of indices and the upper end, not the
lower: ``Y[0,-1]`` passed through and the row-major flattening made it another element
than the one a numpy-style reading names (in a ``[2,3]`` tensor ``X[1,-1]`` became
``X_2``, not ``X[1,2] = X_5``), so a constraint landed on the wrong variable; ``Y[0,-4]``
ended in an ``IndexError`` (exit 3). Both are refused with the file, line and the range.
"""

from __future__ import annotations

import importlib.util

import pytest

from verifier.errors import SpecError
from verifier.spec import read_vnnlib

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("vnnlib") is None,
    reason="VNN-LIB 2.0 needs the vnnlib package (pip install 'vnnlib>=1.0.2'; no Linux aarch64 wheel)")

HEAD = """(vnnlib-version <2.0>)
(declare-network net
  (declare-input X float32 [2,3])
  (declare-output Y float32 [1,3]))
"""
BOX = "".join(f"(assert (>= X[{i},{j}] -1.0))\n(assert (<= X[{i},{j}] 1.0))\n" for i in range(2) for j in range(3))


def write(tmp_path, assertion: str):
    path = tmp_path / "prop.vnnlib"
    path.write_text(HEAD + BOX + assertion + "\n")
    return path


@pytest.mark.parametrize("element, words", [
    ("Y[0,-1]", ["Y[0,-1]", "-1", "0..2"]),
    ("Y[0,-4]", ["Y[0,-4]", "-4", "0..2"]),
    ("Y[-1,0]", ["Y[-1,0]", "-1", "0..0"]),
])
def test_a_negative_output_index_is_refused_with_its_line(tmp_path, element, words):
    line = HEAD.count("\n") + BOX.count("\n") + 1
    with pytest.raises(SpecError) as info:
        read_vnnlib(write(tmp_path, f"(assert (>= {element} 1000.0))"))
    message = str(info.value)
    assert f"prop.vnnlib:{line}:" in message, message
    for word in words:
        assert word in message, message


def test_a_negative_input_index_is_refused(tmp_path):
    with pytest.raises(SpecError, match=r"X\[1,-1\].*0\.\.2"):
        read_vnnlib(write(tmp_path, "(assert (<= X[1,-1] 0.5))\n(assert (>= Y[0,0] 1000.0))"))


def test_in_range_indices_flatten_row_major(tmp_path):
    """The control: X[1,2] is X_5 (row-major), Y[0,2] is Y_2."""
    spec = read_vnnlib(write(tmp_path, "(assert (<= X[1,2] 0.5))\n(assert (>= Y[0,2] 1000.0))"))
    (region,) = spec.regions
    assert region.upper.tolist() == [1.0, 1.0, 1.0, 1.0, 1.0, 0.5]
    (conj,) = region.disjuncts
    assert conj.A.tolist() == [[0.0, 0.0, -1.0]] and conj.b.tolist() == [-1000.0]
