"""The Ray cluster paths (``--ray``): vnncomp, certify and distributed branch-and-bound
give the same answers as one process; a killed worker loses nothing.

All tests share one local Ray instance with 2 CPUs (module-scoped fixture: Ray starts
once, ~5 s). Skipped where the ``cluster`` extra (``ray``) is not installed."""

from __future__ import annotations

import csv
import shutil
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="ray is not installed (pip install -e \".[cluster]\"); the --ray paths are not tested")

from verifier.cli import main  # noqa: E402
from verifier.cluster.ray_session import connect  # noqa: E402
from verifier.cluster.ray_vnncomp import ray_executor  # noqa: E402
from verifier.vnncomp import run_benchmark  # noqa: E402

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
        rows.append(("onnx/broken.onnx", f"vnnlib/sat_0.vnnlib"))
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
                                      executor=ray_executor(workers=2, actor_prefix="kill-test-"))

    thread = threading.Thread(target=run)
    thread.start()
    killed, start = False, time.monotonic()
    while thread.is_alive() and time.monotonic() - start < 60:
        if out.is_file() and len(rows_of(out)) >= 2:  # one instance finished: the rest are queued or running
            ray.kill(ray.get_actor("kill-test-0"), no_restart=False)
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
    from verifier.cluster.ray_certify import certify_curve_ray
    from verifier.datasets import load_mnist
    from verifier_plugins.training.certify import certify_curve

    model = verifier.load(DEFAULT_MODEL)
    x, y = load_mnist("test")[0][:120], load_mnist("test")[1][:120]
    one = certify_curve(model, x, y, [0.02, 0.1], "box", batch=50, pgd_steps=5)
    many = certify_curve_ray(model, x, y, [0.02, 0.1], "box", batch=50, pgd_steps=5, ray_workers=2)
    assert many == one
    assert all(c.certified_accuracy <= c.pgd_accuracy <= c.clean_accuracy for c in one)
    assert 0 < one[1].certified_accuracy < one[1].pgd_accuracy < one[1].clean_accuracy  # counts not trivial
