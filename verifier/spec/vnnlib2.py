"""VNN-LIB 2.0 files, read through the ``vnnlib`` package (PyPI, ≥ 1.0.2: the VNN-LIB
project's own parser and type checker) into the same :class:`~verifier.spec.model.Spec` the
v1 reader (:mod:`verifier.spec.vnnlib`) builds.

A 2.0 query starts with ``(vnnlib-version <2.0>)``, declares a network with typed, shaped
inputs and outputs, and asserts formulas over tensor elements::

    (vnnlib-version <2.0>)
    (declare-network net
        (declare-input  X float32 [1,784])
        (declare-output Y float32 [1,10]))
    (assert (and (>= X[0,0] 0.0) (<= X[0,0] 0.05) ...))
    (assert (or (>= Y[0,1] Y[0,0]) (>= Y[0,2] Y[0,0]) ...))

The package parses and type-checks the query (undeclared variables, indices out of
bounds, constants of the wrong type and non-linear products are its errors, reported as
:class:`~verifier.errors.SpecError` naming the file and line). This module then takes each
assertion's disjunctive normal form (``BoolExpr.to_dnf``) and each side's linear form
(``ArithExpr.to_linear_expr``), and hands every comparison to the v1 reader's
:meth:`~verifier.spec.vnnlib_terms.TermReader.add_atom`, so both versions share one set of
rules: inputs bounded one at a time (``a·X[i] ⋈ c``), outputs by linear rows, strict
``<``/``>`` recorded, ``==`` as two rows, every input bounded on both sides, empty ranges
refused (:func:`~verifier.spec.vnnlib_regions.build_spec`). The package's reachability
transform (``vnnlib.compat.transform``) is not used: in 1.0.2 it drops input bounds
asserted inside an ``and`` next to separate asserts.

Supported: one network with one input and one output tensor (any shape; element ``i`` of
the flattened, row-major tensor is ``X_i``/``Y_i`` of the v1 reader), element types
``Real`` and the ONNX float types (bounds are kept in float64, a superset of the typed
values, sound for ``unsat``; counterexamples are checked against the float64 bounds).
Refused with a message: hidden-node declarations, several networks, several inputs or
outputs, ``!=`` (its set is not closed), constraints mixing inputs and outputs or over
several inputs. VNN-LIB 2.0 numbers have no exponent (``0.00001``, not ``1e-05``). The
package (1.0.2) refuses a constant times a ``Real`` variable (``(* 2.0 Y[0])`` is a type
error there; with ``float32``/``float64`` tensors it is accepted), so write coefficients
with typed tensors.

The package has wheels for Linux x86_64, macOS and Windows, none for Linux aarch64; there
reading a 2.0 file raises :class:`SpecError` saying so (v1 files are read as before).
"""

from __future__ import annotations

import json
import math
import re

from ..errors import SpecError
from .model import Spec
from .vnnlib_regions import ConjunctionBuilder as _Conj, build_spec
from .vnnlib_terms import TermReader
from .vnnlib_tokens import shown

MAX_DISJUNCTS = 100_000  # the v1 reader's limit on the expanded DNF
# the package parses recursively: 10^5 nested forms overflow an 8 MiB C stack (a segfault),
# 3·10^4 do not; the v1 reader, which keeps its own stack, takes any depth
MAX_NESTING = 10_000
MAX_OUTPUTS = 10_000_000  # declared output elements: each disjunct is a dense row over them
FLOAT_TYPES = frozenset(("F16", "F32", "F64", "BF16"))  # the package's DType names; Real is DType.Unknown
_LINE = re.compile(r"line (\d+)")
_HEADER = re.compile(r"\(\s*(vnnlib-version|declare-network)\b")


def is_vnnlib2(head: str) -> bool:
    """Whether VNN-LIB text whose beginning is ``head`` is a 2.0 query: its first form (after
    blank lines and ``;`` comments) is ``(vnnlib-version …)`` or ``(declare-network …)``."""
    for line in head.splitlines():
        text = line.split(";", 1)[0].strip().lstrip("\ufeff")
        if text:
            return _HEADER.match(text) is not None
    return False


def _package():
    """The ``vnnlib`` module, or :class:`SpecError` saying how to install it."""
    try:
        import vnnlib
    except ImportError:
        raise SpecError("VNN-LIB 2.0 files are read with the vnnlib package, which is not installed "
                        "(pip install 'vnnlib>=1.0.2'; it has no wheel for Linux aarch64, where only "
                        "VNN-LIB 1 files can be read)") from None
    return vnnlib


def _check_nesting(text: str, source: str) -> None:
    """Refuse ``text`` whose parentheses nest deeper than :data:`MAX_NESTING` (``;`` comments
    skipped), naming the line where it does: the package would crash the process."""
    if text.count("(") <= MAX_NESTING:
        return
    depth, line = 0, 1
    for match in re.finditer(r"[()\n]|;[^\n]*", text):
        char = match.group()
        if char == "(":
            depth += 1
            if depth > MAX_NESTING:
                raise SpecError(f"{source}:{line}: VNN-LIB 2.0: forms nested more than {MAX_NESTING} deep, which "
                                f"the vnnlib package cannot parse; write flat forms: (and a b c ...), (+ a b c ...)")
        elif char == ")":
            depth -= 1
        elif char == "\n":
            line += 1


def _package_error(source: str, exc: Exception) -> SpecError:
    """A :class:`SpecError` naming ``source:line`` from a ``VNNLibException`` (JSON with an
    error list for type errors, one line of text for syntax errors)."""
    text = str(exc)
    try:
        first = json.loads(text)["errors"][0]
    except (ValueError, KeyError, IndexError, TypeError):
        match = _LINE.search(text)
        hint = ""
        if re.search(r"'[eE]'$", text):
            hint = "; VNN-LIB 2.0 numbers have no exponent (write 0.00001, not 1e-05)"
        elif text.strip() in ("stod", "stoi", "stol", "stoll", "stoul", "stoull"):  # C++'s std::out_of_range
            text = "a number or index is out of range (beyond float64 or a 64-bit integer)"
        where = f"{source}:{match.group(1)}" if match else source
        return SpecError(f"{where}: VNN-LIB 2.0: {shown(text.splitlines()[0] if text else type(exc).__name__)}{hint}")
    line = first.get("line")
    where = f"{source}:{line}" if line else source
    detail = "; ".join(str(first[k]) for k in ("hint", "offendingSymbol") if first.get(k))
    return SpecError(f"{where}: VNN-LIB 2.0: {shown(first.get('message', 'invalid query'))}"
                     + (f" ({shown(detail)})" if detail else ""))


class _Reader(TermReader):
    """Turns the package's query into the v1 reader's conjunctions (``fail`` for
    :class:`~verifier.spec.vnnlib_terms.TermReader`)."""

    def __init__(self, source: str, length: int = 0):
        self.source, self.length = source, length

    def fail(self, line: int, message: str):
        raise SpecError(f"{self.source}:{line}: {shown(message)}" if line else f"{self.source}: {shown(message)}")

    def tensor(self, definition, kind: str) -> int:
        """The number of elements of a declared input/output (``kind`` ``X``/``Y``)."""
        words = str(definition).split()  # (declare-input NAME TYPE [shape] ...)
        written = words[2] if len(words) > 2 else "?"
        if definition.dtype.name not in FLOAT_TYPES and written != "Real":
            self.fail(0, f"{'input' if kind == 'X' else 'output'} {definition.name} has element type {written}; "
                         f"only Real and the float types (float16, float32, float64, bfloat16) are supported")
        count = math.prod(int(d) for d in definition.shape)
        # every input element needs two bounds in the text, so more inputs than characters is
        # a file that cannot be valid (and the sets below would exhaust memory)
        limit = self.length if kind == "X" else MAX_OUTPUTS
        if count > limit:
            what = (f"more than the file's {self.length} characters could bound (each input needs a lower and "
                    f"an upper bound)" if kind == "X" else f"more than {MAX_OUTPUTS} are supported")
            self.fail(0, f"{'input' if kind == 'X' else 'output'} {definition.name} declares {count} elements, "
                         f"{what}")
        return count

    def flat(self, var, line: int) -> tuple[str, int]:
        """``("X", i)`` or ``("Y", j)``: the row-major flattened index of a tensor element.
        :class:`SpecError` (``FILE:LINE``) for an index outside ``0 .. n-1`` of its dimension
        or a count of indices other than the tensor's rank."""
        kind = {"Input": "X", "Output": "Y"}.get(var.kind.name)
        if kind is None:
            self.fail(line, f"variable {var.name} is not a network input or output")
        indices, shape = [int(i) for i in var.indices], [int(n) for n in var.shape]
        element = f"{var.name}[{','.join(map(str, indices))}]"
        if len(indices) != len(shape):
            self.fail(line, f"{element} has {len(indices)} indices; {var.name} has {len(shape)} dimensions")
        index = 0
        for axis, (i, n) in enumerate(zip(indices, shape)):
            if not 0 <= i < n:  # the package (1.0.2) lets negative indices through
                self.fail(line, f"{element}: index {i} of dimension {axis} is outside 0..{n - 1} (indices count "
                                f"from 0; negative indices are not VNN-LIB 2.0)")
            index = index * n + i
        return kind, index

    def comparison(self, comp, conj: _Conj) -> int:
        """Add one comparison ``lhs ⋈ rhs`` to ``conj``; returns its line (0 if unknown)."""
        op = type(comp).__name__
        try:
            lhs, rhs = comp.lhs.to_linear_expr(), comp.rhs.to_linear_expr()
        except Exception as exc:  # the package's VNNLibException: a non-linear term
            raise _package_error(self.source, exc) from None
        lines = [t.var.line for t in (*lhs.terms, *rhs.terms)]
        line = min(lines) if lines else 0
        coefs: dict[tuple[str, int], float] = {}
        for terms, sign in ((lhs.terms, 1.0), (rhs.terms, -1.0)):
            for term in terms:
                key = self.flat(term.var, line)
                coefs[key] = coefs.get(key, 0.0) + sign * float(term.coeff)
        const = float(lhs.constant) - float(rhs.constant)  # lhs − rhs = Σ coefs·v + const
        self.check_finite(coefs, const, line)
        if op in ("LessEqual", "LessThan"):
            self.add_atom(conj, coefs, const, op == "LessThan", line)
        elif op in ("GreaterEqual", "GreaterThan"):
            self.add_atom(conj, {v: -a for v, a in coefs.items()}, -const, op == "GreaterThan", line)
        elif op == "Equal":
            self.add_atom(conj, coefs, const, False, line)
            self.add_atom(conj, {v: -a for v, a in coefs.items()}, -const, False, line)
        else:
            self.fail(line, f"'{comp}' uses {op}, which is not supported (!= has no closed set to bound)")
        return line

    def spec(self, query) -> Spec:
        networks = list(query.networks)
        if len(networks) != 1:
            self.fail(0, f"the query declares {len(networks)} networks; exactly one is supported")
        net = networks[0]
        if len(net.hidden):
            self.fail(0, f"network {net.name} declares hidden nodes ({', '.join(h.name for h in net.hidden)}); "
                         f"only inputs and outputs are supported")
        if len(net.inputs) != 1 or len(net.outputs) != 1:
            self.fail(0, f"network {net.name} declares {len(net.inputs)} inputs and {len(net.outputs)} outputs; "
                         f"exactly one of each is supported")
        declared = {"X": set(range(self.tensor(net.inputs[0], "X"))),
                    "Y": set(range(self.tensor(net.outputs[0], "Y")))}
        common, disjunctive, product = _Conj(1), [], 1
        for assertion in query.assertions:
            dnf = []
            for comparisons in assertion.expr.to_dnf():
                conj = _Conj(0)
                lines = [self.comparison(comp, conj) for comp in comparisons]
                conj.start = min((n for n in lines if n), default=0) or None
                dnf.append(conj.freeze())
            if len(dnf) == 1:
                common.extend(dnf[0])
                continue
            product *= len(dnf)
            if product > MAX_DISJUNCTS:
                self.fail(dnf[0].start or 0, f"the asserts so far expand to {product} disjuncts, more than "
                                             f"{MAX_DISJUNCTS}")
            disjunctive.append(dnf)
        return build_spec(self.source, declared, common, disjunctive)


def parse_vnnlib2(text: str, source: str = "<vnnlib>") -> Spec:
    """Parse VNN-LIB 2.0 ``text`` into a :class:`Spec` (see the module docstring): one
    :class:`~verifier.spec.model.InputRegion` per distinct input box of the asserts' DNF,
    its output disjuncts as rows ``A y ≤ b`` over the flattened output.

    Raises :class:`SpecError` naming ``source`` (and the line where known) for text the
    package rejects, forms nested deeper than :data:`MAX_NESTING`, a declared tensor too
    large to hold (inputs: more elements than the text could bound; outputs: more than
    :data:`MAX_OUTPUTS`), a query outside the supported fragment, or a missing package."""
    vnnlib = _package()
    _check_nesting(text, source)
    try:
        query = vnnlib.parse_query_string(text)
    except Exception as exc:  # VNNLibException (a RuntimeError subclass in some builds)
        raise _package_error(source, exc) from None
    return _Reader(source, len(text)).spec(query)
