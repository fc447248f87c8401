"""Machine-readable records of the CLI's results: ``verify --json`` and ``bounds --json``.

Pipelines read these instead of parsing text. The JSON Schemas below (draft 2020-12) are
the contract; ``docs/json-schema.md`` prints them with an example, and the tests check
that the document and these constants agree and that real output validates.

A ``verify`` record is built from a :class:`~verifier.verify.VerificationResult` by
:func:`verify_record`; which domain or method decided each region is read from the
result's notes by :func:`region_outcomes` (the notes are the one place the strategy
records its stages).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

FORMAT = "verifier-verify/1"
VERDICTS = ("sat", "unsat", "unknown", "timeout")
ATTACK = "attack"

_NUMBER_OR_NULL = {"type": ["number", "null"]}
_SECONDS = {"type": "number", "minimum": 0}

VERIFY_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "verifier verify --json",
    "type": "object",
    "additionalProperties": False,
    "required": ["format", "result", "model", "spec", "domain", "decided_by", "time", "counterexample",
                 "regions", "notes", "result_file", "options"],
    "properties": {
        "format": {"const": FORMAT},
        "result": {"enum": list(VERDICTS)},
        "model": {"type": "string"},
        "spec": {"type": "string"},
        "domain": {"type": "string"},
        "decided_by": {"type": ["string", "null"]},
        "time": {
            "type": "object",
            "additionalProperties": False,
            "required": ["total", "load", "verify", "timeout"],
            "properties": {"total": _SECONDS, "load": _SECONDS, "verify": _SECONDS,
                           "timeout": {"type": ["number", "null"], "exclusiveMinimum": 0}},
        },
        "counterexample": {
            "oneOf": [
                {"type": "null"},
                {"type": "object",
                 "additionalProperties": False,
                 "required": ["region", "x", "y"],
                 "properties": {"region": {"type": "integer", "minimum": 0},
                                "x": {"type": "array", "items": _NUMBER_OR_NULL, "minItems": 1},
                                "y": {"type": "array", "items": _NUMBER_OR_NULL, "minItems": 1}}},
            ],
        },
        "regions": {
            "type": "array",
            "items": {"type": "object",
                      "additionalProperties": False,
                      "required": ["index", "decided_by", "notes"],
                      "properties": {"index": {"type": "integer", "minimum": 0},
                                     "decided_by": {"type": ["string", "null"]},
                                     "notes": {"type": "array", "items": {"type": "string"}}}},
        },
        "notes": {"type": "array", "items": {"type": "string"}},
        "result_file": {"type": ["string", "null"]},
        "options": {
            "type": "object",
            "additionalProperties": False,
            "required": ["attack", "seed", "device", "dtype", "domain_options", "fidelity_check"],
            "properties": {"attack": {"type": "boolean"},
                           "seed": {"type": "integer", "minimum": 0},
                           "device": {"type": "string"},
                           "dtype": {"enum": ["float32", "float64"]},
                           "domain_options": {"type": "object"},
                           "fidelity_check": {"type": "boolean"}},
        },
    },
}

BOUNDS_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "verifier bounds --json",
    "type": "object",
    "additionalProperties": False,
    "required": ["lower", "upper"],
    "properties": {
        "lower": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}},
        "upper": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}},
    },
}

# A note's stage → the name recorded as having decided the region (see verifier.complete.methods).
_REGION_NOTE = re.compile(r"^region (\d+): (.*)$", re.S)
_REFUTED = re.compile(r"^(\d+)/(\d+) disjuncts refuted by (\S+)$")
_SCREENED = re.compile(r"^regions ([\d, -]+) refuted by one batched (\S+) pass")  # verify._screened
_METHOD_NOTES = (("input-split branch-and-bound", "input-split"), ("relu-split branch-and-bound", "relu-split"),
                 ("activation-split branch-and-bound", "activation-split"), ("MILP with", "milp"))


@dataclass
class RegionOutcome:
    """What the notes say about one input region: its notes (without the ``region i:``
    prefix) and the domain or complete method that decided it (``None``: undecided, or
    not recorded)."""

    index: int
    notes: list[str] = field(default_factory=list)
    decided_by: str | None = None
    method: str | None = None  # the last complete method that ran on the region


def region_outcomes(status: str, notes: list[str], regions: int,
                    counterexample_region: int | None = None) -> tuple[list[RegionOutcome], list[str]]:
    """Split ``notes`` (``VerificationResult.notes``) by region and name each region's decider.

    ``status`` is the verdict, ``regions`` the spec's number of input regions (``≥ 0``) and
    ``counterexample_region`` the region of a ``sat`` counterexample. A region is decided by
    a domain when a note says ``k/k disjuncts refuted by NAME``; by a complete method
    (``input-split``, ``relu-split``, ``milp``, ``activation-split``) when that method ran on
    it and the verdict is ``unsat``, or the verdict is ``sat`` in that region; by ``attack``
    for a ``sat`` with no stage notes (the attack runs before any bound). Where the notes do
    not tell (a complete method ran and the verdict is ``unknown`` or ``timeout``), the
    region's ``decided_by`` is ``None``. Returns the regions (index order) and the notes
    that name no region. Raises ``ValueError`` for a region index outside ``[0, regions)``.
    """
    outcomes = [RegionOutcome(i) for i in range(regions)]
    general: list[str] = []
    for note in notes:
        match = _REGION_NOTE.match(note)
        if match is None:
            screened = _SCREENED.match(note)
            for index in _expand_ranges(screened.group(1)) if screened else []:
                if 0 <= index < regions:
                    outcomes[index].decided_by = screened.group(2)
            general.append(note)
            continue
        index, text = int(match.group(1)), match.group(2)
        if not 0 <= index < regions:
            raise ValueError(f"note about region {index}, but the spec has {regions} regions: {note!r}")
        outcome = outcomes[index]
        outcome.notes.append(text)
        refuted = _REFUTED.match(text)
        if refuted and refuted.group(1) == refuted.group(2):
            outcome.decided_by = refuted.group(3)
        for prefix, method in _METHOD_NOTES:
            if text.startswith(prefix):
                outcome.method = method
    staged = any(o.notes for o in outcomes)
    for outcome in outcomes:
        if outcome.decided_by is None and outcome.method is not None and status == "unsat":
            outcome.decided_by = outcome.method
    if status == "sat" and counterexample_region is not None and 0 <= counterexample_region < regions:
        found = outcomes[counterexample_region]
        found.decided_by = found.method if staged and found.method else ATTACK if not staged else None
    return outcomes, general


def _expand_ranges(text: str) -> list[int]:
    """``"0-2, 5"`` → ``[0, 1, 2, 5]`` (the inverse of :func:`verifier.verify.index_ranges`)."""
    out = []
    for part in text.split(","):
        first, _, last = part.strip().partition("-")
        out += list(range(int(first), int(last or first) + 1))
    return out


def overall_decider(status: str, outcomes: list[RegionOutcome]) -> str | None:
    """The name that decided the verdict: for ``sat`` the counterexample region's decider;
    for ``unsat`` the one decider of every region, or their names joined by ``+`` in
    first-use order when regions were decided differently; ``None`` for ``unknown`` and
    ``timeout`` (and when the notes do not tell)."""
    if status == "sat":
        named = [o.decided_by for o in outcomes if o.decided_by is not None]
        return named[-1] if named else None
    if status != "unsat" or any(o.decided_by is None for o in outcomes):
        return None
    names = list(dict.fromkeys(o.decided_by for o in outcomes))
    return "+".join(names) if names else None


def _numbers(values) -> list[float | None]:
    """Flattened floats; non-finite values become ``None`` (JSON has no inf/NaN)."""
    out: list[float | None] = []
    for v in values.reshape(-1).tolist():
        v = float(v)
        out.append(v if math.isfinite(v) else None)
    return out


def verify_record(result, *, model: str, spec: str, regions: int, domain: str, load_seconds: float,
                  timeout: float | None, result_file: str | None, attack: bool, seed: int, device: str,
                  dtype: str, domain_options: dict, fidelity_check: bool) -> dict[str, Any]:
    """The ``verify --json`` object (schema :data:`VERIFY_SCHEMA`) of ``result``.

    ``result`` is a :class:`~verifier.verify.VerificationResult` (``status``,
    ``counterexample`` with ``x``/``y`` arrays and ``region_index``, ``seconds``, ``notes``);
    ``model``/``spec`` are the paths as given, ``regions`` the spec's number of input
    regions, ``domain`` the requested domain or complete method, ``load_seconds`` the time
    spent reading the files and checking fidelity (counted in ``result.seconds``, which
    runs from the start of loading). ``notes`` are all the result's notes in order (the
    lines the text output prints); ``regions[i].notes`` are region ``i``'s, without their
    ``region i:`` prefix. Times are seconds ``≥ 0``; ``time.verify`` is
    ``total − load``. ``domain_options`` must be JSON-serialisable (numbers and text, as
    ``--domain-option`` gives them). Raises ``ValueError`` for a verdict outside
    :data:`VERDICTS` or notes naming a region outside the spec."""
    if result.status not in VERDICTS:
        raise ValueError(f"verdict {result.status!r} is not one of {', '.join(VERDICTS)}")
    cex = result.counterexample
    cex_region = None if cex is None else int(cex.region_index)
    outcomes, _ = region_outcomes(result.status, list(result.notes), regions, cex_region)
    total = max(float(result.seconds), 0.0)
    load = min(max(float(load_seconds), 0.0), total)
    return {
        "format": FORMAT,
        "result": result.status,
        "model": model,
        "spec": spec,
        "domain": domain,
        "decided_by": overall_decider(result.status, outcomes),
        "time": {"total": total, "load": load, "verify": total - load, "timeout": timeout},
        "counterexample": None if cex is None else {"region": cex_region, "x": _numbers(cex.x),
                                                    "y": _numbers(cex.y)},
        "regions": [{"index": o.index, "decided_by": o.decided_by, "notes": o.notes} for o in outcomes],
        "notes": list(result.notes),
        "result_file": result_file,
        "options": {"attack": bool(attack), "seed": int(seed), "device": device, "dtype": dtype,
                    "domain_options": dict(domain_options), "fidelity_check": bool(fidelity_check)},
    }
