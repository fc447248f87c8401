"""Linear terms and comparisons of the VNN-LIB reader (:mod:`verifier.spec.vnnlib`):
``+``, ``-``, ``*`` and ``/`` by constants folded into ``(coefficients, constant)``, and a
comparison turned into input bounds or output rows of a
:class:`~verifier.spec.vnnlib_regions.ConjunctionBuilder`.

Arithmetic that overflows float64, or that underflows to 0 (a product or quotient of
nonzero numbers, or an input bound, below the smallest float64), is an error naming the
line: either would silently change the property.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from .vnnlib_regions import ConjunctionBuilder as _Conj

if TYPE_CHECKING:
    from .vnnlib_parser import Frame


class TermReader:
    """Mixin of the reader's ``_Parser``: needs ``self.fail(line, message)``."""

    def fail(self, line: int, message: str):  # pragma: no cover - provided by the parser
        raise NotImplementedError

    def close_comparison(self, frame: Frame, line: int) -> list[_Conj]:
        op = frame.op
        if len(frame.items) != 2:
            self.fail(frame.line, f"'{op}' takes exactly two arguments (terms), got {len(frame.items)}")
        (ca, ka), (cb, kb) = frame.items
        coefs = dict(ca)
        for v, a in cb.items():
            coefs[v] = coefs.get(v, 0.0) - a
        const = ka - kb  # a − b = Σ coefs·v + const
        self.check_finite(coefs, const, frame.line)
        conj = _Conj(frame.line)
        if op in ("<=", "<"):
            self.add_atom(conj, coefs, const, op == "<", frame.line)
        elif op in (">=", ">"):
            self.add_atom(conj, {v: -a for v, a in coefs.items()}, -const, op == ">", frame.line)
        else:
            self.add_atom(conj, coefs, const, False, frame.line)
            self.add_atom(conj, {v: -a for v, a in coefs.items()}, -const, False, frame.line)
        return [conj.freeze()]

    def add_atom(self, conj: _Conj, coefs: dict, const: float, strict: bool, line: int) -> None:
        """``Σ coefs·v + const ≤ 0`` (``< 0`` if strict) into ``conj``."""
        coefs = {v: a for v, a in coefs.items() if a != 0.0}
        kinds = {k for k, _ in coefs}
        if not coefs:  # a comparison between constants: true, or the never-satisfied row 0 ≤ −1
            if not (const < 0 if strict else const <= 0):
                conj.rows.append(({}, -1.0, False, line))
        elif kinds == {"X"}:
            if len(coefs) != 1:
                self.fail(line, "constraints over several inputs are not supported (only bounds X_i <= c / X_i >= c)")
            ((_, i), a), = coefs.items()
            bound = -const / a
            if not math.isfinite(bound):
                self.fail(line, f"the bound on X_{i} overflows float64")
            if bound == 0.0 and const != 0.0:
                self.fail(line, f"the bound on X_{i} underflows to 0 in float64 (write 0 if zero is meant)")
            conj.add_bound(i, bound, a > 0, strict, line)
        elif kinds == {"Y"}:
            conj.rows.append(({j: a for (_, j), a in coefs.items()}, -const, strict, line))
        else:
            self.fail(line, "a constraint mixing inputs and outputs is not supported")

    def check_underflow(self, coefs: dict, const: float, result: dict, result_const: float, line: int) -> None:
        """Error if scaling the nonzero term ``coefs·v + const`` by a nonzero factor gave a
        zero coefficient or constant (float64 underflow: the term would silently change)."""
        if (const != 0.0 and result_const == 0.0) or any(a != 0.0 and result.get(v, 0.0) == 0.0
                                                         for v, a in coefs.items()):
            self.fail(line, "the arithmetic underflows to 0 in float64 (a product or quotient of nonzero "
                            "numbers is below the smallest float64, about 4.9e-324)")

    def check_finite(self, coefs: dict, const: float, line: int) -> None:
        if not math.isfinite(const) or not all(math.isfinite(a) for a in coefs.values()):
            self.fail(line, "the arithmetic overflows float64 (a coefficient or constant is not finite)")

    def close_term(self, frame: Frame, line: int) -> tuple[dict, float]:
        op, args = frame.op, frame.items
        if not args:
            self.fail(frame.line, f"'{op}' needs arguments")
        if op == "+" or (op == "-" and len(args) > 1):
            signs = [1.0] + [(-1.0 if op == "-" else 1.0)] * (len(args) - 1)
            coefs: dict = {}
            const = 0.0
            for (c, k), s in zip(args, signs):
                for v, a in c.items():
                    coefs[v] = coefs.get(v, 0.0) + s * a
                const += s * k
        elif op == "-":
            (c, k), = args
            coefs, const = {v: -a for v, a in c.items()}, -k
        elif op == "*":
            coefs, const = {}, 1.0
            for c, k in args:
                if c and coefs:
                    self.fail(frame.line, "product of two variables is not linear")
                if c:
                    coefs = {v: a * const for v, a in c.items()}
                    const = k * const
                elif coefs:
                    coefs = {v: a * k for v, a in coefs.items()}
                    const *= k
                else:
                    const *= k
            if all(k != 0.0 for c, k in args if not c):  # no zero factor: a zero result is an underflow
                base = next(((c, k) for c, k in args if c), ({}, 1.0))
                self.check_underflow(base[0], base[1], coefs, const, frame.line)
        else:  # '/': the first argument divided by constants
            coefs, const = dict(args[0][0]), args[0][1]
            if len(args) < 2:
                self.fail(frame.line, "'/' needs a dividend and at least one divisor")
            for c, k in args[1:]:
                if c:
                    self.fail(frame.line, "division by a variable is not linear")
                if k == 0.0:
                    self.fail(frame.line, "division by zero")
                quotient = {v: a / k for v, a in coefs.items()}
                self.check_underflow(coefs, const, quotient, const / k, frame.line)
                coefs, const = quotient, const / k
        self.check_finite(coefs, const, frame.line)
        return coefs, const
