"""``verifier reach``: the 2-D polygons are exact where they claim to be (the zonotope's
support function, the half-planes' intersection), every sampled output (the IR forward
and onnxruntime) lies inside the Box, DeepZ and CROWN polygons on random small networks,
the PNG is real, and bad input is refused before any work."""

from __future__ import annotations

import sys

import numpy as np
import onnx
import onnx.numpy_helper
import pytest
import torch

import verifier
from verifier.errors import VerifierInputError
from verifier.reach import (directions, halfplane_polygon, parse_input_box, parse_outputs, polygon_area,
                            polygon_contains, reach_sets, zonotope_polygon)

from cli_helpers import assert_refused, run
from onnx_builders import GraphBuilder, Reference, save_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def mlp(tmp_path, seed: int, inputs: int, hidden: list[int], outputs: int, activation: str = "Relu"):
    """A random fully-connected ONNX net ``inputs → hidden… → outputs`` (float32)."""
    g = GraphBuilder(np.random.default_rng(seed), ("N", inputs))
    h, width = g.x, inputs
    for size in hidden:
        h = g.op(activation, g.op("Gemm", h, g.weight(size, width), g.rand(size, scale=0.3), transB=1))
        width = size
    h = g.op("Gemm", h, g.weight(outputs, width), g.rand(outputs, scale=0.3), transB=1)
    return save_model(g.model(h), tmp_path)


def support(vertices: np.ndarray, d: np.ndarray) -> float:
    return float((vertices @ d).max())


def test_zonotope_polygon_is_exact():
    rng = np.random.default_rng(0)
    for m in (0, 1, 2, 5, 12):
        centre, gens = rng.normal(size=2), rng.normal(size=(m, 2))
        if m > 2:
            gens[1] = -2.5 * gens[0]  # parallel generators, one of them flipped
        poly = zonotope_polygon(centre, gens)
        assert len(poly) == max(1, 2 * m)
        for d in rng.normal(size=(50, 2)):
            assert support(poly, d) == pytest.approx(centre @ d + np.abs(gens @ d).sum(), abs=1e-12)
        if len(poly) >= 3:  # counter-clockwise: positive signed area, convex
            edges = np.roll(poly, -1, 0) - poly
            turns = edges[:, 0] * np.roll(edges, -1, 0)[:, 1] - edges[:, 1] * np.roll(edges, -1, 0)[:, 0]
            assert (turns >= -1e-12).all()
            e = rng.uniform(-1, 1, size=(2000, m))
            assert polygon_contains(poly, centre + e @ gens).all()
    assert polygon_area(zonotope_polygon([0, 0], [[1, 0], [0, 1]])) == pytest.approx(4.0)


def test_halfplane_polygon_is_the_intersection():
    normals = directions(16)
    rng = np.random.default_rng(1)
    points = rng.normal(size=(30, 2)) * [3, 1]
    offsets = (points @ normals.T).min(0)  # the 16-direction outer polygon of the points
    poly = halfplane_polygon(normals, offsets)
    assert polygon_contains(poly, points).all()
    assert (poly @ normals.T >= offsets - 1e-9).all()  # every vertex satisfies every half-plane
    for n, b in zip(normals, offsets):  # and each half-plane is tight (it touches a point)
        assert (poly @ n).min() == pytest.approx(b, abs=1e-9)
    flat = halfplane_polygon(directions(4), [0.0, 1.0, -2.0, -1.0])  # x ∈ [0, 2], y = 1: a segment
    assert polygon_area(flat) == 0 and polygon_contains(flat, [[1.0, 1.0]]).all()
    assert not polygon_contains(flat, [[1.0, 1.1], [2.5, 1.0]]).any()
    assert len(halfplane_polygon(directions(4), [1.0, 0.0, 0.0, 0.0])) == 0  # x ≥ 1 and x ≤ 0
    with pytest.raises(ValueError):
        halfplane_polygon(normals[1:], offsets[1:])


@pytest.mark.parametrize("seed, inputs, hidden, outputs, activation, pair", [
    (0, 2, [8, 8], 2, "Relu", (0, 1)),
    (1, 3, [10], 4, "Relu", (3, 1)),
    (2, 2, [6, 6], 2, "Tanh", (0, 1)),
    (3, 5, [12, 8], 3, "Sigmoid", (0, 2)),
])
def test_every_sampled_output_lies_in_every_polygon(tmp_path, seed, inputs, hidden, outputs, activation, pair):
    path = mlp(tmp_path, seed, inputs, hidden, outputs, activation)
    rng = np.random.default_rng(seed)
    centre = rng.uniform(-1, 1, inputs)
    lower, upper = torch.tensor(centre - 0.4), torch.tensor(centre + 0.4)
    model = verifier.load(str(path), lower=lower, upper=upper)
    sets = reach_sets(model, lower, upper, pair, k=32, samples=4000, seed=seed)  # raises if a sample is outside
    assert set(sets.polygons) == {"box", "deepz", "crown"}
    assert len(sets.samples) == 4000 + (2 ** inputs)  # the corners too
    assert sets.extremes.shape == (2 * 32, 2)
    x = lower.numpy() + (upper - lower).numpy() * rng.uniform(size=(2000, inputs))
    y = Reference(path).run(x.astype(np.float32))[:, list(pair)]  # onnxruntime, float32
    for name, polygon in sets.polygons.items():
        assert polygon_contains(polygon, sets.samples).all(), name
        assert polygon_contains(polygon, sets.extremes).all(), name
        assert polygon_contains(polygon, y, tolerance=1e-5).all(), name
        assert polygon_area(polygon) > 0, name
    samples_box = np.ptp(sets.samples, 0).prod()
    assert polygon_area(sets.polygons["box"]) >= samples_box  # not vacuous: the sets are 2-D


def test_inputs_and_outputs_are_parsed_and_checked():
    lower, upper = parse_input_box("-1:1, 0:0.5", 2)
    assert lower.tolist() == [-1, 0] and upper.tolist() == [1, 0.5]
    for text, words in (("0:1", ["1 low:high", "2 inputs"]), ("0:1,2", ["'2'"]), ("0:1,1:0", ["low > high"]),
                        ("0:1,nan:1", ["finite"]), ("0:1,a:b", ["'a:b'"])):
        with pytest.raises(VerifierInputError) as info:
            parse_input_box(text, 2)
        assert "--input-box" in str(info.value) and all(w in str(info.value) for w in words), str(info.value)
    assert parse_outputs(None, 2) == (0, 1) and parse_outputs("2,0", 3) == (2, 0)
    for text, size in ((None, 3), (None, 1), ("1,1", 3), ("0,3", 3), ("0", 3), ("a,b", 3)):
        with pytest.raises(VerifierInputError):
            parse_outputs(text, size)
    for k in (0, 6, 3, True):
        with pytest.raises(VerifierInputError, match="--directions"):
            directions(k)


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_cli_draws_the_sets(tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="the reach plot needs matplotlib: pip install -e '.[plots]'")
    path, plot = mlp(tmp_path, 0, 2, [8, 8], 2), tmp_path / "reach.png"
    code, out, err = run(capsys, "reach", path, "--input-box", "-0.5:0.5,0:1", "--plot", plot, "--samples", "2000")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("outputs Y_0, Y_1: 2004 sampled and 64 attacked outputs")
    assert [line.split(":")[0] for line in lines[1:4]] == ["box", "deepz", "crown"]
    assert lines[-1] == f"plot: {plot}"
    png = plot.read_bytes()
    assert png_size(png) == (600, 600) and len(png) > 10_000


def test_cli_takes_the_box_from_a_spec(tmp_path, capsys):
    path = mlp(tmp_path, 1, 3, [10], 4)
    spec = tmp_path / "p.vnnlib"
    spec.write_text("".join(f"(declare-const X_{i} Real)\n" for i in range(3))
                    + "".join(f"(declare-const Y_{j} Real)\n" for j in range(4))
                    + "".join(f"(assert (>= X_{i} -0.2))\n(assert (<= X_{i} 0.3))\n" for i in range(3))
                    + "(assert (>= Y_0 Y_1))\n")
    code, out, err = run(capsys, "reach", path, "--spec", spec, "--outputs", "1,3", "--samples", "500")
    assert code == 0, err
    assert out.startswith("outputs Y_1, Y_3: 508 sampled and 64 attacked outputs")


def test_cli_multi_region_spec_needs_region(tmp_path, capsys):
    """A spec of two input regions: without ``--region`` reach refuses it (it used to draw
    region 0 silently); ``--region 1`` draws the second box (its sampled outputs differ from
    the first's), and an index past the last is refused naming the count."""
    path = mlp(tmp_path, 2, 2, [6], 2)
    spec = tmp_path / "two.vnnlib"
    spec.write_text("(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n"
                    "(declare-const Y_1 Real)\n(assert (or\n"
                    " (and (>= X_0 0) (<= X_0 0.1) (>= X_1 0) (<= X_1 0.1) (>= Y_0 Y_1))\n"
                    " (and (>= X_0 5) (<= X_0 6) (>= X_1 -6) (<= X_1 -5) (>= Y_0 Y_1))))\n")
    code, out, err = run(capsys, "reach", path, "--spec", spec, "--samples", "100")
    assert_refused(code, out, err, "--region", "2 input regions", str(spec))
    assert out == ""
    firsts = []
    for region in ("0", "1"):
        code, out, err = run(capsys, "reach", path, "--spec", spec, "--region", region, "--samples", "100")
        assert code == 0, err
        firsts.append(out.splitlines()[0])
    assert firsts[0] != firsts[1]  # two different boxes were drawn
    code, out, err = run(capsys, "reach", path, "--spec", spec, "--region", "2", "--samples", "100")
    assert_refused(code, out, err, "--region 2", "0..1")


def test_cli_bad_input_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    two, three = mlp(tmp_path, 0, 2, [4], 2), mlp(tmp_path, 1, 2, [4], 3)
    box = ["--input-box", "0:1,0:1"]
    for argv, words in (([two], ["--input-box", "--spec"]),
                        ([two, *box, "--spec", tmp_path / "p.vnnlib"], ["exactly one"]),
                        ([two, "--input-box", "0:1"], ["--input-box", "2 inputs"]),
                        ([three, *box], ["3 output", "--outputs"]),
                        ([three, *box, "--outputs", "0,0"], ["--outputs"]),
                        ([two, *box, "--samples", "0"], ["--samples"]),
                        ([two, *box, "--directions", "10"], ["--directions"]),
                        ([two, *box, "--plot", tmp_path], ["--plot", "folder"]),
                        ([two, "--spec", tmp_path / "none.vnnlib"], ["none.vnnlib"]),
                        ([tmp_path / "none.onnx", *box], ["none.onnx"]),
                        ([two, *box, "--region", "3"], ["--region", "--spec"]),  # was silently ignored
                        ([two, "--spec", tmp_path / "p.pdf", "--plot", tmp_path / "p.pdf"], ["--plot", "input spec"])):
        code, out, err = run(capsys, "reach", *argv)
        assert_refused(code, out, err, *words)
        assert out == ""
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    code, out, err = run(capsys, "reach", two, *box, "--plot", tmp_path / "r.png")
    assert_refused(code, out, err, "--plot", "matplotlib")


def test_on_a_linear_net_the_attack_reaches_the_exact_extremes_and_crown_deepz_are_exact(tmp_path):
    """y = W x + b over a box: min c·y is attained at a corner (c·b + Σ_i min(v_i l_i, v_i u_i),
    v = Wᵀc); the attacked outputs reach it in every direction, and the DeepZ zonotope and the
    CROWN half-planes touch it (both are exact on affine nets), while every polygon holds them."""
    g = GraphBuilder(np.random.default_rng(7), ("N", 3))
    path = save_model(g.model(g.op("Gemm", g.x, g.weight(2, 3), g.rand(2), transB=1)), tmp_path)
    lower, upper = torch.tensor([-1.0, 0.0, 0.5]), torch.tensor([0.5, 0.25, 2.0])
    model = verifier.load(str(path), lower=lower, upper=upper)
    sets = reach_sets(model, lower, upper, (0, 1), k=16, samples=100)
    init = {t.name: t for t in onnx.load(str(path)).graph.initializer}
    W, b = (onnx.numpy_helper.to_array(init[n]).astype(np.float64) for n in (g.nodes[0].input[1], g.nodes[0].input[2]))
    for c in directions(16):
        v = W.T @ c
        exact = c @ b + np.minimum(v * lower.numpy(), v * upper.numpy()).sum()
        assert (sets.extremes @ c).min() == pytest.approx(exact, abs=1e-9)
        for name in ("deepz", "crown"):
            assert (sets.polygons[name] @ c).min() == pytest.approx(exact, abs=1e-9), name


@pytest.mark.parametrize("suffix,magic", [(".svg", b"<?xml"), (".pdf", b"%PDF")])
def test_the_plot_is_written_in_the_format_its_extension_names(tmp_path, capsys, suffix, magic):
    """``--plot reach.svg`` is an SVG file, as ``--help`` says (it used to hold PNG bytes)."""
    pytest.importorskip("matplotlib", reason="the reach plot needs matplotlib: pip install -e '.[plots]'")
    path, plot = mlp(tmp_path, 0, 2, [4], 2), tmp_path / f"reach{suffix}"
    code, out, err = run(capsys, "reach", path, "--input-box", "0:1,0:1", "--plot", plot, "--samples", "200")
    assert code == 0, err
    assert plot.read_bytes().startswith(magic)


def test_a_model_that_overflows_over_the_box_is_refused_not_an_internal_error(tmp_path, capsys):
    """float64 weights of 1e200 twice: every bound is infinite, and the polygon code used to
    fail with a ValueError (exit 3). The float64 overflow check refuses the box first now."""
    import onnx.helper as oh

    w = onnx.numpy_helper.from_array(np.full((2, 2), 1e200), "W")
    graph = oh.make_graph([oh.make_node("MatMul", ["x", "W"], ["h"]), oh.make_node("MatMul", ["h", "W"], ["y"])],
                          "overflow", [oh.make_tensor_value_info("x", onnx.TensorProto.DOUBLE, [1, 2])],
                          [oh.make_tensor_value_info("y", onnx.TensorProto.DOUBLE, [1, 2])], [w])
    path = tmp_path / "overflow.onnx"
    onnx.save(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 13)], ir_version=8), path)
    code, out, err = run(capsys, "reach", path, "--input-box", "0:1,0:1", "--samples", "100")
    assert_refused(code, out, err, "'y'", "overflow")
