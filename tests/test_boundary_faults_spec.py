"""Faults a fresh-eyes tester found at the spec and Python API boundaries, fixed as classes.

B. VNN-LIB numbers (and arithmetic results, and input bounds) that underflow to 0 in
   float64 are refused with their line, like overflow; F. an input range holding no float64
   (an open interval between adjacent floats) is refused as empty, and input splitting
   answers ``unknown`` at once on such a region built in code (it searched forever);
J. raw exceptions from the Python API (0-size batches, meta tensors, ``load(None)``, a
   wrong-size sampling box, int64 ``A``, wrong-length ``strict``); minor: invisible
   characters shown escaped, ``X_00`` and repeated ``declare-const`` refused.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import verifier
from verifier.cli import main
from verifier.complete.input_split import BaBStats, input_split_bab
from verifier.deadline import Deadline
from verifier.errors import SpecError
from verifier.spec import parse_vnnlib
from verifier.spec.model import Conjunction, InputRegion, Spec
from verifier.verify import verify

CASES = Path(__file__).resolve().parent / "cases"
SMALL = CASES / "models" / "small5x3.onnx"
HYPO = settings(max_examples=60, deadline=None)


def spec_text(x_atoms: str = "", y_atoms: str = "(assert (>= Y_0 1000))\n", n_in: int = 2, free: tuple = ()) -> str:
    """Two inputs in [-1, 1] (except those in ``free``, bounded by ``x_atoms``), 1 output."""
    text = "".join(f"(declare-const X_{i} Real)\n" for i in range(n_in)) + "(declare-const Y_0 Real)\n"
    text += "".join(f"(assert (>= X_{i} -1))\n(assert (<= X_{i} 1))\n" for i in range(n_in) if i not in free)
    return text + x_atoms + y_atoms


# --- B: underflow ------------------------------------------------------------------------------------

@pytest.mark.parametrize("atom", ["(assert (< Y_0 1e-400))", "(assert (<= Y_0 -1e-400))", "(assert (> Y_0 -1e-400))",
                                  "(assert (< (* 1e-400 Y_0) 0))", "(assert (<= Y_0 0.0000001e-320))",
                                  "(assert (and (<= Y_0 5e-500) (>= Y_0 -1)))", "(assert (or (<= Y_0 1e-400)))"])
def test_underflowing_output_numbers_are_refused_with_their_line(atom):
    text = spec_text(y_atoms=atom + "\n")
    line = text.count("\n")
    with pytest.raises(SpecError, match=rf"<vnnlib>:{line}: .*underflows"):
        parse_vnnlib(text)


@pytest.mark.parametrize("atoms", ["(assert (>= X_0 1e-400))\n(assert (<= X_0 1e-400))\n",
                                   "(assert (> X_0 1e-400))\n(assert (< X_0 1e-399))\n",
                                   "(assert (and (>= X_0 -1e-400) (<= X_0 1)))\n"])
def test_underflowing_input_bounds_are_refused(atoms):
    with pytest.raises(SpecError, match="underflows"):
        parse_vnnlib(spec_text(atoms, free=(0,)))


@pytest.mark.parametrize("atom", ["(assert (<= (* 1e-200 1e-200 Y_0) 1))", "(assert (<= (* 1e-300 1e-100 Y_0) 1))",
                                  "(assert (<= (/ Y_0 1e300 1e300) 1))", "(assert (<= Y_0 (/ 1e-300 1e100)))",
                                  "(assert (<= (* 1e-200 (* 1e-200 Y_0)) 1))"])
def test_arithmetic_underflow_is_refused(atom):
    with pytest.raises(SpecError, match="underflows"):
        parse_vnnlib(spec_text(y_atoms=atom + "\n"))


def test_input_bound_underflow_after_division_is_refused():
    with pytest.raises(SpecError, match="X_0 underflows"):
        parse_vnnlib(spec_text("(assert (>= (* 1e300 X_0) -1))\n(assert (<= (* 1e300 X_0) 1e-100))\n", free=(0,)))


@pytest.mark.parametrize("zero", ["0", "-0", "0.0", "0e-400", "0.000e5", ".0", "-0."])
def test_literal_zeros_are_still_zero(zero):
    spec = parse_vnnlib(spec_text(y_atoms=f"(assert (<= Y_0 {zero}))\n"))
    assert float(spec.regions[0].disjuncts[0].b[0]) == 0.0


@HYPO
@given(mantissa=st.integers(1, 999), exponent=st.integers(-400, -280), sign=st.sampled_from(["", "-", "+"]),
       where=st.sampled_from(["y", "x"]))
def test_tiny_literals_are_refused_exactly_when_they_round_to_zero(mantissa, exponent, sign, where):
    word = f"{sign}{mantissa}e{exponent}"
    value = float(word)
    if where == "y":
        text = spec_text(y_atoms=f"(assert (<= Y_0 {word}))\n")
    else:
        text = spec_text(f"(assert (>= X_0 {word}))\n(assert (<= X_0 1))\n", free=(0,))
    if value == 0.0:
        with pytest.raises(SpecError, match="underflows"):
            parse_vnnlib(text)
    else:
        region = parse_vnnlib(text).regions[0]
        got = float(region.disjuncts[0].b[0]) if where == "y" else float(region.lower[0])
        assert got == value


# --- F: ranges that hold no float64 --------------------------------------------------------------------

def test_open_interval_between_adjacent_floats_is_refused():
    atoms = "(assert (> X_0 0.1))\n(assert (< X_0 0.10000000000000002))\n"
    with pytest.raises(SpecError, match=r"X_0 has an empty range.*no float64"):
        parse_vnnlib(spec_text(atoms, free=(0,)))


@HYPO
@given(a=st.floats(-1e6, 1e6, allow_nan=False), steps=st.integers(0, 3), lstrict=st.booleans(), ustrict=st.booleans())
def test_a_range_is_refused_exactly_when_it_holds_no_float64(a, steps, lstrict, ustrict):
    b = a
    for _ in range(steps):
        b = float(np.nextafter(b, math.inf))
    atoms = f"(assert ({'>' if lstrict else '>='} X_0 {a!r}))\n(assert ({'<' if ustrict else '<='} X_0 {b!r}))\n"
    holds = steps - int(lstrict) - int(ustrict) >= 0  # floats in the range: steps + 1 − strict sides
    text = spec_text(atoms, free=(0,))
    if holds:
        region = parse_vnnlib(text).regions[0]
        first, last = region.float64_range()
        assert float(first[0]) <= float(last[0])
    else:
        with pytest.raises(SpecError, match="empty range"):
            parse_vnnlib(text)


def _strict_point_region(n: int = 5, zero_width: int = 0) -> InputRegion:
    lower, upper = -torch.ones(n, dtype=torch.float64), torch.ones(n, dtype=torch.float64)
    lower[zero_width] = upper[zero_width] = 0.5
    strict = torch.zeros(n, dtype=torch.bool)
    strict[zero_width] = True
    A = torch.zeros(1, 3, dtype=torch.float64)
    A[0, 0] = -1.0  # Y_0 ≥ −1000: every point would be a counterexample, but there is no point
    return InputRegion(lower, upper, [Conjunction(A, torch.tensor([1000.0], dtype=torch.float64))], strict, None)


def test_spec_validate_refuses_a_zero_width_strict_side():
    spec = Spec([_strict_point_region()], 5, 3)
    with pytest.raises(SpecError, match="X_0 has an empty range"):
        spec.validate()


def test_input_split_answers_unknown_at_once_on_a_region_with_no_float64():
    """Before: an unvalidated region like this was split on its other inputs forever."""
    model = verifier.load(SMALL)
    stats = BaBStats()
    status, cex = input_split_bab(model, _strict_point_region(), Deadline(30.0), stats=stats)
    assert (status, cex) == ("unknown", None)
    assert stats.exhausted == 1 and stats.boxes_bounded == 0


def test_verify_refuses_a_region_with_no_float64():
    model = verifier.load(SMALL)
    with pytest.raises(SpecError, match="empty range"):
        verify(model, Spec([_strict_point_region()], 5, 3), domain="input-split", timeout=30)


# --- J: Spec objects built in code, and the API --------------------------------------------------------

def _good_region() -> InputRegion:
    A = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    return InputRegion(-torch.ones(5, dtype=torch.float64), torch.ones(5, dtype=torch.float64),
                       [Conjunction(A, torch.tensor([0.0], dtype=torch.float64))])


@pytest.mark.parametrize("break_it, words", [
    (lambda r: setattr(r.disjuncts[0], "A", r.disjuncts[0].A.long()), "int64"),
    (lambda r: setattr(r.disjuncts[0], "b", r.disjuncts[0].b.long()), "int64"),
    (lambda r: setattr(r.disjuncts[0], "strict", torch.tensor([True, False])), "2 flags"),
    (lambda r: setattr(r.disjuncts[0], "strict", torch.tensor([1])), "bool"),
    (lambda r: setattr(r, "lower", r.lower.long()), "int64"),
    (lambda r: setattr(r, "upper", r.upper.tolist()), "tensor"),
    (lambda r: setattr(r, "lower_strict", torch.zeros(4, dtype=torch.bool)), "4 flags"),
    (lambda r: setattr(r, "upper_strict", torch.zeros(5)), "bool"),
    (lambda r: setattr(r, "lower", torch.zeros(5, device="meta", dtype=torch.float64)), "meta"),
    (lambda r: r.disjuncts.append("Y_0 <= 1"), "Conjunction"),
])
def test_spec_validate_refuses_malformed_parts(break_it, words):
    region = _good_region()
    Spec([region], 5, 3).validate()
    break_it(region)
    with pytest.raises(SpecError, match=words):
        Spec([region], 5, 3).validate()
    with pytest.raises(verifier.VerifierInputError):
        verify(verifier.load(SMALL), Spec([region], 5, 3))


@pytest.mark.parametrize("n_in, n_out", [(0, 3), (5, 0), (5.0, 3), (True, 3)])
def test_spec_validate_refuses_bad_sizes(n_in, n_out):
    with pytest.raises(SpecError, match="num_"):
        Spec([_good_region()], n_in, n_out).validate()


@pytest.fixture(scope="module")
def small():
    return verifier.load(SMALL)


@pytest.mark.parametrize("make", [
    lambda: (torch.zeros(0, 1, 5, dtype=torch.float64), torch.zeros(0, 1, 5, dtype=torch.float64)),
    lambda: (torch.zeros(1, 5, device="meta", dtype=torch.float64), torch.zeros(1, 5, device="meta", dtype=torch.float64)),
    lambda: (torch.zeros(1, 5, dtype=torch.float64), torch.zeros(1, 5, device="meta", dtype=torch.float64)),
])
def test_compute_bounds_refuses_empty_and_meta_tensors(small, make):
    lower, upper = make()
    with pytest.raises(verifier.VerifierInputError):
        verifier.compute_bounds(small, lower, upper, domain="crown")


def test_forward_refuses_empty_and_meta_and_propagates_nan(small):
    with pytest.raises(verifier.VerifierInputError, match="no values"):
        small(torch.zeros(0, 1, 5, dtype=torch.float64))
    with pytest.raises(verifier.VerifierInputError, match="meta"):
        small(torch.zeros(1, 5, device="meta", dtype=torch.float64))
    x = torch.zeros(2, 5, dtype=torch.float64)
    x[0, 0] = math.nan
    y = small(x)  # documented: NaN propagates, the other sample is untouched
    assert bool(torch.isfinite(y[1]).all())


@pytest.mark.parametrize("path", [None, 3, b"model.onnx", ["a.onnx"]])
def test_load_refuses_non_paths(path):
    with pytest.raises(verifier.VerifierInputError, match="path"):
        verifier.load(path)


@pytest.mark.parametrize("lower, upper, words", [
    (torch.full((7,), -1.0), torch.full((7,), 1.0), "7 values"),
    (torch.full((1, 4), -1.0), None, "4 values"),
    (-1.0, torch.full((2,), 1.0), "2 values"),
    (2.0, None, "empty"),
])
def test_load_refuses_a_sampling_box_that_does_not_fit(lower, upper, words):
    with pytest.raises(verifier.VerifierInputError, match=words):
        verifier.load(SMALL, lower=lower, upper=upper)


def test_load_accepts_scalar_and_flat_sampling_boxes():
    assert verifier.load(SMALL, lower=-0.5, upper=0.5).fidelity.ok
    assert verifier.load(SMALL, lower=torch.zeros(5), upper=torch.ones(1, 1, 5)).fidelity.ok


# --- minor: invisible characters, X_00, repeated declarations ------------------------------------------

def test_invisible_characters_are_shown_escaped(tmp_path, capsys):
    spec = tmp_path / "bom.vnnlib"
    spec.write_text("\ufeff" + spec_text(), encoding="utf-8")
    code = main(["verify", str(SMALL), str(spec)])
    err = capsys.readouterr().err
    assert code == 2 and "\\ufeff" in err and "\ufeff" not in err, err
    with pytest.raises(SpecError) as info:
        parse_vnnlib(spec_text("(assert (<= X_0\u200b 1))\n"))
    assert "\u200b" not in str(info.value) and "\\u200b" in str(info.value)


@pytest.mark.parametrize("text", [
    "(declare-const X_00 Real)\n(declare-const Y_0 Real)\n",
    spec_text("(assert (<= X_00 1))\n"),
    spec_text("(assert (<= (+ X_01 0) 1))\n"),
    spec_text(y_atoms="(assert (>= Y_00 1))\n"),
])
def test_leading_zero_indices_are_refused(text):
    with pytest.raises(SpecError, match="leading zero"):
        parse_vnnlib(text)


@pytest.mark.parametrize("text", [
    "(declare-const X_0 Real)\n(declare-const X_0 Real)\n(declare-const Y_0 Real)\n",
    "(declare-const X_0 Real)\n(declare-const Y_0 Real)\n( declare-const  Y_0  Real )\n",
    "(declare-const X_0 Real) (declare-const X_0 Real)\n(declare-const Y_0 Real)\n",
])
def test_repeated_declarations_are_refused(text):
    with pytest.raises(SpecError, match="declared twice"):
        parse_vnnlib(text)
