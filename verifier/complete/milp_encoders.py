"""The MILP's exact encodings: one registered encoder per op kind (as the LP's
:data:`~verifier.domains.lp_encoding.LP_CONSTRAINTS`), so that making an op MILP-exact is
adding an entry with :func:`milp_encoder`.

The MILP (:mod:`verifier.complete.milp`) starts from the LP of
:func:`~verifier.domains.lp_encoding.relaxation_problem` (every op's relaxation lines, the
pre-activation box ``l ≤ x ≤ u`` as variable bounds) and, for every elementwise node
``y = f(x)`` whose kind has an entry here, adds binaries and rows that make ``y = f(x)``
exact on each entry's range ``[l, u]`` (taken from the problem's variable bounds, so the
intermediate bounds of the verifier's domains are the big-M constants). An entry that
would need more than :data:`MAX_BINARIES_PER_ENTRY` binaries, or whose range is not
finite, keeps its LP relaxation only: the MILP is then a sound relaxation but not exact
(``unsat`` still holds, ``sat`` is confirmed by onnxruntime as always, and it may answer
``unknown``); :func:`inexact_entries` names those nodes.

**relu** (Tjeng, Xiao & Tedrake 2019, eq. 6): for ``l < 0 < u`` one binary ``δ`` and

    y ≤ x − l(1 − δ),   y ≤ u·δ,   y ≥ x,   y ≥ 0,

so ``y = x`` (``δ = 1``) or ``y = 0`` (``δ = 0``) exactly; stable entries are linear in the LP.

**Step functions** (``sign``, ``floor``, ``ceil``, ``round`` half to even, as in ONNX):
each is integer-valued, non-decreasing, and rises by exactly 1 at each of its jumps, so on
``[l, u]`` with ``m = f(u) − f(l)`` jumps

    f(x) = f(l) + Σ_{j<m} [x ⋈ t_j],   t_j = jump(f(l) + j),

where ``jump(v)`` is the point where ``f`` goes from ``v`` to ``v + 1`` (floor: ``v + 1``,
``x ≥ t``; ceil: ``v``, ``x > t``; round: ``v + ½``, ``≥`` when ``v + 1`` is even, ``>`` when
it is odd; sign: 0 for ``v = −1`` (``x ≥ 0``) and for ``v = 0`` (``x > 0``): two binaries
for ``{−1, 0, 1}``). Binaries ``δ_j ≈ [x ⋈ t_j]`` in the incremental formulation
(Dantzig 1960; see Vielma, Ahmed & Nemhauser 2010, "Mixed-integer models for nonseparable
piecewise-linear optimization", §3), for a margin ``η ≥ 0``, ``low_j = t_j + η``,
``high_j = t_j − η``, ``low_0 = l``, ``high_{m+1} = u``:

    1 ≥ δ_1 ≥ δ_2 ≥ … ≥ δ_m ≥ 0,
    x ≥ l + Σ_j (low_j − low_{j−1})·δ_j,   x ≤ high_1 + Σ_j (high_{j+1} − high_j)·δ_j,
    y = f(l) + Σ_j δ_j.

The integral points are the prefixes ``δ = (1, …, 1, 0, …, 0)`` of ``J`` ones, on which the
two sums telescope to ``low_J ≤ x ≤ high_{J+1}`` and ``y = f(l) + J``: ``δ_j = 1 ⇒ x ≥ t_j + η``
and ``δ_j = 0 ⇒ x ≤ t_j − η``. The chain ``1 ≥ δ_1 ≥ … ≥ 0`` is a simplex whose vertices are
those prefixes and the bounds on ``x`` are affine in ``δ``, so with ``η = 0`` the LP
relaxation of one entry is the convex hull of its closed graph (the per-threshold big-M
rows ``x ≥ l + (t_j − l)δ_j``, ``x ≤ t_j + (u − t_j)δ_j`` have the same integral points and a
weaker relaxation: measured ~2× slower on 300–560 binaries).

With ``η = 0`` (the program that decides) the strict conditions are relaxed to
non-strict ones: every ``x`` admits ``δ_j = [x ⋈ t_j]`` (the graph of ``f`` is inside the
program: sound for ``unsat``), off the thresholds that is the only choice (exact), and at
``x = t_j`` exactly both values of ``δ_j`` are allowed (``y`` may take either adjacent step
there; sign(0) may be −1, 0 or 1). That over-approximation lives on a measure-zero set of
boundaries, and every ``sat`` is confirmed by onnxruntime anyway. (On nets where a step's
input is exactly a threshold on a set of positive measure, e.g. a sign fed by integer
combinations of signs, it can make the MILP answer ``unknown``, never wrong.) With
``η > 0`` only ``δ_j = [x ⋈ t_j]`` and only ``x`` at least ``η`` away from every threshold:
a subset of the graph, which :mod:`verifier.complete.milp` solves to move a candidate that
sits on a boundary into the interior of its step. A range holding no jump (``m = 0``) is
the constant ``y = f(l)``, with no binary.
"""

from __future__ import annotations

from typing import ClassVar

import networkx as nx
import numpy as np
import scipy.sparse as sp

from ..ir.graph import predecessors_by_slot
from ..ops import Node
from ..ops.categories import lookup

MAX_BINARIES_PER_ENTRY = 256  # an 8-bit quantised range; wider entries keep the LP relaxation
STEP_MARGIN = 1e-5  # η of the interior search, relative to 1 + |t| (float32 rounding of x ≈ 1e-7)


class MilpRows:
    """The columns and rows the encoders add to the LP: columns ``[0, n_var)`` are the LP's
    variables, binaries are appended after them; rows are COO triplets with two-sided
    bounds ``lo ≤ row·v ≤ hi``."""

    def __init__(self, n_var: int):
        self.n_var = self.n_cols = n_var
        self.n_rows = 0
        self._rows: list[np.ndarray] = []
        self._cols: list[np.ndarray] = []
        self._vals: list[np.ndarray] = []
        self._lo: list[np.ndarray] = []
        self._hi: list[np.ndarray] = []

    @property
    def n_binaries(self) -> int:
        return self.n_cols - self.n_var

    def binaries(self, count: int) -> np.ndarray:
        """``(count,)`` column indices of fresh binaries."""
        cols = np.arange(self.n_cols, self.n_cols + count)
        self.n_cols += count
        return cols

    def add(self, terms: list[tuple[np.ndarray, np.ndarray | float]], lo, hi) -> None:
        """``k`` rows ``lo ≤ Σ_terms coef·v[col] ≤ hi``; each term is ``(cols (k,), coefs (k,) or a
        scalar)``, ``lo``/``hi`` are ``(k,)`` or scalars (``±inf`` for one-sided rows)."""
        k = len(terms[0][0])
        rows = self.n_rows + np.arange(k)
        for cols, coefs in terms:
            self._rows.append(rows)
            self._cols.append(np.asarray(cols, dtype=np.int64))
            self._vals.append(np.broadcast_to(np.asarray(coefs, dtype=np.float64), (k,)))
        self._lo.append(np.broadcast_to(np.asarray(lo, dtype=np.float64), (k,)))
        self._hi.append(np.broadcast_to(np.asarray(hi, dtype=np.float64), (k,)))
        self.n_rows += k

    def add_sums(self, k: int, rows: np.ndarray, cols: np.ndarray, coefs: np.ndarray, lo, hi) -> None:
        """``k`` rows of any lengths: term ``i`` (``cols[i]``, ``coefs[i]``) goes to local row
        ``rows[i]``; ``lo``/``hi`` as in :meth:`add`."""
        self._rows.append(self.n_rows + np.asarray(rows, dtype=np.int64))
        self._cols.append(np.asarray(cols, dtype=np.int64))
        self._vals.append(np.asarray(coefs, dtype=np.float64))
        self._lo.append(np.broadcast_to(np.asarray(lo, dtype=np.float64), (k,)))
        self._hi.append(np.broadcast_to(np.asarray(hi, dtype=np.float64), (k,)))
        self.n_rows += k

    def matrix(self, width: int) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
        """``(A (n_rows × width), lo, hi)``."""
        if not self.n_rows:
            return sp.csr_matrix((0, width)), np.zeros(0), np.zeros(0)
        a = sp.csr_matrix((np.concatenate(self._vals), (np.concatenate(self._rows), np.concatenate(self._cols))),
                          shape=(self.n_rows, width))
        return a, np.concatenate(self._lo), np.concatenate(self._hi)


class MilpEncoder:
    """The exact encoding of one elementwise op kind ``y = f(x)`` (module docstring).

    ``boundary``: exact only off a measure-zero set of thresholds, and :meth:`encode`
    honours a margin ``eta > 0`` (an under-approximation used to find interior points)."""

    boundary: ClassVar[bool] = False

    def binaries(self, node: Node, l: np.ndarray, u: np.ndarray) -> np.ndarray:
        """``(n,)`` float: binaries each entry needs for an exact encoding on ``[l, u]``
        (0: the LP is exact or nothing is needed; ``inf``: no finite encoding)."""
        raise NotImplementedError

    def encode(self, rows: MilpRows, node: Node, x: np.ndarray, y: np.ndarray, l: np.ndarray, u: np.ndarray,
               eta: float = 0.0) -> None:
        """Add the rows (and binaries) making ``v[y] = f(v[x])`` for these entries: ``x``, ``y``
        ``(k,)`` columns, ``l``, ``u`` ``(k,)`` finite ranges, each needing at most
        :data:`MAX_BINARIES_PER_ENTRY` binaries."""
        raise NotImplementedError


MILP_ENCODERS: dict[str, MilpEncoder] = {}


def milp_encoder(*kinds: str):
    """Class decorator: register an instance of the :class:`MilpEncoder` subclass for ``kinds``."""

    def register(cls: type[MilpEncoder]) -> type[MilpEncoder]:
        for kind in kinds:
            MILP_ENCODERS[kind] = cls()
        return cls

    return register


def encoder_for(kind: str) -> MilpEncoder | None:
    """The kind's entry (or its category's, see :func:`~verifier.ops.categories.lookup`)."""
    return lookup(MILP_ENCODERS, kind)


@milp_encoder("relu")
class ReluEncoder(MilpEncoder):
    """Tjeng et al.'s big-M rows (module docstring) for the crossing entries ``l < 0 < u``."""

    def binaries(self, node, l, u):
        need = ((l < 0) & (u > 0)).astype(np.float64)
        need[need.astype(bool) & ~(np.isfinite(l) & np.isfinite(u))] = np.inf
        return need

    def encode(self, rows, node, x, y, l, u, eta=0.0):
        cross = (l < 0) & (u > 0)
        x, y, l, u = x[cross], y[cross], l[cross], u[cross]
        if not len(x):
            return
        d = rows.binaries(len(x))
        rows.add([(y, 1.0), (x, -1.0), (d, -l)], -np.inf, -l)  # y ≤ x − l(1 − δ)
        rows.add([(y, 1.0), (d, -u)], -np.inf, 0.0)  # y ≤ u·δ
        rows.add([(y, 1.0), (x, -1.0)], 0.0, np.inf)  # y ≥ x
        rows.add([(y, 1.0)], 0.0, np.inf)  # y ≥ 0


class StepEncoder(MilpEncoder):
    """A unit-jump integer step function (module docstring): subclasses give ``f`` and ``jump``."""

    boundary = True

    def f(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def jump(self, v: np.ndarray) -> np.ndarray:
        """Where ``f`` rises from ``v`` to ``v + 1``."""
        raise NotImplementedError

    def binaries(self, node, l, u):
        with np.errstate(invalid="ignore"):
            need = self.f(u) - self.f(l)
        need[~(np.isfinite(l) & np.isfinite(u))] = np.inf
        return need

    def encode(self, rows, node, x, y, l, u, eta=0.0):
        base = self.f(l)
        m = (self.f(u) - base).astype(np.int64)
        entry = np.repeat(np.arange(len(x)), m)  # entry of each binary, in threshold order
        j = np.arange(m.sum()) - np.repeat(np.cumsum(m) - m, m)  # its rank within the entry
        t = self.jump(base[entry] + j)
        d = rows.binaries(len(t))
        if len(d):
            margin = eta * (1 + np.abs(t))
            low, high = t + margin, t - margin
            first, last = j == 0, j == m[entry] - 1
            prev = np.empty_like(low)  # low_{j−1}, l before the entry's first threshold
            prev[1:] = low[:-1]
            prev[first] = l[entry[first]]
            after = np.empty_like(high)  # high_{j+1}, u after the entry's last threshold
            after[:-1] = high[1:]
            after[last] = u[entry[last]]
            busy = np.nonzero(m > 0)[0]
            row_of = np.cumsum(m > 0) - 1  # entry → its row among the entries with binaries
            sums = np.concatenate([np.arange(len(busy)), row_of[entry]])
            cols, ones = np.concatenate([x[busy], d]), np.ones(len(busy))
            rows.add_sums(len(busy), sums, cols, np.concatenate([ones, prev - low]), l[busy], np.inf)
            rows.add_sums(len(busy), sums, cols, np.concatenate([ones, high - after]), -np.inf, high[first])
            chain = np.nonzero(~last)[0]
            if len(chain):
                rows.add([(d[chain], 1.0), (d[chain + 1], -1.0)], 0.0, np.inf)  # δ_j ≥ δ_{j+1}
        k = len(x)  # y − Σ δ = f(l), one row per entry (no δ: the constant)
        rows.add_sums(k, np.concatenate([np.arange(k), entry]), np.concatenate([y, d]),
                      np.concatenate([np.ones(k), -np.ones(len(d))]), base, base)


@milp_encoder("floor")
class FloorEncoder(StepEncoder):
    def f(self, x):
        return np.floor(x)

    def jump(self, v):
        return v + 1.0


@milp_encoder("ceil")
class CeilEncoder(StepEncoder):
    def f(self, x):
        return np.ceil(x)

    def jump(self, v):
        return v


@milp_encoder("round")
class RoundEncoder(StepEncoder):
    def f(self, x):
        return np.round(x)  # half to even, as ONNX Round

    def jump(self, v):
        return v + 0.5


@milp_encoder("sign")
class SignEncoder(StepEncoder):
    def f(self, x):
        return np.sign(x)

    def jump(self, v):
        return np.zeros_like(v)


def encoded_nodes(graph: nx.DiGraph):
    """``(node id, node, encoder, input node id)`` of every node with an encoder."""
    for n, node in graph.nodes(data=True):
        encoder = encoder_for(node["kind"])
        if encoder is not None:
            (p,) = predecessors_by_slot(graph, n)
            yield n, node, encoder, p


def _ranges(bounds: dict, p: str) -> tuple[np.ndarray, np.ndarray]:
    l, u = bounds[p]
    return (np.asarray(l.detach().double().cpu()).reshape(-1), np.asarray(u.detach().double().cpu()).reshape(-1))


def binary_counts(graph: nx.DiGraph, bounds: dict) -> tuple[dict[str, int], dict[str, int]]:
    """Over intermediate ``bounds`` (node → ``(l, u)`` of its values, as the domains give
    them): per op kind, the binaries the MILP adds, and the entries left to their LP
    relaxation (over :data:`MAX_BINARIES_PER_ENTRY`, or an infinite range)."""
    used: dict[str, int] = {}
    relaxed: dict[str, int] = {}
    for _, node, encoder, p in encoded_nodes(graph):
        if p not in bounds:
            continue
        need = encoder.binaries(node, *_ranges(bounds, p))
        exact = need <= MAX_BINARIES_PER_ENTRY
        kind = node["kind"]
        used[kind] = used.get(kind, 0) + int(need[exact].sum())
        if (~exact).any():
            relaxed[kind] = relaxed.get(kind, 0) + int((~exact).sum())
    return used, relaxed


def inexact_entries(graph: nx.DiGraph, bounds: dict) -> list[tuple[str, str]]:
    """``(node, reason)`` for every encoded node with an entry the MILP leaves to its LP
    relaxation on these ``bounds`` (see :func:`binary_counts`)."""
    out = []
    for n, node, encoder, p in encoded_nodes(graph):
        if p not in bounds:
            continue
        need = encoder.binaries(node, *_ranges(bounds, p))
        wide = int((need > MAX_BINARIES_PER_ENTRY).sum())
        if wide:
            out.append((node.get("source", n), f"the MILP keeps the LP relaxation of {wide} '{node['kind']}' "
                                               f"entries whose range needs more than {MAX_BINARIES_PER_ENTRY} "
                                               f"binaries or is unbounded: not exact there"))
    return out


def encode_exact(graph: nx.DiGraph, problem, eta: float = 0.0) -> tuple[MilpRows, bool]:
    """The rows and binaries of every encoded node on ``problem`` (a
    :class:`~verifier.domains.lp_encoding.RelaxationProblem`; the ranges are its variable
    bounds of each node's input), and whether any binary belongs to a ``boundary``
    encoder. Entries over the cap keep their LP rows only."""
    rows = MilpRows(problem.total)
    boundary = False
    for n, node, encoder, p in encoded_nodes(graph):
        block = problem.block(p)
        l, u = problem.var_lo[block], problem.var_hi[block]
        need = encoder.binaries(node, l, u)
        idx = np.nonzero(need <= MAX_BINARIES_PER_ENTRY)[0]
        before = rows.n_binaries
        encoder.encode(rows, node, problem.start[p] + idx, problem.start[n] + idx, l[idx], u[idx], eta)
        boundary = boundary or (encoder.boundary and rows.n_binaries > before)
    return rows, boundary


__all__ = ["MAX_BINARIES_PER_ENTRY", "MILP_ENCODERS", "MilpEncoder", "MilpRows", "STEP_MARGIN", "StepEncoder",
           "binary_counts", "encode_exact", "encoder_for", "inexact_entries", "milp_encoder"]
