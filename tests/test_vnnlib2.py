"""VNN-LIB 2.0 (``verifier/spec/vnnlib2.py`` through the ``vnnlib`` package): the version is
detected at the entry point, the same property written in v1 and v2 gives the same spec
(hand-written and random properties) and the same verdict (the shipped MNIST model, small
ONNX nets), and what the 2.0 reader refuses is one error naming the file and line."""

from __future__ import annotations

import gzip
import importlib.util
import sys

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import verifier
from verifier.errors import SpecError
from verifier.spec import read_vnnlib
from verifier.spec.vnnlib import parse_vnnlib
from verifier.spec.vnnlib2 import is_vnnlib2
from verifier.verify import verify

from cli_helpers import assert_refused, run
from conftest import DEFAULT_MODEL, PROPERTIES
from onnx_builders import GraphBuilder, save_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")
needs_package = pytest.mark.skipif(
    importlib.util.find_spec("vnnlib") is None,
    reason="VNN-LIB 2.0 needs the vnnlib package (pip install 'vnnlib>=1.0.2'; no Linux aarch64 wheel)")


def num(x: float) -> str:
    """A float as VNN-LIB 2.0 writes it: positional (2.0 has no exponent), exact round trip."""
    return np.format_float_positional(float(x), unique=True, trim="0")


def v2_text(spec, dtype: str = "float32", in_shape=None, out_shape=None) -> str:
    """The VNN-LIB 2.0 text of a spec read from v1: one ``or`` of the regions' disjuncts,
    each an ``and`` of its input box and output rows; tensors of ``in_shape``/``out_shape``
    (default flat), their elements indexed row-major."""
    in_shape = in_shape or [spec.num_inputs]
    out_shape = out_shape or [spec.num_outputs]

    def element(name, shape, flat):
        return f"{name}[{','.join(str(int(i)) for i in np.unravel_index(flat, shape))}]"

    out = ["; written by tests/test_vnnlib2.py", "(vnnlib-version <2.0>)",
           f"(declare-network net (declare-input X {dtype} [{','.join(map(str, in_shape))}])"
           f" (declare-output Y {dtype} [{','.join(map(str, out_shape))}]))"]
    disjuncts = []
    for region in spec.regions:
        lo, hi = region.lower.reshape(-1).tolist(), region.upper.reshape(-1).tolist()
        ls = region.lower_strict.reshape(-1).tolist() if region.lower_strict is not None else [False] * len(lo)
        us = region.upper_strict.reshape(-1).tolist() if region.upper_strict is not None else [False] * len(hi)
        box = " ".join(f"({'>' if s else '>='} {element('X', in_shape, i)} {num(lo[i])}) "
                       f"({'<' if t else '<='} {element('X', in_shape, i)} {num(hi[i])})"
                       for i, (s, t) in enumerate(zip(ls, us)))
        for conj in region.disjuncts:
            rows = []
            for a, b, strict in zip(conj.A.tolist(), conj.b.tolist(), conj.strict.tolist()):
                terms = [f"(* {num(c)} {element('Y', out_shape, j)})" for j, c in enumerate(a) if c != 0]
                lhs = "0.0" if not terms else terms[0] if len(terms) == 1 else f"(+ {' '.join(terms)})"
                rows.append(f"({'<' if strict else '<='} {lhs} {num(b)})")
            disjuncts.append(f"(and {box} {' '.join(rows)})")
    out.append(f"(assert (or {' '.join(disjuncts)}))")
    return "\n".join(out) + "\n"


def canonical(spec) -> list:
    """A spec as a sorted list of regions, each with its sorted disjuncts of sorted rows."""
    regions = []
    for r in spec.regions:
        flags = [t.reshape(-1).tolist() if t is not None else [False] * spec.num_inputs
                 for t in (r.lower_strict, r.upper_strict)]
        disjuncts = sorted(sorted(zip((tuple(x + 0.0 for x in row) for row in d.A.tolist()),
                                      (x + 0.0 for x in d.b.tolist()), d.strict.tolist()))
                           for d in r.disjuncts)
        regions.append((tuple(r.lower.reshape(-1).tolist()), tuple(r.upper.reshape(-1).tolist()),
                        tuple(flags[0]), tuple(flags[1]), tuple(map(tuple, disjuncts))))
    return sorted(regions)


V1_HEAD = "".join(f"(declare-const X_{i} Real)\n" for i in range(3)) + \
    "".join(f"(declare-const Y_{j} Real)\n" for j in range(2))
V2_HEAD = "(vnnlib-version <2.0>)\n(declare-network net (declare-input X float32 [1,3]) (declare-output Y float32 [1,2]))\n"
SAME = [  # (v1 body, v2 body): the same property written in both versions
    ("(assert (>= X_0 -0.5))\n(assert (<= X_0 0.5))\n"
     "(assert (and (>= X_1 0.0) (<= X_1 1.0) (>= X_2 0.25) (<= X_2 0.75)))\n"
     "(assert (or (>= Y_0 (+ Y_1 0.1)) (and (<= (- Y_1 (* 2.0 Y_0)) -1.5) (< Y_0 3.0))))\n",
     "(assert (>= X[0,0] -0.5))\n(assert (<= X[0,0] 0.5))\n"
     "(assert (and (>= X[0,1] 0.0) (<= X[0,1] 1.0) (>= X[0,2] 0.25) (<= X[0,2] 0.75)))\n"
     "(assert (or (>= Y[0,0] (+ Y[0,1] 0.1)) (and (<= (- Y[0,1] (* 2.0 Y[0,0])) -1.5) (< Y[0,0] 3.0))))\n"),
    ("(assert (or (and (>= X_0 0.0) (<= X_0 0.5) (> X_1 -1.0) (< X_1 1.0) (>= X_2 0.0) (<= X_2 0.0) (>= Y_0 Y_1))"
     " (and (>= X_0 0.5) (<= X_0 1.0) (> X_1 -1.0) (< X_1 1.0) (>= X_2 0.0) (<= X_2 0.0) (= Y_1 0.5))))\n",
     "(assert (or (and (>= X[0,0] 0.0) (<= X[0,0] 0.5) (> X[0,1] -1.0) (< X[0,1] 1.0) (>= X[0,2] 0.0)"
     " (<= X[0,2] 0.0) (>= Y[0,0] Y[0,1])) (and (>= X[0,0] 0.5) (<= X[0,0] 1.0) (> X[0,1] -1.0) (< X[0,1] 1.0)"
     " (>= X[0,2] 0.0) (<= X[0,2] 0.0) (== Y[0,1] 0.5))))\n"),
    ("(assert (and (<= (* -2.0 X_0) 1.0) (<= X_0 0.0) (>= X_1 0.0) (<= X_1 0.5) (>= X_2 0.0) (<= X_2 0.5)))\n"
     "(assert (and (or (<= Y_0 1.0) (<= Y_1 1.0)) (or (>= Y_0 2.0) (< Y_1 0.0))))\n",
     "(assert (and (<= (* -2.0 X[0,0]) 1.0) (<= X[0,0] 0.0) (>= X[0,1] 0.0) (<= X[0,1] 0.5) (>= X[0,2] 0.0)"
     " (<= X[0,2] 0.5)))\n(assert (and (or (<= Y[0,0] 1.0) (<= Y[0,1] 1.0)) (or (>= Y[0,0] 2.0) (< Y[0,1] 0.0))))\n"),
]


@needs_package
@pytest.mark.parametrize("v1, v2", SAME)
def test_hand_written_properties_read_the_same_in_both_versions(v1, v2):
    one, two = parse_vnnlib(V1_HEAD + v1, "p1"), parse_vnnlib(V2_HEAD + v2, "p2")
    assert canonical(one) == canonical(two)
    assert (two.num_inputs, two.num_outputs) == (3, 2)


def test_the_version_is_detected_from_the_first_form():
    assert is_vnnlib2("; comment\n\n  (vnnlib-version <2.0>)\n")
    assert is_vnnlib2("\ufeff(declare-network n\n")
    assert not is_vnnlib2("; (vnnlib-version <2.0>) in a comment\n(declare-const X_0 Real)\n")
    assert not is_vnnlib2("(set-logic QF_LRA)\n(vnnlib-version <2.0>)\n")
    assert not is_vnnlib2("")


@st.composite
def properties(draw):
    """A random v1 spec text over 1-3 inputs and 2-3 outputs: 1-3 disjuncts, each a box (some
    sides strict) and 1-2 output rows with decimal coefficients."""
    nx, ny = draw(st.integers(1, 3)), draw(st.integers(2, 3))
    decimals = st.integers(-400, 400).map(lambda k: k / 8)  # exact in binary, short in decimal
    disjuncts = []
    for _ in range(draw(st.integers(1, 3))):
        parts = []
        for i in range(nx):
            low = draw(decimals)
            high = low + draw(st.integers(1, 40)) / 8
            parts.append(f"({draw(st.sampled_from(['>=', '>']))} X_{i} {low})")
            parts.append(f"({draw(st.sampled_from(['<=', '<']))} X_{i} {high})")
        for _ in range(draw(st.integers(1, 2))):
            coefs = draw(st.lists(decimals, min_size=ny, max_size=ny))
            terms = " ".join(f"(* {c} Y_{j})" for j, c in enumerate(coefs))
            parts.append(f"({draw(st.sampled_from(['<=', '<', '>=', '>']))} (+ {terms}) {draw(decimals)})")
        disjuncts.append(f"(and {' '.join(parts)})")
    head = "".join(f"(declare-const X_{i} Real)\n" for i in range(nx)) + \
        "".join(f"(declare-const Y_{j} Real)\n" for j in range(ny))
    return head + f"(assert (or {' '.join(disjuncts)}))\n"


@needs_package
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(properties(), st.sampled_from(["float32", "float64"]))
def test_random_properties_read_the_same_in_both_versions(text, dtype):
    one = parse_vnnlib(text, "p1")
    two = parse_vnnlib(v2_text(one, dtype), "p2")
    assert canonical(one) == canonical(two)


@needs_package
@pytest.mark.parametrize("name, verdict", [("mnist_0_eps0.05.vnnlib", "unsat"), ("mnist_5_eps0.3.vnnlib", "sat")])
def test_the_shipped_properties_give_the_same_verdict_in_v2(capsys, tmp_path, name, verdict):
    one = read_vnnlib(PROPERTIES / name)
    path = tmp_path / (name.replace(".vnnlib", "_v2.vnnlib.gz"))
    with gzip.open(path, "wt", encoding="utf-8") as fh:  # gzip and a [1,1,28,28] tensor: both paths at once
        fh.write(v2_text(one, "float32", [1, 1, 28, 28], [1, 10]))
    assert canonical(read_vnnlib(path)) == canonical(one)
    results = []
    for spec in (PROPERTIES / name, path):
        code, out, err = run(capsys, "verify", DEFAULT_MODEL, spec, "--seed", "3")
        assert code == 0, err
        results.append(out.strip().splitlines()[-1])
    assert results == [f"result: {verdict}"] * 2


def small_net(tmp_path):
    """A random 2-input, 2-output ReLU net (2-8-8-2)."""
    g = GraphBuilder(np.random.default_rng(5), ("N", 2))
    h = g.x
    for size, width in ((8, 2), (8, 8)):
        h = g.op("Relu", g.op("Gemm", h, g.weight(size, width), g.rand(size, scale=0.3), transB=1))
    return save_model(g.model(g.op("Gemm", h, g.weight(2, 8), g.rand(2, scale=0.3), transB=1)), tmp_path)


@needs_package
def test_small_net_verdicts_agree(tmp_path):
    path = small_net(tmp_path)
    model = verifier.load(str(path))
    x = torch.rand(20000, 2, dtype=torch.float64)
    top = float((model(x)[:, 0] - model(x)[:, 1]).max())  # the margin y0 − y1 reached on [0, 1]²
    verdicts = []
    for threshold in (top - 0.05, top + 0.5):  # reached (sat), and far above the maximum (unsat)
        v1 = ("(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n"
              "(assert (>= X_0 0.0))\n(assert (<= X_0 1.0))\n(assert (>= X_1 0.0))\n(assert (<= X_1 1.0))\n"
              f"(assert (>= (- Y_0 Y_1) {threshold!r}))\n")
        v2 = ("(vnnlib-version <2.0>)\n(declare-network net (declare-input X float32 [2]) "
              "(declare-output Y float32 [2]))\n(assert (and (>= X[0] 0.0) (<= X[0] 1.0) (>= X[1] 0.0) (<= X[1] 1.0)))\n"
              f"(assert (>= (- Y[0] Y[1]) {num(threshold)}))\n")
        pair = [verify(model, parse_vnnlib(text, name), timeout=60).status for text, name in ((v1, "v1"), (v2, "v2"))]
        verdicts.append(pair)
    assert verdicts == [["sat", "sat"], ["unsat", "unsat"]]


BAD = [  # (v2 body after the header, words of the error)
    ("(assert (<= X[0,0] 1e-05))", [":3:", "exponent"]),
    ("(assert (<= Z[0,0] 1.0))", [":3:", "Undeclared", "Z"]),
    ("(assert (<= X[0,3] 1.0))", [":3:", "out of bounds"]),
    ("(assert (<= (* Y[0,0] Y[0,1]) 1.0))", ["Non-linear"]),
    ("(assert (!= Y[0,0] 1.0))", ["!="]),
    ("(assert (<= (+ X[0,0] Y[0,0]) 1.0))", [":3:", "mixing inputs and outputs"]),
    ("(assert (<= (+ X[0,0] X[0,1]) 1.0))", [":3:", "several inputs"]),
    ("(assert (and (>= X[0,0] 0.0) (>= X[0,1] 0.0) (<= X[0,1] 1.0) (>= X[0,2] 0.0) (<= X[0,2] 1.0)))",
     ["X_0", "upper bound"]),
    ("(assert (and (>= X[0,0] 1.0) (<= X[0,0] 0.0) (>= X[0,1] 0.0) (<= X[0,1] 1.0) (>= X[0,2] 0.0) (<= X[0,2] 1.0)))",
     [":3:", "empty range"]),
    # the package's std::stod / std::stoll overflow came out as the one word "stod"
    ("(assert (<= Y[0,0] 1" + "0" * 400 + ".0))", ["out of range"]),
    ("(assert (<= Y[0,99999999999999999999999] 1.0))", ["out of range"]),
    # 10^5 nested forms crashed the process (a segfault in the package's recursive parser)
    ("(assert " + "(and " * 100_000 + "(<= Y[0,0] 1.0)" + ")" * 100_001, [":3:", "nested more than"]),
    ("(assert (<= Y[0,0] " + "(+ 1.0 " * 100_000 + "Y[0,1]" + ")" * 100_002, [":3:", "nested more than"]),
]


@needs_package
@pytest.mark.parametrize("shape, words", [("X float32 [1000000000000]", ["input X", "1000000000000 elements"]),
                                          ("Y float32 [100000000000]", ["output Y", "100000000000 elements"])])
def test_a_declared_tensor_too_large_to_hold_is_refused(shape, words):
    """A declared shape of 10^12 elements used to exhaust memory (the process was killed)."""
    declared = {"X": "X float32 [3]", "Y": "Y float32 [2]"}
    declared[shape[0]] = shape
    text = (f"(vnnlib-version <2.0>)\n(declare-network net (declare-input {declared['X']}) "
            f"(declare-output {declared['Y']}))\n(assert (<= Y[0] 1.0))\n")
    with pytest.raises(SpecError) as info:
        parse_vnnlib(text, "big.vnnlib")
    assert all(w in str(info.value) for w in words), str(info.value)


@needs_package
@pytest.mark.parametrize("body, words", BAD)
def test_what_the_2_0_reader_refuses_names_file_and_line(body, words):
    with pytest.raises(SpecError) as info:
        parse_vnnlib(V2_HEAD + body + "\n", "bad.vnnlib")
    message = str(info.value)
    assert message.startswith("bad.vnnlib") and all(w in message for w in words), message


@needs_package
@pytest.mark.parametrize("declaration, words", [
    ("(declare-network a (declare-input X Real [2]) (declare-output Y Real [2]))\n"
     "(declare-network b (declare-input U Real [2]) (declare-output V Real [2]))", ["2 networks"]),
    ("(declare-network a (declare-input X Real [2]) (declare-hidden H Real [2] \"h\") (declare-output Y Real [2]))",
     ["hidden", "H"]),
    ("(declare-network a (declare-input X Real [2]) (declare-input W Real [2]) (declare-output Y Real [2]))",
     ["2 inputs"]),
    ("(declare-network a (declare-input X int8 [2]) (declare-output Y int8 [2]))", ["int8", "float"]),
])
def test_unsupported_declarations_are_refused(declaration, words):
    constant = "1" if "int8" in declaration else "1.0"  # the package type-checks constants against the tensor
    with pytest.raises(SpecError) as info:
        parse_vnnlib(f"(vnnlib-version <2.0>)\n{declaration}\n(assert (<= X[0] {constant}))\n", "d.vnnlib")
    assert all(w in str(info.value) for w in words), str(info.value)


@needs_package
def test_cli_refuses_a_bad_2_0_file_with_one_line(capsys, tmp_path):
    spec = tmp_path / "bad.vnnlib"
    spec.write_text(V2_HEAD + "(assert (<= X[0,0] 1e-05))\n")
    code, out, err = run(capsys, "verify", DEFAULT_MODEL, spec)
    assert_refused(code, out, err, "bad.vnnlib:3", "exponent")


def test_without_the_package_a_2_0_file_is_refused_and_v1_still_reads(monkeypatch):
    monkeypatch.setitem(sys.modules, "vnnlib", None)  # import vnnlib raises ImportError
    with pytest.raises(SpecError, match="vnnlib package"):
        parse_vnnlib(V2_HEAD + "(assert (<= X[0,0] 1.0))\n", "p.vnnlib")
    spec = parse_vnnlib(V1_HEAD + SAME[0][0], "p1")
    assert spec.num_inputs == 3
