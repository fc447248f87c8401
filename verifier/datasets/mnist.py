"""Real MNIST from the idx files shipped in ``verifier/datasets/mnist``: 5,000 training
images (500 per class) and the full 10,000-image test set. Pixels scaled to [0, 1]."""

from __future__ import annotations

import gzip
import os
import struct

import numpy as np
import torch

from ..errors import VerifierInputError

HERE = os.path.join(os.path.dirname(__file__), "mnist")
FILES = {
    "train": ("train-5k-images-idx3-ubyte.gz", "train-5k-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def _read_idx(path: str, magic: int) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        data = fh.read()
    found, count = struct.unpack(">II", data[:8])
    if found != magic:
        raise VerifierInputError(f"{path} is not an idx file with magic {magic} (found {found})")
    if magic == 2051:
        rows, cols = struct.unpack(">II", data[8:16])
        return np.frombuffer(data, dtype=np.uint8, offset=16).reshape(count, rows, cols)
    return np.frombuffer(data, dtype=np.uint8, offset=8)


def load_mnist(split: str = "test", directory: str = HERE) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``(N, 1, 28, 28)`` float32 in [0, 1] and labels ``(N,)`` int64."""
    if split not in FILES:
        raise VerifierInputError(f"unknown MNIST split '{split}' (train or test)")
    images_file, labels_file = FILES[split]
    images = _read_idx(os.path.join(directory, images_file), 2051)
    labels = _read_idx(os.path.join(directory, labels_file), 2049)
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    return x, torch.from_numpy(labels.astype(np.int64))
