"""The on-disk IR cache (:mod:`verifier.ir.cache`): a hit gives the very IR, checks, bounds
and verdicts of a fresh import, skips the ONNX import and a passed onnxruntime check; a
changed model, another box, a corrupt, forged or stale entry miss; ``--no-cache`` and
``VERIFIER_NO_CACHE`` turn it off; processes share it safely. Also the start-up rules
that go with it: no optimiser warm-up (``torch._dynamo``) for methods that use none."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import verifier
import verifier.fidelity
import verifier.ir.onnx_import
from cli_helpers import run
from verifier.errors import FidelityError
from verifier.ir import cache as ir_cache
from verifier.ops import FORWARD
from verifier.verify import verify
from ir_cache_helpers import (
    MNIST,
    MNIST_SPEC,
    MNIST_SAT_SPEC,
    zoo_model,
    model_files,
    assert_same_ir,
    entries,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- a hit is the same IR, bounds and verdict --------------------------------------------------
def test_a_cached_load_is_the_fresh_import_and_bounds_the_same(cache_dir, calls, tmp_path):
    for path in model_files(tmp_path):
        fresh = verifier.load(path, check=False)
        stored = verifier.load(path, check=False, cache=True)
        before = calls["import"]
        hit = verifier.load(path, check=False, cache=True)
        assert calls["import"] == before, f"{path.name}: a hit imported the model again"
        assert hit.cache_entry is not None and hit.graph is not stored.graph
        assert_same_ir(hit.graph, fresh.graph)
        assert hit.path == os.fspath(path)
        rng = np.random.default_rng(1)
        centre = torch.as_tensor(rng.uniform(-0.5, 0.5, (2, fresh.input_size)))
        for domain in ("box", "crown"):
            expected = verifier.compute_bounds(fresh, centre - 0.05, centre + 0.05, domain=domain)
            got = verifier.compute_bounds(hit, centre - 0.05, centre + 0.05, domain=domain)
            assert all(torch.equal(e, g) for e, g in zip(expected, got)), (path.name, domain)


@pytest.mark.parametrize("spec, expected", [(MNIST_SPEC, "unsat"), (MNIST_SAT_SPEC, "sat")])
def test_verdicts_and_cli_output_are_the_same_cached_or_not(cache_dir, capsys, spec, expected):
    outputs = []
    for extra in (["--no-cache"], [], []):  # fresh, cold (fills the cache), warm (a hit)
        code, out, err = run(capsys, "verify", MNIST, spec, "--timeout", "60", *extra)
        assert code == 0, err
        outputs.append([line for line in out.splitlines() if not line.startswith("time:")])
    assert outputs[0] == outputs[1] == outputs[2]
    assert outputs[0][-1] == f"result: {expected}"
    bounds = [run(capsys, "bounds", MNIST, spec, "--domain", "crown", "--json", *extra)[1]
              for extra in (["--no-cache"], [])]
    assert bounds[0] == bounds[1] and json.loads(bounds[0])["lower"]


def test_verify_api_on_a_cached_model_gives_the_fresh_verdict(cache_dir):
    from verifier.spec import read_vnnlib

    spec = read_vnnlib(MNIST_SPEC)
    verifier.load(MNIST, cache=True)
    fresh, hit = verifier.load(MNIST), verifier.load(MNIST, cache=True)
    assert hit.cache_entry is not None
    assert verify(fresh, spec, domain="crown").status == verify(hit, spec, domain="crown").status == "unsat"


# --- what a hit skips, and what it does not -----------------------------------------------------
def test_a_hit_skips_the_import_and_the_onnxruntime_check_on_the_same_box(cache_dir, calls, capsys, tmp_path):
    assert run(capsys, "bounds", MNIST, MNIST_SPEC, "--json")[0] == 0
    assert calls == {"import": 1, "check": 1}
    assert run(capsys, "bounds", MNIST, MNIST_SPEC, "--json")[0] == 0
    assert run(capsys, "verify", MNIST, MNIST_SPEC, "--domain", "box")[0] == 0
    assert calls == {"import": 1, "check": 1}
    # another box (another spec) is checked, once
    assert run(capsys, "bounds", MNIST, MNIST_SAT_SPEC, "--json")[0] == 0
    assert run(capsys, "bounds", MNIST, MNIST_SAT_SPEC, "--json")[0] == 0
    assert calls == {"import": 1, "check": 2}
    # the API's default box and other sample counts are boxes of their own
    model = verifier.load(MNIST, cache=True)
    verifier.load(MNIST, cache=True, samples=5)
    assert calls == {"import": 1, "check": 4}
    assert model.fidelity is not None and model.fidelity.ok
    again = verifier.load(MNIST, cache=True)
    assert calls["check"] == 4 and again.fidelity == model.fidelity


def test_a_failed_check_is_not_recorded(cache_dir, calls, monkeypatch):
    model = verifier.load(MNIST, check=False, cache=True)
    with monkeypatch.context() as patch:
        patch.setitem(FORWARD, "relu", lambda node, x: torch.nn.functional.leaky_relu(x, 0.1))
        with pytest.raises(FidelityError):
            model.check()
    assert calls["check"] == 1
    verifier.load(MNIST, cache=True)  # the check runs again (and passes)
    verifier.load(MNIST, cache=True)  # now recorded
    assert calls["check"] == 2


def test_a_changed_model_file_misses(cache_dir, calls, tmp_path):
    path = tmp_path / "net.onnx"
    onnx.save(zoo_model(seed=0), path)
    first = verifier.load(path, cache=True)
    onnx.save(zoo_model(seed=1), path)  # same name, other weights
    second = verifier.load(path, cache=True)
    assert calls["import"] == 2
    assert_same_ir(second.graph, verifier.load(path, check=False).graph)
    weights = lambda m: [d["params"]["weight"] for _, d in m.graph.nodes(data=True) if d["kind"] == "conv"]  # noqa: E731
    assert not torch.equal(weights(first)[0], weights(second)[0])
    assert len(entries(cache_dir)) == 2
    # a copy of the file elsewhere is the same entry
    copy = tmp_path / "copy.onnx"
    copy.write_bytes(path.read_bytes())
    assert verifier.load(copy, cache=True).path == str(copy) and calls["import"] == 3  # 3: the fresh one


def test_another_verifier_or_library_version_misses(cache_dir, calls, monkeypatch):
    verifier.load(MNIST, check=False, cache=True)
    monkeypatch.setattr(ir_cache, "_SOURCE_DIGEST", "0" * 64)  # as if the verifier's code changed
    verifier.load(MNIST, check=False, cache=True)
    monkeypatch.setattr(verifier, "__version__", "9.9.9")
    verifier.load(MNIST, check=False, cache=True)
    assert calls["import"] == 3 and len(entries(cache_dir)) == 3


# --- never trusted ------------------------------------------------------------------------------------
def _rewrite(file: Path, header: bytes | None = None, blob: bytes | None = None) -> None:
    """Replace the header and/or IR blob of an entry, with a matching digest (a forged entry)."""
    data = file.read_bytes()
    body = data[len(ir_cache.MAGIC):].partition(b"\n")[2]
    old_header, _, old_blob = body.partition(b"\n")
    body = (old_header if header is None else header) + b"\n" + (old_blob if blob is None else blob)
    file.write_bytes(ir_cache.MAGIC + hashlib.sha256(body).hexdigest().encode() + b"\n" + body)


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


MARKER = Path(os.environ.get("TMPDIR", "/tmp")) / f"verifier_cache_test_{os.getpid()}"


def _malformed_ir_blob() -> bytes:
    nodes = [("x", "input", {}, {}, (3,), "x"), ("y", "no_such_op", {}, {}, (3,), "y")]
    import io

    buffer = io.BytesIO()
    torch.save({"nodes": nodes, "edges": [("x", "y", {"slots": [0]})],
                "graph": {"input": "x", "output": "y", "ir_dtype": torch.float32, "model_dtype": torch.float32}}, buffer)
    return buffer.getvalue()


CORRUPTIONS = {
    "empty": lambda f: f.write_bytes(b""),
    "truncated": lambda f: f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 2]),
    "flipped byte": lambda f: f.write_bytes((lambda d: d[:-100] + bytes([d[-100] ^ 1]) + d[-99:])(f.read_bytes())),
    "garbage": lambda f: f.write_bytes(os.urandom(4096)),
    "other model's key": lambda f: _rewrite(f, header=json.dumps({"model_sha256": "0" * 64, "fingerprint": {},
                                                                  "checks": {}}).encode()),
    "code in the pickle": lambda f: _rewrite(f, blob=pickle.dumps(_Payload(), protocol=2)),
    "malformed IR": lambda f: _rewrite(f, blob=_malformed_ir_blob()),
}


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_a_corrupt_or_forged_entry_is_rebuilt_never_trusted(cache_dir, calls, corruption):
    fresh = verifier.load(MNIST, check=False)
    verifier.load(MNIST, check=False, cache=True)
    (file,) = entries(cache_dir)
    CORRUPTIONS[corruption](file)
    rebuilt = verifier.load(MNIST, check=False, cache=True)
    assert calls["import"] == 3, "the corrupt entry was used"
    assert_same_ir(rebuilt.graph, fresh.graph)
    assert not MARKER.exists(), "code in a cache entry ran"
    verifier.load(MNIST, check=False, cache=True)  # the rewritten entry is a hit again
    assert calls["import"] == 3


def test_a_forged_check_record_is_ignored(cache_dir, calls):
    verifier.load(MNIST, cache=True)
    (file,) = entries(cache_dir)
    header = json.loads(file.read_bytes()[len(ir_cache.MAGIC):].partition(b"\n")[2].partition(b"\n")[0])
    for report in header["checks"].values():
        report["ok"] = "yes"  # not the report's types
    _rewrite(file, header=json.dumps(header).encode())
    verifier.load(MNIST, cache=True)
    assert calls["check"] == 2
