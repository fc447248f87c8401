"""Architectures of the seed papers, built by name, with the input normalisation inside
the model (so ε is measured in the [0, 1] input space).

``Conv(c, k, s, p)``: ``c`` filters of ``k×k``, stride ``s``, padding ``p``; every layer but the
last is followed by a ReLU. Names (see :data:`ARCHITECTURES`, ``verifier train --model``):

* ``wong-kolter`` — seed 003's MNIST net: Conv(16,4,2,1), Conv(32,4,2,1), FC 100, FC 10
  (the shipped ``models/mnist_small.onnx``).
* ``dm-small``, ``dm-medium``, ``dm-large`` — Gowal et al.'s Small / Medium / Large as
  listed in seed 001 App. A (= seed 001's ``small``/``medium``/``large``, CROWN-IBP's DM-*):
  Small Conv(16,4,2,0), Conv(32,4,1,0), FC 100; Medium Conv(32,3,1,1), Conv(32,4,2,1),
  Conv(64,3,1,1), Conv(64,4,2,1), FC 512, FC 512; Large Conv(64,3,1,1), Conv(64,3,1,1),
  Conv(128,3,2,1), Conv(128,3,1,1), Conv(128,3,1,1), FC 512. ``seed001-small-star``,
  ``seed001-large-star``: the starred variants.
* ``crown-ibp-a``, ``crown-ibp-b`` — seed 004 Table 4 models A and B: Conv(4|8,4,2,1),
  Conv(8|16,4,2,1), FC 128|256.
* ``colt-mnist-0.1``, ``colt-mnist-0.3`` — seed 000 App. (MNIST): Conv(32,5,2,2),
  Conv(64|128,4,2,1), FC 100|250; ``colt-cifar``: Conv(32,3,1,1), Conv(32,4,2,1),
  Conv(128,4,2,1), FC 250.
* ``doublemargin-small`` — seed 002's "Small CNN" (the seed does not list its sizes; we use
  CNN-Cert's small CNN shape): Conv(16,4,2,1), Conv(32,4,1,1), FC 100.
* ``fc-W1-W2-…`` — a plain fully connected ReLU net with those hidden widths
  (e.g. ``fc-100-100``); ``fc-small`` = ``fc-100-100``.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn as nn

from verifier.errors import VerifierInputError

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


class Normalize(nn.Module):
    """``(x − mean) / std`` per channel (constants, exported as Sub/Div)."""

    def __init__(self, mean, std, channels: int):
        super().__init__()
        mean = torch.as_tensor(mean, dtype=torch.float32).reshape(-1)
        std = torch.as_tensor(std, dtype=torch.float32).reshape(-1)
        if mean.numel() == 1 and channels > 1:
            mean, std = mean.expand(channels), std.expand(channels)
        shape = (-1, 1, 1) if mean.numel() > 1 else ()
        self.register_buffer("mean", mean.reshape(shape) if shape else mean.reshape(()))
        self.register_buffer("std", std.reshape(shape) if shape else std.reshape(()))

    def forward(self, x):
        return (x - self.mean) / self.std


def _conv_stack(input_shape, convs, fcs, classes, mean, std) -> nn.Sequential:
    channels = input_shape[0]
    layers: list[nn.Module] = [Normalize(mean, std, channels)]
    c = channels
    for out, k, s, p in convs:
        layers += [nn.Conv2d(c, out, k, stride=s, padding=p), nn.ReLU()]
        c = out
    if len(input_shape) > 1:
        layers.append(nn.Flatten())
    with torch.no_grad():
        width = math.prod(nn.Sequential(*layers)(torch.zeros(1, *input_shape)).shape[1:])
    for h in fcs:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, classes))
    return nn.Sequential(*layers)


def _conv(convs, fcs):
    return lambda input_shape, classes, mean, std: _conv_stack(input_shape, convs, fcs, classes, mean, std)


ARCHITECTURES: dict[str, Callable] = {
    "wong-kolter": _conv([(16, 4, 2, 1), (32, 4, 2, 1)], [100]),
    "dm-small": _conv([(16, 4, 2, 0), (32, 4, 1, 0)], [100]),
    "dm-medium": _conv([(32, 3, 1, 1), (32, 4, 2, 1), (64, 3, 1, 1), (64, 4, 2, 1)], [512, 512]),
    "dm-large": _conv([(64, 3, 1, 1), (64, 3, 1, 1), (128, 3, 2, 1), (128, 3, 1, 1), (128, 3, 1, 1)], [512]),
    "seed001-small-star": _conv([(16, 4, 2, 0), (32, 4, 2, 0)], [100]),
    "seed001-large-star": _conv([(64, 3, 1, 1), (128, 3, 2, 1), (128, 3, 1, 1), (128, 3, 1, 1)], [512]),
    "crown-ibp-a": _conv([(4, 4, 2, 1), (8, 4, 2, 1)], [128]),
    "crown-ibp-b": _conv([(8, 4, 2, 1), (16, 4, 2, 1)], [256]),
    "colt-mnist-0.1": _conv([(32, 5, 2, 2), (64, 4, 2, 1)], [100]),
    "colt-mnist-0.3": _conv([(32, 5, 2, 2), (128, 4, 2, 1)], [250]),
    "colt-cifar": _conv([(32, 3, 1, 1), (32, 4, 2, 1), (128, 4, 2, 1)], [250]),
    "doublemargin-small": _conv([(16, 4, 2, 1), (32, 4, 1, 1)], [100]),
}
ALIASES = {"seed001-small": "dm-small", "seed001-medium": "dm-medium", "seed001-large": "dm-large",
           "dm-b": "crown-ibp-b", "model-b": "crown-ibp-b", "fc-small": "fc-100-100"}


def available() -> list[str]:
    return sorted(ARCHITECTURES) + sorted(ALIASES) + ["fc-W1-W2-..."]


def build_model(name: str, input_shape=(1, 28, 28), classes: int = 10, mean=None, std=None,
                seed: int | None = 0) -> nn.Sequential:
    """The architecture ``name`` for inputs ``input_shape`` (per sample) and ``classes``
    outputs; normalisation defaults to MNIST's (1 channel) or CIFAR's (3 channels), or
    the identity for flat inputs. ``seed`` fixes the initial weights."""
    name = ALIASES.get(name, name)
    input_shape = tuple(input_shape)
    if mean is None:
        if len(input_shape) == 3 and input_shape[0] == 1:
            mean, std = MNIST_MEAN, MNIST_STD
        elif len(input_shape) == 3 and input_shape[0] == 3:
            mean, std = CIFAR_MEAN, CIFAR_STD
        else:
            mean, std = 0.0, 1.0
    if seed is not None:
        torch.manual_seed(seed)
    if name.startswith("fc-"):
        try:
            widths = [int(w) for w in name[3:].split("-") if w]
        except ValueError:
            raise VerifierInputError(f"bad fully connected architecture '{name}' (use e.g. fc-100-100)") from None
        if any(w < 1 for w in widths):
            raise VerifierInputError(f"bad fully connected architecture '{name}': widths must be >= 1 (use e.g. fc-100-100)")
        layers: list[nn.Module] = [Normalize(mean, std, input_shape[0] if len(input_shape) == 3 else 1)]
        if len(input_shape) > 1:
            layers.append(nn.Flatten())
        width = math.prod(input_shape)
        for h in widths:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, classes))
        return nn.Sequential(*layers)
    if not isinstance(classes, int) or classes < 1:
        raise VerifierInputError(f"classes {classes!r}: must be an integer >= 1")
    if name not in ARCHITECTURES:
        raise VerifierInputError(f"--model '{name}': unknown architecture (and not an .onnx file); known: "
                                 f"{', '.join(available())}")
    if len(input_shape) != 3:
        raise VerifierInputError(f"architecture '{name}' is convolutional and needs (C, H, W) inputs, not {input_shape}")
    return ARCHITECTURES[name](input_shape, classes, mean, std)
