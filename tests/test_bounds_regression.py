"""Bounds regression: every domain's bounds equal the values stored before the refactor.

Issue 12 (one walker, op tables, one relaxation table) must leave the bounds of every
domain unchanged: ``|new − stored| ≤ 1e-9 · max(1, |stored|)`` in float64, elementwise.
The stored values (``tests/data/bounds_baseline/``) were computed by
``benchmarks/make_bounds_baseline.py`` on the commit named in its ``index.json``, on the
CPU, single-threaded, with deterministic algorithms; this test recomputes each entry the
same way. In-repo models always run; the VNN-COMP models (``group: shared``) are
skipped, with a message, when ``../shared/benchmarks/vnncomp`` is absent.

A failure here means a change altered some domain's bounds. If that is intended (a
tighter relaxation, say), say so in the commit and regenerate the baseline with
``python benchmarks/make_bounds_baseline.py --force``; a refactor must never need to.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch

import verifier
from verifier.spec import read_vnnlib

from benchdata import benchmarks_dir

REPO = Path(__file__).resolve().parent.parent
BASELINE = REPO / "tests" / "data" / "bounds_baseline"
INDEX = json.loads((BASELINE / "index.json").read_text())
TOL = 1e-9
BUILT_IN = {"box", "deepz", "crown", "crown-ibp", "alpha-crown", "dual-lp", "lp"}


@pytest.fixture(scope="module", autouse=True)
def deterministic_cpu():
    """As the baseline was computed: one torch thread, deterministic algorithms."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(deterministic)
    torch.set_num_threads(threads)


def _root(group: str) -> Path:
    if group == "in-repo":
        return REPO
    root = benchmarks_dir()
    if root is None:
        pytest.skip("VNN-COMP benchmarks not found (set VERIFIER_BENCHMARKS or provide ../shared/benchmarks/vnncomp)")
    return root


@lru_cache(maxsize=None)
def _model(group: str, rel: str) -> verifier.Model:
    return verifier.load(_root(group) / rel, check=False)


@lru_cache(maxsize=None)
def _arrays(npz: str) -> dict[str, np.ndarray]:
    with np.load(BASELINE / npz) as data:
        return {k: data[k] for k in data.files}


@lru_cache(maxsize=None)
def _spec_box(group: str, rel: str) -> tuple[torch.Tensor, torch.Tensor, str]:
    region = read_vnnlib(_root(group) / rel).regions[0]
    lower, upper = region.lower.double(), region.upper.double()
    digest = hashlib.sha256()
    for t in (lower, upper):
        digest.update(np.ascontiguousarray(t.numpy()).tobytes())
    return lower, upper, digest.hexdigest()


def _box(entry: dict) -> tuple[torch.Tensor, torch.Tensor]:
    source = entry["box"]
    if source["kind"] == "stored":
        arrays = _arrays(entry["npz"])
        return torch.from_numpy(arrays["box.lower"]), torch.from_numpy(arrays["box.upper"])
    lower, upper, digest = _spec_box(entry["group"], source["spec"])
    assert digest == source["sha256"], f"{source['spec']} now reads as another box than when the baseline was made"
    return lower, upper


def assert_same(new: np.ndarray, stored: np.ndarray, what: str) -> None:
    """``|new − stored| ≤ TOL · max(1, |stored|)`` elementwise (equal infinities agree)."""
    assert new.shape == stored.shape, f"{what}: shape {new.shape}, stored {stored.shape}"
    assert not np.isnan(new).any(), f"{what}: NaN"
    with np.errstate(invalid="ignore"):
        diff = np.abs(new - stored)
    ok = (new == stored) | (diff <= TOL * np.maximum(1.0, np.abs(stored)))
    if not ok.all():
        bad = np.argwhere(~ok)
        i = tuple(bad[0])
        worst = np.nanmax(np.where(ok, 0.0, diff))
        raise AssertionError(f"{what}: {len(bad)} of {new.size} values differ from the stored baseline; "
                             f"first at {i}: {new[i]!r} vs stored {stored[i]!r}; largest difference {worst:.3e}")


def _entries():
    return [pytest.param(e, id=f"{e['group']}:{e['name']}:{e['key']}") for e in INDEX["entries"]]


@pytest.mark.parametrize("entry", _entries())
def test_bounds_equal_stored_baseline(entry):
    model = _model(entry["group"], entry["model"])
    lower, upper = _box(entry)
    arrays = _arrays(entry["npz"])
    C = None if entry["C"] == "none" else torch.from_numpy(arrays["C"])
    lb, ub = verifier.compute_bounds(model, lower, upper, domain=entry["domain"], C=C, **entry["options"])
    assert lb.dtype == ub.dtype == torch.float64
    what = f"{entry['name']} {entry['key']}"
    assert_same(lb.numpy(), arrays[f"{entry['key']}.lb"], f"{what} lower")
    assert_same(ub.numpy(), arrays[f"{entry['key']}.ub"], f"{what} upper")


def test_baseline_covers_every_built_in_domain():
    """The stored baseline exercises every built-in domain, with and without C, and names its commit."""
    assert len(INDEX["commit"]) == 40 and not INDEX["verifier_sources_modified"]
    domains = {e["domain"] for e in INDEX["entries"]}
    assert BUILT_IN <= domains, f"no stored bounds for {sorted(BUILT_IN - domains)}"
    for group in ("in-repo", "shared"):
        kinds = {(e["domain"], e["C"] == "none") for e in INDEX["entries"] if e["group"] == group}
        assert {d for d, _ in kinds} >= BUILT_IN - ({"lp"} if group == "shared" else set())
        assert {c for _, c in kinds} == {True, False}
