"""A reader for VNN-LIB v1 (the VNN-COMP dialect).

Grammar handled: ``(declare-const X_i Real)``/``(declare-const Y_j Real)``, and
``(assert F)`` where ``F`` is ``(and F…)``, ``(or F…)`` or a comparison
``(<=|>=|<|>|= t t)`` between linear terms (numbers, variables, ``+``, ``-``, ``*`` by a
constant). Strict comparisons are read as non-strict, which can only enlarge the unsafe
set (sound for ``unsat``; counterexamples are checked against the closed set).

The asserts are conjoined and brought to disjunctive normal form; each disjunct must
constrain inputs only through bounds ``X_i ≤ c``/``X_i ≥ c`` and outputs through linear
inequalities. Disjuncts sharing an input box are grouped into one
:class:`~verifier.spec.model.InputRegion`.

(The ``vnnlib`` package on PyPI, 1.0.2, was evaluated first: it implements the VNN-LIB 2
grammar and rejects every VNN-COMP v1 file, so this module reads them itself.)
"""

from __future__ import annotations

import itertools
import os
import re
from dataclasses import dataclass

import torch

from ..errors import SpecError
from .model import Conjunction, InputRegion, Spec

_VAR = re.compile(r"^([XY])_(\d+)$")
MAX_DISJUNCTS = 100_000


class _SList(list):
    """A parenthesised list remembering the line it starts on."""

    line = 0


@dataclass
class _Atom:
    """``Σ coef·var + const ≤ 0``; ``coefs`` maps ``('X'|'Y', index)`` to a float."""

    coefs: dict
    const: float
    line: int


_SIMPLE_DECLARE = re.compile(r"^\s*\(\s*declare-const\s+([XY])_(\d+)\s+Real\s*\)\s*$")
_SIMPLE_BOUND = re.compile(r"^\s*\(\s*assert\s*\(\s*(<=|>=)\s+X_(\d+)\s+([-+]?[0-9.]+(?:[eE][-+]?\d+)?)\s*\)\s*\)\s*$")


def _tokenize_and_read(text: str, source: str, declared: dict[str, set[int]]) -> tuple[list[_SList], list[tuple[str, int, float, int]]]:
    """S-expressions of the file (atoms are ``(word, line)`` pairs), plus the lines that
    are a lone input bound ``(assert (<= X_i c))`` read directly as ``(op, i, c, line)``;
    plain declarations go straight into ``declared`` (the bulk of image specs)."""
    stack: list[_SList] = [_SList()]
    bounds: list[tuple[str, int, float, int]] = []
    for line, raw in enumerate(text.split("\n"), start=1):
        code = raw.split(";", 1)[0]
        if not code or code.isspace():
            continue
        if len(stack) == 1:
            m = _SIMPLE_BOUND.match(code)
            if m:
                bounds.append((m.group(1), int(m.group(2)), float(m.group(3)), line))
                continue
            m = _SIMPLE_DECLARE.match(code)
            if m:
                declared[m.group(1)].add(int(m.group(2)))
                continue
        for token in code.replace("(", " ( ").replace(")", " ) ").split():
            if token == "(":
                new = _SList()
                new.line = line
                stack[-1].append(new)
                stack.append(new)
            elif token == ")":
                if len(stack) == 1:
                    raise SpecError(f"{source}:{line}: unmatched ')'")
                stack.pop()
            else:
                stack[-1].append((token, line))
    if len(stack) != 1:
        raise SpecError(f"{source}:{stack[-1].line}: '(' opened here is never closed")
    return stack[0], bounds


class _Reader:
    def __init__(self, source: str):
        self.source = source
        self.declared: dict[str, set[int]] = {"X": set(), "Y": set()}

    def fail(self, line: int, message: str):
        raise SpecError(f"{self.source}:{line}: {message}")

    def head(self, expr) -> str:
        if not isinstance(expr, _SList) or not expr or isinstance(expr[0], _SList):
            line = expr.line if isinstance(expr, _SList) else expr[1]
            self.fail(line, "expected an operator application '(op …)'")
        return expr[0][0]

    # --- terms ---------------------------------------------------------------------
    def term(self, expr, line: int) -> tuple[dict, float]:
        if not isinstance(expr, _SList):
            word, line = expr
            m = _VAR.match(word)
            if m:
                kind, idx = m.group(1), int(m.group(2))
                if idx not in self.declared[kind]:
                    self.fail(line, f"variable {word} is used but not declared")
                return {(kind, idx): 1.0}, 0.0
            try:
                return {}, float(word)
            except ValueError:
                self.fail(line, f"unknown symbol '{word}' (expected a number or X_i / Y_j)")
        op = self.head(expr)
        args = [self.term(a, expr.line) for a in expr[1:]]
        if not args:
            self.fail(expr.line, f"'{op}' needs arguments")
        if op == "+":
            return self._combine(args, [1.0] * len(args))
        if op == "-":
            if len(args) == 1:
                return self._combine(args, [-1.0])
            return self._combine(args, [1.0] + [-1.0] * (len(args) - 1))
        if op == "*":
            coefs, const = {}, 1.0
            for c, k in args:
                if c and coefs:
                    self.fail(expr.line, "product of two variables is not linear")
                if c:
                    coefs = {v: a * const for v, a in c.items()}
                    const = k
                elif coefs:
                    coefs = {v: a * k for v, a in coefs.items()}
                    const *= k
                else:
                    const *= k
            return coefs, const
        self.fail(expr.line, f"unsupported term operator '{op}'")

    @staticmethod
    def _combine(args, signs) -> tuple[dict, float]:
        coefs: dict = {}
        const = 0.0
        for (c, k), s in zip(args, signs):
            for v, a in c.items():
                coefs[v] = coefs.get(v, 0.0) + s * a
            const += s * k
        return coefs, const

    # --- formulas → DNF (list of lists of atoms) -----------------------------------
    def formula(self, expr) -> list[list[_Atom]]:
        op = self.head(expr)
        if op == "and":
            parts = [self.formula(a) for a in expr[1:]]
            return _product(parts, expr.line, self)
        if op == "or":
            return [conj for a in expr[1:] for conj in self.formula(a)]
        if op in ("<=", ">=", "<", ">", "="):
            if len(expr) != 3:
                self.fail(expr.line, f"'{op}' takes exactly two arguments")
            (ca, ka), (cb, kb) = self.term(expr[1], expr.line), self.term(expr[2], expr.line)
            diff = self._combine([(ca, ka), (cb, kb)], [1.0, -1.0])  # a − b
            neg = self._combine([diff], [-1.0])
            if op in ("<=", "<"):
                return [[_Atom(*diff, expr.line)]]
            if op in (">=", ">"):
                return [[_Atom(*neg, expr.line)]]
            return [[_Atom(*diff, expr.line), _Atom(*neg, expr.line)]]
        self.fail(expr.line, f"unsupported operator '{op}' in an assertion")


def _product(parts: list[list[list[_Atom]]], line: int, reader: _Reader) -> list[list[_Atom]]:
    size = 1
    for p in parts:
        size *= max(len(p), 1)
    if size > MAX_DISJUNCTS:
        reader.fail(line, f"the formula expands to more than {MAX_DISJUNCTS} disjuncts")
    return [list(itertools.chain.from_iterable(combo)) for combo in itertools.product(*parts)]


@dataclass
class _Partial:
    """Input bounds and output rows collected from some of a disjunct's atoms."""

    lower: list
    upper: list
    rows: list
    rhs: list
    feasible: bool = True

    def copy(self) -> "_Partial":
        return _Partial(list(self.lower), list(self.upper), list(self.rows), list(self.rhs), self.feasible)


def _apply_atoms(atoms: list[_Atom], part: _Partial, ny: int, reader: _Reader) -> _Partial:
    """Fold atoms into ``part``: ``a·X_i + k ≤ 0`` tightens a bound, Y-atoms add rows."""
    for atom in atoms:
        coefs = {v: a for v, a in atom.coefs.items() if a != 0.0}
        kinds = {k for k, _ in coefs}
        if not coefs:
            part.feasible &= atom.const <= 0  # a constant comparison
        elif kinds == {"X"}:
            if len(coefs) != 1:
                reader.fail(atom.line, "constraints over several inputs are not supported (only bounds X_i <= c / X_i >= c)")
            ((_, i), a), = coefs.items()
            bound = -atom.const / a
            if a > 0:
                part.upper[i] = min(part.upper[i], bound)
            else:
                part.lower[i] = max(part.lower[i], bound)
        elif kinds == {"Y"}:
            row = [0.0] * ny
            for (_, j), a in coefs.items():
                row[j] += a
            part.rows.append(row)
            part.rhs.append(-atom.const)
        else:
            reader.fail(atom.line, "a constraint mixing inputs and outputs is not supported")
    return part


def _finish_region(part: _Partial, ny: int, line: int, reader: _Reader):
    """The disjunct's box and :class:`Conjunction`, or ``None`` if it is infeasible."""
    lower = torch.tensor(part.lower, dtype=torch.float64)
    upper = torch.tensor(part.upper, dtype=torch.float64)
    missing = torch.nonzero(torch.isinf(lower) | torch.isinf(upper)).reshape(-1)
    if len(missing):
        reader.fail(line, f"input X_{int(missing[0])} is not bounded on both sides (every input needs a lower and upper bound)")
    if not part.feasible or bool(torch.any(lower > upper)):
        return None
    rows, rhs = part.rows, part.rhs
    if not rows:  # no output condition: every input of the box is a counterexample
        rows, rhs = [[0.0] * ny], [0.0]
    return lower, upper, Conjunction(torch.tensor(rows, dtype=torch.float64), torch.tensor(rhs, dtype=torch.float64))


def parse_vnnlib(text: str, source: str = "<vnnlib>") -> Spec:
    """Parse VNN-LIB text into a :class:`Spec` (see module docstring)."""
    reader = _Reader(source)
    exprs, simple_bounds = _tokenize_and_read(text, source, reader.declared)
    common: list[_Atom] = []
    disjunctive: list[list[list[_Atom]]] = []
    for expr in exprs:
        if not isinstance(expr, _SList):
            reader.fail(expr[1], f"unexpected '{expr[0]}' outside parentheses")
        op = reader.head(expr)
        if op == "declare-const":
            if len(expr) != 3 or isinstance(expr[1], _SList):
                reader.fail(expr.line, "expected (declare-const NAME Real)")
            name, sort = expr[1][0], expr[2][0] if not isinstance(expr[2], _SList) else "?"
            m = _VAR.match(name)
            if not m:
                reader.fail(expr.line, f"variable '{name}' must be named X_i (input) or Y_j (output)")
            if sort != "Real":
                reader.fail(expr.line, f"variable '{name}' has sort '{sort}'; only Real is supported")
            reader.declared[m.group(1)].add(int(m.group(2)))
        elif op == "assert":
            if len(expr) != 2:
                reader.fail(expr.line, "assert takes exactly one formula")
            dnf = reader.formula(expr[1])
            if len(dnf) == 1:
                common.extend(dnf[0])
            else:
                disjunctive.append(dnf)
        elif op in ("set-logic", "check-sat", "get-model", "exit", "set-info", "set-option"):
            continue
        else:
            reader.fail(expr.line, f"unsupported command '{op}'")
    for kind in "XY":
        ids = reader.declared[kind]
        if not ids:
            raise SpecError(f"{source}: no {kind}_ variables declared")
        if ids != set(range(len(ids))):
            raise SpecError(f"{source}: {kind}_ variables must be numbered 0..n-1 without gaps")
    nx_, ny = len(reader.declared["X"]), len(reader.declared["Y"])
    base = _apply_atoms(common, _Partial([-float("inf")] * nx_, [float("inf")] * nx_, [], []), ny, reader)
    for op, index, value, line in simple_bounds:
        if index not in reader.declared["X"]:
            reader.fail(line, f"variable X_{index} is used but not declared")
        if op == "<=":
            base.upper[index] = min(base.upper[index], value)
        else:
            base.lower[index] = max(base.lower[index], value)

    regions: dict[tuple, InputRegion] = {}
    for combo in _product(disjunctive, 1, reader):
        found = _finish_region(_apply_atoms(combo, base.copy(), ny, reader), ny, exprs[-1].line if exprs else 1, reader)
        if found is None:
            continue
        lower, upper, conj = found
        key = (tuple(lower.tolist()), tuple(upper.tolist()))
        region = regions.get(key)
        if region is None:
            region = regions[key] = InputRegion(lower, upper, [])
        region.disjuncts.append(conj)
    return Spec(list(regions.values()), nx_, ny, source)


def read_vnnlib(path: str | os.PathLike) -> Spec:
    """Read a ``.vnnlib`` file (see :func:`parse_vnnlib`)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise SpecError(f"spec file not found: {path}")
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read spec file {path}: {exc}") from None
    return parse_vnnlib(text, path)
