"""One BLAS thread while the checker runs.

The checker's matrix products are many and small; OpenBLAS's worker threads spin while
waiting, and on a loaded machine (or beside torch's own threads) that made checking 5×
slower than one thread (ACAS Xu: 41 s against 8 s). :func:`single_thread` sets numpy's
OpenBLAS to one thread through its exported ``*_set_num_threads*`` function (looked up in
the loaded library, as threadpoolctl does) and restores the count afterwards; where no
such library is loaded it does nothing. Results do not depend on it: every bound is
rounded outward whatever the summation order.
"""

from __future__ import annotations

import ctypes
import re
from contextlib import contextmanager
from typing import Iterator


def _openblas():
    """``(set, get)`` functions of the loaded OpenBLAS, or ``None``."""
    try:
        with open("/proc/self/maps") as fh:
            paths = sorted(set(re.findall(r"(/\S*openblas\S*\.so\S*)", fh.read())))
    except OSError:
        return None
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for suffix in ("64_", ""):
            for prefix in ("scipy_openblas", "openblas"):
                setter = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
                getter = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
                if setter is not None and getter is not None:
                    return setter, getter
    return None


@contextmanager
def single_thread() -> Iterator[None]:
    """Run the block with one OpenBLAS thread (module docstring)."""
    import numpy  # noqa: F401  (loads the BLAS)

    found = _openblas()
    if found is None:
        yield
        return
    setter, getter = found
    before = int(getter())
    setter(ctypes.c_int(1))
    try:
        yield
    finally:
        setter(ctypes.c_int(before))
