"""VNN-COMP result files: ``unsat``/``unknown``/``timeout``, or ``sat`` followed by the
assignment ``((X_0 v) … (Y_0 v) …)``."""

from __future__ import annotations

import os

from .attack import Counterexample


def format_result(status: str, counterexample: Counterexample | None = None) -> str:
    if status != "sat":
        return f"{status}\n"
    assert counterexample is not None, "a sat result always carries its counterexample"
    entries = [f"(X_{i} {float(v)!r})" for i, v in enumerate(counterexample.x.reshape(-1))]
    entries += [f"(Y_{j} {float(v)!r})" for j, v in enumerate(counterexample.y.reshape(-1))]
    return "sat\n(" + "\n ".join(entries) + ")\n"


def write_result(path: str | os.PathLike, status: str, counterexample: Counterexample | None = None) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(format_result(status, counterexample))
