"""Deciding a property: attack first, then bound with an abstract domain.

Verdicts use VNN-COMP words: ``sat`` (a counterexample, confirmed by onnxruntime),
``unsat`` (the property holds: every disjunct of every region is proven empty),
``unknown`` (neither), ``timeout``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from .api import Model, compute_bounds
from .attack import Counterexample, attack_region
from .complete.methods import INPUT_SPLIT_MAX_DIM, METHODS, CompleteMethod, bound_region, disjuncts_refuted
from .deadline import Deadline, Timeout, warm_up
from .domains import get_domain
from .errors import VerifierInputError
from .spec.model import InputRegion, Spec

_LOG = logging.getLogger(__name__)  # --verbose: the stages as they happen (verifier/logs.py)


#: the domains and methods that run without a torch optimiser or an LP/MILP solver (only
#: α-CROWN, β-CROWN, the LP and the MILP use one); for any other name (the other methods,
#: plugin domains) ``verify`` warms them up before the search (:func:`~verifier.deadline.warm_up`).
WITHOUT_OPTIMIZERS = frozenset({"box", "deepz", "crown", "crown-ibp", "dual-lp", "input-split"})
SCREEN_MIN_REGIONS = 2  # specs with this many regions or more are screened by one batched CROWN pass


def uses_optimizers(domain: str, input_size: int) -> bool:
    """Whether deciding with ``domain`` (a domain or complete method name) on a model of
    ``input_size`` inputs may use an optimiser or solver: ``auto`` does only above
    :data:`~verifier.complete.methods.INPUT_SPLIT_MAX_DIM` inputs (it splits smaller inputs)."""
    if domain == "auto":
        return input_size > INPUT_SPLIT_MAX_DIM
    return domain not in WITHOUT_OPTIMIZERS


@dataclass
class VerificationResult:
    status: str
    counterexample: Counterexample | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def _refute_region(model: Model, region: InputRegion, index: int, domain: str, deadline: Deadline, device: str,
                   dtype: torch.dtype, domain_options: dict, notes: list[str],
                   methods: Mapping[str, CompleteMethod]) -> tuple[str, Counterexample | None]:
    """``unsat``/``unknown``/``sat`` for one region (raises Timeout): a complete method of
    ``methods`` decides it (``auto``, ``input-split``, ``relu-split``, ``milp``,
    ``activation-split``); any other name is one domain's bound."""
    if domain in methods:
        method = methods[domain]
        unknown = sorted(set(domain_options) - set(method.options))
        if unknown:
            raise VerifierInputError(f"{domain} takes the options {', '.join(method.options) or '(none)'}; "
                                     f"not {', '.join(unknown)}")
        return method.decide(model, region, index, deadline, device, dtype, domain_options, notes)
    deadline.check()
    refuted = bound_region(model, region, domain, device, dtype, **domain_options)
    notes.append(f"region {index}: {refuted.count(True)}/{len(refuted)} disjuncts refuted by {domain}")
    return ("unsat" if all(refuted) else "unknown"), None


def method_registry(methods: Mapping[str, CompleteMethod] | None) -> Mapping[str, CompleteMethod]:
    """:data:`~verifier.complete.methods.METHODS` with ``methods`` in place of those of the
    same name (a new dict; the registry is not changed); unless ``methods`` names its own,
    ``auto`` chooses its branch-and-bound among them (:class:`~verifier.complete.methods.Auto`'s
    ``methods`` registry)."""
    if not methods:
        return METHODS
    registry = {**METHODS, **methods}
    if "auto" not in methods:
        registry["auto"] = type(METHODS["auto"])(methods=registry)
    return registry


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
           deadline: Deadline | None = None,
           methods: Mapping[str, CompleteMethod] | None = None) -> VerificationResult:
    """Attack every region, then refute every disjunct with ``domain`` bounds.

    ``domain="auto"``: Box, then CROWN, then branch-and-bound until the deadline — by
    input splitting for inputs of at most 16 values, else by ReLU splitting from α-CROWN's
    bounds, else (other activations) by activation splitting (GenBaB-style), else
    ``unknown``. ``"input-split"``/``"relu-split"``/``"milp"``/``"activation-split"`` force
    one; a domain name bounds once.

    Time: ``deadline`` (an already started :class:`~verifier.deadline.Deadline`, e.g. started
    by the CLI before loading the model) is used when given, else a new one of ``timeout``
    seconds (``None``: no limit) starts after the one-time :func:`~verifier.deadline.warm_up`.
    The optimisers' and solvers' warm-up (over a second on a cold process) runs only when
    the attack found nothing and the search uses them (:func:`uses_optimizers`); the clock
    is moved on by its time, as it is by any warm-up on a given deadline.
    Every loop checks the deadline; past it the result is ``timeout``.

    ``methods``: complete methods (name → an object with the interface of
    :class:`~verifier.complete.methods.CompleteMethod`) used for this call in place of the
    registry's of the same name (:data:`~verifier.complete.methods.METHODS`, which is not
    changed), e.g. the Ray methods of :func:`verifier.cluster.ray_bab.verify_ray`.

    Raises :class:`VerifierInputError` before any work for: a malformed spec
    (:meth:`Spec.validate`), a spec that does not fit the model, a timeout that is not a finite
    number > 0 (or ``None``), ``domain_options`` that are not a dict of the domain's options
    with valid values (:func:`verifier.options.check_domain_options`), a ``model`` that is
    not a :class:`~verifier.api.Model`, a ``device`` other than cpu or an available
    cuda[:N] (:func:`~verifier.options.check_device`), a ``dtype`` other than
    ``torch.float32``/``torch.float64``, a ``seed`` outside ``[0, 2**63 − 1]``, ``methods``
    that is not a mapping of names to objects with a ``decide`` method and an ``options`` tuple.
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
    if methods is not None and not (isinstance(methods, Mapping) and all(
            isinstance(k, str) and callable(getattr(m, "decide", None))
            and isinstance(getattr(m, "options", None), tuple) for k, m in methods.items())):
        raise VerifierInputError(f"methods must map method names to complete methods (with decide and options), "
                                 f"not {methods!r}")
    registry = method_registry(methods)
    if (domain_options or {}).get("projections"):
        raise VerifierInputError("random projections estimate bounds for training and are not sound; "
                                 "verify with exact dual-lp (drop the projections option)")
    domain_options = check_domain_options(domain, domain_options)
    if not isinstance(spec, Spec):
        raise VerifierInputError(f"spec must be a verifier.spec.Spec, not {type(spec).__name__}")
    spec.validate()
    spec.check_model(model.input_size, model.output_size)
    spent = warm_up(optimizers=False)  # the optimisers' warm-up waits until the attack found nothing
    if deadline is None:
        deadline = Deadline(timeout)
    else:
        deadline.extend(spent)  # one-time start-up is not the caller's budget (see warm_up)
    notes: list[str] = []
    try:
        with deadline.active():
            deadline.check()
            return _decide(model, spec, domain, deadline, device, dtype, attack, seed, domain_options or {}, notes,
                           registry)
    except Timeout:
        return VerificationResult("timeout", None, deadline.elapsed(), notes)


def _decide(model, spec, domain, deadline, device, dtype, attack, seed, domain_options, notes,
            methods) -> VerificationResult:
    from .fidelity import check_overflow

    regions = spec.regions  # every region, attack or not: no verdict where float execution can overflow
    check_overflow(model.graph_for("cpu", torch.float64), torch.cat([model.as_batch(r.lower) for r in regions]),
                   torch.cat([model.as_batch(r.upper) for r in regions]), model.graph.graph.get("path"))
    _LOG.debug("%d input region(s); the model's float execution cannot overflow on them", len(regions))
    open_regions = _screened(model, spec, domain, device, dtype, notes)
    if attack:
        for index in open_regions:
            hit = attack_region(model, regions[index], deadline, region_index=index, seed=seed, device=device)
            _LOG.debug("attack on region %d: %s (%.2f s)", index, "counterexample" if hit is not None else "none found",
                       deadline.elapsed())
            if hit is not None:
                return VerificationResult("sat", hit, deadline.elapsed(), [f"counterexample in region {index}"])
            deadline.check()
    # one-time start-up of the optimisers and solvers, only for a search that uses them: not the budget's
    deadline.extend(warm_up(optimizers=uses_optimizers(domain, model.input_size)))
    status = "unsat"
    for index in open_regions:
        _LOG.debug("region %d: %s (%.2f s)", index, "searching" if domain in methods else f"bounding with {domain}",
                   deadline.elapsed())
        found, cex = _refute_region(model, regions[index], index, domain, deadline, device, dtype, domain_options,
                                    notes, methods)
        _LOG.debug("region %d: %s (%.2f s)", index, found, deadline.elapsed())
        if found == "sat":
            return VerificationResult("sat", cex, deadline.elapsed(), notes + [f"counterexample in region {index}"])
        if found == "unknown":
            status = "unknown"
    deadline.check()
    return VerificationResult(status, None, deadline.elapsed(), notes)


def _screened(model, spec, domain, device, dtype, notes) -> list[int]:
    """The regions left after one batched CROWN pass over all of them (specs of several
    regions under a complete method; :func:`~verifier.complete.methods.screen_regions`): a
    region it refutes holds no counterexample, so it is neither attacked nor searched."""
    indices = list(range(len(spec.regions)))
    if len(indices) < SCREEN_MIN_REGIONS or domain not in METHODS or get_domain("crown").supports(model.graph):
        return indices  # (an op CROWN does not bound: every region goes to the method)
    done = screen_regions(model, spec.regions, "crown", device, dtype)
    refuted = [i for i in indices if done[i]]
    if refuted:
        notes.append(f"regions {index_ranges(refuted)} refuted by one batched crown pass "
                     f"({len(refuted)}/{len(indices)})")
    return [i for i in indices if not done[i]]


def index_ranges(indices: list[int]) -> str:
    """Sorted indices as ranges: ``[0, 1, 2, 5, 7, 8]`` → ``"0-2, 5, 7-8"``."""
    parts, start = [], None
    for k, i in enumerate(indices):
        if start is None:
            start = i
        if k + 1 == len(indices) or indices[k + 1] != i + 1:
            parts.append(str(start) if start == i else f"{start}-{i}")
            start = None
    return ", ".join(parts)


SCREEN_BATCH = 256  # regions bounded together by screen_regions


def screen_regions(model: Model, regions: list[InputRegion], domain: str, device: str,
                   dtype: torch.dtype) -> list[bool]:
    """Per region, whether ``domain`` proves every disjunct empty, bounding up to
    :data:`SCREEN_BATCH` regions in one pass (the batch axis holds the regions' boxes, each
    region's spec rows zero-padded to the widest): a spec of many small regions (a learned
    index's 1,200 one-dimensional boxes) costs a few passes instead of a search each. Raises
    what :func:`~verifier.api.compute_bounds` raises (a model the domain refuses)."""
    done = []
    for start in range(0, len(regions), SCREEN_BATCH):
        part = regions[start:start + SCREEN_BATCH]
        mats = [r.stacked()[0] for r in part]
        C = torch.zeros(len(part), max(m.shape[0] for m in mats), mats[0].shape[1], dtype=dtype, device=device)
        for i, m in enumerate(mats):
            C[i, : m.shape[0]] = m.to(C)
        lower = torch.cat([model.as_batch(r.lower) for r in part]).to(device=device, dtype=dtype)
        upper = torch.cat([model.as_batch(r.upper) for r in part]).to(device=device, dtype=dtype)
        with torch.no_grad():
            lb, _ = compute_bounds(model, lower, upper, domain=domain, C=C)
        done += [all(disjuncts_refuted(r, lb[i, : m.shape[0]])) for i, (r, m) in enumerate(zip(part, mats))]
    return done
