"""The ``verifier certify --json`` record and its JSON Schema (draft 2020-12).

The schema :data:`CERTIFY_SCHEMA` is the contract; ``docs/outputs.md`` prints it with an
example, and ``tests/test_certify_curves.py`` checks that the page and this constant agree
and that real output validates (as ``tests/test_verify_json.py`` does for ``verify``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from .certify import Certificate

FORMAT = "verifier-certify/1"
STATUSES = ("reproduced", "different", "not comparable")

_FRACTION = {"type": "number", "minimum": 0, "maximum": 1}
_SECONDS = {"type": "number", "minimum": 0}

CERTIFY_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "verifier certify --json",
    "type": "object",
    "additionalProperties": False,
    "required": ["format", "data", "count", "domain", "dtype", "eps", "models", "plot", "options", "time"],
    "properties": {
        "format": {"const": FORMAT},
        "data": {"type": "string"},
        "count": {"type": "integer", "minimum": 1},
        "domain": {"type": "string"},
        "dtype": {"enum": ["float32", "float64"]},
        "eps": {"type": "array", "items": {"type": "number", "minimum": 0}, "minItems": 1},
        "models": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["model", "clean_accuracy", "points", "stored_certificate", "seconds"],
                "properties": {
                    "model": {"type": "string"},
                    "clean_accuracy": _FRACTION,
                    "points": {
                        "type": "array",
                        "minItems": 1,
                        "items": {"type": "object",
                                  "additionalProperties": False,
                                  "required": ["eps", "pgd_accuracy", "certified_accuracy"],
                                  "properties": {"eps": {"type": "number", "minimum": 0},
                                                 "pgd_accuracy": _FRACTION,
                                                 "certified_accuracy": _FRACTION}},
                    },
                    "stored_certificate": {
                        "oneOf": [
                            {"type": "null"},
                            {"type": "object",
                             "required": ["certified_accuracy", "domain", "eps", "count", "status"],
                             "properties": {"certified_accuracy": _FRACTION, "domain": {"type": "string"},
                                            "eps": {"type": "number", "minimum": 0},
                                            "count": {"type": "integer", "minimum": 1},
                                            "dtype": {"type": ["string", "null"]},
                                            "status": {"enum": list(STATUSES)}}},
                        ],
                    },
                    "seconds": _SECONDS,
                },
            },
        },
        "plot": {"type": ["string", "null"]},
        "options": {
            "type": "object",
            "additionalProperties": False,
            "required": ["seed", "pgd_steps", "batch", "domain_options"],
            "properties": {"seed": {"type": "integer", "minimum": 0},
                           "pgd_steps": {"type": "integer", "minimum": 0},
                           "batch": {"type": "integer", "minimum": 1},
                           "domain_options": {"type": "object"}},
        },
        "time": {"type": "object", "additionalProperties": False, "required": ["total"],
                 "properties": {"total": _SECONDS}},
    },
}


@dataclass
class ModelCurve:
    """One model's result: its path as given, the certificates (one per ε, in the order of
    ``--eps``), the comparison with its stored metadata certificate (``stored``: the
    metadata dict or ``None``; ``status``: one of :data:`STATUSES` or ``None``) and the
    seconds its certification took."""

    model: str
    certificates: list[Certificate]
    stored: dict | None
    status: str | None
    seconds: float


def certify_record(curves: Sequence[ModelCurve], *, plot: str | None, seed: int, pgd_steps: int, batch: int,
                   domain_options: dict, total_seconds: float) -> dict[str, Any]:
    """The ``certify --json`` object (schema :data:`CERTIFY_SCHEMA`) of ``curves`` (the main
    model first, then each ``--compare`` model). Accuracies are fractions in [0, 1] of the
    ``count`` test points; ε in input units; seconds ``>= 0``. Every curve must share data,
    count, domain, dtype and radii (one ``certify`` run); ``domain_options`` must be
    JSON-serialisable. Raises ``ValueError`` for no curves or curves of different runs."""
    if not curves:
        raise ValueError("certify_record needs at least one model")
    first = curves[0].certificates
    settings = lambda certs: [(c.data, c.count, c.domain, c.dtype, c.eps) for c in certs]  # noqa: E731
    if any(settings(c.certificates) != settings(first) for c in curves):
        raise ValueError("certify_record: the models were certified under different settings")
    models = []
    for curve in curves:
        stored = None
        if curve.stored is not None:
            stored = {key: curve.stored.get(key) for key in ("certified_accuracy", "domain", "eps", "count", "dtype")}
            stored["status"] = curve.status
        models.append({"model": curve.model, "clean_accuracy": curve.certificates[0].clean_accuracy,
                       "points": [{"eps": c.eps, "pgd_accuracy": c.pgd_accuracy,
                                   "certified_accuracy": c.certified_accuracy} for c in curve.certificates],
                       "stored_certificate": stored, "seconds": max(float(curve.seconds), 0.0)})
    return {"format": FORMAT, "data": first[0].data, "count": first[0].count, "domain": first[0].domain,
            "dtype": first[0].dtype, "eps": [c.eps for c in first], "models": models, "plot": plot,
            "options": {"seed": int(seed), "pgd_steps": int(pgd_steps), "batch": int(batch),
                        "domain_options": dict(domain_options)},
            "time": {"total": max(float(total_seconds), 0.0)}}
