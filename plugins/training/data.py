"""Datasets for training: the shipped MNIST idx files, numpy arrays, ``.npz`` files or any
torch ``Dataset`` of ``(x, y)`` pairs. Inputs are in the model's valid input range
(``clip``, default [0, 1]); normalisation lives inside the model."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np
import torch

from verifier.errors import VerifierInputError

from .validation import DataError

_LOG = logging.getLogger(__name__)


@dataclass
class Data:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    name: str = "custom"
    clip: tuple[float, float] = (0.0, 1.0)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def classes(self) -> int:
        return max((int(t.max()) for t in (self.y_train, self.y_test) if len(t)), default=0) + 1


KEYS = ("x_train", "y_train", "x_test", "y_test")
USAGE = "use 'mnist' or an .npz file with arrays x_train, y_train, x_test, y_test"


def _from_dataset(ds, which: str) -> tuple:
    try:
        xs, ys = zip(*[ds[i] for i in range(len(ds))])
        x = torch.stack([torch.as_tensor(x, dtype=torch.float32) for x in xs])
        y = torch.as_tensor([int(y) for y in ys])
    except ValueError as exc:
        if "not enough values" in str(exc):
            raise DataError(f"the {which} Dataset is empty (give at least one sample)") from None
        raise DataError(f"the {which} Dataset does not yield (x, y) pairs of equal-shaped tensors and integer "
                        f"labels ({exc})") from None
    except (TypeError, RuntimeError) as exc:
        raise DataError(f"the {which} Dataset does not yield (x, y) pairs of equal-shaped tensors and integer "
                        f"labels ({type(exc).__name__}: {exc})") from None
    return x, y


def _reason(exc: Exception) -> str:
    """Why numpy refused a file or array, in a few words: pickled objects (never loaded:
    ``allow_pickle=False``) said as such, else numpy's first line, cut at a word."""
    from verifier.ir.onnx_validate import first_line

    text = str(exc)
    if "pickle" in text.lower():
        return "it holds pickled Python objects, which are never loaded"
    return f"{type(exc).__name__}: {first_line(exc)}"


def _read_npz(path: str, need_train: bool = True) -> dict:
    """The four arrays of an ``.npz`` file, or a :class:`DataError` naming the file and key
    (without ``need_train``, ``x_train``/``y_train`` may be absent: empty arrays then)."""
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({_reason(exc)}); {USAGE}") from None
    except Exception as exc:  # zipfile.BadZipFile and friends
        raise DataError(f"{path}: not a readable .npz file ({type(exc).__name__}); {USAGE}") from None
    if isinstance(archive, np.ndarray):
        raise DataError(f"{path}: a single .npy array, not an .npz archive; {USAGE}")
    with archive:
        present = [k for k in ("x_train", "y_train") if k in archive.files]
        missing = [k for k in KEYS if k not in archive.files and (need_train or "test" in k or present)]
        if missing:
            raise DataError(f"{path}: lacks arrays {missing} (it has {sorted(archive.files)}); "
                            + (USAGE if need_train else "certification needs x_test and y_test, and a training "
                               "split needs both x_train and y_train (or neither)"))
        arrays = {}
        for key in KEYS:
            if key not in archive.files:
                continue
            try:
                arrays[key] = archive[key]
            except Exception as exc:
                raise DataError(f"{path}: array {key} cannot be read ({_reason(exc)}); store plain numeric "
                                f"arrays (no objects)") from None
    if "x_train" not in arrays:
        x = arrays["x_test"]
        arrays["x_train"] = np.zeros((0, *getattr(x, "shape", (0, 0))[1:]), dtype=np.float32)
        arrays["y_train"] = np.zeros((0,), dtype=np.int64)
    return arrays


def load_data(data="mnist", train_count: int | None = None, test_count: int | None = None,
              clip: tuple[float, float] = (0.0, 1.0), need_test: bool = True, need_train: bool = True) -> Data:
    """``data``: ``"mnist"`` (5,000 shipped training images, the 10,000 test images), an
    ``.npz`` path with ``x_train, y_train, x_test, y_test``, a tuple of those four arrays,
    or a pair of torch Datasets ``(train, test)``. The first ``train_count``/``test_count``
    samples are kept.

    Everything is checked before use (:class:`DataError` naming the file and array): a
    path names an existing file ending in ``.npz``; x and y lengths agree, no split is
    empty (the test split only when ``need_test``), pixels are finite numbers (not
    booleans) inside ``clip``, labels are integers ``>= 0`` (not booleans), train and test
    samples have one shape. ``need_train=False`` (certification) accepts an ``.npz``
    without the training arrays; training arrays that are present are checked too, and
    their errors say that certification itself uses only ``x_test``/``y_test``."""
    from .validation import check_arrays, check_int, check_real, check_same_sample_shape

    train_count = None if train_count is None else check_int("--train-count", train_count, 1)
    test_count = None if test_count is None else check_int("--test-count", test_count, 1)
    try:
        clip = (check_real("clip", clip[0]), check_real("clip", clip[1]))
    except (TypeError, IndexError):
        raise VerifierInputError(f"clip {clip!r}: must be two numbers (low, high)") from None
    if not clip[0] < clip[1]:
        raise VerifierInputError(f"clip {clip!r}: low must be below high")
    if isinstance(data, str) and data == "mnist":
        from verifier.datasets import load_mnist

        (xtr, ytr), (xte, yte) = load_mnist("train"), load_mnist("test")
        name = "mnist"
        xtr, xte = xtr.clamp(*clip), xte.clamp(*clip)
    else:
        if isinstance(data, (str, os.PathLike)):
            path = os.fspath(data)
            if not os.path.exists(path):
                raise DataError(f"--data {path}: file not found; {USAGE}")
            if os.path.isdir(path):
                raise DataError(f"--data {path}: is a folder; {USAGE}")
            if not path.endswith(".npz"):  # the rule `verifier certify` applies too
                raise DataError(f"--data {path}: must be mnist or an .npz file (name ending in .npz) with "
                                + ("x_train, y_train, x_test, y_test" if need_train else
                                   "x_test, y_test (x_train, y_train are not read)"))
            raw = _read_npz(path, need_train)
            name, source = os.path.basename(path), path
        elif isinstance(data, (tuple, list)) and len(data) == 4:
            raw, name, source = dict(zip(KEYS, data)), "arrays", "data arrays"
        elif isinstance(data, (tuple, list)) and len(data) == 2 and all(
                isinstance(d, torch.utils.data.Dataset) for d in data):
            (xtr, ytr), (xte, yte) = _from_dataset(data[0], "training"), _from_dataset(data[1], "test")
            raw, name, source = dict(zip(KEYS, (xtr, ytr, xte, yte))), "dataset", "data Datasets"
        else:
            raise VerifierInputError("data must be 'mnist', an .npz path, (x_train, y_train, x_test, y_test) or "
                                     "(train, test) Datasets")
        for key in KEYS:
            if not isinstance(raw[key], (np.ndarray, torch.Tensor, list, tuple)):
                raise DataError(f"{source}: {key} is a {type(raw[key]).__name__}, not an array")
        try:
            xtr, ytr = check_arrays(source, "x_train", raw["x_train"], "y_train", raw["y_train"], clip,
                                    allow_empty=not need_train)
        except DataError as exc:
            if need_train:
                raise
            # certification uses the test split only; a present training split is still checked
            raise DataError(f"{exc} (certification uses only x_test and y_test, but a training split in the "
                            f"file must be valid too: fix x_train/y_train or leave them out)") from None
        xte, yte = check_arrays(source, "x_test", raw["x_test"], "y_test", raw["y_test"], clip,
                                allow_empty=not need_test)
        check_same_sample_shape(source, xtr, xte)
    for option, count, held in (("--train-count", train_count, len(ytr)), ("--test-count", test_count, len(yte))):
        if count is not None and count > held and held > 0:
            _LOG.info("%s %d: %s holds %d samples; using all %d", option, count, name, held, held)
    if train_count is not None:
        xtr, ytr = xtr[:train_count], ytr[:train_count]
    if test_count is not None:
        xte, yte = xte[:test_count], yte[:test_count]
    return Data(xtr, ytr, xte, yte, name, tuple(clip))


def check_data(data: Data) -> Data:
    """A :class:`Data` built by the caller, checked like a loaded one (see :func:`load_data`)."""
    from .validation import check_arrays, check_same_sample_shape

    source = f"data '{data.name}'"
    xtr, ytr = check_arrays(source, "x_train", data.x_train, "y_train", data.y_train, data.clip)
    xte, yte = check_arrays(source, "x_test", data.x_test, "y_test", data.y_test, data.clip, allow_empty=True)
    check_same_sample_shape(source, xtr, xte)
    return Data(xtr, ytr, xte, yte, data.name, tuple(data.clip))
