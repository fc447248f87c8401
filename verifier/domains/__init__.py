"""Registry of abstract domains.

Built-in domains register themselves with :func:`register_domain`; third-party
packages expose a :class:`~verifier.domains.base.Domain` subclass under the entry-point
group ``verifier.domains`` (``name = "module:Class"``) and are found on first lookup.
"""

from __future__ import annotations

from importlib.metadata import entry_points

from ..errors import VerifierInputError

DOMAINS: dict[str, type] = {}
_ENTRY_POINTS_LOADED = False


def register_domain(cls: type) -> type:
    """Class decorator: make ``cls`` selectable by ``cls.name``."""
    DOMAINS[cls.name] = cls
    return cls


def _load_entry_points() -> None:
    global _ENTRY_POINTS_LOADED
    if _ENTRY_POINTS_LOADED:
        return
    _ENTRY_POINTS_LOADED = True
    for ep in entry_points(group="verifier.domains"):
        try:
            cls = ep.load()
        except Exception as exc:  # a broken plugin must not break the verifier
            raise VerifierInputError(f"domain plugin '{ep.name}' ({ep.value}) failed to load: {exc}") from None
        DOMAINS.setdefault(ep.name, cls)


def available_domains() -> dict[str, type]:
    """Every installed domain, built-in and plugin, by name."""
    _load_entry_points()
    return dict(DOMAINS)


def get_domain(name: str, **options):
    """An instance of the domain called ``name``."""
    domains = available_domains()
    if name not in domains:
        raise VerifierInputError(f"unknown domain '{name}'; installed domains: {', '.join(sorted(domains))}")
    return domains[name](**options)


from . import alpha_crown, box, crown, deepz, dual_lp, lp  # noqa: E402,F401  (registers the built-in domains)
