"""A reader for VNN-LIB v1 (the VNN-COMP dialect).

Grammar handled: ``(declare-const X_i Real)``/``(declare-const Y_j Real)``, and
``(assert F)`` where ``F`` is ``(and F…)``, ``(or F…)`` or a comparison
``(<=|>=|<|>|= t t)`` between linear terms (numbers, variables, ``+``, ``-``, ``*`` by a
constant, ``/`` by a constant). ``set-logic``, ``set-info``, ``set-option``, ``check-sat``,
``get-model`` and ``exit`` are skipped. Variables must be declared before they are used
(as SMT-LIB requires) and numbered ``X_0..X_{n-1}``, ``Y_0..Y_{m-1}`` without gaps.

**Numbers.** A number is ``[+-]? (digits [. digits?] | . digits) ([eE] [+-]? digits)?``:
SMT-LIB numerals and decimals, plus what VNN-COMP files contain (a leading sign, scientific
notation such as ``1e-05`` or ``1.5E+3``, and ``5.``/``.5``). Everything else is an error
naming the file and line: ``1.2.3``, ``.``, ``nan``, ``inf``, ``infinity``, ``1_000``, hex,
and numbers (or arithmetic results) that overflow float64 or underflow to 0 (``1e-400``:
read as 0 it would change ``Y_0 < 1e-400`` into ``Y_0 < 0``); see
:mod:`verifier.spec.vnnlib_tokens`.

**Variables** ``X_i``/``Y_j`` are declared once each, with indices written without leading
zeros (``X_00`` is refused, not read as ``X_0``). Error messages show invisible characters
(a byte-order mark, zero-width spaces) escaped, e.g. ``'\\ufeffdeclare-const'``.

**Strictness.** ``<`` and ``>`` are recorded: an output row written strictly has its flag
set in :attr:`Conjunction.strict`, and an input side whose tightest bound came from a strict
atom has its flag set in :attr:`InputRegion.lower_strict`/``upper_strict`` (``(= a b)`` is
two non-strict rows). For *bounding*, strict and non-strict are treated alike (the VNN-COMP
convention), which only enlarges the unsafe set and is sound for ``unsat``; a counterexample
is confirmed against the file as written, strictly where it says strict
(:meth:`Conjunction.holds`, :meth:`InputRegion.contains`).

**What is validated.** Every input of every disjunct needs a finite lower and upper bound
with ``lower ≤ upper`` (``<`` where a side is strict); an empty input range is an error
naming the variable and the lines of both bounds, never a silently dropped disjunct.
Contradictory *output* constraints are legal (they make the property ``unsat``); a
comparison between constants that is false becomes the row ``0 ≤ −1`` (never satisfied).
The parsed spec passes :meth:`Spec.validate`, so it always has at least one region.

The asserts are conjoined and brought to disjunctive normal form (at most
:data:`~verifier.spec.vnnlib_parser.MAX_DISJUNCTS` disjuncts, counted while reading so that a huge file stops early);
each disjunct must constrain inputs only through bounds ``a·X_i ⋈ c`` and outputs through
linear inequalities. Disjuncts sharing an input box (including its strict sides) are
grouped into one :class:`~verifier.spec.model.InputRegion`.

The file is read line by line with an explicit stack (no recursion, so nesting depth is
limited only by memory), comparisons of one variable with one number are read without
building an expression tree, and each conjunction's bounds are kept as numpy arrays.

(The ``vnnlib`` package on PyPI, 1.0.2, was evaluated first: it implements the VNN-LIB 2
grammar and rejects every VNN-COMP v1 file, so this module reads them itself.)

**Version.** :func:`read_vnnlib` and :func:`parse_vnnlib` read VNN-LIB 2.0 files too: a text
whose first form is ``(vnnlib-version …)`` or ``(declare-network …)`` goes to
:mod:`verifier.spec.vnnlib2` (through that package, into the same :class:`Spec`).
"""

from __future__ import annotations

import gzip
import io
import itertools
import os
import zlib

from ..errors import SpecError
from .model import Spec
from .vnnlib_parser import Parser, parse_lines

_HEAD_CHARS = 1 << 16  # how much of a text is searched for its first form (the version check)


def parse_vnnlib(text: str, source: str = "<vnnlib>") -> Spec:
    """Parse VNN-LIB text into a :class:`Spec` (see the module docstring).

    Raises :class:`SpecError` naming ``source:line`` for anything malformed or outside the
    supported fragment; the returned spec has passed :meth:`Spec.validate`. VNN-LIB 2.0
    text (:func:`~verifier.spec.vnnlib2.is_vnnlib2`) goes to :mod:`verifier.spec.vnnlib2`."""
    from .vnnlib2 import is_vnnlib2, parse_vnnlib2

    if is_vnnlib2(text[:_HEAD_CHARS]):
        return parse_vnnlib2(text, source)
    return parse_lines(io.StringIO(text), source)


def _not_utf8(path: str) -> str:
    """The message for a file that is not UTF-8, naming the line of the first bad byte."""
    try:
        with (gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")) as fh:
            data = fh.read()
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        return f"{path}:{line}: the spec file is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})"
    except (OSError, EOFError, zlib.error):
        pass
    return f"{path}: the spec file is not UTF-8 text"


def read_vnnlib(path: str | os.PathLike) -> Spec:
    """Read a ``.vnnlib`` file, or a gzip-compressed ``.vnnlib.gz``, as UTF-8 text line by
    line (see :func:`parse_vnnlib`).

    Raises :class:`SpecError` naming the file when it is missing, a folder, unreadable, not
    valid gzip or not UTF-8, and naming ``file:line`` for malformed content."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise SpecError(f"spec file not found: {path}")
    if os.path.isdir(path):
        raise SpecError(f"spec path {path} is a folder; expected a .vnnlib file")
    parser = Parser(path)
    try:
        if path.endswith(".gz"):
            fh = gzip.open(path, "rt", encoding="utf-8", newline=None)
        else:
            fh = open(path, encoding="utf-8")
        with fh:
            lines = _bounded_lines(fh, path)
            head = _head_lines(lines)
            from .vnnlib2 import is_vnnlib2, parse_vnnlib2

            if is_vnnlib2("".join(head)):  # VNN-LIB 2.0: read through the vnnlib package
                text = "".join(itertools.chain(head, lines))
            else:
                parser.feed(itertools.chain(head, lines))
                text = None
    except UnicodeDecodeError:
        raise SpecError(_not_utf8(path)) from None
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise SpecError(f"cannot read spec file {path}: {exc}") from None
    return parser.finish() if text is None else parse_vnnlib2(text, path)


PARSE_BYTES_PER_CHAR = 16  # memory the readers take per character of one line (measured: > 10)


def _bounded_lines(fh, path: str):
    """The lines of ``fh``, each read with a length limit: a line whose parse would not fit
    in the memory available now (:data:`PARSE_BYTES_PER_CHAR` per character) raises
    :class:`SpecError` naming ``path:line`` before it is read whole (a 2 GB file without a
    newline exhausted the machine's memory). Where the free memory is unknown, no limit."""
    from ..resources import available_bytes

    free = available_bytes("cpu")
    limit = None if free is None else max(1 << 20, free // PARSE_BYTES_PER_CHAR)
    number = 0
    while True:
        line = fh.readline() if limit is None else fh.readline(limit + 1)
        if not line:
            return
        number += 1
        if limit is not None and len(line) > limit:
            raise SpecError(f"{path}:{number}: a line longer than {limit:,} characters; reading it would need "
                            f"more memory than is available ({free / 2**30:.1f} GiB free). VNN-LIB files are "
                            f"line-oriented: break the line, or free memory")
        yield line


def _head_lines(fh) -> list[str]:
    """The lines of ``fh`` up to and including its first one with content (not blank, not
    only a ``;`` comment), or all of them; the version check reads these."""
    head = []
    for line in fh:
        head.append(line)
        if line.split(";", 1)[0].strip().lstrip("\ufeff"):
            break
    return head
