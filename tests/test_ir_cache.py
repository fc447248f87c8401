"""The on-disk IR cache (:mod:`verifier.ir.cache`): a hit gives the very IR, checks, bounds
and verdicts of a fresh import, skips the ONNX import and a passed onnxruntime check; a
changed model, another box, a corrupt, forged or stale entry miss; ``--no-cache`` and
``VERIFIER_NO_CACHE`` turn it off; processes share it safely. Also the start-up rules
that go with it: no optimiser warm-up (``torch._dynamo``) for methods that use none."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import verifier
import verifier.fidelity
import verifier.ir.onnx_import
from benchdata import benchmarks_dir
from cli_helpers import run
from onnx_builders import GraphBuilder, save_model
from verifier.deadline import Deadline
from verifier.errors import FidelityError
from verifier.ir import cache as ir_cache
from verifier.ir import cache_folder
from verifier.ir.graph import topological_order
from verifier.ops import FORWARD
from verifier.verify import uses_optimizers, verify

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parent.parent
MNIST = REPO / "models" / "mnist_small.onnx"
MNIST_SPEC = REPO / "models" / "properties" / "mnist_0_eps0.02.vnnlib"
MNIST_SAT_SPEC = REPO / "models" / "properties" / "mnist_5_eps0.3.vnnlib"
CASES = Path(__file__).resolve().parent / "cases"
SMALL = CASES / "models" / "small5x3.onnx"


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    """A fresh cache folder for the test (and the cache switched on)."""
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


def zoo_model(seed: int = 0) -> onnx.ModelProto:
    """A small net through many converters: conv, pooling, pad, transpose, slice, gather (a
    numpy index), gemm, concat, reduce, clip (into relus), softmax."""
    g = GraphBuilder(np.random.default_rng(seed), (1, 2, 6, 6))
    h = g.op("Relu", g.op("Conv", g.x, g.weight(3, 2, 3, 3), g.rand(3), pads=[1, 1, 1, 1]))
    h = g.op("MaxPool", h, kernel_shape=[2, 2], strides=[2, 2])
    h = g.op("Pad", h, g.ints([0, 0, 1, 0, 0, 0, 0, 1]), g.const(np.float32(0.5)))
    h = g.op("Slice", g.op("Transpose", h, perm=[0, 2, 3, 1]), g.ints([1]), g.ints([3]), g.ints([1]))
    h = g.op("Reshape", g.op("LeakyRelu", h, alpha=0.2), g.ints([1, -1]))
    a = g.op("Gather", h, g.ints([0, 2, 5]), axis=1)
    b = g.op("Sigmoid", g.op("Gemm", h, g.weight(4, 24), g.rand(4), transB=1))
    h = g.op("Concat", a, b, axis=1)
    h = g.op("ReduceSum", g.op("Reshape", h, g.ints([1, 7, 1])), g.ints([2]), keepdims=0)
    h = g.op("Clip", h, g.const(np.float32(-1)), g.const(np.float32(2)))
    return g.model(g.op("Softmax", h, axis=1))


def model_files(tmp_path) -> list[Path]:
    """The shipped MNIST net, the small cases (float32, float16, batched matmul, clip), the
    zoo and, when present, one ACAS Xu and one oval21 net."""
    files = [MNIST, SMALL, CASES / "models" / "small5x3_f16.onnx",
             CASES / "field" / "case04_matmul_3d_batched" / "model_a.onnx",
             CASES / "field" / "case15_clip_optional_inputs" / "model_b.onnx",
             save_model(zoo_model(), tmp_path, "zoo")]
    bench = benchmarks_dir()
    if bench is not None:
        files += [bench / "acasxu" / "onnx" / "ACASXU_run2a_1_1_batch_2000.onnx",
                  bench / "oval21" / "onnx" / "cifar_base_kw.onnx"]
    return [f for f in files if f.is_file()]


def equal_values(a, b) -> bool:
    """Exact equality of IR values: same types, tensors and arrays equal in dtype, shape, strides
    and every bit."""
    if type(a) is not type(b):
        return False
    if isinstance(a, torch.Tensor):
        return a.dtype == b.dtype and a.shape == b.shape and a.stride() == b.stride() and \
            bool(torch.equal(a, b) or (torch.isnan(a) == torch.isnan(b)).all() and torch.equal(a.nan_to_num(), b.nan_to_num()))
    if isinstance(a, (np.ndarray, np.generic)):
        return a.dtype == b.dtype and np.shape(a) == np.shape(b) and np.asarray(a).tobytes() == np.asarray(b).tobytes()
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(equal_values(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(equal_values(a[k], b[k]) for k in a)
    return a == b


def assert_same_ir(ours, fresh) -> None:
    """Nodes, edges and graph attributes in the same order with the same data."""
    assert list(ours.nodes) == list(fresh.nodes)
    for node in fresh.nodes:
        for key in ("kind", "params", "attrs", "shape", "source"):
            assert equal_values(ours.nodes[node][key], fresh.nodes[node][key]), (node, key)
    assert list(ours.edges(data=True)) == list(fresh.edges(data=True))
    public = lambda g: {k: v for k, v in g.graph.items() if not k.startswith("_") and k != "order"}  # noqa: E731
    assert equal_values(public(ours), public(fresh))
    assert topological_order(ours) == topological_order(fresh)


def entries(folder: Path) -> list[Path]:
    return sorted(folder.glob("*" + ir_cache.SUFFIX)) if folder.is_dir() else []


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


# --- turning it off, and where it cannot work ---------------------------------------------------------
def test_no_cache_option_env_and_api_default(cache_dir, calls, capsys, monkeypatch):
    for _ in range(2):
        assert run(capsys, "bounds", MNIST, MNIST_SPEC, "--no-cache")[0] == 0
    assert calls == {"import": 2, "check": 2} and not entries(cache_dir)
    verifier.load(MNIST)  # the API's default: no cache
    assert not entries(cache_dir)
    monkeypatch.setenv("VERIFIER_NO_CACHE", "1")
    for _ in range(2):
        assert run(capsys, "bounds", MNIST, MNIST_SPEC)[0] == 0
        assert verifier.load(MNIST, cache=True).cache_entry is None
    assert calls["import"] == 7 and not entries(cache_dir)


def test_bad_cache_argument_is_an_input_error():
    with pytest.raises(verifier.VerifierInputError, match="cache must be True or False"):
        verifier.load(MNIST, cache="yes")


def test_an_unusable_cache_folder_only_warns(tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("VERIFIER_CACHE_DIR", str(blocker))
    monkeypatch.setattr(cache_folder, "_WARNED", set())
    with pytest.warns(RuntimeWarning, match="not usable"):
        model = verifier.load(MNIST, cache=True)
    assert model.cache_entry is None and model.fidelity.ok


def _within(seconds: float, function, fifo: Path):
    """``function()``'s value, or ``"hung"`` when it has not returned after ``seconds`` (it
    is then released by opening ``fifo`` for writing, so that no thread stays blocked)."""
    box: dict = {}
    thread = threading.Thread(target=lambda: box.setdefault("value", function()), daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass
        thread.join(5)
        return "hung"
    return box.get("value")


@pytest.mark.parametrize("kind", ["fifo", "folder"])
def test_a_non_regular_file_at_an_entry_path_is_no_entry_and_left_alone(cache_dir, calls, kind):
    """A FIFO (whose read would block for ever) or a folder named like the entry: the
    model is imported without the cache, and the node is neither read, replaced nor pruned."""
    fp, sha = ir_cache.fingerprint(), ir_cache.file_sha256(MNIST)
    file = ir_cache.entry_file(sha, fp)
    cache_dir.mkdir(mode=0o700)
    os.mkfifo(file) if kind == "fifo" else file.mkdir()
    assert _within(10, lambda: ir_cache.read_entry(file, sha, fp), file) is None
    model = _within(60, lambda: verifier.load(MNIST, check=False, cache=True), file)
    assert model != "hung" and model.cache_entry is None and calls["import"] == 1
    ir_cache.prune(cache_dir, max_entries=0)
    assert (file.is_fifo() if kind == "fifo" else file.is_dir()) and list(cache_dir.iterdir()) == [file]


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o702], ids=oct)
def test_a_cache_folder_others_can_write_is_not_used(cache_dir, calls, monkeypatch, mode):
    """An entry planted in a folder that other users can write (no sticky bit) is never
    read, and nothing is written there: the model is imported, with one warning."""
    verifier.load(MNIST, check=False, cache=True)  # a valid entry: what a forger would plant
    (file,) = entries(cache_dir)
    assert cache_dir.stat().st_mode & 0o777 == 0o700  # created private
    cache_dir.chmod(mode)
    monkeypatch.setattr(cache_folder, "_WARNED", set())
    with pytest.warns(RuntimeWarning, match="other users can write"):
        model = verifier.load(MNIST, check=False, cache=True)
    assert model.cache_entry is None and calls["import"] == 2
    assert entries(cache_dir) == [file]
    cache_dir.chmod(0o700)
    assert verifier.load(MNIST, check=False, cache=True).cache_entry is not None and calls["import"] == 2


def test_a_sticky_shared_folder_is_used_but_only_our_own_private_entries(cache_dir, calls):
    """A world-writable folder with the sticky bit (like /tmp) is used; an entry that others
    can write, or that another user owns, is not read."""
    verifier.load(MNIST, check=False, cache=True)
    (file,) = entries(cache_dir)
    cache_dir.chmod(0o1777)
    assert verifier.load(MNIST, check=False, cache=True).cache_entry is not None and calls["import"] == 1
    file.chmod(0o666)
    assert verifier.load(MNIST, check=False, cache=True).cache_entry is not None and calls["import"] == 2
    assert file.stat().st_mode & 0o777 == 0o600  # rewritten private
    if os.geteuid() == 0:  # only root can give a file to another user
        os.chown(file, 65534, -1)
        assert verifier.load(MNIST, check=False, cache=True).cache_entry is not None and calls["import"] == 3
        assert file.stat().st_uid == 0  # the foreign entry was not read, and replaced


def test_a_cache_folder_of_another_user_is_not_used(cache_dir, calls, monkeypatch):
    verifier.load(MNIST, check=False, cache=True)
    monkeypatch.setattr(cache_folder, "_owner", lambda: cache_dir.stat().st_uid + 1)
    monkeypatch.setattr(cache_folder, "_WARNED", set())
    with pytest.warns(RuntimeWarning, match="owned by"):
        assert verifier.load(MNIST, check=False, cache=True).cache_entry is None
    assert calls["import"] == 2


def test_relative_cache_paths_are_ignored_as_xdg_requires(tmp_path, monkeypatch):
    """A relative ``VERIFIER_CACHE_DIR`` or ``XDG_CACHE_HOME`` is invalid and ignored (with a
    warning), whatever the current folder: the next rule gives the folder, an absolute one."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(cache_folder, "_WARNED", set())
    monkeypatch.setenv("VERIFIER_CACHE_DIR", "relative/cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    with pytest.warns(RuntimeWarning, match="VERIFIER_CACHE_DIR.*relative"):
        assert ir_cache.cache_dir() == tmp_path / "xdg" / "verifier"
    monkeypatch.setenv("XDG_CACHE_HOME", "xdg")
    with pytest.warns(RuntimeWarning, match="XDG_CACHE_HOME.*relative"):
        assert ir_cache.cache_dir() == tmp_path / "home" / ".cache" / "verifier"
    monkeypatch.setenv("VERIFIER_CACHE_DIR", "~/mine")
    assert ir_cache.cache_dir() == tmp_path / "home" / "mine"
    monkeypatch.chdir(tmp_path / "..")
    assert ir_cache.cache_dir() == tmp_path / "home" / "mine"


def test_models_with_external_data_are_not_cached(cache_dir, tmp_path):
    proto = zoo_model()
    path = tmp_path / "external.onnx"
    onnx.save(proto, path, save_as_external_data=True, all_tensors_to_one_file=True, location="weights.bin",
              size_threshold=0)
    model = verifier.load(path, cache=True)
    assert model.cache_entry is None and not entries(cache_dir)


def test_values_the_format_does_not_store_are_not_cached():
    graph = verifier.load(SMALL, check=False).graph
    first = next(iter(graph.nodes))
    for odd in ({1, 2}, torch.Size([2]), [object()]):  # a set, a tuple subclass, an object: not in the format
        graph.nodes[first]["attrs"]["odd"] = odd
        with pytest.raises(ir_cache.Uncacheable):
            ir_cache.encode_graph(graph)
    graph.nodes[first]["attrs"]["odd"] = (np.float64(0.25), np.arange(3, dtype=np.int16), {2: (1.5, None, True)})
    decoded = ir_cache.decode_graph(ir_cache.encode_graph(graph), graph.graph["path"])
    assert equal_values(decoded.nodes[first]["attrs"], graph.nodes[first]["attrs"])


def _entry_name(index: int) -> str:
    """A name of the kind the cache writes (``<64 hex>-<16 hex>.ir``)."""
    return f"{index:064x}-{index:016x}{ir_cache.SUFFIX}"


def test_prune_keeps_the_most_recently_used(tmp_path):
    for index in range(5):
        file = tmp_path / _entry_name(index)
        file.write_bytes(b"x" * 10)
        os.utime(file, (time.time() - 100 + index, time.time() - 100 + index))
    stale = tmp_path / f".tmp-abc_1234{ir_cache.SUFFIX}"
    stale.write_bytes(b"x")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    ir_cache.prune(tmp_path, max_entries=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [_entry_name(3), _entry_name(4)]
    ir_cache.prune(tmp_path, max_bytes=15)
    assert [p.name for p in tmp_path.iterdir()] == [_entry_name(4)]


def test_prune_deletes_only_files_the_cache_wrote(tmp_path):
    """Files that merely end in ``.ir`` or start with ``.tmp-``, and anything that is not a
    regular file, survive however old they are; entries and the writer's stale temporaries go."""
    old = time.time() - 7200
    foreign = ["notes.ir", "x.ir", f"{'0' * 64}.ir", f"{'g' * 64}-{'0' * 16}.ir", ".tmp-user-data",
               ".tmp-abcd1234.ir.bak", ".tmp-ABCD1234.ir", ".tmp-abc.ir"]
    for name in foreign:
        (tmp_path / name).write_bytes(b"y" * 100)
    (tmp_path / _entry_name(7)).mkdir()
    os.mkfifo(tmp_path / _entry_name(8))
    (tmp_path / _entry_name(1)).write_bytes(b"x" * 10)
    (tmp_path / f".tmp-abcd1234{ir_cache.SUFFIX}").write_bytes(b"x")
    for path in tmp_path.iterdir():
        os.utime(path, (old, old))
    ir_cache.prune(tmp_path, max_entries=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(foreign + [_entry_name(7), _entry_name(8)])


def test_the_writers_temporary_names_are_the_ones_prune_removes(tmp_path, monkeypatch):
    """The temporary name ``Entry.write`` uses matches what :func:`prune` deletes (so a
    change in ``tempfile``'s naming cannot make prune miss, or widen, its files)."""
    names = []
    real_replace = os.replace

    def spy(src, dst):
        names.append(os.path.basename(src))
        return real_replace(src, dst)

    folder = tmp_path / "cache"
    entry = ir_cache.Entry(folder / _entry_name(3), "0" * 64, {}, b"blob")
    monkeypatch.setattr(ir_cache.os, "replace", spy)
    for _ in range(3):
        assert entry.write()
    monkeypatch.undo()
    assert len(names) == 3 and all(ir_cache.TEMPORARY.fullmatch(name) for name in names)
    assert ir_cache.ENTRY.fullmatch(entry.file.name)


def test_concurrent_processes_share_the_cache(cache_dir, tmp_path):
    """Processes that load (and record checks on different boxes) at once all succeed with the
    right IR; the entry left behind is whole and no temporary file stays."""
    code = textwrap.dedent(f"""
        import sys, torch, verifier
        for k in range(4):
            lo = -0.5 - 0.1 * (int(sys.argv[1]) * 4 + k)
            m = verifier.load({str(MNIST)!r}, cache=True, lower=lo, upper=0.5)
        print(float(m(torch.zeros(1, m.input_size, dtype=torch.float32)).sum()))
    """)
    env = {**os.environ, "VERIFIER_CACHE_DIR": str(cache_dir), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(i)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for i in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outputs]
    expected = float(verifier.load(MNIST, check=False)(torch.zeros(1, 784, dtype=torch.float32)).sum())
    assert all(float(out.split()[-1]) == expected for out, _ in outputs)
    (file,) = entries(cache_dir)
    assert not [p for p in cache_dir.iterdir() if p.name.startswith(".tmp-")]
    fp = ir_cache.fingerprint()
    assert ir_cache.read_entry(file, ir_cache.file_sha256(MNIST), fp) is not None


@pytest.mark.skipif(shutil.which("bash") is None, reason="the VNN-COMP scripts need bash")
def test_prepare_instance_fills_the_cache_that_run_instance_hits(cache_dir, tmp_path):
    """prepare_instance.sh (on a gzipped model, decompressed to a temporary copy) leaves the
    entry with the spec's box checked; run_instance.sh's own copy then hits it (no new entry
    or check) and gives the verdict."""
    from verifier.spec import read_vnnlib

    model = tmp_path / "net.onnx.gz"
    model.write_bytes(gzip.compress(MNIST.read_bytes()))
    env = {**os.environ, "VERIFIER_CACHE_DIR": str(cache_dir), "VERIFIER_NO_KILL": "1", "PYTHON": sys.executable}
    scripts = REPO / "scripts" / "vnncomp"
    done = subprocess.run(["bash", str(scripts / "prepare_instance.sh"), "v1", "mnist", str(model), str(MNIST_SPEC)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    (file,) = entries(cache_dir)
    region = read_vnnlib(MNIST_SPEC).regions[0]
    entry = ir_cache.read_entry(file, ir_cache.file_sha256(MNIST), ir_cache.fingerprint())
    assert entry is not None and entry.report(ir_cache.box_key(region.lower, region.upper, 4))["ok"] is True
    written = file.stat().st_mtime_ns
    result = tmp_path / "result.txt"
    done = subprocess.run(["bash", str(scripts / "run_instance.sh"), "v1", "mnist", str(model), str(MNIST_SPEC),
                           str(result), "120"], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert result.read_text().split() == ["unsat"]
    assert entries(cache_dir) == [file] and file.stat().st_mtime_ns >= written
    assert ir_cache.read_entry(file, ir_cache.file_sha256(MNIST), ir_cache.fingerprint()).checks == entry.checks


# --- start-up: no optimiser warm-up where none is used ---------------------------------------------
def test_which_runs_warm_up_the_optimisers():
    assert not uses_optimizers("auto", 5) and not uses_optimizers("input-split", 784)
    assert not uses_optimizers("crown", 784) and not uses_optimizers("box", 5)
    assert uses_optimizers("auto", 784) and uses_optimizers("relu-split", 5) and uses_optimizers("alpha-crown", 5)
    assert uses_optimizers("milp", 5) and uses_optimizers("lp", 5) and uses_optimizers("some-plugin-domain", 5)


def test_a_deadline_extended_by_warm_up_keeps_its_budget():
    deadline = Deadline(1.0)
    deadline.extend(5.0)
    assert 5.5 < deadline.remaining() <= 6.0 and deadline.elapsed() < 0


def test_verify_imports_dynamo_only_for_a_search_that_uses_an_optimiser(cache_dir, tmp_path):
    """ACAS-like start-up: ``verify`` on a 5-input net (auto → input splitting) and on the
    784-input MNIST net where the attack finds the counterexample import no
    ``torch._dynamo`` (the optimiser warm-up), and on a cache hit not the ONNX importer; the
    same process verifying the MNIST net's robust property then warms up (relu-split)."""
    spec = CASES / "spec" / "s_good.vnnlib"
    code = textwrap.dedent(f"""
        import sys
        from verifier.cli import main
        flags = lambda: ("dynamo" if "torch._dynamo" in sys.modules else "no-dynamo",
                         "importer" if "verifier.ir.onnx_import" in sys.modules else "no-importer")
        codes = [main(["verify", {str(SMALL)!r}, {str(spec)!r}])]
        codes.append(main(["verify", {str(MNIST)!r}, {str(MNIST_SAT_SPEC)!r}]))
        first = flags()
        codes.append(main(["verify", {str(MNIST)!r}, {str(MNIST_SPEC)!r}, "--method", "relu-split"]))
        print(*first, *flags(), *codes)
    """)
    env = {**os.environ, "VERIFIER_CACHE_DIR": str(cache_dir)}
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
            for _ in range(2)]
    assert all(done.returncode == 0 for done in runs), [done.stderr for done in runs]
    assert "result: sat" in runs[0].stdout and "result: unsat" in runs[0].stdout
    assert runs[0].stdout.split()[-7:] == ["no-dynamo", "importer", "dynamo", "importer", "0", "0", "0"]
    assert runs[1].stdout.split()[-7:] == ["no-dynamo", "no-importer", "dynamo", "no-importer", "0", "0", "0"]


def test_the_command_line_shows_the_caches_warning_as_one_line(cache_dir, capsys, monkeypatch):
    """The CLI hides library warnings, but not the cache's own (README: a folder others can
    write "is not used (one warning …)"): one ``warning:`` line on stderr, the verdict as usual."""
    import verifier.cli

    assert verifier.cli.CACHE_WARNING == cache_folder.WARNING_PREFIX
    verifier.load(MNIST, check=False, cache=True)
    cache_dir.chmod(0o777)
    monkeypatch.setattr(cache_folder, "_WARNED", set())
    code, out, err = run(capsys, "verify", MNIST, MNIST_SPEC, "--domain", "box")
    cache_dir.chmod(0o700)
    assert code == 0 and out.splitlines()[-1] == "result: unsat"
    assert err.splitlines() == [err.strip()] and err.startswith("warning: IR cache: other users can write"), err
    monkeypatch.setattr(cache_folder, "_WARNED", set())
    code, out, err = run(capsys, "verify", MNIST, MNIST_SPEC, "--domain", "box")  # a private folder: silent
    assert code == 0 and err == ""
