"""Deciding a property: attack first, then bound with an abstract domain.

Verdicts use VNN-COMP words: ``sat`` (a counterexample, confirmed by onnxruntime),
``unsat`` (the property holds: every disjunct of every region is proven empty),
``unknown`` (neither), ``timeout``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .api import Model, compute_bounds
from .attack import Counterexample, attack_region
from .deadline import Deadline, Timeout, warm_up
from .errors import VerifierInputError
from .spec.model import InputRegion, Spec, refuted_rows


@dataclass
class VerificationResult:
    status: str
    counterexample: Counterexample | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def stacked_strict(region: InputRegion) -> torch.Tensor | None:
    """``(k,)`` bool: which of ``region.stacked()``'s rows are strict (``A_i y < b_i``);
    ``None`` when none is."""
    if all(d.strict is None for d in region.disjuncts):
        return None
    return torch.cat([torch.zeros(d.A.shape[0], dtype=torch.bool) if d.strict is None
                      else d.strict.reshape(-1).to(device="cpu", dtype=torch.bool) for d in region.disjuncts])


def disjuncts_refuted(region: InputRegion, lower_bounds: torch.Tensor) -> list[bool]:
    """For each disjunct: proven empty iff some row is refuted by
    :func:`~verifier.spec.model.refuted_rows` (closed row: ``lb(A_i y) > b_i`` plus a margin;
    strict row ``A_i y < b_i``: ``lb ≥ b_i``; a NaN bound refutes nothing).

    ``lower_bounds`` are lower bounds of the stacked rows (``region.stacked()``)."""
    _, b, sizes = region.stacked()
    proven = refuted_rows(lower_bounds.reshape(-1).double().cpu(), b, stacked_strict(region))
    return [bool(chunk.any()) for chunk in torch.split(proven, sizes)]


def bound_region(model: Model, region: InputRegion, domain: str, device: str, dtype: torch.dtype,
                 **domain_options) -> list[bool]:
    """Which of the region's disjuncts ``domain`` proves empty over the region's box."""
    C, _, _ = region.stacked()
    lower = region.lower.to(device=device, dtype=dtype)
    upper = region.upper.to(device=device, dtype=dtype)
    with torch.no_grad():
        lb, _ = compute_bounds(model, lower, upper, domain=domain, C=C.to(device=device, dtype=dtype),
                               **domain_options)
    return disjuncts_refuted(region, lb[0])


AUTO_CASCADE = ("box", "crown")
INPUT_SPLIT_MAX_DIM = 16
# the options each complete method takes through --domain-option
COMPLETE_DOMAINS = {"input-split": ("batch", "split_rule"),
                    "relu-split": ("batch", "iterations", "candidates", "time_limit"),
                    "milp": ("time_limit",)}
MILP_KINDS = {"relu"}  # nonlinear op kinds the MILP encodes exactly


def _refute_region(model: Model, region: InputRegion, index: int, domain: str, deadline: Deadline, device: str,
                   dtype: torch.dtype, domain_options: dict, notes: list[str]) -> tuple[str, Counterexample | None]:
    """``unsat``/``unknown``/``sat`` for one region (raises Timeout).

    ``auto``: Box, CROWN, then — inputs of at most 16 values — input splitting, else
    α-CROWN and ReLU splitting on the disjuncts it leaves open. ``input-split`` /
    ``relu-split`` name a branch-and-bound directly, ``milp`` the exact MILP (ReLU-split
    branch-and-bound falls back to it when a subdomain runs out of ReLUs to split); any
    other name is one domain."""
    low_dim = model.input_size <= INPUT_SPLIT_MAX_DIM
    if domain == "auto":
        cascade, complete = AUTO_CASCADE, ("input-split" if low_dim else "relu-split")
    elif domain in COMPLETE_DOMAINS:
        cascade, complete = (), domain
        unknown = sorted(set(domain_options) - set(COMPLETE_DOMAINS[domain]))
        if unknown:
            raise VerifierInputError(f"{domain} takes the options {', '.join(COMPLETE_DOMAINS[domain])}; "
                                     f"not {', '.join(unknown)}")
    else:
        cascade, complete = (domain,), None
    options = domain_options if domain != "auto" else {}
    refuted = [False] * len(region.disjuncts)
    for name in cascade:
        deadline.check()
        refuted = bound_region(model, region, name, device, dtype, **options)
        notes.append(f"region {index}: {refuted.count(True)}/{len(refuted)} disjuncts refuted by {name}")
        if all(refuted):
            return "unsat", None
    if complete == "input-split":
        from .complete.input_split import BaBStats, input_split_bab

        stats = BaBStats()
        try:
            return input_split_bab(model, region, deadline, domain="crown", region_index=index, dtype=dtype,
                                   device=device, stats=stats, **options)
        finally:
            notes.append(f"region {index}: input-split branch-and-bound bounded {stats.boxes_bounded} boxes")
    if complete in ("relu-split", "milp"):
        return _relu_split(model, region, index, deadline, device, dtype, options, refuted, notes,
                           bab=complete == "relu-split")
    return "unknown", None


def _relu_split(model, region, index, deadline, device, dtype, options, refuted, notes, bab=True):
    """α-CROWN at the root (its intermediate bounds seed the search), then ReLU-splitting
    branch-and-bound (``bab``) and/or the MILP on each disjunct still open."""
    from .complete.milp import crossing_count, milp_disjunct
    from .complete.relu_split import ReluBaBStats, relu_split_bab, root_intermediate_bounds

    root, lb = root_intermediate_bounds(model, region, device, dtype)
    refuted = [a or c for a, c in zip(refuted, disjuncts_refuted(region, lb))]
    notes.append(f"region {index}: {refuted.count(True)}/{len(refuted)} disjuncts refuted by alpha-crown")
    open_disjuncts = [d for d, done in enumerate(refuted) if not done]
    if not open_disjuncts:
        return "unsat", None
    milp_options = {k: v for k, v in options.items() if k == "time_limit"}
    if bab:
        stats = ReluBaBStats()
        try:
            status, cex = relu_split_bab(model, region, deadline, disjuncts=open_disjuncts, region_index=index,
                                         dtype=dtype, device=device, root=root, stats=stats,
                                         **{k: v for k, v in options.items() if k != "time_limit"})
        finally:
            notes.append(f"region {index}: relu-split branch-and-bound bounded {stats.domains_bounded} subdomains "
                         f"(depth ≤ {stats.max_depth}, frontier ≤ {stats.max_frontier})")
        if status != "unknown":
            return status, cex
    from .ops.adjoint import AFFINE_KINDS

    inexact = {data["kind"] for _, data in model.graph.nodes(data=True)} - AFFINE_KINDS - MILP_KINDS \
        - {"input", "constant"}
    if inexact:
        if not bab:
            raise VerifierInputError(f"the MILP encodes affine ops and ReLUs exactly; this model has "
                                     f"{', '.join(sorted(inexact))}")
        return "unknown", None
    notes.append(f"region {index}: MILP with {crossing_count(root)} binary ReLUs on {len(open_disjuncts)} disjuncts")
    verdict = "unsat"
    for d in open_disjuncts:
        status, cex = milp_disjunct(model, region, d, root, region_index=index, device=device, dtype=dtype,
                                    **milp_options)
        if status == "sat":
            return status, cex
        if status == "unknown":
            verdict = "unknown"
    return verdict, None


def check_timeout(timeout) -> float | None:
    """``timeout`` as float seconds, or ``None`` (no limit); :class:`VerifierInputError` unless it
    is ``None`` or a finite number > 0."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise VerifierInputError(f"timeout must be a number of seconds > 0 or None, not {timeout!r}")
    if not (math.isfinite(timeout) and timeout > 0):
        raise VerifierInputError(f"timeout must be a finite number of seconds > 0, not {timeout!r}")
    return float(timeout)


def verify(model: Model, spec: Spec, domain: str = "auto", timeout: float | None = None,
           device: str = "cpu", dtype: torch.dtype = torch.float64, attack: bool = True,
           seed: int = 0, domain_options: dict | None = None,
           deadline: Deadline | None = None) -> VerificationResult:
    """Attack every region, then refute every disjunct with ``domain`` bounds.

    ``domain="auto"``: Box, then CROWN, then branch-and-bound until the deadline — by
    input splitting for inputs of at most 16 values, else by ReLU splitting from α-CROWN's
    bounds. ``"input-split"``/``"relu-split"`` force one; a domain name bounds once.

    Time: ``deadline`` (an already started :class:`~verifier.deadline.Deadline`, e.g. started
    by the CLI before loading the model) is used when given, else a new one of ``timeout``
    seconds (``None``: no limit) starts after the one-time :func:`~verifier.deadline.warm_up`.
    Every loop checks the deadline; past it the result is ``timeout``.

    Raises :class:`VerifierInputError` before any work for: a malformed spec
    (:meth:`Spec.validate`), a spec that does not fit the model, a timeout that is not a finite
    number > 0 (or ``None``), ``domain_options`` that are not a dict of the domain's options
    with valid values (:func:`verifier.options.check_domain_options`), a ``model`` that is
    not a :class:`~verifier.api.Model`, a ``device`` other than cpu or an available
    cuda[:N] (:func:`~verifier.options.check_device`), a ``dtype`` other than
    ``torch.float32``/``torch.float64``, a ``seed`` outside ``[0, 2**63 − 1]``.
    """
    from .options import check_device, check_domain_options, check_seed

    timeout = check_timeout(timeout)
    if not isinstance(model, Model):
        raise VerifierInputError(f"model must be a verifier.Model (from verifier.load), not {type(model).__name__}")
    device = check_device(device)
    if dtype not in (torch.float32, torch.float64):
        raise VerifierInputError(f"dtype must be torch.float32 or torch.float64 (the bound arithmetic), "
                                 f"not {dtype!r}")
    seed = check_seed(seed)
    if deadline is not None and not isinstance(deadline, Deadline):
        raise VerifierInputError(f"deadline must be a verifier.deadline.Deadline, not {type(deadline).__name__}")
    if domain_options is not None and not (isinstance(domain_options, dict)
                                           and all(isinstance(k, str) for k in domain_options)):
        raise VerifierInputError(f"domain_options must be a dict of option names to values, not {domain_options!r}")
    if not isinstance(domain, str):
        raise VerifierInputError(f"domain must be a name, not {domain!r}")
    if (domain_options or {}).get("projections"):
        raise VerifierInputError("random projections estimate bounds for training and are not sound; "
                                 "verify with exact dual-lp (drop the projections option)")
    domain_options = check_domain_options(domain, domain_options)
    if not isinstance(spec, Spec):
        raise VerifierInputError(f"spec must be a verifier.spec.Spec, not {type(spec).__name__}")
    spec.validate()
    spec.check_model(model.input_size, model.output_size)
    warm_up()
    if deadline is None:
        deadline = Deadline(timeout)
    notes: list[str] = []
    try:
        with deadline.active():
            deadline.check()
            return _decide(model, spec, domain, deadline, device, dtype, attack, seed, domain_options or {}, notes)
    except Timeout:
        return VerificationResult("timeout", None, deadline.elapsed(), notes)


def _decide(model, spec, domain, deadline, device, dtype, attack, seed, domain_options, notes) -> VerificationResult:
    if attack:
        for index, region in enumerate(spec.regions):
            hit = attack_region(model, region, deadline, region_index=index, seed=seed, device=device)
            if hit is not None:
                return VerificationResult("sat", hit, deadline.elapsed(), [f"counterexample in region {index}"])
            deadline.check()
    status = "unsat"
    for index, region in enumerate(spec.regions):
        found, cex = _refute_region(model, region, index, domain, deadline, device, dtype, domain_options, notes)
        if found == "sat":
            return VerificationResult("sat", cex, deadline.elapsed(), notes + [f"counterexample in region {index}"])
        if found == "unknown":
            status = "unknown"
    deadline.check()
    return VerificationResult(status, None, deadline.elapsed(), notes)
