"""Certificates of the project's own ``unsat`` verdicts on shared ACAS Xu and MNIST-FC
instances check (issue 16: a fast subset; ``benchmarks/proof_check.py`` runs more).
Skipped, with the reason, when ``../shared/benchmarks/vnncomp`` (or
``$VERIFIER_BENCHMARKS``) is absent."""

from __future__ import annotations

import pytest

from benchdata import benchmarks_dir
from proof_helpers import certify
from verifier.proofcheck.check import check_proof

# decided unsat in a few seconds here: by input splitting (ACAS Xu), by CROWN on the whole
# box and by β-CROWN splitting (MNIST-FC)
INSTANCES = [
    ("acasxu", "onnx/ACASXU_run2a_1_1_batch_2000.onnx", "vnnlib/prop_1.vnnlib"),
    ("mnist_fc", "onnx/mnist-net_256x2.onnx", "vnnlib/prop_0_0.03.vnnlib"),
    ("mnist_fc", "onnx/mnist-net_256x2.onnx", "vnnlib/prop_6_0.03.vnnlib"),
]


@pytest.mark.parametrize("bench,onnx,vnnlib", INSTANCES, ids=[f"{b}-{v.split('/')[-1]}" for b, _, v in INSTANCES])
def test_certificates_of_shared_unsat_instances_check(tmp_path, bench, onnx, vnnlib):
    root = benchmarks_dir()
    if root is None or not (root / bench / onnx).is_file():
        pytest.skip(f"shared benchmark {bench} not found (../shared/benchmarks/vnncomp or $VERIFIER_BENCHMARKS)")
    model, spec = str(root / bench / onnx), str(root / bench / vnnlib)
    status, index = certify(model, spec, str(tmp_path / "proof"), "auto")
    assert status == "unsat", status
    assert index["certified"], index["uncertified"]
    report = check_proof(model, spec, str(tmp_path / "proof"))
    assert report.valid, report.message
    assert not report.trusted, report.trusted
