"""Locating the VNN-COMP benchmarks used by the tests."""

from __future__ import annotations

import csv
import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def benchmarks_dir() -> Path | None:
    """``$VERIFIER_BENCHMARKS`` or ``../shared/benchmarks/vnncomp`` beside the repository."""
    env = os.environ.get("VERIFIER_BENCHMARKS")
    path = Path(env) if env else REPO.parent / "shared" / "benchmarks" / "vnncomp"
    return path if path.is_dir() else None


def instances(benchmark: str) -> list[dict]:
    """Rows of a benchmark's reference.csv (onnx, vnnlib, timeout, expected, …)."""
    root = benchmarks_dir()
    if root is None:
        return []
    with open(root / benchmark / "reference.csv", newline="") as fh:
        return list(csv.DictReader(fh))
