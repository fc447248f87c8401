"""VNN-LIB disjuncts while they are read, and the regions they become.

:class:`ConjunctionBuilder` collects one disjunct's input bounds (as parallel arrays of
entries) and output rows; :func:`build_spec` multiplies the file's disjunctive asserts
out, takes each disjunct's tightest bound per input side, refuses missing bounds and
empty ranges (naming the variable and lines), and groups disjuncts that share a box into
:class:`~verifier.spec.model.InputRegion` s. The reader itself is
:mod:`verifier.spec.vnnlib`.
"""

from __future__ import annotations

import itertools
from typing import Iterable

import numpy as np
import torch

from ..errors import SpecError
from .model import Conjunction, InputRegion, Spec

UPPER, STRICT = 1, 2  # bit flags of a bound entry


class ConjunctionBuilder:
    """One disjunct being built: input-bound entries (numpy arrays once frozen) and output
    rows ``(coefs {j: a}, rhs, strict, line)`` meaning ``Σ a·Y_j ≤ rhs`` (``<`` if strict).

    Bound entries are parallel sequences ``idx`` (input index), ``val``, ``flag``
    (``UPPER``/``STRICT`` bits) and ``line``; the tightest per side wins when the
    disjunct's box is built."""

    __slots__ = ("idx", "val", "flag", "line", "rows", "start")

    def __init__(self, start: int):
        self.idx: list | np.ndarray = []
        self.val: list | np.ndarray = []
        self.flag: list | np.ndarray = []
        self.line: list | np.ndarray = []
        self.rows: list = []
        self.start = start

    def add_bound(self, i: int, value: float, upper: bool, strict: bool, line: int) -> None:
        self.idx.append(i)
        self.val.append(value)
        self.flag.append((UPPER if upper else 0) | (STRICT if strict else 0))
        self.line.append(line)

    def extend(self, other: "ConjunctionBuilder") -> None:
        self.idx.extend(other.idx)
        self.val.extend(other.val)
        self.flag.extend(other.flag)
        self.line.extend(other.line)
        self.rows.extend(other.rows)

    def freeze(self) -> "ConjunctionBuilder":
        self.idx = np.asarray(self.idx, dtype=np.int32)
        self.val = np.asarray(self.val, dtype=np.float64)
        self.flag = np.asarray(self.flag, dtype=np.int8)
        self.line = np.asarray(self.line, dtype=np.int32)
        return self

    @staticmethod
    def merged(parts: Iterable["ConjunctionBuilder"], start: int) -> "ConjunctionBuilder":
        """The conjunction of frozen ``parts`` (frozen)."""
        parts = list(parts)
        out = ConjunctionBuilder(start)
        out.idx = np.concatenate([p.idx for p in parts]) if parts else np.zeros(0, np.int32)
        out.val = np.concatenate([p.val for p in parts]) if parts else np.zeros(0)
        out.flag = np.concatenate([p.flag for p in parts]) if parts else np.zeros(0, np.int8)
        out.line = np.concatenate([p.line for p in parts]) if parts else np.zeros(0, np.int32)
        out.rows = [r for p in parts for r in p.rows]
        return out


def build_spec(source: str, declared: dict[str, set[int]], common: "ConjunctionBuilder",
               disjunctive: list[list["ConjunctionBuilder"]]) -> Spec:
    """The spec of a file's asserts: ``common`` (the conjoined single-disjunct asserts) and
    each disjunctive assert's DNF, multiplied out; disjuncts sharing a box (strict sides
    included) are grouped into one :class:`InputRegion`.

    Raises :class:`SpecError` for undeclared or gapped variables, an input without a
    finite bound on both sides, or an empty input range, i.e. one holding no float64
    number (``lower > upper``, a strict side at ``lower == upper``, or an open interval
    between adjacent floats such as ``(0.1, 0.10000000000000002)``), naming the variable
    and the lines of its bounds; the result has passed :meth:`Spec.validate`."""
    for kind in "XY":
        ids = declared[kind]
        if not ids:
            raise SpecError(f"{source}: no {kind}_ variables declared")
        if ids != set(range(len(ids))):
            missing = min(set(range(len(ids))) - ids)
            raise SpecError(f"{source}: {kind}_ variables must be numbered 0..n-1 without gaps "
                            f"({kind}_{missing} is not declared)")
    nx, ny = len(declared["X"]), len(declared["Y"])
    base = common.freeze()
    base.start = None  # the top-level asserts: no single line to name
    regions: dict[bytes, InputRegion] = {}
    for combo in itertools.product(*disjunctive):
        conj = ConjunctionBuilder.merged((base, *combo), combo[0].start) if combo else base
        lower, lstrict, upper, ustrict = _box(conj, nx, source)
        key = b"".join((lower.tobytes(), upper.tobytes(), lstrict.tobytes(), ustrict.tobytes()))
        region = regions.get(key)
        if region is None:
            region = regions[key] = InputRegion(torch.from_numpy(lower), torch.from_numpy(upper), [],
                                                torch.from_numpy(lstrict), torch.from_numpy(ustrict))
        region.disjuncts.append(_conjunction(conj, ny))
    spec = Spec(list(regions.values()), nx, ny, source)
    spec.validate()
    return spec

def _box(conj: "ConjunctionBuilder", nx: int, source: str):
    """The tightest bounds per side (``lower, lower_strict, upper, upper_strict``); errors
    for a missing bound or an empty range, naming the variable and lines."""
    side = (conj.flag & UPPER) != 0
    strict = (conj.flag & STRICT) != 0
    out = []
    lines = []
    for want_upper in (False, True):
        sel = side == want_upper
        idx, val, st, ln = conj.idx[sel], conj.val[sel], strict[sel], conj.line[sel]
        key = -val if want_upper else val  # larger key = tighter bound; ties: strict wins
        order = np.lexsort((st, key, idx))
        idx, val, st, ln = idx[order], val[order], st[order], ln[order]
        last = np.ones(len(idx), dtype=bool)
        last[:-1] = idx[1:] != idx[:-1]
        values = np.full(nx, np.inf if want_upper else -np.inf)
        flags = np.zeros(nx, dtype=bool)
        where = np.zeros(nx, dtype=np.int64)
        values[idx[last]], flags[idx[last]], where[idx[last]] = val[last], st[last], ln[last]
        out += [values, flags]
        lines.append(where)
    lower, lstrict, upper, ustrict = out
    missing = np.nonzero(np.isinf(lower) | np.isinf(upper))[0]
    if len(missing):
        i = int(missing[0])
        which = "lower" if np.isinf(lower[i]) else "upper"
        message = (f"input X_{i} has no {which} bound{' in the disjunct starting here' if conj.start else ''} "
                   f"(every input needs a finite lower and upper bound: not bounded on both sides)")
        if conj.start is None:
            raise SpecError(f"{source}: {message}")
        raise SpecError(f"{source}:{conj.start}: {message}")
    # empty in float64: no float64 x with lower ≤ x ≤ upper (< where a side is strict); this
    # includes lower > upper and open intervals between adjacent floats such as (0.1, 0.1 + ulp)
    with np.errstate(over="ignore"):  # next after ±max is ±inf: no finite float there, as meant
        first = np.where(lstrict, np.nextafter(lower, np.inf), lower)
        last = np.where(ustrict, np.nextafter(upper, -np.inf), upper)
    bad = np.nonzero(first > last)[0]
    if len(bad):
        i = int(bad[0])
        lo_line, hi_line = int(lines[0][i]), int(lines[1][i])
        lo_op, hi_op = (">" if lstrict[i] else ">="), ("<" if ustrict[i] else "<=")
        why = ("the lower bound must not exceed the upper" if lower[i] > upper[i] else
               "no float64 number lies in this range (a strict side excludes its endpoint and there is no "
               "float64 between the bounds); widen it or make it non-strict")
        raise SpecError(f"{source}:{max(lo_line, hi_line)}: input X_{i} has an empty range: "
                        f"({lo_op} X_{i} {float(lower[i])!r}) at line {lo_line} and ({hi_op} X_{i} "
                        f"{float(upper[i])!r}) at line {hi_line}; {why}")
    return lower + 0.0, lstrict, upper + 0.0, ustrict  # + 0.0: -0.0 and 0.0 group together

def _conjunction(conj: "ConjunctionBuilder", ny: int) -> Conjunction:
    rows = conj.rows or [({}, 0.0, False, conj.start)]  # no output condition: all of the box is unsafe
    A = torch.zeros(len(rows), ny, dtype=torch.float64)
    b = torch.empty(len(rows), dtype=torch.float64)
    strict = torch.zeros(len(rows), dtype=torch.bool)
    for r, (coefs, rhs, st, _) in enumerate(rows):
        for j, a in coefs.items():
            A[r, j] += a
        b[r] = rhs
        strict[r] = st
    return Conjunction(A, b, strict)
