"""Exact reference: the triangle-relaxation LP, solved with HiGHS (``scipy.optimize.linprog``).

The encoding (:mod:`verifier.domains.lp_encoding`, one constraint builder per op kind):
affine ops are equalities; a ReLU with pre-activation bounds ``l < 0 < u`` is its convex
hull ``y ≥ 0, y ≥ x, y ≤ u(x − l)/(u − l)`` (dead → ``y = 0``, active → ``y = x``);
LeakyReLU adds both lower lines; sigmoid/tanh use their two relaxation lines. The
intermediate bounds come from
``intermediate``: ``"crown"``, ``"dual-lp"`` or ``"best"`` (the intersection of both, the
default). Each row of ``C`` is one LP minimised and one maximised, per box.

With the same intermediate bounds this LP is the problem whose dual the Wong–Kolter bound
solves approximately, so ``dual-lp ≤ lp ≤ true minimum``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..deadline import checkpoint, remaining
from ..errors import VerifierInputError
from ..ir.graph import output_node
from ..linalg import spec_matrix
from . import register_domain
from .base import Domain
from .crown import CrownDomain
from .dual_lp import DualLPDomain
from .lp_encoding import RelaxationProblem, refuse_too_large, relaxation_problem, too_large, unencodable


def _linprog():
    """``scipy.optimize.linprog``, imported on first use (0.3–0.7 s that runs which never
    solve an LP should not pay at start-up)."""
    from scipy.optimize import linprog

    return linprog


@register_domain
class LPDomain(Domain):
    name = "lp"
    description = "triangle-relaxation LP (HiGHS); exact reference for small networks"

    def __init__(self, time_limit: float = 60.0, intermediate: str = "best"):
        if intermediate not in ("best", "crown", "dual-lp"):
            raise VerifierInputError(f"intermediate must be best, crown or dual-lp, not '{intermediate}'")
        self.time_limit, self.intermediate = time_limit, intermediate

    def supports(self, graph):
        """The op kinds with an LP constraint builder, on networks small enough to encode
        (:func:`~verifier.domains.lp_encoding.too_large`)."""
        return [(source, f"the LP encoding has no constraint builder for op kind '{kind}'")
                for source, kind in unencodable(graph)] + too_large(graph)

    def intermediate_bounds(self, graph, lower, upper):
        sources = {"crown": [CrownDomain], "dual-lp": [DualLPDomain], "best": [CrownDomain, DualLPDomain]}
        found = [cls().intermediate_bounds(graph, lower, upper) for cls in sources[self.intermediate]]
        return {n: (torch.stack([f[n][0] for f in found]).max(0).values, torch.stack([f[n][1] for f in found]).min(0).values)
                for n in found[0]}

    def bound(self, graph, lower, upper, C=None):
        refuse_too_large(graph)  # before the intermediate bounds' work
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

    def _solve(self, cost, problem: RelaxationProblem) -> float:
        checkpoint()
        res = _linprog()(cost, A_ub=problem.a_ub, b_ub=problem.b_ub, A_eq=problem.a_eq, b_eq=problem.b_eq,
                      bounds=list(zip(problem.var_lo, problem.var_hi)), method="highs",
                      options={"time_limit": max(0.01, min(self.time_limit, remaining()))})
        checkpoint()
        if res.status == 1:  # time or iteration limit: no optimum, so no valid bound but −∞
            return -math.inf
        if res.status != 0:
            raise RuntimeError(f"the LP solver did not reach an optimum: {res.message}")
        return float(res.fun)


__all__ = ["LPDomain", "RelaxationProblem", "relaxation_problem"]
