"""Third-party VNN-COMP 2022 models and properties: import, fidelity, parsing, Box soundness,
and no verdict that contradicts the competition's reference answers."""

from __future__ import annotations

import time

import pytest
import torch

import verifier
from verifier.fidelity import check_fidelity
from verifier.spec import read_vnnlib
from verifier.verify import verify

from benchdata import benchmarks_dir, instances

BENCHMARKS = ("acasxu", "mnist_fc", "oval21")


def _models():
    root = benchmarks_dir()
    if root is None:
        return []
    return [p for b in BENCHMARKS for p in sorted((root / b / "onnx").glob("*.onnx"))]


def _first_instance_per_model(benchmark: str) -> dict[str, str]:
    first: dict[str, str] = {}
    for row in instances(benchmark):
        first.setdefault(row["onnx"], row["vnnlib"])
    return first


@pytest.mark.parametrize("path", _models(), ids=lambda p: p.name)
def test_model_loads_and_matches_onnxruntime_inside_its_property_box(path):
    benchmark = path.parent.parent
    vnnlib = _first_instance_per_model(benchmark.name)[f"onnx/{path.name}"]
    region = read_vnnlib(benchmark / vnnlib).regions[0]
    model = verifier.load(path, check=False)
    report = check_fidelity(model.graph, region.lower, region.upper, samples=8)
    assert report.ok, report.describe()


def test_all_vnnlib_files_parse_quickly(bench):
    files = sorted(bench.glob("*/vnnlib/*.vnnlib"))
    assert len(files) == 70
    start = time.perf_counter()
    specs = [read_vnnlib(f) for f in files]
    elapsed = time.perf_counter() - start
    assert all(s.regions for s in specs)
    assert elapsed < 6.0, f"parsing took {elapsed:.2f} s"  # target 2 s; slack for a loaded CI machine


def test_spot_check_acasxu_property_6(bench):
    spec = read_vnnlib(bench / "acasxu" / "vnnlib" / "prop_6.vnnlib")
    assert len(spec.regions) == 2
    first, second = spec.regions
    assert first.lower.tolist() == [-0.129289109, 0.11140846, -0.499999896, -0.5, -0.5]
    assert first.upper.tolist() == [0.700434925, 0.499999896, -0.499204121, 0.5, 0.5]
    assert second.lower[1].item() == -0.499999896 and second.upper[1].item() == -0.11140846
    for region in spec.regions:  # unsafe if COC (Y_0) is not minimal: Y_j − Y_0 ≤ 0 for some j
        assert [d.A.tolist() for d in region.disjuncts] == [
            [[-1.0] + [1.0 if k == j else 0.0 for k in range(1, 5)]] for j in range(1, 5)
        ]
        assert all(d.b.tolist() == [0.0] for d in region.disjuncts)


def test_spot_check_acasxu_property_3_is_one_conjunction(bench):
    (region,) = read_vnnlib(bench / "acasxu" / "vnnlib" / "prop_3.vnnlib").regions
    (conj,) = region.disjuncts  # Y_0 <= Y_j for all j: four rows, all required
    assert conj.A.tolist() == [[1.0] + [-1.0 if k == j else 0.0 for k in range(1, 5)] for j in range(1, 5)]
    assert region.lower[0].item() == -0.303531156 and region.upper[0].item() == -0.298552812


def test_spot_check_mnist_fc_property(bench):
    spec = read_vnnlib(bench / "mnist_fc" / "vnnlib" / "prop_0_0.03.vnnlib")
    (region,) = spec.regions
    assert spec.num_inputs == 784 and spec.num_outputs == 10
    assert region.lower[783].item() == 0.0 and region.upper[783].item() == 0.029999999329447746
    assert len(region.disjuncts) == 9  # label 4: Y_j >= Y_4 for j != 4
    assert region.disjuncts[0].A.tolist() == [[-1.0, 0, 0, 0, 1.0, 0, 0, 0, 0, 0]]


def _distinct_instances():
    rows = []
    for b in BENCHMARKS:
        seen = set()
        for row in instances(b):
            key = (row["onnx"], row["vnnlib"])
            if key not in seen:
                seen.add(key)
                rows.append((b, row["onnx"], row["vnnlib"]))
    return rows


@pytest.mark.parametrize("benchmark", BENCHMARKS)
def test_box_bounds_contain_sampled_outputs_of_every_instance(bench, benchmark):
    """Box bounds over each instance's first input box contain the outputs of sampled inputs
    (10,000 per instance for the small nets, 2,000 for the CIFAR conv nets) and of its corners."""
    gen = torch.Generator().manual_seed(0)
    count = 2000 if benchmark == "oval21" else 10000
    models: dict[str, verifier.Model] = {}
    for b, onnx_rel, vnnlib_rel in _distinct_instances():
        if b != benchmark:
            continue
        model = models.setdefault(onnx_rel, verifier.load(bench / b / onnx_rel, check=False))
        region = read_vnnlib(bench / b / vnnlib_rel).regions[0]
        lb, ub = verifier.compute_bounds(model, region.lower, region.upper, domain="box")
        x = region.lower + (region.upper - region.lower) * torch.rand((count, region.lower.numel()), generator=gen,
                                                                      dtype=torch.float64)
        x[0], x[1] = region.lower, region.upper
        with torch.no_grad():
            y = torch.cat([model(chunk) for chunk in x.split(1000)])
        tol = 1e-9 * (1 + y.abs())
        assert bool((y >= lb - tol).all() and (y <= ub + tol).all()), f"{onnx_rel} {vnnlib_rel}"


@pytest.mark.parametrize("benchmark", ["acasxu", "mnist_fc"])
def test_verify_never_contradicts_reference(bench, benchmark):
    """Box + attack on every instance: `unsat` never where `sat` is expected, `sat` never where
    `unsat` is expected, and every `sat` carries an onnxruntime-confirmed counterexample."""
    models: dict[str, verifier.Model] = {}
    found = 0
    for row in instances(benchmark):
        model = models.setdefault(row["onnx"], verifier.load(bench / benchmark / row["onnx"], check=False))
        spec = read_vnnlib(bench / benchmark / row["vnnlib"])
        result = verify(model, spec, domain="box", timeout=30)
        expected = row["expected"]
        if result.status == "sat":
            found += 1
            assert expected != "unsat", row
            cex = result.counterexample
            region = spec.regions[cex.region_index]
            x = torch.as_tensor(cex.x, dtype=torch.float64)
            assert bool((x >= region.lower).all() and (x <= region.upper).all())
            assert float(region.violation(torch.as_tensor(cex.y, dtype=torch.float64)[None])[0]) <= 0
        elif result.status == "unsat":
            assert expected != "sat", row
    assert found > 0  # the attack finds real counterexamples on these benchmarks


DOMAIN_OPTIONS = {"box": {}, "deepz": {}, "crown": {}, "crown-ibp": {}, "dual-lp": {},
                  "alpha-crown": {"iterations": 5, "optimise_intermediate": False}}


@pytest.mark.parametrize("benchmark", BENCHMARKS)
def test_every_domain_contains_10000_sampled_outputs_on_every_shared_model(bench, benchmark):
    """Each domain's bounds on ``C·f`` over each model's first property box contain the
    outputs of 10,000 uniformly sampled inputs (sampled once per model, float32 forward)."""
    gen = torch.Generator().manual_seed(1)
    for onnx_rel, vnnlib_rel in _first_instance_per_model(benchmark).items():
        region = read_vnnlib(bench / benchmark / vnnlib_rel).regions[0]
        model = verifier.load(bench / benchmark / onnx_rel, check=False)
        C, _, _ = region.stacked()
        x = region.lower + (region.upper - region.lower) * torch.rand((10000, region.lower.numel()), generator=gen,
                                                                      dtype=torch.float64)
        with torch.no_grad():
            y = torch.cat([model(chunk.float()).double() for chunk in x.split(2500)]) @ C.T
        tol = 1e-5 * (1 + y.abs())
        for domain, options in DOMAIN_OPTIONS.items():
            lb, ub = verifier.compute_bounds(model, region.lower, region.upper, domain=domain, C=C, **options)
            assert bool((y >= lb - tol).all() and (y <= ub + tol).all()), f"{domain} on {onnx_rel}"
