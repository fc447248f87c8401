"""Datasets for training: the shipped MNIST idx files, numpy arrays, ``.npz`` files or any
torch ``Dataset`` of ``(x, y)`` pairs. Inputs are in the model's valid input range
(``clip``, default [0, 1]); normalisation lives inside the model."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from verifier.errors import VerifierInputError


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
        return int(max(self.y_train.max(), self.y_test.max())) + 1


def _tensors(x, y) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.as_tensor(np.asarray(x), dtype=torch.float32), torch.as_tensor(np.asarray(y), dtype=torch.int64)


def _from_dataset(ds) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*[ds[i] for i in range(len(ds))])
    return torch.stack([torch.as_tensor(x, dtype=torch.float32) for x in xs]), torch.as_tensor([int(y) for y in ys])


def load_data(data="mnist", train_count: int | None = None, test_count: int | None = None,
              clip: tuple[float, float] = (0.0, 1.0)) -> Data:
    """``data``: ``"mnist"`` (5,000 shipped training images, the 10,000 test images), an
    ``.npz`` path with ``x_train, y_train, x_test, y_test``, a tuple of those four arrays,
    or a pair of torch Datasets ``(train, test)``. The first ``train_count``/``test_count``
    samples are kept."""
    if isinstance(data, str) and data == "mnist":
        from verifier.datasets import load_mnist

        (xtr, ytr), (xte, yte) = load_mnist("train"), load_mnist("test")
        name = "mnist"
    elif isinstance(data, (str, os.PathLike)):
        if not os.path.exists(data):
            raise VerifierInputError(f"dataset '{data}' not found (use 'mnist' or an .npz with x_train, y_train, x_test, y_test)")
        arrays = np.load(data)
        missing = {"x_train", "y_train", "x_test", "y_test"} - set(arrays.files)
        if missing:
            raise VerifierInputError(f"{data} lacks arrays {sorted(missing)}")
        (xtr, ytr), (xte, yte) = _tensors(arrays["x_train"], arrays["y_train"]), _tensors(arrays["x_test"], arrays["y_test"])
        name = os.path.basename(str(data))
    elif isinstance(data, tuple) and len(data) == 4:
        (xtr, ytr), (xte, yte) = _tensors(data[0], data[1]), _tensors(data[2], data[3])
        name = "arrays"
    elif isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], torch.utils.data.Dataset):
        (xtr, ytr), (xte, yte) = _from_dataset(data[0]), _from_dataset(data[1])
        name = "dataset"
    else:
        raise VerifierInputError("data must be 'mnist', an .npz path, (x_train, y_train, x_test, y_test) or (train, test) Datasets")
    xtr, xte = xtr.clamp(*clip), xte.clamp(*clip)
    if train_count is not None:
        xtr, ytr = xtr[:train_count], ytr[:train_count]
    if test_count is not None:
        xte, yte = xte[:test_count], yte[:test_count]
    return Data(xtr, ytr, xte, yte, name, tuple(clip))
