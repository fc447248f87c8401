"""The VNN-LIB reader: hand-written expectations, error messages with line numbers."""

from __future__ import annotations

import pytest
import torch

from verifier.errors import SpecError
from verifier.spec import linf_robustness_spec, parse_vnnlib

HEADER = "(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n"


def test_box_and_single_output_conjunction():
    spec = parse_vnnlib(HEADER + """
(assert (<= X_0 1.5))
(assert (>= X_0 -0.5))
(assert (<= X_1 2))
(assert (>= X_1 1e-1))
(assert (<= Y_0 Y_1))
(assert (>= (+ Y_0 (* 2 Y_1)) 3.0))
""")
    assert spec.num_inputs == 2 and spec.num_outputs == 2
    (region,) = spec.regions
    assert region.lower.tolist() == [-0.5, 0.1]
    assert region.upper.tolist() == [1.5, 2.0]
    (conj,) = region.disjuncts
    # Y_0 − Y_1 ≤ 0 and −Y_0 − 2 Y_1 ≤ −3
    assert conj.A.tolist() == [[1.0, -1.0], [-1.0, -2.0]]
    assert conj.b.tolist() == [0.0, -3.0]


def test_disjunctive_inputs_and_outputs_group_by_box():
    spec = parse_vnnlib(HEADER + """
(assert (or (and (<= X_0 1) (>= X_0 0) (<= X_1 1) (>= X_1 0))
            (and (<= X_0 3) (>= X_0 2) (<= X_1 1) (>= X_1 0))))
(assert (or (and (<= Y_0 0)) (and (>= Y_1 5) (<= Y_0 (- 1)))))
""")
    assert len(spec.regions) == 2
    assert [r.lower[0].item() for r in spec.regions] == [0.0, 2.0]
    for region in spec.regions:
        assert len(region.disjuncts) == 2
        assert region.disjuncts[0].A.tolist() == [[1.0, 0.0]] and region.disjuncts[0].b.tolist() == [0.0]
        assert region.disjuncts[1].A.tolist() == [[0.0, -1.0], [1.0, 0.0]]
        assert region.disjuncts[1].b.tolist() == [-5.0, -1.0]


def test_violation_is_nonpositive_exactly_in_unsafe_set():
    spec = parse_vnnlib(HEADER + "(assert (<= X_0 1))(assert (>= X_0 0))(assert (<= X_1 1))(assert (>= X_1 0))"
                                 "(assert (or (and (<= Y_0 0)) (and (>= Y_1 5))))")
    region = spec.regions[0]
    y = torch.tensor([[-1.0, 0.0], [1.0, 6.0], [1.0, 4.0]], dtype=torch.float64)
    assert (region.violation(y) <= 0).tolist() == [True, True, False]


@pytest.mark.parametrize(
    "body, line, words",
    [
        ("(assert (<= X_0 1)\n", 5, "never closed"),
        ("(assert (<= X_0 1)))\n", 5, "unmatched"),
        ("(assert (<= X_0 1))\n(assert (>= X_0 0))\n(assert (<= X_1 1))\n(assert (>= X_1 0))\n(assert (<= Y_0 (* Y_1 Y_0)))\n", 9, "not linear"),
        ("(assert (<= X_0 1))\n(assert (foo Y_0 1))\n", 6, "unsupported operator 'foo'"),
        ("(assert (<= X_7 1))\n", 5, "X_7 is used but not declared"),
        ("(assert (<= (+ X_0 X_1) 1))\n", 5, "several inputs"),
        ("(assert (<= X_0 1))\n(assert (>= X_0 0))\n(assert (<= X_1 1))\n(assert (<= Y_0 0))\n", None, "not bounded"),
    ],
)
def test_errors_name_the_line(body, line, words):
    with pytest.raises(SpecError) as info:
        parse_vnnlib(HEADER + body, "prop.vnnlib")
    message = str(info.value)
    assert words in message
    if line is not None:
        assert f"prop.vnnlib:{line}:" in message


def test_linf_spec_margin_rows_and_clipping():
    x = torch.tensor([0.0, 0.5, 1.0])
    spec = linf_robustness_spec(x, label=1, eps=0.1, num_classes=3)
    (region,) = spec.regions
    assert torch.allclose(region.lower, torch.tensor([0.0, 0.4, 0.9], dtype=torch.float64))
    assert torch.allclose(region.upper, torch.tensor([0.1, 0.6, 1.0], dtype=torch.float64))
    assert [d.A.tolist() for d in region.disjuncts] == [[[-1.0, 1.0, 0.0]], [[0.0, 1.0, -1.0]]]
    y = torch.tensor([[0.0, 1.0, 0.5], [0.0, 1.0, 1.0]], dtype=torch.float64)
    assert (region.violation(y) <= 0).tolist() == [False, True]
    with pytest.raises(SpecError):
        linf_robustness_spec(x, label=3, eps=0.1, num_classes=3)
