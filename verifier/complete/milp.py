"""Exact decision of one disjunct by mixed-integer linear programming (HiGHS via
``scipy.optimize.milp``).

The network over the box is the LP of :func:`~verifier.domains.lp_encoding.relaxation_problem`
(every op's relaxation lines, the pre-activation bounds as variable bounds) plus, for every
node whose op kind has an entry in the encoder table
(:data:`~verifier.complete.milp_encoders.MILP_ENCODERS`), the binaries and rows that make
it exact on its range: for a crossing ReLU ``y = max(x, 0)`` with ``l < 0 < u`` the big-M
constraints of Tjeng et al. (2019),

    y ≤ x − l(1 − δ),   y ≤ u·δ,   y ≥ x,   y ≥ 0,

and for the step functions (sign, floor, ceil, round) one binary per step in ``[l, u]``
(exact off a measure-zero set of thresholds, see :mod:`verifier.complete.milp_encoders`);
``l, u`` come from the domains' intermediate bounds (tighter bounds, smaller M). An entry
whose range holds more than ``MAX_BINARIES_PER_ENTRY`` steps keeps its LP lines: the
program stays sound but is not exact there. For the disjunct ``A y ≤ b`` the program
minimises ``t`` subject to ``A_i y − b_i ≤ t``: the disjunct is empty iff the optimum is
``> 0``. HiGHS's proven lower bound (the MIP dual bound) is what is compared, with a
margin for the solver's tolerances, so a time-limited run is still sound. A solution with
``t ≤ 0`` is a candidate counterexample, confirmed with onnxruntime.
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
from .milp_encoders import STEP_MARGIN, encode_exact

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


def _program(graph, problem, A: np.ndarray, b: np.ndarray, eta: float):
    """The MILP ``min t`` s.t. the LP, the exact rows of
    :func:`~verifier.complete.milp_encoders.encode_exact` (margin ``eta``) and
    ``A y − t ≤ b``: ``(cost, integrality, Bounds, LinearConstraint, binaries, boundary)``."""
    exact, boundary = encode_exact(graph, problem, eta)
    n_var, n_bin = problem.total, exact.n_binaries
    t_col = n_var + n_bin  # the objective variable t
    width = t_col + 1
    blocks, rhs_lo, rhs_hi = [], [], []

    def widen(m):
        m = sp.csr_matrix(m)
        return sp.hstack([m, sp.csr_matrix((m.shape[0], width - m.shape[1]))]).tocsr()

    if problem.a_ub is not None:
        blocks.append(widen(problem.a_ub))
        rhs_lo.append(np.full(len(problem.b_ub), -np.inf))
        rhs_hi.append(problem.b_ub)
    if problem.a_eq is not None:
        blocks.append(widen(problem.a_eq))
        rhs_lo.append(problem.b_eq)
        rhs_hi.append(problem.b_eq)
    m, lo, hi = exact.matrix(width)
    blocks.append(m)
    rhs_lo.append(lo)
    rhs_hi.append(hi)
    spec_rows = sp.lil_matrix((len(b), width))  # A_i y − t ≤ b_i
    spec_rows[:, problem.block(graph.graph["output"])] = A
    spec_rows[:, t_col] = -1.0
    blocks.append(spec_rows.tocsr())
    rhs_lo.append(np.full(len(b), -np.inf))
    rhs_hi.append(b)
    cost = np.zeros(width)
    cost[t_col] = 1.0
    integrality = np.zeros(width)
    integrality[n_var:t_col] = 1
    var_lo = np.concatenate([problem.var_lo, np.zeros(n_bin), [-np.inf]])
    var_hi = np.concatenate([problem.var_hi, np.ones(n_bin), [np.inf]])
    constraints = LinearConstraint(sp.vstack(blocks).tocsr(), np.concatenate(rhs_lo), np.concatenate(rhs_hi))
    return cost, integrality, Bounds(var_lo, var_hi), constraints, n_bin, boundary


def _candidate(model: Model, region: InputRegion, graph, problem, res, region_index: int) -> Counterexample | None:
    """The solution's input, when ``t ≤ 0`` and onnxruntime confirms it."""
    if res is None or res.x is None or res.fun is None or res.fun > 0:
        return None
    x = torch.as_tensor(res.x[problem.block(graph.graph["input"])])[None]
    return confirm(model, region, x, region_index)


def milp_disjunct(model: Model, region: InputRegion, disjunct: int, bounds, region_index: int = 0,
                  time_limit: float = float("inf"), device: str = "cpu",
                  dtype: torch.dtype = torch.float64, restricted: bool = False) -> tuple[str, Counterexample | None]:
    """``("unsat", None)`` when the disjunct is proven empty, ``("sat", cex)`` on a
    confirmed counterexample, else ``("unknown", None)`` (time limit, or a solution
    onnxruntime does not confirm). ``bounds``: intermediate bounds valid on the box.

    A solution of the program that decides (margin 0) that onnxruntime does not confirm,
    on a network with step functions, may sit on a step's threshold with the favourable
    step value; the program is then solved again with every step input kept
    :data:`~verifier.complete.milp_encoders.STEP_MARGIN` away from its thresholds (a subset
    of the network's graph), whose solution lies inside its steps.

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
    cost, integrality, var_bounds, constraints, n_bin, boundary = _program(graph, problem, A, b, 0.0)
    checkpoint()
    res = solve_within_deadline(cost, integrality, var_bounds, constraints, min(time_limit, remaining()))
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
    hit = _candidate(model, region, graph, problem, res, region_index)
    if hit is not None:
        return "sat", hit
    if boundary and res.fun is not None and res.fun <= 0:
        program = _program(graph, problem, A, b, STEP_MARGIN)[:4]
        res = solve_within_deadline(*program, min(time_limit, remaining()))
        checkpoint()
        hit = _candidate(model, region, graph, problem, res, region_index)
        if hit is not None:
            return "sat", hit
    return "unknown", None
