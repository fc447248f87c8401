"""A malformed ``.vnnlib.gz`` or ``.onnx.gz`` instance: its ``error`` names the benchmark's file.

The runner decompressed every ``.gz`` into a private temporary folder and read that copy,
so the message named a file the user never had (``/tmp/verifier_vnncomp_…/0_x.vnnlib:1``)
and that was gone when the run ended. The spec reader reads ``.gz`` itself (the message
names ``BENCH/vnnlib/x.vnnlib.gz:LINE``); a model's message names ``BENCH/onnx/x.onnx.gz``.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

from verifier.vnncomp_instance import InstanceRunner, RunSettings
from verifier.vnncomp_plan import Instance

CASES = Path(__file__).resolve().parent / "cases"
SMALL = CASES / "models" / "small5x3.onnx"
GOOD = CASES / "spec" / "s_good.vnnlib"


def bench(tmp_path: Path, spec_text: str) -> Path:
    folder = tmp_path / "bench"
    (folder / "onnx").mkdir(parents=True)
    (folder / "vnnlib").mkdir()
    shutil.copy(SMALL, folder / "onnx" / "net.onnx")
    (folder / "vnnlib" / "prop.vnnlib.gz").write_bytes(gzip.compress(spec_text.encode()))
    return folder


def outcome(tmp_path: Path, folder: Path, vnnlib: str):
    runner = InstanceRunner(RunSettings(folder, cache=False))
    try:
        return runner.run(Instance("onnx/net.onnx", vnnlib, 10.0), tmp_path / "result.txt")
    finally:
        runner.close()


def test_a_malformed_gz_spec_is_named_as_the_benchmark_has_it(tmp_path):
    text = GOOD.read_text().replace("(assert (>= Y_0 1000))", "(assert (>= Y_0 1.2.3))")
    folder = bench(tmp_path, text)
    line = text.splitlines().index("(assert (>= Y_0 1.2.3))") + 1
    for written in ("vnnlib/prop.vnnlib.gz", "vnnlib/prop.vnnlib"):  # as listed, or found by its .gz
        got = outcome(tmp_path, folder, written)
        assert got.result == "error"
        assert f"{folder / 'vnnlib' / 'prop.vnnlib.gz'}:{line}:" in got.message, got.message
        assert "verifier_vnncomp_" not in got.message, got.message


def test_a_good_gz_spec_still_verifies(tmp_path):
    folder = bench(tmp_path, GOOD.read_text())
    assert outcome(tmp_path, folder, "vnnlib/prop.vnnlib.gz").result == "unsat"


def test_a_bad_gz_model_is_named_as_the_benchmark_has_it(tmp_path):
    folder = bench(tmp_path, GOOD.read_text())
    (folder / "onnx" / "net.onnx").unlink()
    (folder / "onnx" / "net.onnx.gz").write_bytes(gzip.compress(b"not an ONNX model"))
    (folder / "vnnlib" / "prop.vnnlib").write_text(GOOD.read_text())
    got = outcome(tmp_path, folder, "vnnlib/prop.vnnlib")
    assert got.result == "error"
    assert str(folder / "onnx" / "net.onnx.gz") in got.message, got.message
    assert "verifier_vnncomp_" not in got.message, got.message
