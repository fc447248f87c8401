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
from .crown import CrownDomain, DualLPDomain
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
        order = topological_order(graph)
        sizes = {n: math.prod(graph.nodes[n]["shape"]) for n in order}
        if sum(sizes.values()) > MAX_VARIABLES:
            raise VerifierInputError(f"the lp domain is for small networks (≤ {MAX_VARIABLES} values); "
                                     f"this one has {sum(sizes.values())}")
        start, total = {}, 0
        for n in order:
            start[n], total = total, total + sizes[n]
        bounds_by_node = self.intermediate_bounds(graph, lower, upper)
        out = output_node(graph)
        n_out = sizes[out]
        C = spec_matrix(C, n_out, lower)
        lbs, ubs = [], []
        for b in range(lower.shape[0]):
            problem = self._constraints(graph, order, start, sizes, total, lower[b:b + 1], upper[b:b + 1],
                                        {n: (l[b:b + 1], u[b:b + 1]) for n, (l, u) in bounds_by_node.items()})
            lo_row, hi_row = [], []
            for row in C[b].double().cpu().numpy():
                cost = np.zeros(total)
                cost[start[out]:start[out] + n_out] = row
                lo_row.append(self._solve(cost, problem))
                hi_row.append(-self._solve(-cost, problem))
            lbs.append(lo_row)
            ubs.append(hi_row)
        return (torch.tensor(lbs, dtype=lower.dtype, device=lower.device),
                torch.tensor(ubs, dtype=lower.dtype, device=lower.device))

    def _solve(self, cost, problem) -> float:
        a_ub, b_ub, a_eq, b_eq, var_bounds = problem
        checkpoint()
        res = linprog(cost, A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=b_eq, bounds=var_bounds, method="highs",
                      options={"time_limit": max(0.01, min(self.time_limit, remaining()))})
        checkpoint()
        if res.status != 0:
            raise VerifierInputError(f"the LP solver did not reach an optimum: {res.message}")
        return float(res.fun)

    def _constraints(self, graph, order, start, sizes, total, lower, upper, bounds):
        like = lower
        eq_rows, eq_rhs, ub_rows, ub_rhs = [], [], [], []
        var_lo = np.full(total, -np.inf)
        var_hi = np.full(total, np.inf)

        def block(n):
            return slice(start[n], start[n] + sizes[n])

        src = input_node(graph)
        var_lo[block(src)] = lower.reshape(-1).double().cpu().numpy()
        var_hi[block(src)] = upper.reshape(-1).double().cpu().numpy()
        for n in order:
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
                raise VerifierInputError(f"the lp domain does not handle op kind '{kind}' (node '{node['source']}')")
            (p,) = preds
            l, u = (t.reshape(-1).double().cpu().numpy() for t in bounds[p])
            var_lo[block(p)] = np.maximum(var_lo[block(p)], l)
            var_hi[block(p)] = np.minimum(var_hi[block(p)], u)
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
        a_eq = sp.vstack(eq_rows).tocsr() if eq_rows else None
        a_ub = sp.vstack(ub_rows).tocsr() if ub_rows else None
        b_eq = np.concatenate(eq_rhs) if eq_rhs else None
        b_ub = np.concatenate(ub_rhs) if ub_rhs else None
        return a_ub, b_ub, a_eq, b_eq, list(zip(var_lo, var_hi))
