"""``verifier certify`` over several radii: the curve equals single-radius runs and is sound
(certified ≤ PGD ≤ clean, Box non-increasing in ε), ``--json`` validates against the schema
documented in docs/outputs.md, ``--plot`` writes a real PNG, ``--compare`` adds models, a
single ``--eps`` keeps its three-line output, and bad input is refused before any work."""

from __future__ import annotations

import json
import re
import sys

import numpy as np
import onnx
import onnx.helper as oh
import onnx.numpy_helper as onh
import pytest
import torch

import verifier
from verifier_plugins.training.certify import (Certificate, certificate_metadata, certify_curve, certify_model,
                                               check_eps_values, stored_certificate_status, write_metadata)
from verifier_plugins.training.certify_record import CERTIFY_SCHEMA, FORMAT
from verifier_plugins.training.data import load_data
from verifier.errors import VerifierInputError

from cli_helpers import assert_refused, run
from conftest import DEFAULT_MODEL, REPO

jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is in the test extra: pip install -e '.[test]'")

pytestmark = pytest.mark.usefixtures("one_torch_thread")

COUNT = 12  # test points: enough for different numbers per radius, seconds per run
DOC = REPO / "docs" / "outputs.md"


def validate(record: dict) -> None:
    jsonschema.Draft202012Validator.check_schema(CERTIFY_SCHEMA)
    jsonschema.Draft202012Validator(CERTIFY_SCHEMA).validate(record)


@pytest.fixture(scope="module")
def data():
    return load_data("mnist", test_count=COUNT, need_train=True)


@pytest.fixture(scope="module")
def linear(tmp_path_factory, data):
    """A nearest-class-mean linear MNIST classifier (Flatten → Gemm 784→10, ~75 % clean): a
    second model for ``--compare`` that certifies in milliseconds."""
    x = data.x_train.reshape(len(data.x_train), -1).double()
    means = torch.stack([x[data.y_train == c].mean(0) for c in range(10)])
    centre = x.mean(0)
    w = means - centre  # argmin_c ‖x − m_c‖² = argmax_c w_c·x − w_c·m̄ − ‖w_c‖²/2
    weight, bias = w.numpy().astype(np.float32), (-(w @ centre) - 0.5 * (w * w).sum(1)).numpy().astype(np.float32)
    nodes = [oh.make_node("Flatten", ["image"], ["flat"]), oh.make_node("Gemm", ["flat", "W", "b"], ["y"], transB=1)]
    graph = oh.make_graph(nodes, "nearest_mean", [oh.make_tensor_value_info("image", onnx.TensorProto.FLOAT,
                                                                            ["N", 1, 28, 28])],
                          [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 10])],
                          [onh.from_array(weight, "W"), onh.from_array(bias, "b")])
    path = tmp_path_factory.mktemp("linear") / "linear.onnx"
    onnx.save(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 13)], ir_version=8), str(path))
    return path


def test_the_curve_is_the_single_radius_runs_and_is_sound(linear, data):
    model = verifier.load(str(linear))
    radii = [0.0, 0.005, 0.02, 0.05]
    curve = certify_curve(model, data.x_test, data.y_test, radii, "box")
    assert [c.eps for c in curve] == radii
    assert curve[0].clean_accuracy >= 0.5  # a real classifier: the checks below are not vacuous
    for eps, cert in zip(radii, curve):
        assert cert == certify_model(model, data.x_test, data.y_test, eps, "box")
        assert cert.certified_accuracy <= cert.pgd_accuracy <= cert.clean_accuracy
        assert cert.clean_accuracy == curve[0].clean_accuracy
    certified = [c.certified_accuracy for c in curve]
    assert certified == sorted(certified, reverse=True)  # Box bounds grow with the box
    assert certified[0] > certified[-1]  # the radii matter on this model


def test_eps_lists_are_parsed_and_checked():
    assert check_eps_values("--eps", "0.01, 0.02,0.1") == (0.01, 0.02, 0.1)
    assert check_eps_values("--eps", 0.1) == (0.1,)
    for bad, words in (("0.1,abc", ["'abc'", "commas"]), ("0.1,0.1", ["twice"]), ("", ["''"]),
                       ("0.1,-0.2", [">= 0"]), ("0.1,nan", ["--eps"]), ([], ["no radius"])):
        with pytest.raises(VerifierInputError) as info:
            check_eps_values("--eps", bad)
        assert "--eps" in str(info.value) and all(w in str(info.value) for w in words), str(info.value)


def test_stored_certificate_status():
    certs = [Certificate(0.9, 0.8, 0.7, "box", eps, COUNT, "float64", "mnist") for eps in (0.01, 0.05)]
    stored = {"certified_accuracy": 0.7, "domain": "box", "eps": 0.05, "count": COUNT, "dtype": "float64"}
    assert stored_certificate_status(stored, certs) == ("reproduced", certs[1])
    assert stored_certificate_status({**stored, "certified_accuracy": 0.6}, certs) == ("different", certs[1])
    for other in ({"eps": 0.1}, {"domain": "crown"}, {"count": 1000}, {"dtype": "float32"}):
        assert stored_certificate_status({**stored, **other}, certs) == ("not comparable", None)


def test_one_radius_keeps_the_three_line_output(capsys, linear, data):
    code, out, err = run(capsys, "certify", linear, "--eps", "0.02", "--domain", "box", "--count", COUNT)
    assert code == 0, err
    cert = certify_model(verifier.load(str(linear)), data.x_test, data.y_test, 0.02, "box")
    assert out.splitlines() == [f"clean accuracy:     {cert.clean_accuracy:.4f}",
                                f"PGD accuracy:       {cert.pgd_accuracy:.4f}",
                                f"certified accuracy: {cert.certified_accuracy:.4f} (box, eps=0.02, {COUNT} points)"]


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_json_compare_and_plot(capsys, tmp_path, linear, data):
    pytest.importorskip("matplotlib", reason="the curve plot needs matplotlib: pip install -e '.[plots]'")
    certified = tmp_path / "certified.onnx"
    stored = certify_model(verifier.load(str(linear)), data.x_test, data.y_test, 0.02, "box")
    write_metadata(str(linear), certificate_metadata(stored), target=str(certified))
    plot = tmp_path / "curve.png"
    radii = "0.01,0.02,0.05"
    code, out, err = run(capsys, "certify", DEFAULT_MODEL, "--compare", certified, "--eps", radii, "--domain", "box",
                         "--count", COUNT, "--plot", plot, "--json")
    assert code == 0, err
    assert len(out.splitlines()) == 1
    record = json.loads(out)
    validate(record)
    assert record["format"] == FORMAT and record["eps"] == [0.01, 0.02, 0.05] and record["plot"] == str(plot)
    assert (record["count"], record["domain"], record["data"], record["dtype"]) == (COUNT, "box", "mnist", "float64")
    assert [m["model"] for m in record["models"]] == [str(DEFAULT_MODEL), str(certified)]
    for entry, path in zip(record["models"], (DEFAULT_MODEL, certified)):
        curve = certify_curve(verifier.load(str(path)), data.x_test, data.y_test, [0.01, 0.02, 0.05], "box")
        assert entry["clean_accuracy"] == curve[0].clean_accuracy
        assert entry["points"] == [{"eps": c.eps, "pgd_accuracy": c.pgd_accuracy,
                                    "certified_accuracy": c.certified_accuracy} for c in curve]
    assert record["models"][0]["stored_certificate"] is None
    assert record["models"][1]["stored_certificate"]["status"] == "reproduced"
    png = plot.read_bytes()
    assert png_size(png) == (700, 450) and len(png) > 10_000  # 7 × 4.5 in at 100 dpi, curves drawn


def test_text_table_and_a_certificate_not_reproduced(capsys, tmp_path, linear, data):
    tampered = tmp_path / "tampered.onnx"
    stored = certify_model(verifier.load(str(linear)), data.x_test, data.y_test, 0.05, "box")
    stored.certified_accuracy = min(1.0, stored.certified_accuracy + 0.25)
    write_metadata(str(linear), certificate_metadata(stored), target=str(tampered))
    code, out, err = run(capsys, "certify", tampered, "--eps", "0.01,0.05", "--domain", "box", "--count", COUNT)
    assert code == 1, err  # same settings, another accuracy
    lines = out.splitlines()
    assert lines[1].startswith("eps") and [line.split()[0] for line in lines[2:4]] == ["0.01", "0.05"]
    assert "DIFFERENT" in lines[-1]


def test_bad_input_is_refused_before_any_work(capsys, tmp_path, linear, monkeypatch):
    base = ["certify", linear, "--domain", "box", "--count", COUNT]
    for extra, words in ((["--eps", "0.1,abc"], ["--eps", "abc"]), (["--eps", "0.1,0.1"], ["--eps", "twice"]),
                         (["--eps", "0.1", "--plot", tmp_path], ["--plot", "folder"]),
                         (["--eps", "0.1", "--compare", linear], ["--compare", "twice"]),
                         (["--eps", "0.1", "--compare", tmp_path / "none.onnx"], ["none.onnx"]),
                         (["--eps", "0.1", "--plot", tmp_path / "curve.txt"], ["--plot", ".png, .svg or .pdf"]),
                         # the plot used to replace the model it certified (a PNG named .onnx)
                         (["--eps", "0.1", "--plot", linear], ["--plot", "input model"])):
        before = linear.read_bytes()
        code, out, err = run(capsys, *base, *extra)
        assert_refused(code, out, err, *words)
        assert out == "" and linear.read_bytes() == before and not (tmp_path / "curve.txt").exists()
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    code, out, err = run(capsys, *base, "--eps", "0.1", "--plot", tmp_path / "c.png", "--json")
    assert_refused(code, out, err, "--plot", "matplotlib")
    assert not (tmp_path / "c.png").exists()


def test_the_documented_schema_is_the_code_constant_and_the_example_validates():
    blocks = [json.loads(b) for b in re.findall(r"```json\n(.*?)\n```", DOC.read_text(encoding="utf-8"), re.S)]
    assert CERTIFY_SCHEMA in blocks
    examples = [b for b in blocks if b.get("format") == FORMAT]
    assert examples, "docs/outputs.md shows an example certify record"
    for example in examples:
        validate(example)
        for model in example["models"]:
            for point in model["points"]:
                assert point["certified_accuracy"] <= point["pgd_accuracy"]


def test_the_schema_rejects_broken_records():
    good = {"format": FORMAT, "data": "mnist", "count": 2, "domain": "box", "dtype": "float64", "eps": [0.1],
            "models": [{"model": "m.onnx", "clean_accuracy": 1.0,
                        "points": [{"eps": 0.1, "pgd_accuracy": 0.5, "certified_accuracy": 0.5}],
                        "stored_certificate": None, "seconds": 0.1}],
            "plot": None, "options": {"seed": 0, "pgd_steps": 20, "batch": 50, "domain_options": {}},
            "time": {"total": 0.2}}
    validate(good)
    point = good["models"][0]["points"][0]
    for broken in ({**good, "format": "verifier-certify/0"}, {**good, "eps": []}, {**good, "extra": 1},
                   {**good, "models": [{**good["models"][0], "clean_accuracy": 1.5}]},
                   {**good, "models": [{**good["models"][0], "points": [{**point, "eps": -0.1}]}]},
                   {k: v for k, v in good.items() if k != "time"}):
        with pytest.raises(jsonschema.ValidationError):
            validate(broken)


@pytest.mark.parametrize("suffix,magic", [(".svg", b"<?xml"), (".PDF", b"%PDF")])
def test_the_plot_is_written_in_the_format_its_extension_names(capsys, tmp_path, linear, suffix, magic):
    """``--plot curve.svg`` is an SVG file (it used to hold PNG bytes whatever the name)."""
    pytest.importorskip("matplotlib", reason="the curve plot needs matplotlib: pip install -e '.[plots]'")
    plot = tmp_path / f"curve{suffix}"
    code, out, err = run(capsys, "certify", linear, "--eps", "0.01,0.02", "--domain", "box", "--count", COUNT,
                         "--plot", plot)
    assert code == 0, err
    assert plot.read_bytes().startswith(magic)
