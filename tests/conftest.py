"""Shared fixtures: the repository's default model and the VNN-COMP benchmarks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import verifier.fidelity
import verifier.ir.onnx_import
from benchdata import benchmarks_dir

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = REPO / "models" / "mnist_small.onnx"
PROPERTIES = REPO / "models" / "properties"

# CLI runs inside the tests never reach a `verifier serve` worker that happens to run
# (the user's, or one a prepare_instance.sh test started): tests/test_serve.py turns
# serving on for its own runs.
os.environ.setdefault("VERIFIER_NO_SERVE", "1")


def pytest_addoption(parser):
    parser.addoption("--device", default="cpu",
                     help="torch device of the domain soundness grid's bound computations (cpu, cuda, cuda:N); "
                          "benchmarks/gpu.sh runs tests/test_domain_soundness.py with --device cuda")


def _device(name: str) -> torch.device:
    """``--device``'s torch device; an absent CUDA device or another kind is a usage error
    (the run would otherwise silently test the CPU)."""
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise pytest.UsageError(f"--device {name!r}: {exc}; valid: cpu, cuda, cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise pytest.UsageError(f"--device {name}: valid: cpu, cuda, cuda:N")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError(f"--device {name}: torch sees no CUDA device here")
    return dev


def pytest_configure(config):
    _device(config.getoption("--device"))


@pytest.fixture(scope="session")
def device(request) -> torch.device:
    """The ``--device`` the soundness grid's bound computations run on."""
    return _device(request.config.getoption("--device"))


@pytest.fixture
def bench() -> Path:
    root = benchmarks_dir()
    if root is None:
        pytest.skip("VNN-COMP benchmarks not found (set VERIFIER_BENCHMARKS or provide ../shared/benchmarks/vnncomp)")
    return root


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models: torch's thread pool only costs time (tens of ms per conv call on a busy
    two-core machine), so these modules run single-threaded."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True, scope="session")
def private_ir_cache(tmp_path_factory):
    """CLI runs inside the tests use a cache folder of their own, never the user's
    ``~/.cache/verifier`` (the suite stays self-contained and leaves nothing behind)."""
    import os

    previous = os.environ.get("VERIFIER_CACHE_DIR")
    os.environ["VERIFIER_CACHE_DIR"] = str(tmp_path_factory.mktemp("ir-cache"))
    yield
    if previous is None:
        os.environ.pop("VERIFIER_CACHE_DIR", None)
    else:
        os.environ["VERIFIER_CACHE_DIR"] = previous


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    """A fresh IR cache folder for the test (and the cache switched on; test_ir_cache*.py)."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("VERIFIER_CACHE_DIR", str(folder))
    monkeypatch.delenv("VERIFIER_NO_CACHE", raising=False)
    return folder


@pytest.fixture
def calls(monkeypatch) -> dict[str, int]:
    """Counts of ONNX imports and onnxruntime checks (the real functions still run)."""
    counts = {"import": 0, "check": 0}
    real_import, real_check = verifier.ir.onnx_import.import_onnx, verifier.fidelity.check_fidelity

    def counted_import(*args, **kwargs):
        counts["import"] += 1
        return real_import(*args, **kwargs)

    def counted_check(*args, **kwargs):
        counts["check"] += 1
        return real_check(*args, **kwargs)

    monkeypatch.setattr(verifier.ir.onnx_import, "import_onnx", counted_import)
    monkeypatch.setattr(verifier.fidelity, "check_fidelity", counted_check)
    return counts
