"""DistributedDataParallel training (``train --nproc N`` / torchrun, gloo on CPU): the same
loss curve as one process with the same global batch, files written once by rank 0,
resume after ``kill -9`` of the whole job."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from verifier_plugins.training.distributed import Group, launch
from verifier_plugins.training.trainer import CHECKPOINT, train


pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with gloo is not available in this torch build")

def _data():
    from verifier_plugins.training.data import load_data

    return load_data("mnist", 90, 10)


def _kwargs():
    # batch 30 over 2 ranks: shards of 15; 3 steps per epoch; a deterministic objective (ibp)
    return dict(model="fc-20", method="ibp", eps=0.1, epochs=40, data=_data(), eval_count=0, batch_size=30,
                progress=False, export=False, seed=5)


def test_shards_cover_the_batch_with_weights_that_average_to_its_mean():
    x, y = torch.arange(14.0)[:, None], torch.arange(14)
    parts = [Group(rank, 3).shard(x, y) for rank in range(3)]
    assert torch.equal(torch.cat([p[1] for p in parts]), y)
    assert sum(p[2] for p in parts) / 3 == pytest.approx(1.0)
    # the averaged weighted shard means equal the batch mean
    assert sum(p[2] * float(p[0].mean()) for p in parts) / 3 == pytest.approx(float(x.mean()))


def test_two_processes_killed_and_resumed_follow_the_one_process_curve(tmp_path):
    """A two-process job (gloo) killed with SIGKILL (every process) after its first
    checkpoint, then resumed on two processes: every epoch logged once, by rank 0, and the
    loss curve and final weights of one uninterrupted process with the same global batch."""
    epochs, out = _kwargs()["epochs"], tmp_path / "cut"
    script = ("import sys; sys.path.insert(0, %r)\n"
              "from test_distributed_training import _kwargs\n"
              "from verifier_plugins.training.distributed import launch\n"
              "launch(2, out=%r, **_kwargs())\n") % (str(Path(__file__).parent), str(out))
    proc = subprocess.Popen([sys.executable, "-c", script], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt, deadline = out / CHECKPOINT, time.monotonic() + 120
    while not ckpt.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher and both ranks
    proc.wait()
    done = torch.load(ckpt, weights_only=False)["epoch"]
    assert 1 <= done < epochs
    resumed = launch(2, out=str(out), resume=True, **_kwargs())
    reference = train(out=str(tmp_path / "one"), **_kwargs())
    lines = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in lines] == list(range(1, epochs + 1))
    assert [e["loss"] for e in resumed["log"]] == [e["loss"] for e in lines]
    for a, b in zip(reference["log"], lines):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4, abs=1e-6) and b["eps"] == a["eps"]
    weights = torch.load(ckpt, weights_only=False)["module"]
    for name, value in reference["module"].state_dict().items():
        assert torch.allclose(weights[name], value, rtol=1e-3, atol=1e-5), name


def test_bad_options_are_refused_before_any_process_starts(tmp_path, monkeypatch):
    import torch.multiprocessing as mp

    from verifier.errors import VerifierInputError

    def no_spawn(*args, **kwargs):
        raise AssertionError("a process was started for bad options")

    monkeypatch.setattr(mp, "start_processes", no_spawn)
    with pytest.raises(VerifierInputError, match="--eps"):
        launch(2, out=str(tmp_path / "x"), **{**_kwargs(), "eps": -1.0})
    with pytest.raises(VerifierInputError, match="--nproc"):
        launch(0, out=str(tmp_path / "x"), **_kwargs())
    with pytest.raises(VerifierInputError, match="CPU cores"):  # 1000 processes on a laptop: refused, not started
        launch((os.cpu_count() or 1) + 1, out=str(tmp_path / "x"), **_kwargs())
    assert not (tmp_path / "x").exists()
