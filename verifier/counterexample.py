"""Counterexamples as ``verify`` reports them: the VNN-COMP result file (``unsat``/``unknown``/
``timeout``, or ``sat`` followed by the assignment ``((X_0 v) … (Y_0 v) …)``) and the text
summary of ``verify``'s output (:func:`describe_counterexample`)."""

from __future__ import annotations

import os

import numpy as np
import torch

from .attack import Counterexample
from .outputs import write_atomic
from .spec.model import Conjunction, InputRegion

LISTED_VALUES = 10  # inputs / outputs named one by one up to this many; more are summarised
LISTED_ROWS = 10  # rows of the satisfied disjunct printed


def format_result(status: str, counterexample: Counterexample | None = None) -> str:
    """The VNN-COMP result file's text: the verdict line, and for ``sat`` every input
    ``(X_i v)`` then every output ``(Y_j v)`` of ``counterexample`` (flattened, full
    precision: Python's shortest round-tripping repr of each float64)."""
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


def describe_counterexample(counterexample: Counterexample, region: InputRegion) -> list[str]:
    """The text lines ``verify`` prints for a ``sat`` verdict, before ``time:``: the input
    (each ``X_i`` for at most :data:`LISTED_VALUES` inputs, else their range, their L∞
    distance from the centre of ``region``'s box and how many lie on a face of the box),
    onnxruntime's outputs (each ``Y_j`` up to :data:`LISTED_VALUES`, else those the satisfied
    disjunct names, or the first :data:`LISTED_VALUES` where it names none), and the first
    disjunct of ``region``'s unsafe set that the outputs satisfy, each row ``A_i y ≤ b_i``
    (``<`` where strict) with its value. The values are rounded (9 significant digits); the
    result file and ``--json`` carry them exactly.

    ``counterexample.x`` ``(n_inputs,)`` and ``.y`` ``(n_outputs,)`` (any shape, flattened)
    are what onnxruntime ran and returned; ``region`` is the spec's input region
    ``counterexample.region_index``. Raises nothing for a well-formed pair; should no
    disjunct hold in float64 (the attack confirmed one), the last line says so."""
    x = np.asarray(counterexample.x, dtype=np.float64).reshape(-1)
    y = np.asarray(counterexample.y, dtype=np.float64).reshape(-1)
    if x.size <= LISTED_VALUES:
        lines = ["counterexample input: " + ", ".join(f"X_{i} = {v + 0.0:.9g}" for i, v in enumerate(x))]
    else:
        lower = region.lower.reshape(-1).double().cpu().numpy()
        upper = region.upper.reshape(-1).double().cpu().numpy()
        distance = np.abs(x - (lower + upper) / 2).max()
        on_face = int(((x == lower) | (x == upper)).sum())
        lines = [f"counterexample input: {x.size} values X_0..X_{x.size - 1} in [{x.min():.6g}, {x.max():.6g}], "
                 f"at most {distance:.6g} from the box centre (L∞), {on_face} on a face of the box "
                 f"(every value: --result-file or --json)"]
    disjunct = _satisfied_disjunct(region, y)
    named = [] if disjunct is None else torch.nonzero(region.disjuncts[disjunct].A.abs().sum(0)).reshape(-1).tolist()
    shown = range(y.size) if y.size <= LISTED_VALUES else (named or range(LISTED_VALUES))
    lines.append("counterexample output (onnxruntime): " + ", ".join(f"Y_{j} = {y[j] + 0.0:.9g}" for j in shown)
                 + ("" if len(shown) == y.size else f" ({'' if named else 'first '}{len(shown)} of {y.size} outputs)"))
    if disjunct is None:  # confirmed by the attack in float64: only a bug gets here
        lines.append("unsafe outputs: no disjunct of the spec holds for these outputs in float64")
        return lines
    conj = region.disjuncts[disjunct]
    if not bool(conj.A.any()):  # a spec without output assertions: the whole output space is unsafe
        lines.append(f"unsafe outputs (disjunct {disjunct} of {len(region.disjuncts)} holds): it constrains no "
                     f"output, so every output is unsafe")
        return lines
    rows = [_row_text(conj, i, y) for i in range(min(len(conj.b), LISTED_ROWS))]
    more = f"; and {len(conj.b) - len(rows)} more rows" if len(conj.b) > len(rows) else ""
    lines.append(f"unsafe outputs (disjunct {disjunct} of {len(region.disjuncts)} holds): " + "; ".join(rows) + more)
    return lines


def _satisfied_disjunct(region: InputRegion, y: np.ndarray) -> int | None:
    """The index of the first disjunct of ``region`` that ``y`` ``(n_outputs,)`` satisfies
    exactly as written (:meth:`Conjunction.holds`), or ``None``."""
    yt = torch.as_tensor(y, dtype=torch.float64).reshape(1, -1)
    for index, conj in enumerate(region.disjuncts):
        if bool(conj.holds(yt)[0]):
            return index
    return None


def _row_text(conj: Conjunction, i: int, y: np.ndarray) -> str:
    """Row ``i`` of ``conj`` (``A_i y ≤ b_i``, ``<`` where strict) with its left side's value
    at ``y``, as ``Y_0 - Y_1 = 1.38 >= 0``: a row whose first coefficient is negative is
    shown negated (``≥``), as VNN-LIB files usually write it."""
    a, b = conj.A[i].double().cpu().numpy(), float(conj.b[i])
    strict = conj.strict is not None and bool(conj.strict[i])
    nonzero = np.flatnonzero(a)
    flip = nonzero.size > 0 and a[nonzero[0]] < 0
    if flip:
        a, b = -a, -b
    terms = []
    for k, j in enumerate(nonzero):
        c = float(a[j])
        term = ("" if abs(c) == 1 else f"{abs(c):g}·") + f"Y_{j}"
        terms.append(("-" if c < 0 else "") + term if k == 0 else ("- " if c < 0 else "+ ") + term)
    relation = (">" if flip else "<") + ("" if strict else "=")
    return f"{' '.join(terms) or '0'} = {float(a @ y) + 0.0:.9g} {relation} {b + 0.0:.9g}"
