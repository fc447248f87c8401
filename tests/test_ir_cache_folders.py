"""The IR cache (:mod:`verifier.ir.cache`) switched off, in folders it must not use (shared,
other users', relative, unwritable), pruned, shared by concurrent processes and filled by
``prepare_instance.sh``; and the start-up rules that go with it: no optimiser warm-up
(``torch._dynamo``) for methods that use none."""

from __future__ import annotations

import gzip
import os
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
from cli_helpers import run
from verifier.deadline import Deadline
from verifier.ir import cache as ir_cache
from verifier.ir import cache_folder
from verifier.verify import uses_optimizers
from ir_cache_helpers import (
    REPO,
    MNIST,
    MNIST_SPEC,
    MNIST_SAT_SPEC,
    CASES,
    SMALL,
    zoo_model,
    equal_values,
    entries,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


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
