"""Branch-and-bound by input splitting, for low-dimensional inputs (ACAS Xu has 5).

A frontier of sub-boxes of the region is bounded many at a time with one domain call
(``C`` = every disjunct's rows). A sub-box is closed when every disjunct has a row with
``lb(A_i y) > b_i``. Open sub-boxes have their centre checked for a counterexample, and a
point found by a few sign-gradient steps on the violation from the vertex minimising
CROWN's linear bound of their worst row (confirmed by onnxruntime), and are split in two;
the least-closed halves are searched first. The default split rule ``"fsb"`` is a filtered look-ahead (as FSB
filters ReLU splits, Bunel et al. 2020, here on inputs): the ``candidates`` inputs chosen
by the cheap rules — the coefficient rule ``|Λ_j|·width_j`` (the input's share of the
CROWN bound's looseness; α,β-CROWN's "smart branching" for input splits) and the gradient
rule ``width_j·|∂v/∂x_j|`` at the centre, then the coefficient rule's runners-up — are
each tried by bounding both halves fully, the input whose halves' margins sum highest
wins, and the chosen halves keep those bounds (they are not bounded again). Each cheap
rule alone stalls on ACAS Xu instances the other solves in a few hundred boxes (5_5/5_8
property 1 for the coefficient rule, 1_1 property 6 and 3_6 property 1 for the gradient
rule); trying both decides them all. ``"lookahead"`` (both halves of every input bounded
cheaply, alternating by generation with the coefficient rule, the previous default),
``"coefficient"`` and ``"gradient"`` can be chosen alone.
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
from ..deadline import Deadline, interruptible
from ..errors import VerifierInputError
from ..ops.surrogate import surrogate_gradients
from .forward_linear import MAX_INPUTS, forward_linear_bounds
from .memory import bound_in_parts
from ..spec.model import InputRegion, refuted_rows
from .methods import stacked_strict
from ..proof.record import active


SPLIT_RULES = ("fsb", "lookahead", "coefficient", "gradient")
# Forward linear bounds seed CROWN's intermediate passes only on wide nets (at least this
# many pre-activation entries; the cGAN generators have 53,632-138,688), where CROWN from IBP
# costs too much per box. On narrow nets they change CROWN's final coefficients and so the
# split choices: ACAS Xu 3_9 prop_1 (300 entries) took 1,511 boxes without them and more
# than 43,401 (a 40 s timeout) with them.
FORWARD_MIN_ENTRIES = 4096
# sign-gradient steps of falsification on every open box, from its linear bound's minimiser
DESCENT_STEPS = 4


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
        grad, = torch.autograd.grad(interruptible(viol.min(dim=1).values.sum()), x)
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
    # wide nets: IBP refreshed after each bounded node (fewer crossing rows; the checker of
    # verify --proof re-derives plain CROWN, so not under it)
    full = crown.intermediate_bounds(graph, lower[idx], upper[idx], known=part, refresh=wide and active() is None)
    lb2, coeff2 = _crown_final(graph, crown, lower[idx], upper[idx], C, full)
    lb, coeff = lb.clone(), coeff.clone()
    lb[idx], coeff[idx] = torch.maximum(lb[idx], lb2), coeff2
    inter = {}
    for n, (l, u) in cheap.items():
        l, u = l.clone(), u.clone()
        l[idx], u[idx] = full[n]
        inter[n] = (l, u)
    return lb, coeff, inter


def _halves(lo: torch.Tensor, hi: torch.Tensor, dim: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(left_hi, right_lo)`` ``(N, n)``: box ``i`` halved across input ``dim[i]`` at its midpoint."""
    rows = torch.arange(len(lo), device=lo.device)
    mid = (lo[rows, dim] + hi[rows, dim]) / 2
    left_hi, right_lo = hi.clone(), lo.clone()
    left_hi[rows, dim] = mid
    right_lo[rows, dim] = mid
    return left_hi, right_lo


def _linear_minimisers(lo: torch.Tensor, hi: torch.Tensor, coeff: torch.Tensor, row: torch.Tensor) -> torch.Tensor:
    """``(N, n)``: per box the vertex minimising CROWN's linear lower bound ``Λ_x·x + c`` of
    spec row ``row[i]`` (``lo`` where ``Λ_x > 0``, else ``hi``): where the relaxation places
    the row's smallest value, a candidate counterexample beside the centre."""
    lam = coeff[torch.arange(len(lo), device=lo.device), row]
    return torch.where(lam > 0, lo, hi)


def _descend(model: Model, region: InputRegion, lo: torch.Tensor, hi: torch.Tensor, x: torch.Tensor,
             steps: int = DESCENT_STEPS) -> torch.Tensor:
    """``(N, n)``: from ``x`` ``(N, n)``, ``steps`` projected sign-gradient steps on the
    region's violation ``v`` (as :func:`~verifier.attack.attack_region`, with step sizes
    from a quarter of each box's own width down), each point kept inside its box
    ``[lo, hi]``; returns the points where ``v`` was lowest. The falsification the search
    runs on its open boxes (α,β-CROWN's attack inside input-split branch-and-bound)."""
    best, best_v = x, torch.full((len(x),), float("inf"), dtype=torch.float64, device=x.device)
    for step in range(steps):
        x = x.detach().requires_grad_(True)
        with torch.enable_grad(), surrogate_gradients(model.graph):  # where steps, output softmax give none
            v = region.violation(model(x).double())
            grad, = torch.autograd.grad(interruptible(v.sum()), x)
        with torch.no_grad():
            better = v < best_v
            best = torch.where(better[:, None], x.detach(), best)
            best_v = torch.where(better, v.detach(), best_v)
            size = 0.25 * (hi - lo) * (1 + math.cos(math.pi * step / steps)) / 2
            x = torch.max(torch.min(x.detach() - size * grad.sign(), hi), lo)
    with torch.no_grad():
        v = region.violation(model(x).double())
    return torch.where((v < best_v)[:, None], x, best)


def _candidates(model, lo, hi, lb, coef_scores, open_mask, splittable, C, b, sizes, count: int) -> torch.Tensor:
    """``(N, count)`` inputs to try splitting, best guess first: the coefficient rule's
    choice (``|Λ_j|·width_j``, the smart-branching score of α,β-CROWN's input split), the
    gradient rule's (``width_j·|∂v/∂x_j|`` at the centre), then the coefficient rule's
    next choices. Unsplittable inputs are never chosen while a splittable one is left
    (repeats are dropped by :func:`_best_split`)."""
    ninf = torch.full_like(coef_scores, float("-inf"))
    coef = torch.where(splittable, torch.nan_to_num(coef_scores, nan=0.0), ninf)
    order = coef.argsort(dim=1, descending=True)
    picks = [order[:, 0]]
    if count > 1:
        grad = _split_scores(model, (lo + hi) / 2, hi - lo, open_mask, C, b, sizes)
        picks.append(torch.where(splittable, torch.nan_to_num(grad, nan=0.0), ninf).argmax(dim=1))
    picks += [order[:, j] for j in range(1, min(count - 1, lo.shape[1]))]
    return torch.stack(picks[:count], dim=1)


def _best_split(model, graph, lo, hi, inter, open_mask, picks, splittable, C, b, sizes, strict, parent):
    """Filtered look-ahead (FSB-style, on inputs): both halves of every box across every
    distinct splittable candidate input of ``picks`` ``(N, K)`` are bounded by
    :func:`_cascade_bounds` (from the box's own intermediate bounds), and per box, among the
    inputs whose worse half improves on the box's own margin ``parent`` ``(N,)`` (clamped at
    0), the one whose halves' margins (clamped at 0, a closed half counting 0) sum highest
    wins; when none improves its worse half, the first candidate (the coefficient rule's)
    does. Ties go to the earlier candidate. The guard keeps the greedy sum from halving,
    without end, inputs that only ever tighten one half while the input that limits the
    other is never split. The chosen halves keep their bounds, so the search does not
    bound them again. Returns the chosen inputs ``(N,)`` and ``[lo, hi, intermediate bounds,
    lb, Λ_x, halves bounded]`` of the ``2N`` children (lefts, then rights)."""
    N, K = picks.shape
    valid = splittable.gather(1, picks)
    for k in range(1, K):
        valid[:, k] &= ~(picks[:, :k] == picks[:, k:k + 1]).any(dim=1)
    box, col = valid.nonzero(as_tuple=True)
    P = len(box)
    dims = picks[box, col]
    left_hi, right_lo = _halves(lo[box], hi[box], dims)
    all_lo, all_hi = torch.cat([lo[box], right_lo]), torch.cat([left_hi, hi[box]])
    known = {n: (torch.cat([l[box], l[box]]), torch.cat([u[box], u[box]])) for n, (l, u) in inter.items()}
    with torch.no_grad():
        c_lb, c_coeff, c_inter = bound_in_parts(
            lambda i: _cascade_bounds(model, graph, all_lo[i], all_hi[i], _take(known, i), C, b, sizes, strict),
            2 * P, _merge_cascade)
    margin = _box_margin(torch.nan_to_num(c_lb, nan=float("-inf")) - b, open_mask[box].repeat(2, 1), sizes)
    margin = margin.clamp(max=0).double()  # scores in float64: the sentinels below overflow float32
    table = torch.full((N, K), float("-inf"), dtype=torch.float64, device=margin.device)
    worse = torch.minimum(margin[:P], margin[P:])
    base = parent[box].double()
    improves = worse > base + 1e-9 * (1 + base.abs())
    score = torch.where(improves, margin[:P] + margin[P:], torch.full_like(worse, -1e299))
    table[box, col] = torch.nan_to_num(score, nan=float("-inf"))
    pair = torch.full((N, K), -1, dtype=torch.long, device=lo.device)
    pair[box, col] = torch.arange(P, device=lo.device)
    # a box whose candidates all have -inf halves keeps its first valid candidate (candidate 0,
    # the coefficient rule's, is a splittable input, so every box has one)
    table = torch.where(valid, table.nan_to_num(neginf=-1e300), torch.full_like(table, float("-inf")))
    choice = pair[torch.arange(N, device=lo.device), table.argmax(dim=1)]
    order = torch.cat([choice, choice + P])
    return dims[choice], [all_lo[order], all_hi[order], _take(c_inter, order), c_lb[order], c_coeff[order], 2 * P]


def _take(item, part):
    """``item`` (a tensor, a node → ``(l, u)`` dict, or ``None``) restricted to rows ``part``."""
    if item is None:
        return None
    if isinstance(item, dict):
        return {n: (l[part], u[part]) for n, (l, u) in item.items()}
    return item[part]


class _Frontier:
    """Open boxes, newest last: per box ``lo``, ``hi``, intermediate bounds (inherited from
    the parent, or the box's own when its bounds are already known), depth, proof-tree node
    id and, for boxes the branching already bounded, ``lb`` and ``Λ_x``."""

    def __init__(self):
        self.parts: list[tuple] = []

    def __len__(self) -> int:
        return sum(len(p[0]) for p in self.parts)

    def push(self, lo, hi, inter, depth, ids, lb=None, coeff=None):
        self.parts.append((lo, hi, inter, depth, ids, lb, coeff))

    def pop(self, batch: int):
        part = self.parts.pop()
        if len(part[0]) > batch:
            cut = len(part[0]) - batch
            self.parts.append(tuple(_take(t, slice(None, cut)) for t in part))
            part = tuple(_take(t, slice(cut, None)) for t in part)
        return part


def input_split_bab(model: Model, region: InputRegion, deadline: Deadline, domain: str = "crown",
                    batch: int = 512, region_index: int = 0, dtype: torch.dtype = torch.float64,
                    device: str = "cpu", stats: BaBStats | None = None, split_rule: str = "fsb",
                    candidates: int = 2, **domain_options) -> tuple[str, Counterexample | None]:
    """``("unsat", None)`` if every sub-box is refuted, ``("sat", cex)`` on a confirmed
    counterexample, ``("unknown", None)`` when the search ends with open boxes that cannot be
    split (every input's midpoint, in ``dtype``, equals an endpoint) and whose centre and
    corners are not counterexamples; raises :class:`~verifier.deadline.Timeout` when the
    deadline passes. Rows written strict (``<``) are refuted by ``lb ≥ b``.
    With ``domain="crown"`` (default) boxes are bounded by :func:`_cascade_bounds` and split
    by ``split_rule`` (see the module docstring; ``candidates`` ≥ 1: inputs tried per box by
    ``"fsb"``); any other domain bounds each box from scratch and splits by the gradient
    rule. Raises :class:`VerifierInputError` for an unknown ``split_rule`` or a
    ``candidates`` that is not a whole number ≥ 1."""
    if split_rule not in SPLIT_RULES:
        raise VerifierInputError(f"split_rule must be one of {', '.join(SPLIT_RULES)}, not '{split_rule}'")
    if isinstance(candidates, bool) or not isinstance(candidates, int) or candidates < 1:
        raise VerifierInputError(f"candidates must be a whole number ≥ 1 (inputs tried per split), not {candidates!r}")
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
        lo, hi, inter, depth, ids, lb, coeff = frontier.pop(batch)
        if lb is None:  # not bounded yet (the region's box, or a split chosen without look-ahead)
            with torch.no_grad():
                if own:
                    lb, coeff, inter = bound_in_parts(
                        lambda i: _cascade_bounds(model, graph, lo[i], hi[i], _take(inter, i), C, b, sizes, strict),
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
        lo, hi, lb, coeff, inter, depth = (_take(t, keep) for t in (lo, hi, lb, coeff, inter, depth))
        open_mask, ids, nan_box = open_mask[keep], ids[keep.cpu()], nan_box[keep]
        centres, widths = (lo + hi) / 2, hi - lo
        worst = None if coeff is None else _worst_open_row(lb - b, open_mask, sizes)
        starts = centres if worst is None else _linear_minimisers(lo, hi, coeff, worst)
        hit = confirm_candidates(model, region, torch.cat([centres, _descend(model, region, lo, hi, starts)]),
                                 region_index)
        if hit is not None:
            return "sat", hit
        # never split an input whose midpoint (in the bounding dtype) equals an endpoint
        splittable = (centres > lo) & (centres < hi)
        stuck = ~splittable.any(dim=1) | nan_box
        if bool(stuck.any()):
            # boxes at float resolution (or with NaN bounds, which halving does not cure): their
            # corners are the remaining candidates; if none is a counterexample the box is left
            # undecided (the answer becomes unknown)
            hit = confirm_candidates(model, region, torch.cat([lo[stuck], hi[stuck]]), region_index)
            if hit is not None:
                return "sat", hit
            exhausted += int(stuck.sum())
            stats.exhausted = exhausted
            if bool(stuck.all()):
                continue
            lo, hi, lb, coeff, inter, depth, worst, open_mask, centres, widths, splittable = (
                _take(t, ~stuck) for t in (lo, hi, lb, coeff, inter, depth, worst, open_mask, centres, widths, splittable))
            ids = ids[(~stuck).cpu()]
        with torch.no_grad():
            coef_scores = None if coeff is None else (coeff[torch.arange(len(lo)), worst].abs() * widths + 1e-12 * widths)
        if split_rule == "fsb" and coeff is not None:
            picks = _candidates(model, lo, hi, lb, coef_scores, open_mask, splittable, C, b, sizes, candidates)
            parent = _box_margin(lb - b, open_mask, sizes).clamp(max=0)
            dim, children = _best_split(model, graph, lo, hi, inter, open_mask, picks, splittable, C, b, sizes, strict,
                                        parent)
            stats.boxes_bounded += children.pop()
        else:
            if split_rule in ("lookahead", "coefficient") and coeff is not None:
                scores = coef_scores
                if split_rule == "lookahead":
                    look = _lookahead_scores(model, graph, lo, hi, inter, C, b, sizes, open_mask)
                    parent = _box_margin(lb - b, open_mask, sizes).clamp(max=0)
                    # ties (no input improves the cheap bound), and every other generation of
                    # boxes, use the coefficient rule: neither rule alone wins everywhere
                    flat = (look - 2 * parent[:, None]).max(dim=1).values <= 1e-9 * (1 + parent.abs())
                    flat |= depth % 2 == 1
                    scores = torch.where(flat[:, None], scores, look)
            else:
                scores = _split_scores(model, centres, widths, open_mask, C, b, sizes)
            scores = torch.where(splittable, torch.nan_to_num(scores, nan=0.0), torch.full_like(scores, float("-inf")))
            dim = scores.argmax(dim=1)
            left_hi, right_lo = _halves(lo, hi, dim)
            children = [torch.cat([lo, right_lo]), torch.cat([left_hi, hi]),
                        None if inter is None else {n: (torch.cat([l, l]), torch.cat([u, u])) for n, (l, u) in inter.items()},
                        None, None]
        child_ids = ids.repeat(2) if tree is None else tree.split(ids, dim, centres[torch.arange(len(lo)), dim])
        c_lo, c_hi, c_inter, c_lb, c_coeff = children
        c_depth = (depth + 1).repeat(2)
        if c_lb is not None:  # the least-closed halves last: the next batch takes them first
            margin = _box_margin(torch.nan_to_num(c_lb, nan=float("-inf")) - b, open_mask.repeat(2, 1), sizes)
            order = margin.argsort(descending=True, stable=True)
            c_lo, c_hi, c_inter, c_lb, c_coeff, c_depth = (
                _take(t, order) for t in (c_lo, c_hi, c_inter, c_lb, c_coeff, c_depth))
            child_ids = child_ids[order.cpu()]
        frontier.push(c_lo, c_hi, c_inter, c_depth, child_ids, c_lb, c_coeff)
        stats.max_frontier = max(stats.max_frontier, len(frontier))
    if exhausted:
        return "unknown", None
    return "unsat", None


def _merge_cascade(parts):
    lbs, coeffs, inters = zip(*parts)
    return (torch.cat(lbs), torch.cat(coeffs),
            {n: (torch.cat([i[n][0] for i in inters]), torch.cat([i[n][1] for i in inters])) for n in inters[0]})
