"""Branch-and-bound by input splitting, for low-dimensional inputs (ACAS Xu has 5).

A frontier of sub-boxes of the region is bounded many at a time with one domain call
(``C`` = every disjunct's rows). A sub-box is closed when every disjunct has a row with
``lb(A_i y) > b_i``. Open sub-boxes have their centre checked for a counterexample,
confirmed by onnxruntime, and are split in two along the input chosen by look-ahead
(``split_rule="lookahead"``): both halves of every input are bounded cheaply and the
input whose halves' margins sum highest wins — on every other generation of boxes (and
on ties) the ``"coefficient"`` rule picks instead (``|Λ_j|·width_j``, the input's share of
the CROWN bound's looseness): each rule alone stalls on instances the other solves, the
alternation solved all we tried. ``"gradient"`` (``width_j·|∂v/∂x_j|`` at the centre) and
``"coefficient"`` can be chosen alone.
Sub-boxes inherit their parent's intermediate bounds (valid on any sub-box), so most
are closed by IBP ∩ inherited bounds plus one CROWN final pass; only the boxes that stay
open pay for fresh CROWN intermediate bounds. The frontier is explored depth-first in
batches, so memory stays bounded. Splitting stops at float resolution: an input whose
midpoint equals one of its endpoints is never split, and an open box with no input left to
split (after its centre and two corners are checked as candidates) is left undecided, which
makes the answer ``unknown`` instead of an endless loop; so is a box whose bound is NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..api import Model, compute_bounds
from ..domains.crown import CrownDomain
from ..ir.graph import input_node
from ..attack import Counterexample, confirm_candidates
from ..deadline import Deadline
from ..errors import VerifierInputError
from .forward_linear import MAX_INPUTS, forward_linear_bounds
from .memory import bound_in_parts
from ..spec.model import InputRegion, refuted_rows
from .methods import stacked_strict
from ..proof.record import active


SPLIT_RULES = ("lookahead", "coefficient", "gradient")
# Forward linear bounds seed CROWN's intermediate passes only on wide nets (at least this
# many pre-activation entries; the cGAN generators have 53,632-138,688), where CROWN from IBP
# costs too much per box. On narrow nets they change CROWN's final coefficients and so the
# split choices: ACAS Xu 3_9 prop_1 (300 entries) took 1,511 boxes without them and more
# than 43,401 (a 40 s timeout) with them.
FORWARD_MIN_ENTRIES = 4096


@dataclass
class BaBStats:
    boxes_bounded: int = 0
    max_frontier: int = 0
    exhausted: int = 0  # open boxes at float resolution (no input can be halved): left undecided


def _open_disjuncts(lb: torch.Tensor, b: torch.Tensor, sizes: list[int], strict: torch.Tensor | None = None) -> torch.Tensor:
    """``(N, D)``: disjunct d of box n is still open (no row refuted by
    :func:`~verifier.spec.model.refuted_rows`, strict rows by ``lb ≥ b``; NaN refutes nothing)."""
    proven = refuted_rows(lb, b, strict)
    return torch.stack([~chunk.any(dim=1) for chunk in torch.split(proven, sizes, dim=1)], dim=1)


def _best_rows(slack: torch.Tensor, sizes: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, D)`` each disjunct's largest ``slack`` over its rows (one refuted row closes a
    disjunct) and that row's index among all rows."""
    values, rows, offset = [], [], 0
    for chunk in torch.split(slack, sizes, dim=1):
        value, index = chunk.max(dim=1)
        values.append(value)
        rows.append(index + offset)
        offset += chunk.shape[1]
    return torch.stack(values, 1), torch.stack(rows, 1)


def _worst_open_row(slack: torch.Tensor, open_mask: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """Per box, the row to improve: the best row of the open disjunct furthest from closed."""
    best, rows = _best_rows(slack, sizes)
    best = torch.where(open_mask, best, torch.full_like(best, float("inf")))
    return rows.gather(1, best.argmin(dim=1, keepdim=True)).squeeze(1)


def _split_scores(model: Model, centres: torch.Tensor, widths: torch.Tensor,
                  open_mask: torch.Tensor, C: torch.Tensor, b: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """``width · |∂v/∂x|`` per input, ``v`` the smallest open-disjunct violation at the centre."""
    x = centres.clone().requires_grad_(True)
    with torch.enable_grad():
        y = model(x)
        rows = y @ C.T - b
        viol, _ = _best_rows(rows, sizes)
        viol = torch.where(open_mask, viol, torch.full_like(viol, float("inf")))
        grad, = torch.autograd.grad(viol.min(dim=1).values.sum(), x)
    return widths * (grad.abs() + 1e-12)


def _lookahead_scores(model, graph, lo, hi, inter, C, b, sizes, open_mask) -> torch.Tensor:
    """``(N, n)``: for every input ``j``, the sum of the two halves' margins after
    splitting on ``j`` (0 for a closed half), each half bounded cheaply (IBP ∩ inherited
    bounds + CROWN's final pass); a box's margin is that of its least-closed open
    disjunct."""
    N, n = lo.shape
    rows = torch.arange(n * N, device=lo.device)
    dims = torch.arange(n, device=lo.device).repeat_interleave(N)
    mids = ((lo + hi) / 2).repeat(n, 1)
    left_hi, right_lo = hi.repeat(n, 1), lo.repeat(n, 1)
    left_hi[rows, dims] = mids[rows, dims]
    right_lo[rows, dims] = mids[rows, dims]
    all_lo = torch.cat([lo.repeat(n, 1), right_lo])
    all_hi = torch.cat([left_hi, hi.repeat(n, 1)])
    known = {k: (l.repeat(2 * n, *([1] * (l.dim() - 1))), u.repeat(2 * n, *([1] * (u.dim() - 1))))
             for k, (l, u) in inter.items()}
    lower, upper = model.as_batch(all_lo), model.as_batch(all_hi)
    cheap = CrownDomain("ibp")
    lb, _ = _crown_final(graph, cheap, lower, upper, C, cheap.intermediate_bounds(graph, lower, upper, known=known))
    margin = _box_margin(lb - b, open_mask.repeat(2 * n, 1), sizes).clamp(max=0)
    return (margin[: n * N] + margin[n * N:]).reshape(n, N).T


def _box_margin(slack: torch.Tensor, open_mask: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """``(N,)``: the margin of each box's least-closed open disjunct (a disjunct's margin
    is its best row's ``lb − b``)."""
    margin, _ = _best_rows(slack, sizes)
    return torch.where(open_mask, margin, torch.full_like(margin, float("inf"))).min(dim=1).values


def _crown_final(graph, crown: CrownDomain, lower, upper, C, bounds):
    """CROWN's final pass for ``C·f`` on given intermediate bounds: lower bounds ``(N, k)``
    and the input coefficients ``Λ_x`` ``(N, k, n)`` of the linear bound."""
    record = {}
    source = input_node(graph)

    def visit(n, L):
        if n == source:
            record["x"] = L
        return L

    lb = crown.lower_bound(graph, lower, upper, C, bounds=bounds, visit=visit)
    coeff = record.get("x", torch.zeros(*lb.shape, *lower.shape[1:], dtype=lower.dtype))
    return lb, coeff.reshape(*lb.shape, -1)


def _cascade_bounds(model, graph, lo, hi, inherited, C, b, sizes, strict=None):
    """Bounds of a batch of boxes in two steps. Cheap: IBP intersected with the bounds
    inherited from the parent box (valid on every sub-box), then CROWN's final pass.
    Full, for the boxes still open: forward linear bounds when the input has at most
    :data:`~verifier.complete.forward_linear.MAX_INPUTS` values and the net at least
    :data:`FORWARD_MIN_ENTRIES` pre-activation entries (cheap whatever the width,
    and they leave CROWN fewer crossing entries to bound), CROWN intermediate bounds
    (starting from those) and the final pass again. Returns per box the tighter ``lb``, its ``Λ_x``, and the
    intermediate bounds its children inherit."""
    lower, upper = model.as_batch(lo), model.as_batch(hi)
    cheap = CrownDomain("ibp").intermediate_bounds(graph, lower, upper, known=inherited)
    lb, coeff = _crown_final(graph, CrownDomain("ibp"), lower, upper, C, cheap)
    still = _open_disjuncts(lb, b, sizes, strict).any(dim=1)
    if not bool(still.any()):
        return lb, coeff, cheap
    idx = still.nonzero().reshape(-1)
    crown = CrownDomain()
    part = {n: (l[idx], u[idx]) for n, (l, u) in cheap.items()}
    wide = sum(math.prod(l.shape[1:]) for l, _ in cheap.values()) >= FORWARD_MIN_ENTRIES
    if wide and math.prod(lower.shape[1:]) <= MAX_INPUTS and active() is None:
        # forward linear bounds first (n+1 passes; fewer crossing rows for CROWN); not under
        # verify --proof, whose checker re-derives the leaves' bounds by IBP and CROWN only
        part = forward_linear_bounds(graph, lower[idx], upper[idx], known=part, need=list(part))
    full = crown.intermediate_bounds(graph, lower[idx], upper[idx], known=part)
    lb2, coeff2 = _crown_final(graph, crown, lower[idx], upper[idx], C, full)
    lb, coeff = lb.clone(), coeff.clone()
    lb[idx], coeff[idx] = torch.maximum(lb[idx], lb2), coeff2
    inter = {}
    for n, (l, u) in cheap.items():
        l, u = l.clone(), u.clone()
        l[idx], u[idx] = full[n]
        inter[n] = (l, u)
    return lb, coeff, inter


class _Frontier:
    """Open boxes (their inherited intermediate bounds, depths and proof-tree node ids),
    newest last."""

    def __init__(self):
        self.parts: list[tuple] = []

    def __len__(self) -> int:
        return sum(len(p[0]) for p in self.parts)

    def push(self, lo, hi, inter, depth, ids):
        self.parts.append((lo, hi, inter, depth, ids))

    def pop(self, batch: int):
        lo, hi, inter, depth, ids = self.parts.pop()
        if len(lo) > batch:
            cut = len(lo) - batch
            self.parts.append((lo[:cut], hi[:cut], None if inter is None else {n: (l[:cut], u[:cut]) for n, (l, u) in inter.items()},
                               depth[:cut], ids[:cut]))
            lo, hi, depth, ids = lo[cut:], hi[cut:], depth[cut:], ids[cut:]
            inter = None if inter is None else {n: (l[cut:], u[cut:]) for n, (l, u) in inter.items()}
        return lo, hi, inter, depth, ids


def input_split_bab(model: Model, region: InputRegion, deadline: Deadline, domain: str = "crown",
                    batch: int = 512, region_index: int = 0, dtype: torch.dtype = torch.float64,
                    device: str = "cpu", stats: BaBStats | None = None, split_rule: str = "lookahead",
                    **domain_options) -> tuple[str, Counterexample | None]:
    """``("unsat", None)`` if every sub-box is refuted, ``("sat", cex)`` on a confirmed
    counterexample, ``("unknown", None)`` when the search ends with open boxes that cannot be
    split (every input's midpoint, in ``dtype``, equals an endpoint) and whose centre and
    corners are not counterexamples; raises :class:`~verifier.deadline.Timeout` when the
    deadline passes. Rows written strict (``<``) are refuted by ``lb ≥ b``.
    With ``domain="crown"`` (default) boxes are bounded by :func:`_cascade_bounds`; any
    other domain bounds each box from scratch and splits the widest input."""
    if split_rule not in SPLIT_RULES:
        raise VerifierInputError(f"split_rule must be one of {', '.join(SPLIT_RULES)}, not '{split_rule}'")
    stats = stats if stats is not None else BaBStats()
    first, last = region.float64_range()
    if bool((first > last).any()):
        # an input range with no float64 in it (a strict side at zero width, or an open
        # interval between adjacent floats; Spec.validate refuses these, a region built in
        # code may not have been validated): nothing to search, and splitting the other
        # inputs would never end. Undecided, never unsat: the real interval is not empty.
        stats.exhausted += 1
        return "unknown", None
    graph = model.graph_for(device, dtype)
    C, b, sizes = region.stacked()
    C, b = C.to(device=device, dtype=dtype), b.to(device=device, dtype=dtype)
    strict = stacked_strict(region)
    strict = None if strict is None else strict.to(device)
    exhausted = 0  # open boxes that cannot be split further (float resolution)
    own = domain == "crown" and not domain_options
    frontier = _Frontier()
    recorder = active()
    tree = None if recorder is None else recorder.box_tree(region_index)  # verify --proof: the bisection tree
    if recorder is not None:
        recorder.arithmetic(dtype)
    frontier.push(region.lower.to(device=device, dtype=dtype)[None], region.upper.to(device=device, dtype=dtype)[None], None,
                  torch.zeros(1, dtype=torch.long, device=device), torch.zeros(1, dtype=torch.long))
    if tree is not None and not own:
        recorder.cannot_certify(f"input splitting bounded by '{domain}' with options (the checker re-derives CROWN)")
    while len(frontier):
        deadline.check()
        lo, hi, inherited, depth, ids = frontier.pop(batch)
        with torch.no_grad():
            if own:
                lb, coeff, inter = bound_in_parts(
                    lambda i: _cascade_bounds(model, graph, lo[i], hi[i],
                                              None if inherited is None else {n: (l[i], u[i]) for n, (l, u) in inherited.items()},
                                              C, b, sizes, strict),
                    len(lo), _merge_cascade)
            else:
                lb, _ = compute_bounds(model, lo, hi, domain=domain, C=C, **domain_options)
                coeff, inter = None, None
        stats.boxes_bounded += len(lo)
        nan_box = torch.isnan(lb).any(dim=1)  # NaN bounds (an overflow): refute nothing, are not split on
        lb = torch.nan_to_num(lb, nan=float("-inf"))
        open_mask = _open_disjuncts(lb, b, sizes, strict)
        keep = open_mask.any(dim=1)
        if tree is not None and not bool(keep.all()):
            tree.close(ids[(~keep).cpu()], lb[~keep])
        if not bool(keep.any()):
            continue
        lo, hi, open_mask, ids = lo[keep], hi[keep], open_mask[keep], ids[keep.cpu()]
        centres, widths = (lo + hi) / 2, hi - lo
        hit = confirm_candidates(model, region, centres, region_index)
        if hit is not None:
            return "sat", hit
        if split_rule in ("lookahead", "coefficient") and coeff is not None:
            worst = _worst_open_row(lb[keep] - b, open_mask, sizes)
            scores = coeff[keep][torch.arange(len(lo)), worst].abs() * widths + 1e-12 * widths
            if split_rule == "lookahead":
                kept = {n: (l[keep], u[keep]) for n, (l, u) in inter.items()}
                look = _lookahead_scores(model, graph, lo, hi, kept, C, b, sizes, open_mask)
                parent = _box_margin(lb[keep] - b, open_mask, sizes).clamp(max=0)
                # ties (no input improves the cheap bound), and every other generation of
                # boxes, use the coefficient rule: neither rule alone wins everywhere
                flat = (look - 2 * parent[:, None]).max(dim=1).values <= 1e-9 * (1 + parent.abs())
                flat |= depth[keep] % 2 == 1
                scores = torch.where(flat[:, None], scores, look)
        else:
            scores = _split_scores(model, centres, widths, open_mask, C, b, sizes)
        # never split an input whose midpoint (in the bounding dtype) equals an endpoint
        mids = (lo + hi) / 2
        splittable = (mids > lo) & (mids < hi)
        stuck = ~splittable.any(dim=1) | nan_box[keep]
        if bool(stuck.any()):
            # boxes at float resolution (or with NaN bounds, which halving does not cure): their
            # corners are the remaining candidates; if none is a counterexample the box is left
            # undecided (the answer becomes unknown)
            hit = confirm_candidates(model, region, torch.cat([lo[stuck], hi[stuck]]), region_index)
            if hit is not None:
                return "sat", hit
            exhausted += int(stuck.sum())
            stats.exhausted = exhausted
            keep2 = ~stuck
            if not bool(keep2.any()):
                continue
            lo, hi, centres, widths, scores, splittable = (t[keep2] for t in (lo, hi, centres, widths, scores, splittable))
            ids = ids[keep2.cpu()]
            depth_kept, inter_kept = depth[keep][keep2], (None if inter is None else
                                                          {n: (l[keep][keep2], u[keep][keep2]) for n, (l, u) in inter.items()})
        else:
            depth_kept, inter_kept = depth[keep], (None if inter is None else
                                                   {n: (l[keep], u[keep]) for n, (l, u) in inter.items()})
        scores = torch.where(splittable, torch.nan_to_num(scores, nan=0.0), torch.full_like(scores, float("-inf")))
        dim = scores.argmax(dim=1)
        rows = torch.arange(len(lo), device=lo.device)
        mid = centres[rows, dim]
        left_hi, right_lo = hi.clone(), lo.clone()
        left_hi[rows, dim] = mid
        right_lo[rows, dim] = mid
        child_inter = None if inter_kept is None else {n: (torch.cat([l, l]), torch.cat([u, u]))
                                                       for n, (l, u) in inter_kept.items()}
        child_ids = ids.repeat(2) if tree is None else tree.split(ids, dim, mid)
        frontier.push(torch.cat([lo, right_lo]), torch.cat([left_hi, hi]), child_inter, (depth_kept + 1).repeat(2),
                      child_ids)
        stats.max_frontier = max(stats.max_frontier, len(frontier))
    if exhausted:
        return "unknown", None
    return "unsat", None


def _merge_cascade(parts):
    lbs, coeffs, inters = zip(*parts)
    return (torch.cat(lbs), torch.cat(coeffs),
            {n: (torch.cat([i[n][0] for i in inters]), torch.cat([i[n][1] for i in inters])) for n in inters[0]})
