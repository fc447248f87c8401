"""The VNN-LIB reader's lexical rules: numbers, variable names, and how a token is shown
in an error message. Used by :mod:`verifier.spec.vnnlib`.

**Numbers** match ``[+-]? (digits [. digits?] | . digits) ([eE] [+-]? digits)?`` and are
read as the nearest float64. A number is refused (:func:`read_number` returns ``None``)
when it overflows float64 (``1e400``) or when it *underflows*: a literal with a nonzero
digit whose nearest float64 is zero (``1e-400``). Reading ``1e-400`` as ``0`` would
silently change the property (``Y_0 < 1e-400`` would become ``Y_0 < 0``, and
``X_0 >= 1e-400`` would admit ``X_0 = 0``), so it is an error, like overflow. Numbers
that round to a nonzero subnormal are accepted (rounding, not a change of sign or of
zero-ness).

**Variables** are ``X_i``/``Y_j`` with ``i`` written without leading zeros (``X_0``,
``X_12``; ``X_00`` and ``X_012`` are refused rather than read as ``X_0``/``X_12``).
"""

from __future__ import annotations

import math
import re

NUM = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
NUMBER = re.compile(rf"^{NUM}$")
IDX = r"(0|[1-9][0-9]{0,8})"  # a variable index: no leading zero, at most 9 digits
VAR = re.compile(rf"^([XY])_{IDX}$")
VAR_DECLARED = re.compile(r"^([XY])_([0-9]+)$")
SIMPLE_DECLARE = re.compile(r"^\s*\(\s*declare-const\s+([XY])_([0-9]{1,9})\s+Real\s*\)\s*$")
SIMPLE_ASSERT = re.compile(rf"^\s*\(\s*assert\s*\(\s*(<=|>=|<|>)\s+([XY])_{IDX}\s+({NUM})\s*\)\s*\)\s*$")
# One scanner step: a comparison of one variable with one number (read without a tree),
# or a single token. (\b-free: an index with a leading zero fails the comparison pattern
# and is read token by token, where it is refused with its own message.)
SCAN = re.compile(rf"\(\s*(<=|>=|<|>|=)\s+([XY])_{IDX}\s+({NUM})\s*\)|(\()|(\))|([^\s()]+)")
LINE_ATOM = re.compile(rf"\s*\(\s*(<=|>=|<|>|=)\s+([XY])_{IDX}\s+({NUM})\s*\)\s*$").match
_NONZERO_DIGIT = re.compile(r"[1-9]")


def underflows(text: str, value: float) -> bool:
    """Whether the number literal ``text`` is nonzero but its float64 ``value`` is 0."""
    if value != 0.0:
        return False
    mantissa = text.split("e", 1)[0].split("E", 1)[0]
    return _NONZERO_DIGIT.search(mantissa) is not None


def read_number(text: str) -> float | None:
    """``text`` (already known to match :data:`NUM`) as a float64, or ``None`` if it
    overflows (non-finite) or underflows to zero (see the module docstring)."""
    value = float(text)
    if value - value != 0.0 or (value == 0.0 and underflows(text, value)):
        return None
    return value


def number(word: str) -> float | None:
    """``word`` as a float if it is a VNN-LIB number representable in float64, else ``None``."""
    if not NUMBER.match(word):
        return None
    return read_number(word)


def range_problem(word: str) -> str:
    """Why the VNN-LIB number ``word`` has no float64 value: overflow or underflow."""
    value = float(word)
    if not math.isfinite(value):
        return "is out of the range of float64 (overflow)"
    return ("underflows to 0 in float64 (its magnitude is below the smallest float64, about 4.9e-324); "
            "write 0 if zero is meant")


def leading_zero(word: str) -> bool:
    """Whether ``word`` is a variable name ``X_0…``/``Y_0…`` with a leading zero in its index."""
    m = VAR_DECLARED.match(word)
    return m is not None and len(m.group(2)) > 1 and m.group(2)[0] == "0"


def shown(text: str) -> str:
    """``text`` with invisible and control characters (a byte-order mark, zero-width or
    non-breaking spaces, tabs) escaped as in ``repr``, so that an error message shows
    exactly what the file holds, on one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
