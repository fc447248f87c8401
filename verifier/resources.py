"""Memory a computation may take before it starts: on the CPU an allocation beyond the
machine's memory is not an exception but the kernel's OOM killer, so a domain whose state
grows with the model (DeepZ's generators: symbols × values) checks its next allocation
here and refuses with a clear message instead."""

from __future__ import annotations

import os

import torch

from .errors import VerifierInputError

SHARE = 0.5  # of the memory available now that one allocation may take


def available_bytes(device: torch.device | str) -> int | None:
    """Bytes free now on ``device``: CUDA's free memory, else the host's ``MemAvailable``
    (Linux ``/proc/meminfo``); ``None`` where unknown (then nothing is refused)."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def require_memory(elements: int, dtype: torch.dtype, device: torch.device | str, what: str, advice: str) -> None:
    """Raise :class:`VerifierInputError` when ``elements`` values of ``dtype`` exceed
    :data:`SHARE` of the memory available on ``device`` (``what`` names the tensor,
    ``advice`` what to do instead)."""
    need = elements * torch.tensor([], dtype=dtype).element_size()
    free = available_bytes(device)
    if free is None or need <= SHARE * free:
        return
    raise VerifierInputError(f"{what} would take {need / 2**30:.1f} GiB, more than half of the "
                             f"{free / 2**30:.1f} GiB available; {advice}")


__all__ = ["SHARE", "available_bytes", "require_memory"]
