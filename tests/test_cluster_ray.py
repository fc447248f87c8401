"""The Ray cluster paths (``--ray``): vnncomp, certify and distributed branch-and-bound
give the same answers as one process; a killed worker loses nothing.

All tests share one local Ray instance with 2 CPUs (module-scoped fixture: Ray starts
once, ~5 s). Skipped where the ``cluster`` extra (``ray``) is not installed."""

from __future__ import annotations

import csv
import shutil
import sys
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="ray is not installed (pip install -e \".[cluster]\"): "
                                      "the --ray paths are not tested")

from verifier.cli import main  # noqa: E402
from verifier.cluster.ray_session import connect  # noqa: E402
from verifier.cluster.ray_vnncomp import ray_executor  # noqa: E402
from verifier.vnncomp import run_benchmark  # noqa: E402

from cluster_nets import above, gemm_relu_net, mlp_with_top, one_row_region  # noqa: E402
from conftest import DEFAULT_MODEL, PROPERTIES  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

UNSAT_SPEC, SAT_SPEC = "mnist_0_eps0.02.vnnlib", "mnist_5_eps0.3.vnnlib"


@pytest.fixture(scope="module")
def cluster():
    """One local Ray instance with 2 CPUs for the whole module."""
    connect("local", num_cpus=2)
    yield ray
    ray.shutdown()


def make_bench(root: Path, copies: int = 1, broken: bool = True) -> Path:
    """A benchmark folder of ``copies`` × (unsat, sat) mnist_small instances (the specs
    copied under distinct names) and, with ``broken``, one model that does not load."""
    (root / "onnx").mkdir(parents=True)
    (root / "vnnlib").mkdir()
    shutil.copy(DEFAULT_MODEL, root / "onnx" / "net.onnx")
    rows = []
    for k in range(copies):
        for kind, spec in (("unsat", UNSAT_SPEC), ("sat", SAT_SPEC)):
            name = f"vnnlib/{kind}_{k}.vnnlib"
            shutil.copy(PROPERTIES / spec, root / name)
            rows.append(("onnx/net.onnx", name))
    if broken:
        (root / "onnx" / "broken.onnx").write_bytes(b"not an onnx model")
        rows.append(("onnx/broken.onnx", "vnnlib/sat_0.vnnlib"))
    (root / "instances.csv").write_text("".join(f"{o},{v},30\n" for o, v in rows))
    return root


def expected(onnx: str, vnnlib: str) -> str:
    return "error" if "broken" in onnx else ("sat" if "/sat_" in vnnlib else "unsat")


def rows_of(path: Path) -> list[list[str]]:
    with open(path, newline="") as fh:
        return list(csv.reader(fh))


def test_vnncomp_ray_equals_single_process(cluster, tmp_path):
    bench = make_bench(tmp_path / "tiny")
    one, many = tmp_path / "one.csv", tmp_path / "ray.csv"
    assert main(["vnncomp", str(bench), "--output", str(one)]) == 0
    assert main(["vnncomp", str(bench), "--output", str(many), "--ray"]) == 0
    serial, distributed = rows_of(one), rows_of(many)
    assert distributed[0] == serial[0]
    key = {(r[0], r[1], r[2]): r[4] for r in serial[1:]}
    assert {(r[0], r[1], r[2]): r[4] for r in distributed[1:]} == key and len(distributed) == len(serial)
    assert all(result == expected(o, v) for (_, o, v), result in key.items())
    for path in sorted((tmp_path / "one_results").iterdir()):  # the same result files, counterexamples included
        assert (tmp_path / "ray_results" / path.name).read_text() == path.read_text()


def test_vnncomp_ray_resume_runs_only_the_rest(cluster, tmp_path):
    bench = make_bench(tmp_path / "tiny", broken=False)
    out = tmp_path / "res.csv"
    assert main(["vnncomp", str(bench), "--output", str(out), "--limit", "1"]) == 0
    rows = rows_of(out)
    rows[1][5] = "999.000"  # a marker: the resumed row must be kept, not recomputed
    with open(out, "w", newline="") as fh:
        csv.writer(fh, lineterminator="\r\n").writerows(rows)
    assert main(["vnncomp", str(bench), "--output", str(out), "--ray", "--resume"]) == 0
    rows = rows_of(out)
    assert rows[1][5] == "999.000" and len(rows) == 3
    assert sorted(r[2] for r in rows[1:]) == ["vnnlib/sat_0.vnnlib", "vnnlib/unsat_0.vnnlib"]


def test_killed_worker_loses_nothing(cluster, tmp_path):
    """An actor killed while the run goes on (Ray restarts it and retries its instance):
    every instance appears exactly once, with its right answer."""
    bench = make_bench(tmp_path / "tiny", copies=2, broken=False)
    out = tmp_path / "killed.csv"
    done: dict = {}

    def run():
        done["value"] = run_benchmark(bench, output=out, progress=False,
                                      executor=ray_executor(workers=2))

    thread = threading.Thread(target=run)
    thread.start()
    killed, start = False, time.monotonic()
    while thread.is_alive() and time.monotonic() - start < 60:
        if out.is_file() and len(rows_of(out)) >= 2:  # one instance finished: the rest are queued or running
            ray.kill(ray.get_actor("verifier-worker-0"), no_restart=False)  # as if its process crashed
            killed = True
            break
        time.sleep(0.05)
    thread.join(120)
    assert killed and not thread.is_alive()
    rows = rows_of(out)[1:]
    assert sorted(r[2] for r in rows) == sorted(f"vnnlib/{k}_{i}.vnnlib" for k in ("sat", "unsat") for i in range(2))
    assert all(r[4] == expected(r[1], r[2]) for r in rows)
    assert done["value"][1]["sat"] == 2 and done["value"][1]["unsat"] == 2


def test_certify_ray_equals_certify(cluster):
    """Same Certificate, bit for bit, with the batches on two actors (PGD random starts
    included: the last batch is short, so the generator replay is exercised)."""
    import verifier
    from verifier_plugins.training.ray_certify import certify_curve_ray
    from verifier.datasets import load_mnist
    from verifier_plugins.training.certify import certify_curve

    model = verifier.load(DEFAULT_MODEL)
    x, y = load_mnist("test")[0][:120], load_mnist("test")[1][:120]
    one = certify_curve(model, x, y, [0.02, 0.1], "box", batch=50, pgd_steps=5)
    many = certify_curve_ray(model, x, y, [0.02, 0.1], "box", batch=50, pgd_steps=5, ray_workers=2)
    assert many == one
    assert all(c.certified_accuracy <= c.pgd_accuracy <= c.clean_accuracy for c in one)
    assert 0 < one[1].certified_accuracy < one[1].pgd_accuracy < one[1].clean_accuracy  # counts not trivial


# --- distributed branch-and-bound ---------------------------------------------------------

@pytest.fixture(scope="module")
def hard_net(tmp_path_factory):
    """``y = relu(x1) − 100·relu(x2 − 0.5)`` on ``x1 ∈ (0, 1]`` (strict at 0), ``x2 ∈ [0, 1]``, unsafe
    ``y ≤ 0``: sat wherever ``x2 > 0.5 + x1/100``; where ``x2 ≤ 0.5``, ``y = x1`` has no
    counterexample but boxes touching ``x1 = 0`` are never refuted (lb = 0), so a search there
    halves down to float resolution (``unknown``, after seconds)."""
    import verifier

    path = gemm_relu_net(tmp_path_factory.mktemp("hard") / "hard.onnx",
                         [([[1.0, 0.0], [0.0, 1.0]], [0.0, -0.5]), ([[1.0, -100.0]], [0.0])])
    return verifier.load(path)


@pytest.fixture(scope="module")
def random_net(tmp_path_factory):
    """A random 2-input ReLU net (12, 12 hidden) with its largest output 0 on a 301×301 grid."""
    import numpy as np
    import torch

    import verifier
    from test_domain_ordering import relu_mlp

    path = tmp_path_factory.mktemp("bab") / "m.onnx"
    relu_mlp(path, np.random.default_rng(7), (2, 12, 12, 2))
    model = verifier.load(path)
    axis = torch.linspace(-1, 1, 301, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    return model, float(model(grid)[:, 0].max())


def test_distributed_bab_equals_single_process(cluster, random_net):
    """"y_0 ≥ t" just below the sampled maximum (sat: a grid point is a witness) and just
    above it (unsat by the one-process search): the same verdicts on 2 Ray workers; the
    counterexample is real."""
    import numpy as np
    import torch

    from verifier.cluster.ray_bab import ShardStats, WorkerPool
    from verifier.cluster.ray_input_split import distributed_input_split
    from verifier.complete.input_split import input_split_bab
    from verifier.deadline import Deadline

    model, top = random_net
    pool = WorkerPool(model, workers=2)
    for offset in (-0.03, 0.03):
        region = one_row_region([-1.0, -1.0], [1.0, 1.0], [-1.0, 0.0], -(top + offset))  # unsafe: y_0 ≥ t
        single, _ = input_split_bab(model, region, Deadline(60))
        stats = ShardStats()
        status, cex = distributed_input_split(pool, region, Deadline(60), stats=stats)
        assert status == single == ("sat" if offset < 0 else "unsat")
        assert stats.workers == 2 and stats.boxes_bounded > 0 and stats.shards >= (1 if offset < 0 else 8)
        if status == "sat":
            assert float(cex.y[0]) >= top + offset and np.all(np.abs(cex.x) <= 1.0)
            assert float(model(torch.as_tensor(cex.x, dtype=torch.float64)[None])[0, 0]) >= top + offset - 1e-5


def test_counterexample_stops_the_other_workers(cluster, hard_net):
    """Worker 1 searches a shard that takes seconds (it ends undecided at float resolution);
    worker 0 finds a counterexample in another shard and posts it: worker 1 stops."""
    import time as clock

    import torch

    from verifier.cluster.ray_bab import WorkerPool
    from verifier.cluster.ray_input_split import search_on_worker, shard

    region = one_row_region([0.0, 0.0], [1.0, 1.0], [1.0], 0.0, lower_strict=[True, False])
    pool = WorkerPool(hard_net, workers=2)
    actors = pool.actors()
    board = (pool.board, ray.get(pool.board.begin.remote()))
    low, mid, high = (torch.tensor(v, dtype=torch.float64) for v in ([0.0, 0.0], [0.5, 0.5], [1.0, 1.0]))
    hard, sat = shard(region, low, mid), shard(region, mid, high)
    assert bool(hard.lower_strict[0]) and not bool(sat.lower_strict[0])  # only the shared face stays strict

    def search(actor, part, slice_s):
        return pool.search(actors[actor], search_on_worker, part, 0, None, board, slice_s, torch.float64, "cpu", {})

    slow = search(1, hard, float("inf"))
    clock.sleep(1.0)  # worker 1 is deep in its shard
    status, cex, _, _ = ray.get(search(0, sat, float("inf")))
    assert status == "sat" and float(cex.y[0]) <= 0 and cex.x[0] > 0
    assert ray.get(slow, timeout=30)[0] == "stopped"
    assert ray.get(pool.board.poll.remote(board[1]))[0]
    # idle workers and a shard searched past its slice: it is handed back to be split
    board = (pool.board, ray.get(pool.board.begin.remote()))
    assert ray.get(pool.board.poll.remote(board[1])) == (False, 0)  # a new search starts unstopped
    ray.get(pool.board.set_hungry.remote(board[1], 1))
    assert ray.get(search(1, hard, 0.3), timeout=30)[0] == "sliced"


def test_shards_cover_the_box():
    """The initial shards tile the region's box (volumes add up, each inside it); a box at
    float resolution is not bisected."""
    import math

    import torch

    from verifier.cluster.ray_input_split import bisect, initial_shards

    region = one_row_region([-1.0, 0.0, 2.0], [1.0, 0.5, 2.0], [1.0], 0.0)
    boxes = initial_shards(region, 8)
    assert len(boxes) == 8
    assert math.isclose(sum(float((hi - lo)[:2].prod()) for lo, hi in boxes), 2.0 * 0.5)
    assert all(bool((lo >= region.lower).all() and (hi <= region.upper).all()) for lo, hi in boxes)
    assert all(float(lo[2]) == float(hi[2]) == 2.0 for lo, hi in boxes)  # a point range is never split
    tiny = torch.tensor([1.0, 1.0], dtype=torch.float64)
    assert bisect(tiny, torch.nextafter(tiny, torch.full_like(tiny, 2.0)), torch.ones(2, dtype=torch.float64)) is None


def test_verify_ray_gives_the_single_process_verdict(cluster, random_net):
    """``verify_ray`` = ``verify`` on the whole pipeline (attack off: the search finds the
    counterexample), with the distributed search's note."""
    from verifier.cluster.ray_bab import verify_ray
    from verifier.spec.model import Spec
    from verifier.verify import verify

    model, top = random_net
    spec = Spec([one_row_region([-1.0, -1.0], [1.0, 1.0], [-1.0, 0.0], -(top - 0.03))], 2, 2)
    result = verify_ray(model, spec, domain="input-split", attack=False, timeout=60, workers=2)
    assert result.status == verify(model, spec, domain="input-split", attack=False, timeout=60).status == "sat"
    assert any("Ray workers" in note for note in result.notes)
    assert float(result.counterexample.y[0]) >= top - 0.03


# --- distributed ReLU-splitting branch-and-bound ------------------------------------------

@pytest.fixture(scope="module")
def relu_net(tmp_path_factory):
    """3 inputs, 12 + 12 ReLUs: "y ≥ top ± δ" needs ReLU splitting (α-CROWN alone leaves it open)."""
    return mlp_with_top(tmp_path_factory, 2, (3, 12, 12, 1))


def test_distributed_relu_split_equals_single_process_and_milp(cluster, relu_net):
    """Both verdicts: the sharded search answers as the one-process search and the exact
    MILP; its counterexample is real; the unsat answer closed every shard (more shards than
    workers, each searched past its root)."""
    import torch

    from verifier.cluster.ray_bab import ShardStats, WorkerPool
    from verifier.cluster.ray_relu_split import distributed_relu_split
    from verifier.complete.methods import METHODS, alpha_crown_root
    from verifier.complete.relu_split import relu_split_bab
    from verifier.deadline import Deadline

    model, top = relu_net
    pool = WorkerPool(model, workers=2)
    for offset, answer in ((-0.01, "sat"), (0.05, "unsat")):
        region = above(top, offset, 3)
        root, open_disjuncts = alpha_crown_root(model, region, 0, "cpu", torch.float64, [])
        assert open_disjuncts == [0]  # the root bounds alone do not decide it
        milp, _ = METHODS["milp"].decide(model, region, 0, Deadline(60), "cpu", torch.float64, {}, [])
        single, _ = relu_split_bab(model, region, Deadline(60))
        stats = ShardStats()
        status, cex = distributed_relu_split(pool, region, root, open_disjuncts, Deadline(60), stats=stats)
        assert status == single == milp == answer
        assert stats.workers == 2 and stats.boxes_bounded > stats.shards
        if status == "sat":
            assert float(cex.y[0]) >= top + offset and all(abs(v) <= 1.0 for v in cex.x)
            assert float(model(torch.as_tensor(cex.x, dtype=torch.float64)[None])[0, 0]) >= top + offset - 1e-5
        else:
            assert stats.shards >= 8 and stats.stopped == 0


def test_relu_counterexample_stops_the_other_workers(cluster, relu_net):
    """Worker 1 bounds its shard with a million β steps (no bound can close a region
    holding a counterexample, so it would run for minutes); worker 0 finds the
    counterexample in 3-step bounds and posts it: worker 1 stops."""
    import time as clock

    import torch

    from verifier.cluster.ray_bab import WorkerPool
    from verifier.cluster.ray_relu_split import make_engine, search_on_worker, search_options
    from verifier.complete.methods import alpha_crown_root

    model, top = relu_net
    region = above(top, -0.01, 3)
    root, _ = alpha_crown_root(model, region, 0, "cpu", torch.float64, [])
    whole = make_engine(model, region, 0, root, torch.float64, 3).root_subdomain()
    pool = WorkerPool(model, workers=2)
    actors, sent = pool.actors(), [ray.put(root), ray.put(region)]
    board = (pool.board, ray.get(pool.board.begin.remote()))

    def search(actor, iterations):
        return pool.search(actors[actor], search_on_worker, sent, 0, 0, whole, None, board, float("inf"),
                           torch.float64, search_options({"iterations": iterations}))

    slow = search(1, 10 ** 6)
    clock.sleep(1.0)  # worker 1 is inside its first bound
    status, cex, _, _ = ray.get(search(0, 3))
    assert status == "sat" and float(cex.y[0]) >= top - 0.01
    assert ray.get(slow, timeout=30)[0] == "stopped"


def test_relu_split_timeout_is_cluster_wide(cluster, tmp_path_factory):
    """A search that does not finish in 2 s (a 4-input net with 16 + 16 ReLUs whose
    one-process search bounds thousands of subdomains without an answer) raises Timeout,
    and every worker has stopped: a call to each answers at once afterwards."""
    import torch

    from verifier.cluster.ray_bab import WorkerPool
    from verifier.cluster.ray_relu_split import distributed_relu_split
    from verifier.complete.methods import alpha_crown_root
    from verifier.deadline import Deadline, Timeout

    model, top = mlp_with_top(tmp_path_factory, 4, (4, 16, 16, 1))
    region = above(top, 0.05, 4)
    root, open_disjuncts = alpha_crown_root(model, region, 0, "cpu", torch.float64, [])
    pool = WorkerPool(model, workers=2)
    with pytest.raises(Timeout):
        distributed_relu_split(pool, region, root, open_disjuncts, Deadline(2.0))
    assert ray.get([actor.call.remote(isinstance, dict) for actor in pool.actors()], timeout=10) == [True, True]


def test_verify_ray_relu_split_gives_the_single_process_verdict(cluster, relu_net):
    """``verify_ray`` with ``relu-split`` = ``verify`` (attack off), searched on the workers."""
    from verifier.cluster.ray_bab import verify_ray
    from verifier.spec.model import Spec
    from verifier.verify import verify

    model, top = relu_net
    for offset in (-0.01, 0.05):
        spec = Spec([above(top, offset, 3)], 3, 1)
        result = verify_ray(model, spec, domain="relu-split", attack=False, timeout=60, workers=2)
        single = verify(model, spec, domain="relu-split", attack=False, timeout=60)
        assert result.status == single.status == ("sat" if offset < 0 else "unsat")
        assert any("relu-split branch-and-bound on 2 Ray workers" in note for note in result.notes)


def test_relu_shards_partition_the_root(relu_net):
    """The driver's cut: 8 shards fixing the signs of the same 3 ReLUs, every sign pattern
    once (together they cover the root subdomain), each keeping the parent's bound; a
    subdomain its bound closes gives no shard."""
    import torch

    from verifier.cluster.ray_relu_split import cut, make_engine
    from verifier.complete.methods import alpha_crown_root

    model, top = relu_net
    region = above(top, 0.05, 3)
    root, _ = alpha_crown_root(model, region, 0, "cpu", torch.float64, [])
    engine = make_engine(model, region, 0, root, torch.float64, 3)
    shards = cut(engine, region, 0, engine.root_subdomain(), 8)
    signs = torch.cat([torch.cat([t.reshape(1, -1) for t in s.splits.values()], dim=1) for s in shards])
    assert signs.shape[0] == 8 and bool(((signs != 0).sum(dim=1) == 3).all())
    assert bool(((signs != 0) == (signs[0] != 0)).all())  # the same three neurons
    assert len({tuple(row.tolist()) for row in signs}) == 8  # each sign pattern once
    assert all(bool(torch.equal(s.lb, shards[0].lb)) and int(s.depth) == 3 for s in shards)
    closed = above(top, 50.0, 3)
    engine = make_engine(model, closed, 0, root, torch.float64, 3)
    assert cut(engine, closed, 0, engine.root_subdomain(), 8) == []


def test_verify_cli_ray_relu_split(cluster, relu_net, tmp_path, capsys):
    """``verifier verify MODEL SPEC --method relu-split --ray``: the search runs on the
    session's 2 workers and prints the one-process verdict, for both verdicts."""
    model, top = relu_net
    bounds = "".join(f"(declare-const X_{i} Real)\n(assert (>= X_{i} -1))\n(assert (<= X_{i} 1))\n" for i in range(3))
    for offset, answer in ((-0.01, "sat"), (0.05, "unsat")):
        spec = tmp_path / f"above_{answer}.vnnlib"
        spec.write_text(bounds + f"(declare-const Y_0 Real)\n(assert (>= Y_0 {top + offset!r}))\n")
        assert main(["verify", model.graph.graph["path"], str(spec), "--method", "relu-split", "--ray", "--no-attack",
                     "--timeout", "60"]) == 0
        out = capsys.readouterr().out
        assert f"result: {answer}\n" in out and "relu-split branch-and-bound on 2 Ray workers" in out


def test_verify_ray_auto_searches_on_the_workers(cluster, random_net):
    """``auto`` chooses its branch-and-bound among ``verify``'s ``methods``: its input-split
    runs on the workers, and the global registry is left as it was."""
    from verifier.cluster.ray_bab import verify_ray
    from verifier.complete.methods import METHODS
    from verifier.spec.model import Spec

    before = dict(METHODS)
    model, top = random_net
    spec = Spec([one_row_region([-1.0, -1.0], [1.0, 1.0], [-1.0, 0.0], -(top - 0.03))], 2, 2)
    result = verify_ray(model, spec, domain="auto", attack=False, timeout=60, workers=2)
    assert result.status == "sat" and float(result.counterexample.y[0]) >= top - 0.03
    assert any("input-split branch-and-bound on 2 Ray workers" in note for note in result.notes)
    assert METHODS == before


# --- refusals ------------------------------------------------------------------------------

def test_ray_flag_without_the_extra_is_one_error_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if ray were not installed
    bench = make_bench(tmp_path / "tiny", broken=False)
    assert main(["vnncomp", str(bench), "--output", str(tmp_path / "out.csv"), "--ray"]) == 2
    err = capsys.readouterr().err
    assert err == 'error: --ray needs the cluster extra: pip install -e ".[cluster]"\n'
    assert not (tmp_path / "out.csv").exists()


def test_unreachable_address_is_refused_before_any_work(monkeypatch, tmp_path, capsys):
    """As in a process without a Ray session: an address where no cluster answers, or that
    is not an address, is one error line, exit 2, and no output file."""
    import verifier.cluster.ray_session as session

    monkeypatch.setattr(session, "is_connected", lambda: False)
    bench = make_bench(tmp_path / "tiny", broken=False)
    for address, words in (("127.0.0.1:1", "no Ray cluster answers"), ("nonsense", "not an address")):
        assert main(["vnncomp", str(bench), "--output", str(tmp_path / "out.csv"), "--ray", address]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: --ray {address}: {words}") and len(err.splitlines()) == 1
        assert not (tmp_path / "out.csv").exists()


def test_proof_recording_and_ray_are_refused_together(random_net):
    """The workers' search records no certificate: ``verify --proof --ray`` is refused
    before the search instead of writing a proof without its leaves."""
    from verifier.cluster.ray_bab import verify_ray
    from verifier.errors import VerifierInputError
    from verifier.proof.record import ProofRecorder, recording
    from verifier.spec.model import Spec

    model, top = random_net
    spec = Spec([one_row_region([-1.0, -1.0], [1.0, 1.0], [-1.0, 0.0], -(top + 0.03))], 2, 2)
    with recording(ProofRecorder()), pytest.raises(VerifierInputError, match="--proof and --ray"):
        verify_ray(model, spec, domain="input-split", timeout=60, workers=2)
