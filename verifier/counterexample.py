"""VNN-COMP result files: ``unsat``/``unknown``/``timeout``, or ``sat`` followed by the
assignment ``((X_0 v) … (Y_0 v) …)``."""

from __future__ import annotations

import os

from .attack import Counterexample
from .outputs import write_atomic


def format_result(status: str, counterexample: Counterexample | None = None) -> str:
    if status != "sat":
        return f"{status}\n"
    assert counterexample is not None, "a sat result always carries its counterexample"
    entries = [f"(X_{i} {float(v)!r})" for i, v in enumerate(counterexample.x.reshape(-1))]
    entries += [f"(Y_{j} {float(v)!r})" for j, v in enumerate(counterexample.y.reshape(-1))]
    return "sat\n(" + "\n ".join(entries) + ")\n"


def write_result(path: str | os.PathLike, status: str, counterexample: Counterexample | None = None) -> None:
    """Write the result file atomically (:func:`verifier.outputs.write_atomic`: a temporary file
    in the same folder renamed over ``path``), so a reader sees the old file or the whole new
    one, never a torn mix of two writers. Raises ``OSError`` from the file system."""
    write_atomic(path, format_result(status, counterexample))
