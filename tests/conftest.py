"""Shared fixtures: the repository's default model and the VNN-COMP benchmarks."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchdata import benchmarks_dir

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = REPO / "models" / "mnist_small.onnx"
PROPERTIES = REPO / "models" / "properties"


@pytest.fixture
def bench() -> Path:
    root = benchmarks_dir()
    if root is None:
        pytest.skip("VNN-COMP benchmarks not found (set VERIFIER_BENCHMARKS or provide ../shared/benchmarks/vnncomp)")
    return root
