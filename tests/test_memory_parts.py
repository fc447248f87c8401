"""Batches that do not fit in memory are bounded in parts, in order, instead of crashing."""

import pytest
import torch

from verifier.complete.memory import bound_in_parts


def test_out_of_memory_splits_the_batch_and_keeps_order():
    sizes = []

    def fn(index):
        sizes.append(len(index))
        if len(index) > 3:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 bytes")
        return index * 2

    out = bound_in_parts(fn, 10, lambda parts: torch.cat(parts))
    assert out.tolist() == [2 * i for i in range(10)]
    assert sizes == [10, 5, 2, 2, 2, 2, 2]  # halved until it fits, then the rest in parts of that size


def test_other_errors_propagate():
    def fn(index):
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        bound_in_parts(fn, 4, lambda parts: parts)


def test_a_single_item_that_does_not_fit_raises():
    def fn(index):
        raise MemoryError()

    with pytest.raises(MemoryError):
        bound_in_parts(fn, 3, lambda parts: parts)
