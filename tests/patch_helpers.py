"""Shared by the patch-form tests (test_backward_speed_parts, test_patch_transposed): a
random box around a normal sample, the ``dense`` switch that turns the patch path off,
and a counter of a function's calls."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import verifier.domains.backward as backward
import verifier.domains.patches as patches


def random_box(model, rng: np.random.Generator, batch: int, width: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(lower, upper)`` ``(batch, *input_shape)`` float64: a box of ``width`` around a
    standard normal sample."""
    x = torch.as_tensor(rng.normal(0, 1, (batch, *model.input_shape)), dtype=torch.float64)
    return x - width / 2, x + width / 2


def count_calls(monkeypatch, owner, name: str, real) -> list[int]:
    """Replace ``owner.name`` by ``real`` counted; returns the one-element call counter."""
    calls = [0]

    def counting(*args, **kwargs):
        calls[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, counting)
    return calls


@pytest.fixture
def dense(monkeypatch):
    """Switch the patch path off (every pass dense) inside a ``with dense():`` block."""
    class Switch:
        def __enter__(self):
            monkeypatch.setattr(backward, "patchable", lambda *a: False)

        def __exit__(self, *exc):
            monkeypatch.setattr(backward, "patchable", patches.patchable)

    return Switch
