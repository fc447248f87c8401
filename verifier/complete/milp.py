"""Exact decision of one disjunct by mixed-integer linear programming (HiGHS via
``scipy.optimize.milp``).

The network over the box is the triangle LP of :func:`~verifier.domains.lp_encoding.relaxation_problem`
plus, for every crossing ReLU ``y = max(x, 0)`` with ``l < 0 < u``, a binary ``δ`` and the
big-M constraints of Tjeng et al.:

    y ≤ x − l(1 − δ),   y ≤ u·δ,   y ≥ x,   y ≥ 0,

which make ``y = x`` (``δ = 1``) or ``y = 0`` (``δ = 0``) exactly; ``l, u`` come from the
domains' intermediate bounds (tighter bounds, smaller M). For the disjunct ``A y ≤ b`` the
program minimises ``t`` subject to ``A_i y − b_i ≤ t``: the disjunct is empty iff the
optimum is ``> 0``. HiGHS's proven lower bound (the MIP dual bound) is what is compared,
with a margin for the solver's tolerances, so a time-limited run is still sound. A
solution with ``t ≤ 0`` is a candidate counterexample, confirmed with onnxruntime.
"""

from __future__ import annotations

import multiprocessing as mp
from types import SimpleNamespace

import numpy as np
import scipy.sparse as sp
import torch
from scipy.optimize import Bounds, LinearConstraint, milp

from ..api import Model
from ..attack import Counterexample, confirm
from ..deadline import checkpoint, remaining
from ..domains.lp_encoding import relaxation_problem
from ..spec.model import InputRegion

SOLVER_MARGIN = 1e-5  # HiGHS feasibility/optimality tolerances are ~1e-7 (absolute)


def _run_milp(args) -> dict:
    """HiGHS on ``(cost, integrality, bounds, constraints, time limit)``: the fields used."""
    cost, integrality, bounds, constraints, limit = args
    res = milp(cost, integrality=integrality, bounds=bounds, constraints=constraints,
               options={"time_limit": limit, "mip_rel_gap": 0.0})
    return {"status": res.status, "x": res.x, "fun": res.fun, "mip_dual_bound": getattr(res, "mip_dual_bound", None)}


def _solve_in_child(conn, args) -> None:
    try:
        conn.send(_run_milp(args))
    except BaseException as exc:  # reported to the parent, which re-raises
        conn.send({"error": f"{type(exc).__name__}: {exc}"})
    finally:
        conn.close()


def solve_within_deadline(cost, integrality, bounds, constraints, seconds: float):
    """``scipy.optimize.milp`` that returns by ``seconds`` whatever HiGHS does: HiGHS
    does not check its own time limit during presolve, so it runs in a forked process
    that is killed at the deadline (``None`` then). Without ``fork`` (or with no
    deadline) it runs in this process with HiGHS's time limit."""
    limit = max(0.05, float(seconds))
    args = (cost, integrality, bounds, constraints, limit)
    if not np.isfinite(seconds) or "fork" not in mp.get_all_start_methods():
        return SimpleNamespace(**_run_milp(args))
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_solve_in_child, args=(child, args), daemon=True)
    proc.start()
    child.close()
    try:
        if not parent.poll(limit + 0.2):
            return None
        out = parent.recv()
    except EOFError:
        out = {"error": "the MILP process ended without an answer"}
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join()
        parent.close()
    if "error" in out:
        raise RuntimeError(f"MILP solver failed: {out['error']}")
    return SimpleNamespace(**out)


def crossing_count(bounds) -> int:
    """Unstable ReLU inputs (``l < 0 < u``) in a dict of intermediate bounds."""
    return sum(int(((l < 0) & (u > 0)).sum()) for l, u in bounds.values())


def milp_disjunct(model: Model, region: InputRegion, disjunct: int, bounds, region_index: int = 0,
                  time_limit: float = float("inf"), device: str = "cpu",
                  dtype: torch.dtype = torch.float64, restricted: bool = False) -> tuple[str, Counterexample | None]:
    """``("unsat", None)`` when the disjunct is proven empty, ``("sat", cex)`` on a
    confirmed counterexample, else ``("unknown", None)`` (time limit, or a solution
    onnxruntime does not confirm). ``bounds``: intermediate bounds valid on the box.

    ``restricted``: the bounds also *define* the set searched (branch-and-bound clamps
    split ReLUs' inputs to ``≥ 0`` or ``≤ 0``), so an infeasible program means that set
    is empty; otherwise infeasibility can only come from inconsistent bounds and
    decides nothing."""
    graph = model.graph_for(device, dtype)
    lower = model.as_batch(region.lower.to(device=device, dtype=dtype))
    upper = model.as_batch(region.upper.to(device=device, dtype=dtype))
    problem = relaxation_problem(graph, lower, upper, {n: (l[:1], u[:1]) for n, (l, u) in bounds.items()})
    conj = region.disjuncts[disjunct]
    A, b = conj.A.double().numpy(), conj.b.double().numpy()
    n_var = problem.total
    binaries = [(relu, pre, idx) for relu, pre, idx in problem.crossing if len(idx)]
    n_bin = sum(len(idx) for _, _, idx in binaries)
    t_col = n_var + n_bin  # the objective variable t
    width = t_col + 1
    blocks, rhs_hi, rhs_lo = [], [], []

    def widen(m):
        m = sp.csr_matrix(m)
        return sp.hstack([m, sp.csr_matrix((m.shape[0], width - m.shape[1]))]).tocsr()

    if problem.a_ub is not None:
        blocks.append(widen(problem.a_ub))
        rhs_hi.append(problem.b_ub)
        rhs_lo.append(np.full(len(problem.b_ub), -np.inf))
    if problem.a_eq is not None:
        blocks.append(widen(problem.a_eq))
        rhs_hi.append(problem.b_eq)
        rhs_lo.append(problem.b_eq)
    col = n_var
    for relu, pre, idx in binaries:
        l, u = problem.var_lo[problem.block(pre)][idx], problem.var_hi[problem.block(pre)][idx]
        y = problem.start[relu] + idx
        x = problem.start[pre] + idx
        d = col + np.arange(len(idx))
        col += len(idx)
        k = len(idx)
        rows = np.arange(k)
        # y − x − l·δ ≤ −l
        m1 = sp.csr_matrix((np.concatenate([np.ones(k), -np.ones(k), -l]),
                            (np.concatenate([rows, rows, rows]), np.concatenate([y, x, d]))), shape=(k, width))
        # y − u·δ ≤ 0
        m2 = sp.csr_matrix((np.concatenate([np.ones(k), -u]), (np.concatenate([rows, rows]), np.concatenate([y, d]))),
                           shape=(k, width))
        blocks += [m1, m2]
        rhs_hi += [-l, np.zeros(k)]
        rhs_lo += [np.full(k, -np.inf), np.full(k, -np.inf)]
    out = problem.block(graph.graph["output"])
    spec_rows = sp.lil_matrix((len(b), width))  # A_i y − t ≤ b_i
    spec_rows[:, out] = A
    spec_rows[:, t_col] = -1.0
    blocks.append(spec_rows.tocsr())
    rhs_hi.append(b)
    rhs_lo.append(np.full(len(b), -np.inf))

    cost = np.zeros(width)
    cost[t_col] = 1.0
    integrality = np.zeros(width)
    integrality[n_var:t_col] = 1
    var_lo = np.concatenate([problem.var_lo, np.zeros(n_bin), [-np.inf]])
    var_hi = np.concatenate([problem.var_hi, np.ones(n_bin), [np.inf]])
    checkpoint()
    res = solve_within_deadline(cost, integrality, Bounds(var_lo, var_hi),
                                LinearConstraint(sp.vstack(blocks).tocsr(), np.concatenate(rhs_lo), np.concatenate(rhs_hi)),
                                min(time_limit, remaining()))
    checkpoint()
    if res is None:  # the deadline came first
        return "unknown", None
    dual = getattr(res, "mip_dual_bound", None)
    if res.status == 2:  # t is free: only the bounds can make this infeasible
        return ("unsat" if restricted else "unknown"), None
    if n_bin == 0 and res.status == 0 and (dual is None or not np.isfinite(dual)):
        dual = res.fun  # a plain LP: its optimum is the bound
    if dual is not None and np.isfinite(dual) and dual > SOLVER_MARGIN * (1 + np.abs(b).max()):
        return "unsat", None
    if res.x is not None and res.fun is not None and res.fun <= 0:
        x = torch.as_tensor(res.x[problem.block(graph.graph["input"])])[None]
        hit = confirm(model, region, x, region_index)
        if hit is not None:
            return "sat", hit
    return "unknown", None
