"""Bad command-line options and bad Python API arguments are refused up front.

Issue 11, classes 4, 5 and 6: every bad option gives exit 2 with exactly one ``error:``
line before any model is loaded (so before any work), and the Python API raises
:class:`verifier.VerifierInputError` instead of returning wrong numbers.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import verifier

from cli_helpers import assert_refused, run

CASES = Path(__file__).resolve().parent / "cases"
SMALL = CASES / "models" / "small5x3.onnx"
GOOD_SPEC = CASES / "spec" / "s_good.vnnlib"
MISSING = CASES / "models" / "no_such_model.onnx"  # options must be refused before the model is read


@pytest.mark.parametrize("argv, words", [
    (["verify", MISSING, GOOD_SPEC, "--timeout", "nan"], ["--timeout"]),
    (["verify", MISSING, GOOD_SPEC, "--timeout", "inf"], ["--timeout"]),
    (["verify", MISSING, GOOD_SPEC, "--timeout", "-1"], ["--timeout"]),
    (["verify", MISSING, GOOD_SPEC, "--timeout", "abc"], ["--timeout"]),
    (["verify", MISSING, GOOD_SPEC, "--domain-option", "bogus=1"], ["auto", "bogus"]),
    (["verify", MISSING, GOOD_SPEC, "--domain", "alpha-crown", "--domain-option", "iterations=abc"], ["iterations"]),
    (["verify", MISSING, GOOD_SPEC, "--domain", "alpha-crown", "--domain-option", "iterations=-3"], ["iterations"]),
    (["verify", MISSING, GOOD_SPEC, "--domain", "relu-split", "--domain-option", "batch=0"], ["batch"]),
    (["verify", MISSING, GOOD_SPEC, "--domain", "relu-split", "--domain-option", "time_limit=-1"], ["time_limit"]),
    (["verify", MISSING, GOOD_SPEC, "--domain", "milp", "--domain-option", "time_limit=nan"], ["time_limit"]),
    (["verify", MISSING, GOOD_SPEC, "--domain", "input-split", "--domain-option", "split_rule=random"], ["split_rule"]),
    (["verify", MISSING, GOOD_SPEC, "--domain", "dual-lp", "--domain-option", "projections=-1"], ["projections"]),
    (["verify", MISSING, GOOD_SPEC, "--domain", "crown", "--domain-option", "noequals"], ["key=value"]),
    (["verify", MISSING, GOOD_SPEC, "--domain", "bogus"], ["bogus"]),
    (["verify", MISSING, GOOD_SPEC, "--dtype", "float16"], ["--dtype"]),
    (["bounds", MISSING, GOOD_SPEC, "--domain", "auto"], ["auto"]),
    (["bounds", MISSING, GOOD_SPEC, "--domain", "crown", "--domain-option", "bogus=1"], ["bogus"]),
    (["check", SMALL, "--samples", "0"], ["--samples"]),
    (["check", SMALL, "--samples", "-4"], ["--samples"]),
    (["verify"], ["required"]),
    (["no-such-command"], ["no-such-command"]),
])
def test_bad_options_refused_before_any_work(capsys, argv, words):
    assert_refused(*run(capsys, *argv), *words)


def test_result_file_checked_before_verification(capsys, tmp_path):
    """A --result-file in a missing folder or naming a folder is refused before the
    verification, so no verdict is computed and then lost."""
    assert_refused(*run(capsys, "verify", SMALL, GOOD_SPEC, "--result-file", tmp_path / "missing" / "r.txt"),
                   "--result-file", "does not exist")
    assert_refused(*run(capsys, "verify", SMALL, GOOD_SPEC, "--result-file", tmp_path), "--result-file", "folder")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(["iterations", "batch", "candidates", "time_limit", "lr", "patience", "bogus", "norm"]),
       value=st.one_of(st.sampled_from(["nan", "-inf", "inf", "-1", "0", "abc", "", "1e400", "1.5", "true"]),
                       st.text(min_size=1, max_size=6).filter(lambda t: "\x00" not in t)),
       domain=st.sampled_from(["auto", "box", "crown", "alpha-crown", "dual-lp", "relu-split", "input-split", "milp"]))
def test_fuzzed_domain_options_are_refused_or_accepted_cleanly(capsys, key, value, domain):
    """Any --domain-option is either refused with one error line before the (missing)
    model is read, or accepted, in which case the missing model is what is reported."""
    code, out, err = run(capsys, "verify", MISSING, GOOD_SPEC, "--domain", domain, "--domain-option", f"{key}={value}")
    assert_refused(code, out, err)
    assert "internal error" not in err and "Traceback" not in err


# --- the Python API (class 6) ---------------------------------------------------------------

@pytest.fixture(scope="module")
def small():
    return verifier.load(SMALL)


@pytest.mark.parametrize("lower, upper, words", [
    (torch.zeros(5, dtype=torch.int64), torch.ones(5, dtype=torch.int64), ["int64"]),
    (torch.zeros(5, dtype=torch.float16), torch.ones(5, dtype=torch.float16), ["float16"]),
    (torch.zeros(5, dtype=torch.bfloat16), torch.ones(5, dtype=torch.bfloat16), ["bfloat16"]),
    (torch.full((5,), math.nan, dtype=torch.float64), torch.ones(5, dtype=torch.float64), ["NaN"]),
    (torch.ones(5, dtype=torch.float64), torch.zeros(5, dtype=torch.float64), ["empty"]),
    (torch.zeros(5, dtype=torch.float64), torch.ones(4, dtype=torch.float64), ["shape"]),
    (torch.zeros(7, dtype=torch.float64), torch.ones(7, dtype=torch.float64), ["does not fit"]),
])
def test_compute_bounds_refuses_inputs_it_would_bound_wrongly(small, lower, upper, words):
    with pytest.raises(verifier.VerifierInputError) as info:
        verifier.compute_bounds(small, lower, upper, domain="crown")
    for word in words:
        assert word in str(info.value)


def test_compute_bounds_refuses_bad_C_and_options(small):
    lo, hi = torch.zeros(5, dtype=torch.float64), torch.ones(5, dtype=torch.float64)
    for C in (torch.ones(2, 4), torch.full((1, 3), math.nan), torch.ones(3, 1, 3)):
        with pytest.raises(verifier.VerifierInputError):
            verifier.compute_bounds(small, lo, hi, C=C)
    for domain, options in (("crown", {"bogus": 1}), ("alpha-crown", {"iterations": -1}), ("nope", {})):
        with pytest.raises(verifier.VerifierInputError):
            verifier.compute_bounds(small, lo, hi, domain=domain, **options)
    with pytest.raises(verifier.VerifierInputError):
        small(torch.zeros(1, 5, dtype=torch.int64))


@pytest.mark.parametrize("domain", ["box", "deepz", "crown", "crown-ibp", "alpha-crown", "dual-lp"])
def test_huge_boxes_give_sound_bounds_never_nan(small, domain):
    """inf − inf inside a domain must come out as an infinite (sound) bound, never NaN."""
    lo = torch.full((5,), -1e300, dtype=torch.float64)
    lb, ub = verifier.compute_bounds(small, lo, -lo, domain=domain)
    assert not bool(torch.isnan(lb).any() or torch.isnan(ub).any())
    y = small(torch.zeros(1, 5, dtype=torch.float64))
    assert bool((lb <= y).all() and (y <= ub).all())


def test_integer_lists_are_read_as_float64(small):
    """Array-likes of Python integers are numbers, not integer tensors: accepted as float64
    and bounded soundly (the integer-tensor case above is refused)."""
    lb, ub = verifier.compute_bounds(small, [0, 0, 0, 0, 0], [1, 1, 1, 1, 1], domain="box")
    x = torch.rand(64, 5, dtype=torch.float64)
    y = small(x)
    assert bool((lb <= y).all() and (y <= ub).all())


def test_load_refuses_bad_sampling_arguments():
    for kwargs in ({"samples": 0}, {"samples": 1.5}, {"lower": torch.full((1, 5), math.nan)},
                   {"lower": torch.ones(1, 5), "upper": torch.zeros(1, 5)}):
        with pytest.raises(verifier.VerifierInputError):
            verifier.load(SMALL, **kwargs)
    assert os.path.exists(SMALL)
