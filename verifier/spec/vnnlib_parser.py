"""The VNN-LIB v1 reader's parser (:mod:`verifier.spec.vnnlib` reads the file and
documents the grammar): an explicit stack of :class:`Frame` s fed line by line, with fast
paths for the lines that make up the bulk of VNN-COMP files (a comparison of one variable
with one number, a one-line declaration or bound), conjunctions merged as they close and
disjunctions counted against :data:`MAX_DISJUNCTS` while reading.

Every problem raises :class:`~verifier.errors.SpecError` naming ``source:line``.
"""

from __future__ import annotations

import itertools
import math
from typing import Iterable

from ..errors import SpecError
from .model import Spec
from .vnnlib_regions import STRICT as _STRICT, UPPER as _UPPER, ConjunctionBuilder as _Conj, build_spec
from .vnnlib_terms import TermReader
from .vnnlib_tokens import (LINE_ATOM as _LINE_ATOM, NUMBER as _NUMBER, SCAN as _SCAN, SIMPLE_ASSERT as _SIMPLE_ASSERT,
                            SIMPLE_DECLARE as _SIMPLE_DECLARE, VAR as _VAR, VAR_DECLARED as _VAR_DECLARED,
                            leading_zero, number as _number, range_problem, read_number, shown)

MAX_DISJUNCTS = 100_000

_SKIPPED = frozenset(("set-logic", "check-sat", "get-model", "exit", "set-info", "set-option"))
_COMPARISONS = frozenset(("<=", ">=", "<", ">", "="))
_TERM_OPS = frozenset(("+", "-", "*", "/"))
_NON_FINITE = frozenset(("nan", "inf", "infinity", "infty", "snan", "qnan"))


class Frame:
    """An open parenthesis on the explicit stack: ``op`` is its head word (``None`` until
    read), ``ctx`` what its parent expects of it (``'top'``, ``'formula'``, ``'term'``,
    ``'skip'``), ``items`` the values of its children so far."""

    __slots__ = ("op", "ctx", "line", "items", "acc", "count", "only", "shared", "start")

    def __init__(self, ctx: str, line: int):
        self.op: str | None = None
        self.ctx = ctx
        self.line = line
        self.items: list = []
        self.acc: _Conj | None = None  # 'and'/'assert': the single-disjunct children merged
        self.count = 0  # 'and'/'assert': single-disjunct children so far
        self.only: _Conj | None = None  # the first such child while it is the only one (not copied)
        self.shared: Frame | None = None  # an 'and' in an 'and' (an 'or' in an 'or') fills its parent's
        self.start = 0  # shared: len(items) when it opened

    def absorb(self, conj: "_Conj") -> None:
        """Conjoin a frozen single-disjunct child into ``acc`` (kept as is while it is alone,
        so that deep chains of one-child ``and`` cost O(1) per level)."""
        if self.count == 0 and self.shared is None:
            self.only = conj
        else:
            if self.only is not None:
                self.acc.extend(self.only)
                self.only = None
            self.acc.extend(conj)
        self.count += 1

    def conj(self) -> "_Conj":
        """The conjunction of the single-disjunct children (frozen)."""
        return self.only if self.only is not None else self.acc.freeze()


class Parser(TermReader):
    """The reader's state: declared variables, the conjoined single-disjunct asserts, one
    DNF per disjunctive assert, and the stack of open parentheses. :meth:`feed` reads
    lines (``SpecError`` naming ``source:line`` for anything malformed), :meth:`finish`
    builds the :class:`~verifier.spec.model.Spec`."""

    def __init__(self, source: str):
        self.source = source
        self.declared: dict[str, set[int]] = {"X": set(), "Y": set()}
        self.declared_at: dict[tuple[str, int], int] = {}  # (kind, index) -> line of its declaration
        self.common = _Conj(1)  # conjoined single-disjunct asserts
        self.disjunctive: list[list[_Conj]] = []  # one DNF per disjunctive assert
        self.product = 1
        self.stack: list[Frame] = []
        self.line = 0

    def fail(self, line: int, message: str):
        raise SpecError(f"{self.source}:{line}: {shown(message)}")

    # --- reading --------------------------------------------------------------------
    def feed(self, lines: Iterable[str]) -> None:
        stack = self.stack
        declared_x = self.declared["X"]
        line = 0
        for line, raw in enumerate(lines, start=1):
            self.line = line
            code = raw.split(";", 1)[0] if ";" in raw else raw
            if not code or code.isspace():
                continue
            if stack:
                top = stack[-1]
                if top.op == "and" and top.only is None:  # the bulk of disjunctive specs
                    m = _LINE_ATOM(code)
                    if m:
                        op, kind, idx, text = m.groups()
                        idx, value = int(idx), read_number(text)
                        acc = top.acc
                        if value is None:  # overflows or underflows float64: the general path names it
                            pass
                        elif kind == "X" and op != "=" and idx in declared_x:
                            acc.idx.append(idx)
                            acc.val.append(value)
                            acc.flag.append((_UPPER if op[0] == "<" else 0) | (_STRICT if len(op) == 1 else 0))
                            acc.line.append(line)
                        else:
                            self.simple_atom(op, kind, idx, value, line, acc)
                        if value is not None:
                            top.count += 1
                            continue
            else:
                m = _SIMPLE_ASSERT.match(code)
                if m and read_number(m.group(4)) is not None:
                    self.simple_atom(m.group(1), m.group(2), int(m.group(3)), float(m.group(4)), line, self.common)
                    continue
                m = _SIMPLE_DECLARE.match(code)
                if m:
                    self.declare(m.group(1), m.group(2), line)
                    continue
            for m in _SCAN.finditer(code):
                op = m.group(1)
                if op is not None:  # a comparison of one variable with one number
                    top = stack[-1] if stack else None
                    value = read_number(m.group(4))
                    if top is None or top.op not in ("and", "or", "assert") or value is None:
                        self.open(line)
                        self.word(op, line)
                        self.word(f"{m.group(2)}_{m.group(3)}", line)
                        self.word(m.group(4), line)
                        self.close(line)
                        continue
                    if top.op == "or":
                        conj = _Conj(line)
                        self.simple_atom(op, m.group(2), int(m.group(3)), value, line, conj)
                        self.add_disjuncts(top, [conj.freeze()], line)
                    else:
                        if top.only is not None:
                            top.acc.extend(top.only)
                            top.only = None
                        self.simple_atom(op, m.group(2), int(m.group(3)), value, line, top.acc)
                        top.count += 1
                elif m.group(5) is not None:
                    self.open(line)
                elif m.group(6) is not None:
                    self.close(line)
                else:
                    self.word(m.group(7), line)
        if stack:
            self.fail(stack[-1].line, f"'(' opened here is never closed (reached the end of the file at line {line})")

    def declare(self, kind: str, digits: str, line: int) -> None:
        """Declare ``kind_digits``; an index with a leading zero, a huge index or a second
        declaration of the same variable is an error."""
        if len(digits) > 9:
            self.fail(line, f"variable {kind}_{digits}: index too large (variables are numbered from 0 without gaps)")
        if len(digits) > 1 and digits[0] == "0":
            self.fail(line, f"variable {kind}_{digits}: an index with a leading zero is ambiguous; "
                            f"write {kind}_{int(digits)}")
        idx = int(digits)
        if idx in self.declared[kind]:
            self.fail(line, f"variable {kind}_{idx} is declared twice (first at line {self.declared_at[kind, idx]}); "
                            f"declare each variable once")
        self.declared[kind].add(idx)
        self.declared_at[kind, idx] = line

    def simple_atom(self, op: str, kind: str, idx: int, value: float, line: int, conj: _Conj) -> None:
        """``(op V_idx value)`` folded into ``conj``."""
        if not math.isfinite(value):
            self.fail(line, f"number compared with {kind}_{idx} is out of the range of float64")
        if idx not in self.declared[kind]:
            self.fail(line, f"variable {kind}_{idx} is used but not declared (declare it first: "
                            f"(declare-const {kind}_{idx} Real))")
        if kind == "X":
            if op == "=":
                conj.add_bound(idx, value, False, False, line)
                conj.add_bound(idx, value, True, False, line)
            else:
                conj.add_bound(idx, value, op[0] == "<", len(op) == 1, line)
        elif op == "=":
            conj.rows.append(({idx: 1.0}, value, False, line))
            conj.rows.append(({idx: -1.0}, -value, False, line))
        elif op[0] == "<":
            conj.rows.append(({idx: 1.0}, value, len(op) == 1, line))
        else:
            conj.rows.append(({idx: -1.0}, -value, len(op) == 1, line))

    def open(self, line: int) -> None:
        stack = self.stack
        if not stack:
            ctx = "top"
        else:
            parent = stack[-1]
            if parent.op is None:
                self.fail(line, "expected an operator name after '(', found another '('")
            ctx = self.child_context(parent, line)
        stack.append(Frame(ctx, line))

    def child_context(self, parent: Frame, line: int) -> str:
        op = parent.op
        if op in ("and", "or", "assert"):
            if op == "assert" and (parent.items or parent.count):
                self.fail(line, "assert takes exactly one formula")
            return "formula"
        if op in _COMPARISONS or op in _TERM_OPS:
            return "term"
        if parent.ctx == "skip" or op in _SKIPPED:
            return "skip"
        self.fail(line, f"'{op}' takes no parenthesised arguments")

    def word(self, word: str, line: int) -> None:
        stack = self.stack
        if not stack:
            self.fail(line, f"unexpected '{word}' outside parentheses")
        top = stack[-1]
        if top.op is None:
            self.set_head(top, word, line)
            return
        op = top.op
        if op in _COMPARISONS or op in _TERM_OPS:
            top.items.append(self.atom_term(word, line))
        elif op == "declare-const" or top.ctx == "skip" or op in _SKIPPED:
            top.items.append(word)
        elif op in ("and", "or", "assert"):
            self.fail(line, f"expected a formula such as (<= X_0 1) or (and …), found '{word}'")
        else:  # pragma: no cover - every head is checked in set_head
            self.fail(line, f"unexpected '{word}'")

    def set_head(self, frame: Frame, word: str, line: int) -> None:
        ctx = frame.ctx
        if ctx == "top":
            if word not in ("declare-const", "assert") and word not in _SKIPPED:
                self.fail(line, f"unsupported command '{word}' (expected declare-const or assert)")
            if word == "assert":
                frame.acc = _Conj(line)
        elif ctx == "formula":
            if word not in ("and", "or") and word not in _COMPARISONS:
                self.fail(line, f"unsupported operator '{word}' in an assertion "
                                f"(expected and, or, <=, >=, <, >, =)")
            parent = self.stack[-2]
            if word == parent.op and word in ("and", "or"):
                # associativity: fill the parent directly, so that deep chains stay linear
                if parent.only is not None:
                    parent.acc.extend(parent.only)
                    parent.only = None
                frame.shared, frame.items, frame.acc = parent, parent.items, parent.acc
                frame.start = len(parent.items)
            elif word == "and":
                frame.acc = _Conj(line)
        elif ctx == "term":
            if word not in _TERM_OPS:
                self.fail(line, f"unsupported term operator '{word}' (expected +, -, * or /)")
        elif ctx == "skip":
            pass
        frame.op = word

    def atom_term(self, word: str, line: int) -> tuple[dict, float]:
        m = _VAR.match(word)
        if m:
            kind, idx = m.group(1), int(m.group(2))
            if idx not in self.declared[kind]:
                self.fail(line, f"variable {word} is used but not declared (declare it first: "
                                f"(declare-const {word} Real))")
            return {(kind, idx): 1.0}, 0.0
        value = _number(word)
        if value is None:
            where = self.where()
            if _NUMBER.match(word):
                self.fail(line, f"number '{word}'{where} {range_problem(word)}")
            if leading_zero(word):
                self.fail(line, f"variable '{word}': an index with a leading zero is ambiguous; write "
                                f"{word[0]}_{int(word[2:])}")
            if word.lower().lstrip("+-") in _NON_FINITE:
                self.fail(line, f"'{word}'{where} is not a finite number: NaN and infinity are not allowed "
                                f"in a spec (write a finite decimal such as 1, -0.5 or 2.5e-3)")
            self.fail(line, f"'{word}' is neither a number nor a declared variable (numbers are written "
                            f"like 1, -0.5, 2.5e-3; variables X_i / Y_j)")
        return {}, value

    def where(self) -> str:
        """`` in the constraint on X_i`` for the innermost comparison being read, if it
        names a variable so far."""
        for frame in reversed(self.stack):
            if frame.op in _COMPARISONS:
                names = [f"{k}_{i}" for c, _ in frame.items for (k, i) in c]
                return f" in the constraint on {', '.join(names)}" if names else ""
        return ""

    def close(self, line: int) -> None:
        stack = self.stack
        if not stack:
            self.fail(line, "unmatched ')'")
        frame = stack.pop()
        op = frame.op
        if op is None:
            self.fail(line, "empty '()' where an operator application '(op …)' was expected")
        parent = stack[-1] if stack else None
        if frame.ctx == "top":
            self.close_command(frame, line)
        elif frame.ctx == "skip":
            if parent is not None:
                parent.items.append(None)
        elif frame.ctx == "term":
            parent.items.append(self.close_term(frame, line))
        elif op in _COMPARISONS:
            self.add_formula(parent, self.close_comparison(frame, line), line)
        elif frame.shared is not None:  # its children went straight into the parent
            if len(frame.items) == frame.start and not frame.count:
                self.fail(frame.line, f"'{op}' needs at least one formula")
            if op == "and":
                parent.count += 1
        elif op == "and":
            self.add_formula(parent, self.close_and(frame, line), line)
        else:  # or
            if not frame.items:
                self.fail(frame.line, "'or' needs at least one formula")
            self.add_formula(parent, frame.items, line)

    def add_formula(self, parent: Frame, dnf: list[_Conj], line: int) -> None:
        """Hand a child formula's DNF to its parent (``and``, ``or`` or ``assert``)."""
        if parent.op == "or":
            self.add_disjuncts(parent, dnf, line)
        elif len(dnf) == 1:
            parent.absorb(dnf[0])
        else:
            parent.items.append(dnf)

    def add_disjuncts(self, frame: Frame, dnf: list[_Conj], line: int) -> None:
        frame.items.extend(dnf)
        if len(frame.items) > MAX_DISJUNCTS:
            self.fail(line, f"the 'or' opened at line {frame.line} has more than {MAX_DISJUNCTS} disjuncts "
                            f"(the most this reader expands)")

    def close_and(self, frame: Frame, line: int) -> list[_Conj]:
        if not frame.items and not frame.count:
            self.fail(frame.line, "'and' needs at least one formula")
        base = frame.conj()
        if not frame.items:
            return [base]
        size = 1
        for part in frame.items:
            size *= len(part)
        if size > MAX_DISJUNCTS:
            self.fail(frame.line, f"the 'and' opened here expands to {size} disjuncts, more than {MAX_DISJUNCTS}")
        return [_Conj.merged((base, *combo), frame.line) for combo in itertools.product(*frame.items)]

    def close_command(self, frame: Frame, line: int) -> None:
        op = frame.op
        if op == "declare-const":
            items = frame.items
            if len(items) != 2 or not all(isinstance(w, str) for w in items):
                self.fail(frame.line, "expected (declare-const NAME Real)")
            name, sort = items
            m = _VAR_DECLARED.match(name)
            if not m:
                self.fail(frame.line, f"variable '{name}' must be named X_i (input) or Y_j (output)")
            if sort != "Real":
                self.fail(frame.line, f"variable '{name}' has sort '{sort}'; only Real is supported")
            self.declare(m.group(1), m.group(2), frame.line)
        elif op == "assert":
            n = len(frame.items) + frame.count
            if n != 1:
                self.fail(frame.line, f"assert takes exactly one formula, got {n}")
            if frame.count:
                self.common.extend(frame.conj())
            else:
                dnf = frame.items[0]
                self.product *= len(dnf)
                if self.product > MAX_DISJUNCTS:
                    self.fail(frame.line, f"the asserts so far expand to {self.product} disjuncts, "
                                          f"more than {MAX_DISJUNCTS}")
                self.disjunctive.append(dnf)

    def finish(self) -> Spec:
        """The :class:`Spec` of everything read (see :func:`~.vnnlib_regions.build_spec`)."""
        spec = build_spec(self.source, self.declared, self.common, self.disjunctive)
        spec.declared_at = {f"{kind}_{idx}": line for (kind, idx), line in self.declared_at.items()}
        return spec


def parse_lines(lines: Iterable[str], source: str) -> Spec:
    """The :class:`~verifier.spec.model.Spec` of VNN-LIB v1 ``lines`` (raises
    :class:`~verifier.errors.SpecError` naming ``source:line``)."""
    parser = Parser(source)
    parser.feed(lines)
    return parser.finish()
