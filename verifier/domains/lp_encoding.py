"""The LP encoding of a network over one box, one registered constraint builder per op
kind, run by the engine's forward walk (:func:`verifier.engine.propagate`).

Every node value is a block of LP variables (the encoder's "state" is that block).
Affine ops are equalities ``y = Σ Jᵢ xᵢ + f₀`` (dense Jacobians from the adjoint table,
so: small networks only); an elementwise nonlinear op ``y = f(x)`` is ``y`` above every
lower and below every upper line of its relaxation entry
(:meth:`~verifier.ops.relaxation.Relaxation.lp_lines`), e.g. the triangle
``y ≥ 0, y ≥ x, y ≤ u(x − l)/(u − l)`` of a crossing ReLU (Ehlers 2017, eq. 3), with the
pre-activation box ``l ≤ x ≤ u`` as variable bounds; softmax rows between the two lines
of :mod:`verifier.ops.softmax`. Entries of piecewise-linear kinds
(ReLU) are listed in ``crossing`` for the MILP's binaries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import scipy.sparse as sp
import torch

from ..engine import propagate
from ..errors import VerifierInputError
from ..ir.graph import predecessors_by_slot, topological_order
from ..linalg import crossing
from ..ops.categories import ANY_AFFINE, ANY_ELEMENTWISE, lookup
from ..ops.adjoint import adjoint, offset
from ..ops.relaxation import RELAXATIONS
from ..ops.softmax import SOFTMAX_KINDS, SoftmaxRelaxation

MAX_VARIABLES = 200_000
# affine ops are encoded by their dense Jacobians (out × in entries each, float64): past this
# many in all the encoding would need gigabytes (a GAN generator's transposed convolutions:
# 1.5e9) and is refused up front; the VNN-COMP conv nets need at most 2.6e7 (cifar_wide_kw)
MAX_JACOBIAN_ENTRIES = 100_000_000


def dense_jacobians(node: dict, input_shapes: list[tuple], like: torch.Tensor) -> list[np.ndarray]:
    """``Jᵢ`` (``n_out × n_inᵢ``) of an affine node, from its adjoint applied to ``I``."""
    n_out = math.prod(node["shape"])
    eye = torch.eye(n_out, dtype=like.dtype, device=like.device).reshape(1, n_out, *node["shape"])
    return [j.reshape(n_out, -1).cpu().numpy() for j in adjoint(node, eye, input_shapes)]


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.reshape(-1).double().cpu().numpy()


@dataclass
class RelaxationProblem:
    """The LP of a network over one box: ``a_ub v ≤ b_ub``, ``a_eq v = b_eq``,
    ``var_lo ≤ v ≤ var_hi``; node ``n``'s values are the variables ``v[block(n)]``;
    ``crossing`` lists (relu node, its input node, flat indices) of the crossing ReLUs."""

    a_ub: sp.csr_matrix | None
    b_ub: np.ndarray | None
    a_eq: sp.csr_matrix | None
    b_eq: np.ndarray | None
    var_lo: np.ndarray
    var_hi: np.ndarray
    start: dict
    sizes: dict
    crossing: list = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.var_lo)

    def block(self, n: str) -> slice:
        return slice(self.start[n], self.start[n] + self.sizes[n])


Builder = Callable[..., slice]
LP_CONSTRAINTS: dict[str, Builder] = {}


def lp_constraint(*kinds: str):
    """Register ``f(encoder, node_id, node, *input_blocks) -> output block`` for ``kinds``."""

    def register(fn: Builder) -> Builder:
        for kind in kinds:
            LP_CONSTRAINTS[kind] = fn
        return fn

    return register


class LPEncoder:
    """Collects the variables and constraints while the engine walks the graph; a forward
    "domain" whose state is a node's block of variables."""

    name = "lp-encoding"

    def __init__(self, graph, bounds, like: torch.Tensor, total: int):
        self.graph, self.bounds, self.like, self.total = graph, bounds, like, total
        self.ids = {id(graph.nodes[n]): n for n in graph.nodes}  # node dict → node id
        self.var_lo, self.var_hi = np.full(total, -np.inf), np.full(total, np.inf)
        self.eq_rows, self.eq_rhs, self.ub_rows, self.ub_rhs, self.crossing = [], [], [], [], []
        self.blocks: dict[str, slice] = {}
        self.used = 0

    def allocate(self, size: int) -> slice:
        block = slice(self.used, self.used + size)
        self.used += size
        return block

    def input_state(self, lower: torch.Tensor, upper: torch.Tensor) -> slice:
        block = self.allocate(lower[0].numel())
        self.var_lo[block], self.var_hi[block] = _numpy(lower), _numpy(upper)
        return block

    def constant_state(self, value: torch.Tensor) -> slice:
        block = self.allocate(value[0].numel())
        self.var_lo[block] = self.var_hi[block] = _numpy(value)
        return block

    def transfer_for(self, kind: str):
        builder = lookup(LP_CONSTRAINTS, kind)
        if builder is None:
            return None

        def encode(encoder, node, *blocks):
            node_id = encoder.ids[id(node)]
            out = builder(encoder, node_id, node, *blocks)
            encoder.blocks[node_id] = out
            return out

        return encode

    def rows(self, size: int) -> sp.lil_matrix:
        return sp.lil_matrix((size, self.total))


@lp_constraint(ANY_AFFINE)
def lp_affine(enc: LPEncoder, n: str, node: dict, *inputs: slice) -> slice:
    """``y − Σ Jᵢ xᵢ = f₀``."""
    shapes = [tuple(enc.graph.nodes[p]["shape"]) for p in predecessors_by_slot(enc.graph, n)]
    out = enc.allocate(math.prod(node["shape"]))
    row = enc.rows(out.stop - out.start)
    row[:, out] = sp.identity(out.stop - out.start, format="csr")
    for block, jac in zip(inputs, dense_jacobians(node, shapes, enc.like)):
        row[:, block] = row[:, block] - sp.csr_matrix(jac)
    enc.eq_rows.append(row.tocsr())
    enc.eq_rhs.append(_numpy(offset(node, shapes, enc.like)))
    return out


@lp_constraint(ANY_ELEMENTWISE)
def lp_elementwise(enc: LPEncoder, n: str, node: dict, x: slice) -> slice:
    """``y ≥ a x + b`` for every lower line, ``y ≤ a x + b`` for every upper line, and the
    pre-activation bounds as variable bounds."""
    (p,) = predecessors_by_slot(enc.graph, n)
    l_t, u_t = enc.bounds[p]
    l, u = _numpy(l_t), _numpy(u_t)
    enc.var_lo[x] = np.maximum(enc.var_lo[x], l)
    enc.var_hi[x] = np.minimum(enc.var_hi[x], u)
    out = enc.allocate(math.prod(node["shape"]))
    size = out.stop - out.start
    relaxation = RELAXATIONS[node["kind"]]
    if relaxation.piecewise_linear:
        enc.crossing.append((n, p, np.nonzero(_numpy(crossing(l_t, u_t)))[0]))
    lower_lines, upper_lines = relaxation.lp_lines(node, l_t, u_t)
    eye = sp.identity(size, format="csr")
    for sign, lines in ((-1.0, lower_lines), (1.0, upper_lines)):
        for slope, icpt in lines:  # lower: a·x + b − y ≤ 0; upper: y − a·x − b ≤ 0
            row = enc.rows(size)
            row[:, out] = sign * eye
            row[:, x] = -sign * sp.diags(_numpy(slope))
            enc.ub_rows.append(row.tocsr())
            enc.ub_rhs.append(sign * _numpy(icpt))
    return out


@lp_constraint(*SOFTMAX_KINDS)
def lp_softmax(enc: LPEncoder, n: str, node: dict, x: slice) -> slice:
    """``A_l x + b_l ≤ y ≤ A_u x + b_u`` (:class:`~verifier.ops.softmax.SoftmaxRelaxation`,
    one ``n × n`` block per softmax row) and the exact interval as variable bounds."""
    (p,) = predecessors_by_slot(enc.graph, n)
    l_t, u_t = enc.bounds[p]
    enc.var_lo[x] = np.maximum(enc.var_lo[x], _numpy(l_t))
    enc.var_hi[x] = np.minimum(enc.var_hi[x], _numpy(u_t))
    rel = SoftmaxRelaxation(node["kind"], l_t, u_t)
    out = enc.allocate(math.prod(node["shape"]))
    size = out.stop - out.start
    enc.var_lo[out], enc.var_hi[out] = _numpy(rel.lower), _numpy(rel.upper)
    eye = sp.identity(size, format="csr")
    for sign, weight, bias in ((-1.0, rel.lower_weight, rel.lower_bias), (1.0, rel.upper_weight, rel.upper_bias)):
        n_cols = weight.shape[-1]
        blocks = weight.reshape(-1, n_cols, n_cols).double().cpu().numpy()
        row = enc.rows(size)  # lower: A_l x + b_l − y ≤ 0; upper: y − A_u x − b_u ≤ 0
        row[:, out] = sign * eye
        row[:, x] = -sign * sp.block_diag(list(blocks), format="csr")
        enc.ub_rows.append(row.tocsr())
        enc.ub_rhs.append(sign * _numpy(bias))
    return out


def unencodable(graph) -> list[tuple[str, str]]:
    """``(node source, op kind)`` of every node without an LP constraint builder."""
    return [(d.get("source", n), d["kind"]) for n, d in graph.nodes(data=True)
            if d["kind"] not in ("input", "constant") and lookup(LP_CONSTRAINTS, d["kind"]) is None]


def jacobian_entries(graph) -> tuple[int, str | None]:
    """Entries of the dense Jacobians :func:`lp_affine` builds, ``Σ out_size × in_size`` over
    the affine nodes' non-constant inputs (a count from shapes alone), and the source name
    of the node with the most."""
    total, worst, name = 0, 0, None
    for n, d in graph.nodes(data=True):
        if d["kind"] in ("input", "constant") or lookup(LP_CONSTRAINTS, d["kind"]) is not lp_affine:
            continue
        if d.get("shape") is None:  # a probe graph without shapes (`verifier ops`): nothing to count
            continue
        out = math.prod(d["shape"])
        entries = sum(out * math.prod(graph.nodes[p].get("shape") or ()) for p in predecessors_by_slot(graph, n)
                      if graph.nodes[p]["kind"] != "constant")
        total += entries
        if entries > worst:
            worst, name = entries, d.get("source", n)
    return total, name


def too_large(graph) -> list[tuple[str, str]]:
    """``[(node source, message)]`` when the encoding's dense Jacobians exceed
    :data:`MAX_JACOBIAN_ENTRIES` (the node with the largest named), else ``[]``: what the lp
    domain's and the MILP's ``supports`` report, so they refuse before any work."""
    entries, name = jacobian_entries(graph)
    if entries <= MAX_JACOBIAN_ENTRIES:
        return []
    return [(name, f"LP/MILP encodings are for small networks: the affine ops' dense Jacobians have "
                   f"{entries:.3g} entries in all (at most {MAX_JACOBIAN_ENTRIES:.3g}, about "
                   f"{8 * MAX_JACOBIAN_ENTRIES / 2 ** 30:.0f} GiB); use a bound domain (crown, alpha-crown) "
                   f"or branch-and-bound")]


def refuse_too_large(graph) -> None:
    """Raise :class:`VerifierInputError` naming the largest node when :func:`too_large` reports
    the network (the lp domain calls it before its intermediate bounds, the encoding before
    any constraint)."""
    for source, message in too_large(graph):
        raise VerifierInputError(f"{message} (largest: node '{source}')")


def relaxation_problem(graph, lower: torch.Tensor, upper: torch.Tensor, bounds) -> RelaxationProblem:
    """Encode the network over the box ``[lower, upper]`` (one sample, ``(1, *input_shape)``)
    as the LP of the module docstring, with ``bounds`` the pre-activation bounds of every
    nonlinear node's input. Raises :class:`VerifierInputError` for a network over
    ``MAX_VARIABLES`` values or ``MAX_JACOBIAN_ENTRIES`` dense Jacobian entries, or an op
    kind without a constraint builder."""
    sizes = {n: math.prod(graph.nodes[n]["shape"]) for n in topological_order(graph)}
    total = sum(sizes.values())
    if total > MAX_VARIABLES:
        raise VerifierInputError(f"LP/MILP encodings are for small networks (≤ {MAX_VARIABLES} values); "
                                 f"this one has {total}")
    unsupported = unencodable(graph)
    if unsupported:
        source, kind = unsupported[0]
        raise VerifierInputError(f"LP/MILP encodings do not handle op kind '{kind}' (node '{source}')")
    refuse_too_large(graph)
    enc = LPEncoder(graph, bounds, lower, total)
    states = propagate(graph, enc, lower, upper, keep=True)
    start = {n: b.start for n, b in states.items()}
    sizes = {n: b.stop - b.start for n, b in states.items()}
    return RelaxationProblem(
        sp.vstack(enc.ub_rows).tocsr() if enc.ub_rows else None, np.concatenate(enc.ub_rhs) if enc.ub_rhs else None,
        sp.vstack(enc.eq_rows).tocsr() if enc.eq_rows else None, np.concatenate(enc.eq_rhs) if enc.eq_rhs else None,
        enc.var_lo, enc.var_hi, start, sizes, enc.crossing)
