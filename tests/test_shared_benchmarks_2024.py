"""Third-party VNN-COMP 2023/2024 models (``../shared/benchmarks/vnncomp2024``: vision
transformers, power-flow proxies, learned indexes, binarised CNNs, GANs): each loads and
agrees with onnxruntime inside its first property box, and each applicable domain's bounds
on the property's ``C·f`` contain the outputs of 10,000 inputs sampled in that box.

A domain may decline a model only with its documented refusal (the dual LP handles ReLU
networks, the LP/MILP encodes piecewise-linear ops only, DeepZ's generators must fit in
memory), never with another error. The
largest models (the 118- and 300-bus power-flow proxies, the GANs, the traffic-sign conv
nets, the deeper ViT) take from ten seconds to minutes per backward domain on CI's two
cores: only their load and fidelity check run in CI, every domain with
``python -m pytest -m slow tests/test_shared_benchmarks_2024.py`` (about 30 minutes).
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

import verifier
from verifier.errors import VerifierInputError
from verifier.fidelity import check_fidelity
from verifier.spec import read_vnnlib

from benchdata import benchmarks_dir

SAMPLES = 10_000
DOMAINS = {"box": {}, "crown-ibp": {}, "deepz": {}, "crown": {}, "dual-lp": {},
           "alpha-crown": {"iterations": 3, "optimise_intermediate": False}, "lp": {}}
REFUSALS = {"dual-lp": "dual-lp domain handles", "lp": "LP/MILP encodings", "deepz": "DeepZ's generators"}
# over ~10 s per backward domain here (118/300-bus proxies, GANs, conv nets, the 8-layer ViT)
LARGE = ("118_ieee", "300_ieee", "cGAN_", "3_30_30_", "3_48_48_", "3_64_64_", "ibp_3_3_8", "pensieve_big")


def _root() -> Path | None:
    base = benchmarks_dir()
    root = None if base is None else base.parent / "vnncomp2024"
    return root if root is not None and root.is_dir() else None


def _first_instances() -> list[tuple[Path, Path]]:
    """``(model, its first property)`` for every model of every 2024 set."""
    root = _root()
    if root is None:
        return []
    found: dict[Path, Path] = {}
    for bench in sorted(p for p in root.iterdir() if (p / "instances.csv").is_file()):
        with open(bench / "instances.csv", newline="") as fh:
            for onnx_rel, vnnlib_rel, *_ in csv.reader(fh):
                found.setdefault(bench / onnx_rel, bench / vnnlib_rel)
    return sorted(found.items())


def _cases():
    cases = []
    for model, spec in _first_instances():
        large = any(tag in model.name for tag in LARGE)
        for domain in DOMAINS:
            slow = large  # 10,000 samples through a GAN or a conv net and a Box pass: 10-40 s each here
            marks = [pytest.mark.slow] if slow else []
            cases.append(pytest.param(model, spec, domain, marks=marks, id=f"{model.parent.parent.name}/{model.name}/{domain}"))
    return cases


pytestmark = pytest.mark.skipif(_root() is None, reason="../shared/benchmarks/vnncomp2024 is not present")


@pytest.fixture(scope="module")
def loaded():
    """One load per model (and its first region, property matrix and sampled outputs)."""
    cache: dict[Path, tuple] = {}

    def get(model_path: Path, spec_path: Path):
        if model_path not in cache:
            region = read_vnnlib(spec_path).regions[0]
            model = verifier.load(model_path, check=False)
            C, _, _ = region.stacked()
            gen = torch.Generator().manual_seed(0)
            lower, upper = region.lower.reshape(1, -1), region.upper.reshape(1, -1)
            x = lower + (upper - lower) * torch.rand((SAMPLES, lower.shape[1]), generator=gen, dtype=torch.float64)
            x[0], x[1] = lower[0], upper[0]
            dtype = model.graph.graph["ir_dtype"]
            with torch.no_grad():
                y = torch.cat([model(chunk.to(dtype)).double().reshape(chunk.shape[0], -1) for chunk in x.split(500)])
            cache[model_path] = (model, region, C, y @ C.T.double())
        return cache[model_path]

    return get


@pytest.mark.parametrize(("model_path", "spec_path"), _first_instances(),
                         ids=lambda p: f"{p.parent.parent.name}/{p.name}" if p.suffix == ".onnx" else "")
def test_model_loads_and_matches_onnxruntime_inside_its_first_box(model_path, spec_path):
    region = read_vnnlib(spec_path).regions[0]
    model = verifier.load(model_path, check=False)
    report = check_fidelity(model.graph, region.lower, region.upper, samples=8)
    assert report.ok, report.describe()


@pytest.mark.parametrize(("model_path", "spec_path", "domain"), _cases())
def test_every_domain_contains_10000_sampled_outputs(loaded, model_path, spec_path, domain):
    model, region, C, y = loaded(model_path, spec_path)
    try:
        lb, ub = verifier.compute_bounds(model, region.lower, region.upper, domain=domain, C=C, **DOMAINS[domain])
    except VerifierInputError as exc:
        assert domain in REFUSALS and REFUSALS[domain] in str(exc), str(exc)
        return
    lb, ub = lb.double().reshape(1, -1), ub.double().reshape(1, -1)
    assert not bool(torch.isnan(lb).any() or torch.isnan(ub).any())
    tol = 1e-5 * (1 + y.abs())
    assert bool((y >= lb - tol).all()), f"{domain}: lower bound above a sampled output by {float((lb - y).max()):.3g}"
    assert bool((y <= ub + tol).all()), f"{domain}: upper bound below a sampled output by {float((y - ub).max()):.3g}"
