"""Training hyper-parameters, devices, seeds and data files are checked up front, and a run
whose loss or weights become non-finite stops with one clear error (fresh-eyes I and E).

Before: ``train --lr 1e308`` trained an epoch, wrote a NaN ``checkpoint.pt`` and
``log.jsonl``, then failed naming the internal ``.model.export.onnx``; ``--seed 1e20`` and
``--device meta`` ended in exit 3; ``certify`` required ``.npz`` where ``train`` did not;
boolean pixels and labels were accepted; ``certify`` refused a file for faults in its
training arrays, which it never uses."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.nn as nn

from verifier.cli import main
from verifier.errors import VerifierInputError
from verifier_plugins.training import trainer
from verifier_plugins.training.certify import certify_model
from verifier_plugins.training.data import Data, load_data
from verifier_plugins.training.validation import DataError, TrainingDiverged, check_device

from cli_helpers import argv_with

pytestmark = pytest.mark.usefixtures("one_torch_thread")

HERE = os.path.dirname(os.path.abspath(__file__))
SHIPPED = os.path.join(HERE, "..", "models", "mnist_small.onnx")


def _run(capsys, *argv):
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _assert_error(capsys, *argv, words=()):
    code, out, err = _run(capsys, *argv)
    lines = err.strip().splitlines()
    assert code == 2, (code, out, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def _npz(path, n_train=20, n_test=5, **override):
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.random((n_train, 1, 28, 28), dtype=np.float32), "y_train": np.arange(n_train) % 10,
              "x_test": rng.random((n_test, 1, 28, 28), dtype=np.float32), "y_test": np.arange(n_test) % 10}
    arrays.update(override)
    with open(path, "wb") as handle:  # np.savez would add .npz to a name without it
        np.savez(handle, **arrays)
    return str(path)


def _train_argv(out, data, *extra):
    """A small ``train`` command line; an option in ``extra`` replaces the base one (the CLI
    refuses a single-valued option given twice)."""
    return argv_with("train", {"--model": "fc-20", "--method": "ibp", "--eps": "0.1", "--epochs": "1",
                               "--test-count": "5", "--eval-count": "0", "--batch-size": "20", "--data": data,
                               "--out": out}, "--quiet", *extra)


# --- I: hyper-parameters up front ------------------------------------------------------------
@pytest.mark.parametrize("extra,words", [
    (("--lr", "1e308"), ("--lr", "(0, 10]")), (("--lr", "inf"), ("--lr",)), (("--lr", "0"), ("--lr",)),
    (("--lr", "nan"), ("--lr",)), (("--seed", "99999999999999999999"), ("--seed", "4294967295")),
    (("--seed", str(2**32)), ("--seed",)), (("--seed", "-1"), ("--seed",)),
    (("--device", "meta"), ("--device",)), (("--device", "mps"), ("--device",)), (("--device", "xla"), ("--device",)),
])
def test_bad_hyper_parameters_are_refused_before_any_work(tmp_path, capsys, extra, words):
    out = tmp_path / "out"
    _assert_error(capsys, *_train_argv(out, _npz(tmp_path / "d.npz"), *extra), words=words)
    assert not out.exists()


@pytest.mark.parametrize("device", ["meta", "mps", "xla", "cuda:99", "nonsense", 3])
def test_api_devices_are_cpu_or_an_available_cuda(tmp_path, device):
    with pytest.raises(VerifierInputError):
        check_device("--device", device)
    with pytest.raises(VerifierInputError):
        trainer.train("fc-20", "ibp", 0.1, 1, str(tmp_path / "out"), data=_npz(tmp_path / "d.npz"), device=device,
                      eval_count=0, progress=False)
    assert not (tmp_path / "out").exists()
    assert check_device("--device", "cpu") == "cpu"


def test_certify_seed_is_checked():
    import verifier

    model = verifier.load(SHIPPED, check=False)
    x, y = torch.rand(2, 1, 28, 28), torch.tensor([0, 1])
    with pytest.raises(VerifierInputError, match="seed"):
        certify_model(model, x, y, 0.01, "box", seed=10**20)


# --- I: divergence -----------------------------------------------------------------------------
class Blowup(nn.Module):
    """A linear classifier whose training-mode output turns NaN after ``after`` forward calls."""

    def __init__(self, after: int):
        super().__init__()
        self.linear = nn.Linear(784, 10)
        self.after, self.calls = after, 0

    def forward(self, x):
        y = self.linear(x.flatten(1))
        if self.training:
            self.calls += 1
            if self.calls > self.after:
                y = y * float("nan")
        return y


class InfiniteGradient(nn.Module):
    """Finite loss, infinite gradient of the weight (a hook): Adam's step makes it NaN/inf."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(784, 10)
        self.linear.weight.register_hook(lambda grad: grad * float("inf"))

    def forward(self, x):
        return self.linear(x.flatten(1))


def _data():
    g = torch.Generator().manual_seed(0)
    return Data(torch.rand(20, 1, 28, 28, generator=g), torch.arange(20) % 10,
                torch.rand(5, 1, 28, 28, generator=g), torch.arange(5))


def test_divergence_in_the_first_epoch_leaves_nothing(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(TrainingDiverged) as info:
        trainer.train(Blowup(0), "standard", 0.1, 3, str(out), data=_data(), batch_size=20, eval_count=0,
                      progress=False)
    message = str(info.value)
    assert "epoch 1" in message and "learning rate" in message and "--lr" in message
    assert ".model.export" not in message
    assert not out.exists()


def test_divergence_later_keeps_the_last_finite_checkpoint_and_exports_nothing(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(TrainingDiverged, match="epoch 2"):
        trainer.train(Blowup(1), "standard", 0.1, 3, str(out), data=_data(), batch_size=20, eval_count=0,
                      progress=False)
    assert sorted(os.listdir(out)) == ["checkpoint.pt", "log.jsonl"]
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 1
    assert all(bool(torch.isfinite(v).all()) for v in state["module"].values() if v.is_floating_point())
    assert len((out / "log.jsonl").read_text().splitlines()) == 1


def test_non_finite_weights_with_a_finite_loss_are_never_saved(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(TrainingDiverged, match="weight 'linear.weight'"):
        trainer.train(InfiniteGradient(), "standard", 0.1, 2, str(out), data=_data(), batch_size=20, eval_count=0,
                      progress=False)
    assert not out.exists()


def test_cli_divergence_is_one_error_line(tmp_path, capsys, monkeypatch):
    """From the command line a divergence is exit 2 with one line naming the epoch."""
    real = trainer.prepare_module
    monkeypatch.setattr(trainer, "prepare_module", lambda model, dataset, seed=0: (Blowup(0), "blowup", 10))
    out = tmp_path / "out"
    line = _assert_error(capsys, *_train_argv(out, _npz(tmp_path / "d.npz"), "--method", "standard"),
                         words=("epoch 1", "learning rate"))
    assert "Traceback" not in line and not out.exists()
    monkeypatch.setattr(trainer, "prepare_module", real)


# --- E: data-file rules, the same for train and certify ----------------------------------------
def test_train_and_certify_both_require_the_npz_extension(tmp_path, capsys):
    data = _npz(tmp_path / "noext")
    out = tmp_path / "out"
    _assert_error(capsys, *_train_argv(out, data), words=(".npz",))
    assert not out.exists()
    _assert_error(capsys, "certify", SHIPPED, "--data", data, "--eps", "0.01", "--count", "2", words=(".npz",))
    with pytest.raises(DataError, match=r"\.npz"):
        load_data(data, need_train=False)


@pytest.mark.parametrize("key", ["x_train", "y_train", "x_test", "y_test"])
def test_boolean_pixels_and_labels_are_refused(tmp_path, capsys, key):
    shape = {"x_train": (20, 1, 28, 28), "y_train": (20,), "x_test": (5, 1, 28, 28), "y_test": (5,)}[key]
    data = _npz(tmp_path / "d.npz", **{key: np.ones(shape, dtype=bool)})
    out = tmp_path / "out"
    _assert_error(capsys, *_train_argv(out, data), words=(key, "bool"))
    assert not out.exists()
    if "test" in key:
        _assert_error(capsys, "certify", SHIPPED, "--data", data, "--eps", "0.01", "--count", "2", words=(key, "bool"))


def test_certify_names_the_split_it_refuses(tmp_path, capsys):
    """certify uses the test split; a broken training split in the same file is still refused
    (a file must be valid as a whole), but the message says certification uses x_test/y_test;
    a broken test split is named as such, never as x_train; a test-only file certifies."""
    broken_train = _npz(tmp_path / "bt.npz", y_train=np.arange(7) % 10)
    line = _assert_error(capsys, "certify", SHIPPED, "--data", broken_train, "--eps", "0.01", "--count", "2",
                         words=("x_train", "y_train", "certification uses only x_test and y_test"))
    broken_test = _npz(tmp_path / "btest.npz", y_test=np.arange(3))
    line = _assert_error(capsys, "certify", SHIPPED, "--data", broken_test, "--eps", "0.01", "--count", "2",
                         words=("x_test", "y_test"))
    assert "x_train" not in line
    test_only = tmp_path / "test_only.npz"
    np.savez(test_only, x_test=np.random.default_rng(0).random((3, 1, 28, 28), dtype=np.float32), y_test=np.arange(3))
    code, out, err = _run(capsys, "certify", SHIPPED, "--data", test_only, "--eps", "0.01", "--count", "2",
                          "--domain", "box")
    assert code == 0, err
