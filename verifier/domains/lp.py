"""Exact reference: the triangle-relaxation LP, solved with HiGHS (``scipy.optimize.linprog``).

Every node value is a block of LP variables. Affine ops are equalities
``y = Σ Jᵢ xᵢ + f₀`` (dense Jacobians, so: small networks only); a ReLU with
pre-activation bounds ``l < 0 < u`` is its convex hull ``y ≥ 0, y ≥ x,
y ≤ u(x − l)/(u − l)`` (dead → ``y = 0``, active → ``y = x``); LeakyReLU adds both lower
lines; sigmoid/tanh use their two relaxation lines. The intermediate bounds come from
``intermediate``: ``"crown"``, ``"dual-lp"`` or ``"best"`` (the intersection of both, the
default). Each row of ``C`` is one LP minimised and one maximised, per box.

With the same intermediate bounds this LP is the problem whose dual the Wong–Kolter bound
solves approximately, so ``dual-lp ≤ lp ≤ true minimum``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch
from scipy.optimize import linprog

from ..deadline import checkpoint, remaining
from ..errors import VerifierInputError
from ..ir.graph import input_node, output_node, predecessors_by_slot, topological_order
from ..linalg import spec_matrix
from ..ops import FORWARD
from ..ops.adjoint import AFFINE_KINDS, adjoint, offset
from . import register_domain
from .base import Domain
from .crown import CrownDomain
from .dual_lp import DualLPDomain
from .relaxations import lines_for

MAX_VARIABLES = 200_000


def dense_jacobians(node: dict, input_shapes: list[tuple], like: torch.Tensor) -> list[np.ndarray]:
    """``Jᵢ`` (``n_out × n_inᵢ``) of an affine node, from its adjoint applied to ``I``."""
    n_out = math.prod(node["shape"])
    eye = torch.eye(n_out, dtype=like.dtype, device=like.device).reshape(1, n_out, *node["shape"])
    return [j.reshape(n_out, -1).cpu().numpy() for j in adjoint(node, eye, input_shapes)]


@register_domain
class LPDomain(Domain):
    name = "lp"
    description = "triangle-relaxation LP (HiGHS); exact reference for small networks"

    def __init__(self, time_limit: float = 60.0, intermediate: str = "best"):
        if intermediate not in ("best", "crown", "dual-lp"):
            raise VerifierInputError(f"intermediate must be best, crown or dual-lp, not '{intermediate}'")
        self.time_limit, self.intermediate = time_limit, intermediate

    def intermediate_bounds(self, graph, lower, upper):
        sources = {"crown": [CrownDomain], "dual-lp": [DualLPDomain], "best": [CrownDomain, DualLPDomain]}
        found = [cls().intermediate_bounds(graph, lower, upper) for cls in sources[self.intermediate]]
        return {n: (torch.stack([f[n][0] for f in found]).max(0).values, torch.stack([f[n][1] for f in found]).min(0).values)
                for n in found[0]}

    def bound(self, graph, lower, upper, C=None):
        bounds_by_node = self.intermediate_bounds(graph, lower, upper)
        for node, (l, u) in bounds_by_node.items():
            if not (bool(torch.isfinite(l).all()) and bool(torch.isfinite(u).all())):
                raise VerifierInputError(f"the lp domain needs finite intermediate bounds, and node "
                                         f"'{graph.nodes[node].get('source', node)}' has none over this box "
                                         f"(values overflow); use a smaller box or the crown domain")
        out = output_node(graph)
        C = spec_matrix(C, math.prod(graph.nodes[out]["shape"]), lower)
        lbs, ubs = [], []
        for b in range(lower.shape[0]):
            problem = relaxation_problem(graph, lower[b:b + 1], upper[b:b + 1],
                                         {n: (l[b:b + 1], u[b:b + 1]) for n, (l, u) in bounds_by_node.items()})
            lo_row, hi_row = [], []
            for row in C[b].double().cpu().numpy():
                cost = np.zeros(problem.total)
                cost[problem.block(out)] = row
                lo_row.append(self._solve(cost, problem))
                hi_row.append(-self._solve(-cost, problem))
            lbs.append(lo_row)
            ubs.append(hi_row)
        return (torch.tensor(lbs, dtype=lower.dtype, device=lower.device),
                torch.tensor(ubs, dtype=lower.dtype, device=lower.device))

    def _solve(self, cost, problem) -> float:
        checkpoint()
        res = linprog(cost, A_ub=problem.a_ub, b_ub=problem.b_ub, A_eq=problem.a_eq, b_eq=problem.b_eq,
                      bounds=list(zip(problem.var_lo, problem.var_hi)), method="highs",
                      options={"time_limit": max(0.01, min(self.time_limit, remaining()))})
        checkpoint()
        if res.status == 1:  # time or iteration limit: no optimum, so no valid bound but −∞
            return -math.inf
        if res.status != 0:
            raise RuntimeError(f"the LP solver did not reach an optimum: {res.message}")
        return float(res.fun)


@dataclass
class RelaxationProblem:
    """The triangle LP of a network over one box: ``a_ub v ≤ b_ub``, ``a_eq v = b_eq``,
    ``var_lo ≤ v ≤ var_hi``; node ``n``'s values are the variables ``v[block(n)]``;
    ``crossing`` lists (relu node, its input node, flat indices) of the unstable ReLUs."""

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


def relaxation_problem(graph, lower: torch.Tensor, upper: torch.Tensor, bounds) -> RelaxationProblem:
    """Encode the network over the box ``[lower, upper]`` (one sample) as the triangle LP
    (see module docstring), with ``bounds`` the pre-activation bounds of every nonlinear
    node's input."""
    order = topological_order(graph)
    sizes = {n: math.prod(graph.nodes[n]["shape"]) for n in order}
    if sum(sizes.values()) > MAX_VARIABLES:
        raise VerifierInputError(f"LP/MILP encodings are for small networks (≤ {MAX_VARIABLES} values); "
                                 f"this one has {sum(sizes.values())}")
    start, total = {}, 0
    for n in order:
        start[n], total = total, total + sizes[n]
    like = lower
    eq_rows, eq_rhs, ub_rows, ub_rhs, crossing = [], [], [], [], []
    var_lo = np.full(total, -np.inf)
    var_hi = np.full(total, np.inf)

    def block(n):
        return slice(start[n], start[n] + sizes[n])

    src = input_node(graph)
    var_lo[block(src)] = lower.reshape(-1).double().cpu().numpy()
    var_hi[block(src)] = upper.reshape(-1).double().cpu().numpy()
    for n in order:
        checkpoint()
        node = graph.nodes[n]
        kind = node["kind"]
        if n == src:
            continue
        if kind == "constant":
            value = FORWARD["constant"](node, 1).reshape(-1).double().cpu().numpy()
            var_lo[block(n)], var_hi[block(n)] = value, value
            continue
        preds = predecessors_by_slot(graph, n)
        shapes = [tuple(graph.nodes[p]["shape"]) for p in preds]
        eye = sp.identity(sizes[n], format="csr")
        if kind in AFFINE_KINDS:
            f0 = offset(node, shapes, like).reshape(-1).double().cpu().numpy()
            row = sp.lil_matrix((sizes[n], total))
            row[:, block(n)] = eye
            for p, jac in zip(preds, dense_jacobians(node, shapes, like)):
                row[:, block(p)] = row[:, block(p)] - sp.csr_matrix(jac)
            eq_rows.append(row.tocsr())
            eq_rhs.append(f0)
            continue
        if kind not in ("relu", "leaky_relu", "sigmoid", "tanh"):
            raise VerifierInputError(f"LP/MILP encodings do not handle op kind '{kind}' (node '{node['source']}')")
        (p,) = preds
        l, u = (t.reshape(-1).double().cpu().numpy() for t in bounds[p])
        var_lo[block(p)] = np.maximum(var_lo[block(p)], l)
        var_hi[block(p)] = np.minimum(var_hi[block(p)], u)
        if kind == "relu":
            crossing.append((n, p, np.nonzero((l < 0) & (u > 0))[0]))
        lines = lines_for(node, *bounds[p], policy="parallel")
        a_l, b_l, a_u, b_u = (t.reshape(-1).double().cpu().numpy() for t in lines)
        lower_lines = [(a_l, b_l)]
        if kind in ("relu", "leaky_relu"):
            s = 0.0 if kind == "relu" else float(node["attrs"]["alpha"])
            if s <= 1:  # convex: both pieces are lower bounds
                lower_lines = [(np.ones_like(l), np.zeros_like(l)), (np.full_like(l, s), np.zeros_like(l))]
        for slope, icpt in lower_lines:  # slope·x + icpt − y ≤ 0
            row = sp.lil_matrix((sizes[n], total))
            row[:, block(n)] = -eye
            row[:, block(p)] = sp.diags(slope)
            ub_rows.append(row.tocsr())
            ub_rhs.append(-icpt)
        row = sp.lil_matrix((sizes[n], total))  # y − a_u x − b_u ≤ 0
        row[:, block(n)] = eye
        row[:, block(p)] = -sp.diags(a_u)
        ub_rows.append(row.tocsr())
        ub_rhs.append(b_u)
    return RelaxationProblem(
        sp.vstack(ub_rows).tocsr() if ub_rows else None, np.concatenate(ub_rhs) if ub_rhs else None,
        sp.vstack(eq_rows).tocsr() if eq_rows else None, np.concatenate(eq_rhs) if eq_rhs else None,
        var_lo, var_hi, start, sizes, crossing)
