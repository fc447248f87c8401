"""Fuzzing the VNN-LIB reader (issue 11): mutated spec text either raises a SpecError with a
message or gives a Spec that passes validate() with non-empty finite boxes; nothing else
(no ValueError, RecursionError, IndexError, OverflowError, …) ever escapes."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from verifier.errors import SpecError
from verifier.spec import parse_vnnlib

CASES = Path(__file__).resolve().parent / "cases"
SEEDS = [p.read_text() for p in sorted((CASES / "field").glob("*/*.vnnlib")) + [CASES / "spec" / "s_good.vnnlib"]]
SEEDS.append("""(declare-const X_0 Real)
(declare-const X_1 Real)
(declare-const Y_0 Real)
(declare-const Y_1 Real)
(declare-const Y_2 Real)
(assert (or
  (and (>= X_0 0) (<= X_0 0.5) (>= X_1 -1e-3) (< X_1 1.5E+0) (<= (+ Y_0 (* -2 Y_1)) Y_2))
  (and (> X_0 0.25) (<= X_0 1) (>= X_1 0) (<= X_1 1) (= Y_1 (- 3)) (> Y_2 (/ Y_0 4)))
))
""")

NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?(?![\w.])")
GARBAGE = ["nan", "NaN", "inf", "-inf", "Infinity", "1e999", "-1e400", "1.2.3", ".", "-", "1_000", "0x1F", "#x1F",
           "1e", "e1", "١", "", "(", ")", "()", "X_0", "Y_9", "X_99999999999999999999", "1/3", "--1", "+.5", "5.",
           "1e-320", "4.9e-324", "1.7976931348623157e308", "-0", "0.0000000000000000000001"]
OPS = ["<=", ">=", "<", ">", "="]


def check(text: str) -> None:
    """The property: a SpecError with a message, or a valid spec with finite non-empty boxes."""
    try:
        spec = parse_vnnlib(text, "fuzz.vnnlib")
    except SpecError as exc:
        assert str(exc).strip()
        return
    spec.validate()
    assert spec.regions
    for region in spec.regions:
        assert bool(torch.isfinite(region.lower).all()) and bool(torch.isfinite(region.upper).all())
        assert bool((region.lower <= region.upper).all())
        assert region.disjuncts
        for conj in region.disjuncts:
            assert bool(torch.isfinite(conj.A).all()) and bool(torch.isfinite(conj.b).all())
            assert conj.strict is not None and conj.strict.shape == conj.b.shape


@st.composite
def mutated(draw) -> str:
    text = draw(st.sampled_from(SEEDS))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["number", "paren", "swap", "strict", "nest", "delete", "insert", "op"]))
        if kind == "number":
            spots = list(NUMBER.finditer(text))
            if spots:
                m = draw(st.sampled_from(spots))
                new = draw(st.one_of(st.sampled_from(GARBAGE),
                                     st.floats(allow_nan=True, allow_infinity=True).map(repr),
                                     st.text("0123456789.eE+-_x", min_size=1, max_size=6)))
                text = text[:m.start()] + new + text[m.end():]
        elif kind == "paren":
            spots = [i for i, c in enumerate(text) if c in "()"]
            if spots:
                i = draw(st.sampled_from(spots))
                text = text[:i] + draw(st.sampled_from(["", "((", "))", "()", ")(", " "])) + text[i + 1:]
        elif kind == "swap":  # swap the bounds of a variable: an empty or inverted box
            text = text.replace("<=", "\0").replace(">=", "<=").replace("\0", ">=")
        elif kind == "strict":
            spots = [m.start() for m in re.finditer(r"[<>]=", text)]
            if spots:
                i = draw(st.sampled_from(spots))
                text = text[:i + 1] + text[i + 2:]
        elif kind == "op":
            spots = [m for m in re.finditer(r"\((<=|>=|<|>|=|and|or|\+|-|\*|/) ", text)]
            if spots:
                m = draw(st.sampled_from(spots))
                new = draw(st.sampled_from(OPS + ["and", "or", "+", "-", "*", "/", "not", "abs", "assert"]))
                text = text[:m.start(1)] + new + text[m.end(1):]
        elif kind == "nest":  # wrap an assert's formula (or a term) in deep and/or/+ chains
            depth = draw(st.sampled_from([1, 2, 50, 3000]))
            head = draw(st.sampled_from(["and", "or", "+", "-", "*"]))
            spots = [m for m in re.finditer(r"\((?:<=|>=|<|>|=) ", text)] + \
                    [m for m in re.finditer(r"(?<=[ (])(?:X|Y)_\d+", text)]
            if spots:
                m = draw(st.sampled_from(spots))
                if m.group(0).startswith("("):
                    end = _matching(text, m.start())
                    if end is not None:
                        text = text[:m.start()] + f"({head} " * depth + text[m.start():end + 1] + ")" * depth + text[end + 1:]
                else:
                    text = text[:m.start()] + f"({head} " * depth + m.group(0) + ")" * depth + text[m.end():]
        elif kind == "delete":
            if text:
                i = draw(st.integers(0, len(text) - 1))
                j = draw(st.integers(i, min(len(text), i + 30)))
                text = text[:i] + text[j:]
        else:  # insert
            i = draw(st.integers(0, len(text)))
            text = text[:i] + draw(st.one_of(st.sampled_from(GARBAGE + [" ; c\n", "\n", "\t", "\x00", "é"]),
                                             st.text(max_size=8))) + text[i:]
    return text


def _matching(text: str, start: int) -> int | None:
    depth = 0
    for k in range(start, len(text)):
        if text[k] == "(":
            depth += 1
        elif text[k] == ")":
            depth -= 1
            if depth == 0:
                return k
    return None


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_specs_error_or_parse_valid(text):
    check(text)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("()<>=+-*/ .eE0123456789_XYandorsetdclR;\n")), max_size=120))
def test_random_token_soup(text):
    header = "(declare-const X_0 Real)\n(declare-const Y_0 Real)\n"
    check(text)
    check(header + text)


@settings(max_examples=200, deadline=None)
@given(lo=st.floats(allow_nan=True, allow_infinity=True), hi=st.floats(allow_nan=True, allow_infinity=True),
       c=st.floats(allow_nan=True, allow_infinity=True), ops=st.tuples(*[st.sampled_from(OPS)] * 3))
def test_bounds_and_constants_from_any_float(lo, hi, c, ops):
    text = (f"(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert ({ops[0]} X_0 {lo!r}))\n"
            f"(assert ({ops[1]} X_0 {hi!r}))\n(assert ({ops[2]} (* {c!r} Y_0) {lo!r}))\n")
    try:
        spec = parse_vnnlib(text, "f.vnnlib")
    except SpecError:
        return
    check(text)
    assert all(math.isfinite(v) for v in (lo, hi, c))  # a non-finite number never parses
    (region,) = spec.regions
    assert region.lower_strict.shape == (1,) and region.upper_strict.shape == (1,)


@pytest.mark.parametrize("text", [
    "(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert (<= X_0 1.2.3))\n",
    "(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(assert " + "(and " * 100_000 + "(<= X_0 1)" + ")" * 99_999 + "\n",
])
def test_cli_subprocess_never_exit_3(tmp_path, text):
    spec = tmp_path / "f.vnnlib"
    spec.write_text(text)
    run = subprocess.run([sys.executable, "-m", "verifier.cli", "bounds", str(CASES / "models" / "small5x3.onnx"),
                          str(spec)], capture_output=True, text=True, timeout=120)
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2 and "result:" not in run.stdout, run.stderr
    assert len(lines) == 1 and lines[0].startswith("error:") and "f.vnnlib:3:" in lines[0], run.stderr
