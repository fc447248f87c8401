"""The registry of complete methods, beside the registry of domains.

A complete method decides one input region of a spec: ``sat`` with a confirmed
counterexample, ``unsat``, or ``unknown`` (raising :class:`~verifier.deadline.Timeout`
at the deadline). Each answers :meth:`CompleteMethod.supports` so that callers ask
instead of reading kind lists:

* ``input-split`` — branch-and-bound on the input box, bounded by CROWN
  (:mod:`verifier.complete.input_split`), for low-dimensional inputs;
* ``relu-split`` — β-CROWN branch-and-bound on crossing ReLUs from α-CROWN's root bounds
  (Wang et al. 2021; :mod:`verifier.complete.relu_split`), then the exact MILP when it
  stays undecided and the network is MILP-exact;
* ``milp`` — the exact MILP on the disjuncts α-CROWN leaves open: Tjeng et al. (2019)
  for ReLU, one binary per step for sign/floor/ceil/round (the encoder table of
  :mod:`verifier.complete.milp_encoders`);
* ``activation-split`` — branch-and-bound on the input intervals of every elementwise
  nonlinearity of the relaxation table (GenBaB, Shi et al. 2024;
  :mod:`verifier.complete.activation_split`), for sigmoid, tanh, LeakyReLU, … networks;
* ``auto`` — Box, then ``input-split`` for inputs of at most :data:`INPUT_SPLIT_MAX_DIM`
  values (its first box is CROWN's bound, its intermediate bounds from the forward linear
  mode first, far cheaper than CROWN's on wide networks), else CROWN, then ``relu-split``
  when it supports the network, else ``activation-split`` when it does, else ``unknown``
  with the reason in the notes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar

import networkx as nx
import torch

from ..api import Model, compute_bounds
from ..deadline import Deadline
from ..errors import VerifierInputError
from ..ops import AFFINE_KINDS
from ..ops.relaxation import RELAXATIONS
from ..proof.hooks import cannot_certify, record_trusted_disjunct
from ..spec.model import InputRegion, refuted_rows

if TYPE_CHECKING:
    from ..attack import Counterexample  # noqa: F401  (the Outcome alias names it)

INPUT_SPLIT_MAX_DIM = 16
AUTO_CASCADE = ("box", "crown")
Outcome = tuple[str, "Counterexample | None"]


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
    """Which of the region's disjuncts ``domain`` proves empty over the region's box.
    Under ``verify --proof`` a domain other than Box, CROWN and CROWN-IBP (whose bounds the
    checker re-derives on the whole box) makes the verdict uncertified."""
    if domain not in ("box", "crown", "crown-ibp"):
        cannot_certify(f"bounds of the domain '{domain}' on a whole box (the checker re-derives IBP and CROWN)")
    C, _, _ = region.stacked()
    lower = region.lower.to(device=device, dtype=dtype)
    upper = region.upper.to(device=device, dtype=dtype)
    with torch.no_grad():
        lb, _ = compute_bounds(model, lower, upper, domain=domain, C=C.to(device=device, dtype=dtype),
                               **domain_options)
    return disjuncts_refuted(region, lb[0])


def alpha_crown_root(model: Model, region: InputRegion, index: int, device: str, dtype: torch.dtype,
                     notes: list[str]) -> tuple[dict, list[int]]:
    """α-CROWN at the root of a split branch-and-bound: its intermediate bounds (valid on
    the whole box) and the disjuncts it leaves open (one note)."""
    from .relu_split import root_intermediate_bounds

    root, lb = root_intermediate_bounds(model, region, device, dtype, region_index=index)
    refuted = disjuncts_refuted(region, lb)
    notes.append(f"region {index}: {refuted.count(True)}/{len(refuted)} disjuncts refuted by alpha-crown")
    return root, [d for d, done in enumerate(refuted) if not done]


def _kinds(graph: nx.DiGraph) -> dict[str, str]:
    """Op kind → the source name of one node of that kind."""
    return {d["kind"]: d.get("source", n) for n, d in graph.nodes(data=True)}


class CompleteMethod:
    """A complete method: ``name``, the ``options`` it takes through ``--domain-option``,
    :meth:`supports` and :meth:`decide`."""

    name: ClassVar[str] = "complete"
    description: ClassVar[str] = ""
    options: ClassVar[tuple[str, ...]] = ()

    def supports(self, graph: nx.DiGraph) -> list[tuple[str, str]]:
        """``(node, reason)`` for every op the method cannot decide exactly (empty: all)."""
        return []

    def refuse_unsupported(self, graph: nx.DiGraph) -> None:
        """Raise :class:`VerifierInputError` naming (up to three of) the nodes :meth:`supports`
        refuses; return quietly when it refuses none."""
        missing = self.supports(graph)
        if missing:
            raise VerifierInputError("; ".join(f"{reason} (node '{node}')" for node, reason in missing[:3]))

    def decide(self, model: Model, region: InputRegion, index: int, deadline: Deadline, device: str,
               dtype: torch.dtype, options: dict, notes: list[str]) -> Outcome:
        """Decide region ``index`` (see the module docstring); ``notes`` gets one line per stage."""
        raise NotImplementedError


METHODS: dict[str, CompleteMethod] = {}


def register_method(cls: type[CompleteMethod]) -> type[CompleteMethod]:
    """Class decorator: make the method selectable by ``cls.name`` (``--method``/``--domain``)."""
    METHODS[cls.name] = cls()
    return cls


def get_method(name: str) -> CompleteMethod:
    """The complete method called ``name``; :class:`VerifierInputError` if there is none."""
    if name not in METHODS:
        raise VerifierInputError(f"unknown complete method '{name}'; methods: {', '.join(METHODS)}")
    return METHODS[name]


class InputSplit(CompleteMethod):
    name = "input-split"
    description = "branch-and-bound on the input box, bounded by CROWN (low-dimensional inputs)"
    options = ("batch", "split_rule", "candidates")

    def supports(self, graph):
        from ..domains import get_domain

        return get_domain("crown").supports(graph)

    def decide(self, model, region, index, deadline, device, dtype, options, notes):
        from .input_split import BaBStats, input_split_bab

        stats = BaBStats()
        try:
            return input_split_bab(model, region, deadline, domain="crown", region_index=index, dtype=dtype,
                                   device=device, stats=stats, **options)
        finally:
            notes.append(f"region {index}: input-split branch-and-bound bounded {stats.boxes_bounded} "
                         f"box{'' if stats.boxes_bounded == 1 else 'es'}")


class Milp(CompleteMethod):
    name = "milp"
    description = "the exact MILP (Tjeng et al. 2019, HiGHS) on the disjuncts alpha-crown leaves open"
    options = ("time_limit",)
    splitting = False

    def supports(self, graph, bounds: dict | None = None):
        """Exact for affine ops and the op kinds of the MILP's encoder table
        (:data:`~verifier.complete.milp_encoders.MILP_ENCODERS`: ReLU, and sign, floor,
        ceil, round on ranges of at most ``MAX_BINARIES_PER_ENTRY`` steps). With
        intermediate ``bounds`` (node → ``(l, u)``), also names the nodes with entries too
        wide for that cap, which keep their LP relaxation (sound, not exact). A network too
        large to encode (:func:`~verifier.domains.lp_encoding.too_large`) is named too."""
        from ..domains.lp_encoding import too_large
        from .milp_encoders import encoder_for, inexact_entries

        missing = [(source, f"the MILP does not encode op kind '{kind}' exactly")
                   for kind, source in _kinds(graph).items()
                   if kind not in AFFINE_KINDS | {"input", "constant"} and encoder_for(kind) is None]
        return missing + too_large(graph) + (inexact_entries(graph, bounds) if bounds is not None else [])

    def decide(self, model, region, index, deadline, device, dtype, options, notes):
        from .milp import milp_disjunct
        from .milp_encoders import MAX_BINARIES_PER_ENTRY, binary_counts
        from .relu_split import SplitBaBStats, relu_split_bab

        root, open_disjuncts = alpha_crown_root(model, region, index, device, dtype, notes)
        if not open_disjuncts:
            return "unsat", None
        self.refuse_unsupported(model.graph)
        if self.splitting:
            stats = SplitBaBStats()
            try:
                status, cex = relu_split_bab(model, region, deadline, disjuncts=open_disjuncts, region_index=index,
                                             dtype=dtype, device=device, root=root, stats=stats,
                                             **{k: v for k, v in options.items() if k != "time_limit"})
            finally:
                notes.append(f"region {index}: relu-split branch-and-bound bounded {stats.domains_bounded} "
                             f"subdomains (depth ≤ {stats.max_depth}, frontier ≤ {stats.max_frontier})")
            milp_exact = not METHODS["milp"].supports(model.graph, root)
            if status != "unknown" or not milp_exact:
                return status, cex
        used, relaxed = binary_counts(model.graph, root)
        per_kind = ", ".join(f"{n} {kind}" for kind, n in used.items() if n) or "none"
        notes.append(f"region {index}: MILP with {sum(used.values())} binaries ({per_kind}) on "
                     f"{len(open_disjuncts)} disjuncts")
        if relaxed:
            notes.append(f"region {index}: the MILP is not exact: it keeps the LP relaxation of "
                         + ", ".join(f"{n} {kind}" for kind, n in relaxed.items())
                         + f" entries (over {MAX_BINARIES_PER_ENTRY} steps or unbounded)")
        verdict = "unsat"
        for d in open_disjuncts:
            status, cex = milp_disjunct(model, region, d, root, region_index=index, device=device, dtype=dtype,
                                        **{k: v for k, v in options.items() if k == "time_limit"})
            if status == "sat":
                return status, cex
            if status == "unknown":
                verdict = "unknown"
            else:
                record_trusted_disjunct(index, d, "HiGHS MILP (Tjeng et al. 2019), its dual bound")
        return verdict, None

class ReluSplit(Milp):
    name = "relu-split"
    description = "beta-crown branch-and-bound on crossing ReLUs from alpha-crown's root bounds, then the MILP"
    options = ("batch", "iterations", "candidates", "time_limit")
    splitting = True

    def supports(self, graph):
        """ReLU networks: at least one ReLU; no other elementwise activation (max-pooling
        keeps its relaxation)."""
        kinds = _kinds(graph)
        missing = [(source, f"relu-split branch-and-bound splits ReLUs only, not '{kind}' "
                            f"(--method activation-split splits any activation)")
                   for kind, source in kinds.items() if kind in RELAXATIONS and kind != "relu"]
        if "relu" not in kinds:
            missing.append(("(graph)", "relu-split branch-and-bound needs a network with ReLUs"))
        return missing



class ActivationSplit(CompleteMethod):
    name = "activation-split"
    description = "branch-and-bound on the input intervals of any elementwise activation (GenBaB-style)"
    options = ("batch", "iterations", "candidates", "refine_depth")

    def supports(self, graph):
        """Every op CROWN bounds, and at least one elementwise nonlinearity to split
        (other nonlinear ops, e.g. max-pooling, keep their root relaxation)."""
        from ..domains import get_domain

        missing = get_domain("crown").supports(graph)
        if not any(kind in RELAXATIONS for kind in _kinds(graph)):
            missing.append(("(graph)", "activation-split branch-and-bound needs an elementwise nonlinearity "
                                       f"({', '.join(sorted(RELAXATIONS))})"))
        return missing

    def decide(self, model, region, index, deadline, device, dtype, options, notes):
        from .activation_split import activation_split_bab
        from .relu_split import SplitBaBStats

        missing = self.supports(model.graph)
        if missing:
            raise VerifierInputError("; ".join(f"{reason} (node '{node}')" for node, reason in missing[:3]))
        cannot_certify("activation-split branch-and-bound (the checker re-derives affine and ReLU bounds only)")
        root, open_disjuncts = alpha_crown_root(model, region, index, device, dtype, notes)
        if not open_disjuncts:
            return "unsat", None
        stats = SplitBaBStats()
        try:
            return activation_split_bab(model, region, deadline, disjuncts=open_disjuncts, region_index=index,
                                        dtype=dtype, device=device, root=root, stats=stats, **options)
        finally:
            notes.append(f"region {index}: activation-split branch-and-bound bounded {stats.domains_bounded} "
                         f"subdomains (depth ≤ {stats.max_depth}, frontier ≤ {stats.max_frontier}"
                         + (f", {stats.exhausted} left with nothing to split)" if stats.exhausted else ")"))


class Auto(CompleteMethod):
    name = "auto"
    description = "box, then input-split (≤ 16 inputs), else crown, relu-split or activation-split, until the deadline"

    def __init__(self, methods: Mapping[str, CompleteMethod] | None = None):
        """``methods``: the registry ``auto`` chooses its branch-and-bound from (default: the
        global :data:`METHODS`; ``verify(methods=...)`` passes its own, e.g. the Ray searches)."""
        self.methods = methods

    def decide(self, model, region, index, deadline, device, dtype, options, notes):
        low_dim = model.input_size <= INPUT_SPLIT_MAX_DIM
        for name in AUTO_CASCADE:
            if name == "crown" and low_dim:
                continue  # input-split's first box is bounded by CROWN, from forward linear bounds (cheaper)
            deadline.check()
            refuted = bound_region(model, region, name, device, dtype)
            notes.append(f"region {index}: {refuted.count(True)}/{len(refuted)} disjuncts refuted by {name}")
            if all(refuted):
                return "unsat", None
        order = ("input-split",) if low_dim else ("relu-split", "activation-split")
        for name in order:
            method = (METHODS if self.methods is None else self.methods)[name]
            missing = method.supports(model.graph)
            if not missing:
                return method.decide(model, region, index, deadline, device, dtype, {}, notes)
            notes.append(f"region {index}: {name} does not apply ({missing[0][1]})")
        notes.append(f"region {index}: no complete method applies; undecided")
        return "unknown", None


for _builtin in (Auto, InputSplit, ReluSplit, Milp, ActivationSplit):  # the order of help texts and messages
    register_method(_builtin)

__all__ = ["AUTO_CASCADE", "alpha_crown_root", "CompleteMethod", "INPUT_SPLIT_MAX_DIM", "METHODS", "bound_region", "disjuncts_refuted",
           "get_method", "register_method", "stacked_strict"]
