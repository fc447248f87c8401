"""Bad input to ``verifier train`` / ``verifier certify`` and to the training plugin's Python
entry points (issue 11, classes 7 and 8): every case is refused with one ``error:`` line and
exit 2, before any training epoch, and nothing (no model.onnx) is written to ``--out``.

The files come from ``tests/cases/data`` (see its README); variants are derived from them.
A training epoch is never reached here: ``trainer.Context`` (built at the start of every
epoch) is replaced by a function that raises, so a check that came too late fails the test.
"""

from __future__ import annotations

import os
import shutil
import time
import zipfile

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import verifier
from verifier.cli import main
from verifier.errors import VerifierInputError
from verifier_plugins.training import trainer
from verifier_plugins.training.certify import certify_model
from verifier_plugins.training.data import load_data
from verifier_plugins.training.validation import CheckpointError, DataError

from cli_helpers import argv_with

HERE = os.path.dirname(os.path.abspath(__file__))
CASES = os.path.join(HERE, "cases")
DATA = os.path.join(CASES, "data")
MODELS = os.path.join(CASES, "models")
SHIPPED = os.path.join(HERE, "..", "models", "mnist_small.onnx")
FAST = 20.0  # seconds: every refusal comes well before any training would end


class ReachedTraining(KeyboardInterrupt):
    """Raised where an epoch would start (the CLI answers it with exit 130)."""


def _no_epoch(*args, **kwargs):
    raise ReachedTraining()


@pytest.fixture(autouse=True)
def no_training(monkeypatch):
    monkeypatch.setattr(trainer, "Context", _no_epoch)


def _train_args(out, *extra):
    """A small valid ``train`` command line; an option in ``extra`` replaces the base one
    (the CLI refuses a single-valued option given twice)."""
    return argv_with("train", {"--model": "fc-20", "--method": "ibp", "--eps": "0.1", "--epochs": "1",
                               "--train-count": "40", "--test-count": "5", "--eval-count": "0", "--batch-size": "20",
                               "--out": out}, "--quiet", *extra)


def _run(argv, capsys):
    capsys.readouterr()
    t0 = time.monotonic()
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse: a value that is not a number at all
        rc = exc.code
    seconds = time.monotonic() - t0
    out, err = capsys.readouterr()
    return rc, out, err, seconds


def assert_refused(argv, capsys, out_dir=None, needle=None):
    rc, out, err, seconds = _run(argv, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2, (rc, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "internal error" not in err and "Traceback" not in err
    assert "result:" not in out and "model:" not in out
    if needle is not None:
        assert needle in lines[0], lines[0]
    if out_dir is not None:
        assert not os.path.exists(os.path.join(out_dir, "model.onnx"))
        assert not os.path.exists(os.path.join(out_dir, "log.jsonl"))
    assert seconds < FAST, f"refused only after {seconds:.1f} s"
    return lines[0]


# --- options -------------------------------------------------------------------------------
BAD_TRAIN_OPTIONS = [
    (["--eps", "nan"], "--eps"), (["--eps", "inf"], "--eps"), (["--eps", "-0.1"], "--eps"),
    (["--eps-test", "nan"], "--eps-test"), (["--eps-test", "-1"], "--eps-test"),
    (["--epochs", "0"], "--epochs"), (["--epochs", "-3"], "--epochs"),
    (["--batch-size", "-5"], "--batch-size"), (["--batch-size", "0"], "--batch-size"),
    (["--lr", "nan"], "--lr"), (["--lr", "0"], "--lr"), (["--lr=-1e-3"], "--lr"), (["--lr", "inf"], "--lr"),
    (["--kappa", "2", "0"], "--kappa"), (["--kappa", "0", "nan"], "--kappa"), (["--kappa", "-0.5", "0"], "--kappa"),
    (["--method", "crown-ibp", "--beta", "1", "1.5"], "--beta"), (["--beta", "1", "0"], "--beta"),
    (["--warmup", "-1"], "--warmup"), (["--warmup", "inf"], "--warmup"), (["--ramp", "-2"], "--ramp"),
    (["--ramp", "nan"], "--ramp"), (["--decay-every", "0"], "--decay-every"),
    (["--decay-every", "-1"], "--decay-every"), (["--decay-factor", "0"], "--decay-factor"),
    (["--decay-factor", "1.5"], "--decay-factor"), (["--decay-factor", "nan"], "--decay-factor"),
    (["--method", "dual-lp", "--projections", "0"], "--projections"), (["--projections", "5"], "--projections"),
    (["--train-count", "0"], "--train-count"), (["--train-count", "-4"], "--train-count"),
    (["--test-count", "0"], "--test-count"), (["--eval-count", "-1"], "--eval-count"),
    (["--seed", "-1"], "--seed"),
    (["--eval-domains", "box,bogus"], "--eval-domains"), (["--eval-domains", ""], "--eval-domains"),
    (["--certify-domain", "nope"], "--certify-domain"),
    (["--option", "bogus=1"], "--option bogus"), (["--method", "colt", "--option", "bogus=1"], "latent_steps"),
    (["--method", "pgd", "--option", "pgd_steps=abc"], "pgd_steps"),
    (["--method", "pgd", "--option", "pgd_steps=-2"], "pgd_steps"),
    (["--method", "colt", "--option", "mix=2"], "mix"), (["--method", "colt", "--option", "stages=0"], "stages"),
    (["--method", "landscape", "--option", "alpha_step=nan"], "alpha_step"),
    (["--method", "dual-lp", "--option", "projections=0.5"], "projections"),
    (["--option", "novalue"], "--option"),
    (["--model", "no-such-net"], "--model"), (["--model", "fc-0"], "fc-0"),
    (["--model", "wong-kolter", "--data", os.path.join(DATA, "d_plain.npy")], "d_plain.npy"),
    (["--device", "nosuchdevice"], "device"),
]


@pytest.mark.parametrize("extra,needle", BAD_TRAIN_OPTIONS, ids=[" ".join(e) for e, _ in BAD_TRAIN_OPTIONS])
def test_bad_train_option_is_refused_before_any_work(tmp_path, capsys, extra, needle):
    out = tmp_path / "run"
    assert_refused(_train_args(out, *extra), capsys, out, needle)
    assert not out.exists(), "the output folder was created for a refused run"


BAD_CERTIFY_OPTIONS = [
    (["--count", "-1"], "--count"), (["--count", "0"], "--count"), (["--eps", "nan"], "--eps"),
    (["--eps", "-0.1"], "--eps"), (["--eps", "inf"], "--eps"), (["--domain", "bogus"], "--domain"),
    (["--domain-option", "bogus=1"], "bogus"), (["--domain", "alpha-crown", "--domain-option", "iterationz=3"], "iterationz"),
    (["--data", "images.csv"], "--data"), (["--data", os.path.join(DATA, "d_plain.npy")], "--data"),
    (["--data", os.path.join(DATA, "missing.npz")], "missing.npz"),
]


@pytest.mark.parametrize("extra,needle", BAD_CERTIFY_OPTIONS, ids=[" ".join(e) for e, _ in BAD_CERTIFY_OPTIONS])
def test_bad_certify_option_is_refused(capsys, extra, needle):
    assert_refused(["certify", SHIPPED, "--eps", "0.05", "--count", "5", *extra], capsys, needle=needle)


# --- data files ------------------------------------------------------------------------------
DATA_CASES = [("d_empty.npz", "empty"), ("d_garbage.npz", "d_garbage.npz"), ("d_len_mismatch.npz", "y_train"),
              ("d_nan.npz", "NaN"), ("d_neg_labels.npz", "d_neg_labels.npz"), ("d_plain.npy", ".npy")]


@pytest.mark.parametrize("name,needle", DATA_CASES)
def test_shared_bad_data_files_are_refused_by_train_and_certify(tmp_path, capsys, name, needle):
    path = os.path.join(DATA, name)
    out = tmp_path / "run"
    assert_refused(_train_args(out, "--data", path), capsys, out, needle)
    assert not out.exists()
    if name.endswith(".npz"):
        assert_refused(["certify", SHIPPED, "--eps", "0.05", "--count", "5", "--data", path], capsys, needle=needle)
    with pytest.raises(DataError):
        load_data(path)


def _clean_arrays() -> dict:
    """d_nan.npz with its NaN pixels set to 0: a small valid data set to derive variants from."""
    with np.load(os.path.join(DATA, "d_nan.npz")) as f:
        arrays = {k: f[k].copy() for k in f.files}
    for k in ("x_train", "x_test"):
        arrays[k] = np.nan_to_num(arrays[k], nan=0.0, posinf=1.0, neginf=0.0).clip(0, 1)
    return arrays


def _variant(arrays, change):
    a = {k: v.copy() for k, v in arrays.items()}
    change(a)
    return a


def _set(key, fn):
    def change(a):
        a[key] = fn(a[key])
    return change


def _drop(key):
    def change(a):
        del a[key]
    return change


DATA_VARIANTS = {
    "negative labels": (_set("y_train", lambda y: y - 20), "negative"),
    "non-integer labels": (_set("y_test", lambda y: y.astype(np.float64) + 0.5), "non-integer"),
    "labels beyond the outputs": (_set("y_test", lambda y: y + 10), "label"),
    "labels 2-D": (_set("y_train", lambda y: y.reshape(-1, 1)), "y_train"),
    "inf pixels": (_set("x_test", lambda x: np.where(x > 0.5, np.inf, x)), "x_test"),
    "pixels in 0..255": (_set("x_train", lambda x: x * 255 + 1), "x_train"),
    "negative pixels": (_set("x_test", lambda x: x - 1), "x_test"),
    "missing key": (_drop("y_test"), "y_test"),
    "test shape differs": (_set("x_test", lambda x: x[:, :, :14, :14]), "x_test"),
    "1-D x": (_set("x_train", lambda x: x[:, 0, 0, 0]), "x_train"),
    "string pixels": (_set("x_train", lambda x: x.astype(str)), "x_train"),
    "x/y length mismatch in test": (_set("y_test", lambda y: y[:3]), "y_test"),
    "empty test": (lambda a: a.update(x_test=a["x_test"][:0], y_test=a["y_test"][:0]), "x_test"),
}


@pytest.mark.parametrize("variant", sorted(DATA_VARIANTS))
def test_bad_data_variants_are_refused_with_the_key(tmp_path, capsys, variant):
    change, needle = DATA_VARIANTS[variant]
    path = tmp_path / "data.npz"
    np.savez(path, **_variant(_clean_arrays(), change))
    out = tmp_path / "run"
    # with the shipped 10-class model, labels must be 0..9 and samples 1x28x28
    line = assert_refused(_train_args(out, "--model", SHIPPED, "--data", path), capsys, out, needle)
    assert "data.npz" in line or "model" in line


def test_data_that_does_not_fit_the_onnx_model(tmp_path, capsys):
    out = tmp_path / "run"
    line = assert_refused(_train_args(out, "--model", os.path.join(MODELS, "small5x3.onnx")), capsys, out)
    assert "[1, 28, 28]" in line and "small5x3.onnx" in line
    assert_refused(["certify", os.path.join(MODELS, "small5x3.onnx"), "--eps", "0.1", "--count", "3"], capsys,
                   needle="small5x3.onnx")


def test_architecture_that_cannot_take_the_data(tmp_path, capsys):
    path = tmp_path / "tiny.npz"
    np.savez(path, **_variant(_clean_arrays(), lambda a: a.update(x_train=a["x_train"][:, :, :3, :3],
                                                                x_test=a["x_test"][:, :, :3, :3])))
    assert_refused(_train_args(tmp_path / "run", "--model", "dm-small", "--data", path), capsys, needle="dm-small")


@pytest.mark.parametrize("name,needle", [("folded_inf.onnx", "finite"), ("opset99.onnx", "opset"),
                                         ("irversion99.onnx", "version"), ("absent.onnx", "absent.onnx")])
def test_onnx_model_goes_through_the_verifier_loader(tmp_path, capsys, name, needle):
    out = tmp_path / "run"
    assert_refused(_train_args(out, "--model", os.path.join(MODELS, name)), capsys, out, needle)


# --- output folder and checkpoints -------------------------------------------------------------
def test_out_pointing_at_a_file_or_below_one(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    assert_refused(_train_args(afile), capsys, needle="--out")
    assert_refused(_train_args(afile / "sub"), capsys, needle="--out")
    assert afile.read_text() == "keep me"


def test_out_in_a_missing_folder_is_refused_like_every_output_path(tmp_path, capsys):
    """``--out`` is created, the folder it goes in must exist, as for ``--result-file`` and
    every other output path (``train`` used to create the missing parents, so a mistyped
    parent became a new tree); nothing is created. With the parent present the folder is
    made and the run goes on to its first epoch (stopped here by ``no_training``)."""
    out = tmp_path / "missing" / "run"
    line = assert_refused(_train_args(out), capsys, needle="--out")
    assert f"{tmp_path / 'missing'} does not exist" in line
    assert not (tmp_path / "missing").exists()
    rc, _, err, _ = _run(_train_args(tmp_path / "run"), capsys)
    assert rc == 130, err  # ReachedTraining: every check passed
    assert (tmp_path / "run").is_dir()


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root may write anywhere")
def test_out_in_an_unwritable_folder(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert_refused(_train_args(locked / "run"), capsys, needle="writable")
    finally:
        locked.chmod(0o700)


def _checkpoint_in(tmp_path, content) -> str:
    out = tmp_path / "run"
    out.mkdir()
    if isinstance(content, str):
        shutil.copy(content, out / "checkpoint.pt")
    else:
        torch.save(content, out / "checkpoint.pt")
    return str(out)


@pytest.mark.parametrize("what", ["missing", "garbage", "truncated zip", "wrong keys", "not a dict"])
def test_resume_refuses_a_bad_checkpoint(tmp_path, capsys, what):
    if what == "missing":
        out = str(tmp_path / "run")
    elif what == "garbage":
        out = _checkpoint_in(tmp_path, os.path.join(DATA, "ckpt_garbage.pt"))
    elif what == "truncated zip":
        out = _checkpoint_in(tmp_path, {"module": {"w": torch.zeros(100)}})
        path = os.path.join(out, "checkpoint.pt")
        data = open(path, "rb").read()
        open(path, "wb").write(data[: len(data) // 2])
    elif what == "wrong keys":
        out = _checkpoint_in(tmp_path, {"weights": torch.zeros(3), "epoch": 1})
    else:
        out = _checkpoint_in(tmp_path, [1, 2, 3])
    line = assert_refused(_train_args(out, "--resume"), capsys, out)
    assert "checkpoint.pt" in line
    if what != "missing":
        with pytest.raises(CheckpointError):
            trainer.train("fc-20", "ibp", 0.1, 1, out, data=load_data("mnist", 40, 5), eval_count=0, resume=True,
                          progress=False)


def test_resume_refuses_a_checkpoint_of_another_run(tmp_path, capsys, monkeypatch):
    monkeypatch.undo()  # this one trains: one epoch of 40 points
    out = tmp_path / "run"
    rc, _, err, _ = _run(_train_args(out), capsys)
    assert rc == 0, err
    files = sorted(os.listdir(out))
    assert files == ["checkpoint.pt", "log.jsonl", "model.onnx", "result.json"], files  # no temporary files left
    assert open(out / "log.jsonl").read().endswith("\n")
    before = (out / "model.onnx").read_bytes()
    monkeypatch.setattr(trainer, "Context", _no_epoch)
    for option, value, needle in (("--eps", "0.2", "eps"), ("--method", "crown-ibp", "method"),
                                  ("--model", "fc-30", "model"), ("--epochs", "2", "epochs"),
                                  ("--batch-size", "10", "batch_size")):
        args = _train_args(out, "--resume")
        args[args.index(option) + 1] = value
        assert_refused(args, capsys, needle=needle)
    assert (out / "model.onnx").read_bytes() == before


# --- the Python entry points ------------------------------------------------------------------
def test_python_entry_points_raise_input_errors(tmp_path):
    data = load_data("mnist", 40, 5)
    with pytest.raises(VerifierInputError, match="--eps"):
        trainer.train("fc-20", "ibp", float("nan"), 1, str(tmp_path / "a"), data=data, progress=False)
    with pytest.raises(VerifierInputError, match="--method"):
        trainer.train("fc-20", "bogus", 0.1, 1, str(tmp_path / "a"), data=data, progress=False)
    with pytest.raises(VerifierInputError, match="--kappa"):
        trainer.train("fc-20", "ibp", 0.1, 1, str(tmp_path / "a"), data=data, kappa=(1.0,), progress=False)
    with pytest.raises(VerifierInputError, match="--option"):
        trainer.train("fc-20", "ibp", 0.1, 1, str(tmp_path / "a"), data=data, method_options={"x": 1},
                      progress=False)
    bad = (data.x_train.numpy(), data.y_train.numpy() - 1, data.x_test.numpy(), data.y_test.numpy())
    with pytest.raises(DataError, match="y_train"):
        trainer.train("fc-20", "ibp", 0.1, 1, str(tmp_path / "a"), data=bad, progress=False)
    assert not (tmp_path / "a").exists()
    with pytest.raises(DataError, match="x_train"):
        load_data((data.x_train.numpy() * 255, data.y_train, data.x_test, data.y_test))
    model = verifier.load(SHIPPED)
    for kwargs, match in ((dict(eps=-1.0), "--eps"), (dict(eps=0.1, domain="bogus"), "--domain"),
                          (dict(eps=0.1, iterationz=2), "iterationz")):
        with pytest.raises(VerifierInputError, match=match):
            certify_model(model, data.x_test, data.y_test, **kwargs)
    with pytest.raises(DataError, match="label"):
        certify_model(model, data.x_test, data.y_test + 10, 0.1)
    with pytest.raises(DataError):
        certify_model(model, data.x_test[:0], data.y_test[:0], 0.1)


# --- fuzz: options and data files ---------------------------------------------------------------
NUMBERS = st.sampled_from(["nan", "inf", "-inf", "-1", "0", "-0.0", "1e309", "2", "abc", "1e-9", "3"])
OPTIONS = st.sampled_from(["--eps", "--eps-test", "--epochs", "--batch-size", "--lr", "--warmup", "--ramp",
                           "--decay-every", "--decay-factor", "--train-count", "--test-count", "--eval-count",
                           "--seed", "--projections"])
METHOD_KEYS = st.sampled_from(["pgd_steps", "latent_steps", "latent_step_size", "stages", "mix", "l1", "stability",
                               "alpha_step", "diagnose_every", "projections", "bogus", ""])
METHODS = st.sampled_from(["standard", "pgd", "ibp", "crown-ibp", "dual-lp", "colt", "double-margin", "landscape"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=METHODS, options=st.lists(st.tuples(OPTIONS, NUMBERS), max_size=4),
       method_options=st.lists(st.tuples(METHOD_KEYS, NUMBERS), max_size=2))
def test_fuzz_train_options(tmp_path_factory, capsys, method, options, method_options):
    """Random option values (always with one certainly invalid: --epochs -1 is appended when
    nothing else is): refused with exit 2 and one error line, never exit 3 or training."""
    out = tmp_path_factory.mktemp("fuzz") / "run"
    args = _train_args(out, "--method", method)
    for key, value in options:
        args += [key, value]
    for key, value in method_options:
        args += ["--option", f"{key}={value}"]
    args += ["--epochs", "-1"]  # the last one wins: the run is invalid whatever else was drawn
    assert_refused(args, capsys, out)
    assert not out.exists()


def _mutate_bytes(raw: bytes, data) -> bytes:
    kind = data.draw(st.sampled_from(["truncate", "flip", "zero-run", "append"]))
    if kind == "truncate":
        return raw[: data.draw(st.integers(0, len(raw) - 1))]
    if kind == "append":
        return raw + data.draw(st.binary(min_size=1, max_size=64))
    pos = data.draw(st.integers(0, len(raw) - 1))
    if kind == "flip":
        return raw[:pos] + bytes([raw[pos] ^ data.draw(st.integers(1, 255))]) + raw[pos + 1:]
    return raw[:pos] + b"\0" * 32 + raw[pos + 32:]


ARRAY_MUTATIONS = st.sampled_from(["nan", "inf", "scale", "shift-labels", "float-labels", "drop", "swap-shape",
                                   "empty-train", "cut-labels", "int8-pixels", "bool-labels", "none"])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_data_files(tmp_path_factory, capsys, data):
    """A valid small data set with one mutation (of its arrays or of the file's bytes):
    `train` refuses it with one error line, or accepts it and reaches the first epoch
    (exit 130 from the stand-in); `certify` likewise refuses it or answers. Never exit 3."""
    folder = tmp_path_factory.mktemp("fuzzdata")
    arrays = _clean_arrays()
    mutation = data.draw(ARRAY_MUTATIONS)
    key = data.draw(st.sampled_from(["x_train", "y_train", "x_test", "y_test"]))
    a = arrays[key]
    if mutation == "nan" and key.startswith("x"):
        a = a.copy()
        a.flat[data.draw(st.integers(0, a.size - 1))] = np.nan
    elif mutation == "inf":
        a = a.astype(np.float64)
        a.flat[data.draw(st.integers(0, a.size - 1))] = np.inf
    elif mutation == "scale":
        a = a * data.draw(st.sampled_from([255.0, -1.0, 1.5]))
    elif mutation == "shift-labels":
        a = a + data.draw(st.sampled_from([-1, 10, 1000]))
    elif mutation == "float-labels":
        a = a + data.draw(st.sampled_from([0.0, 0.25]))
    elif mutation == "swap-shape":
        a = a.reshape(len(a), -1) if a.ndim > 1 else a.reshape(-1, 1)
    elif mutation == "empty-train":
        a = a[:0]
    elif mutation == "cut-labels":
        a = a[: max(0, len(a) - 2)]
    elif mutation == "int8-pixels":
        a = a.astype(np.int8)
    elif mutation == "bool-labels":
        a = a.astype(bool)
    arrays[key] = a
    if mutation == "drop":
        del arrays[key]
    path = folder / "d.npz"
    np.savez(path, **arrays)
    if data.draw(st.booleans()):
        path.write_bytes(_mutate_bytes(path.read_bytes(), data))
    out = folder / "run"
    for argv in (_train_args(out, "--model", SHIPPED, "--data", path),
                 ["certify", SHIPPED, "--eps", "0.02", "--count", "3", "--data", path, "--domain", "box"]):
        rc, stdout, err, seconds = _run(argv, capsys)
        lines = [line for line in err.splitlines() if line.strip()]
        assert rc in (0, 2, 130), (rc, err)
        assert "internal error" not in err and "Traceback" not in err
        if rc == 2:
            assert len(lines) == 1 and lines[0].startswith("error: "), err
        if argv[0] == "train":
            assert not (out / "model.onnx").exists()
        assert seconds < FAST
