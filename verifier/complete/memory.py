"""Bounding a batch within memory: when one call runs out of memory, the batch is split
in halves (recursively) instead of crashing."""

from __future__ import annotations

from typing import Callable, TypeVar

import torch

T = TypeVar("T")


def _is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc)
    return isinstance(exc, (RuntimeError, MemoryError)) and (
        isinstance(exc, MemoryError) or "out of memory" in text or "can't allocate memory" in text
        or "not enough memory" in text)


def bound_in_parts(fn: Callable[[torch.Tensor], T], count: int, merge: Callable[[list[T]], T]) -> T:
    """``fn(index)`` on ``index = arange(count)``, or on consecutive parts of it that fit
    in memory, merged with ``merge`` (results in index order)."""
    limit = count
    parts, start = [], 0
    while start < count:
        size = min(limit, count - start)
        index = torch.arange(start, start + size)
        try:
            parts.append(fn(index))
        except (RuntimeError, MemoryError) as exc:
            if not _is_out_of_memory(exc) or size <= 1:
                raise
            limit = max(1, size // 2)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            continue
        start += size
    return parts[0] if len(parts) == 1 else merge(parts)
