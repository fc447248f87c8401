"""Op categories: a transfer can be registered for a whole category instead of a list of
kinds, so an op registered later (by a plugin, say) is handled by every domain as soon
as it declares its properties.

A kind belongs to the categories of the properties it declared, looked up in this
order: :data:`ANY_ELEMENTWISE` (it has a relaxation entry), :data:`ANY_LINEAR` (it has a
``LINEAR_PART``), :data:`ANY_MONOTONE` (declared non-decreasing in every input entry),
:data:`ANY_AFFINE` (declared affine). A table's own entry for the kind always wins.
"""

from __future__ import annotations

from typing import Callable

from . import AFFINE_KINDS, LINEAR_PART, MONOTONE_KINDS
from .relaxation import RELAXATIONS

ANY_ELEMENTWISE = "<any elementwise>"
ANY_LINEAR = "<any linear>"
ANY_MONOTONE = "<any monotone>"
ANY_AFFINE = "<any affine>"

_MEMBERS = ((ANY_ELEMENTWISE, RELAXATIONS), (ANY_LINEAR, LINEAR_PART), (ANY_MONOTONE, MONOTONE_KINDS),
            (ANY_AFFINE, AFFINE_KINDS))


def categories_of(kind: str) -> list[str]:
    """The categories ``kind`` belongs to, in lookup order."""
    return [category for category, members in _MEMBERS if kind in members]


def lookup(table: dict[str, Callable], kind: str) -> Callable | None:
    """``table[kind]``, else the entry of ``kind``'s first category present in ``table``."""
    fn = table.get(kind)
    if fn is not None:
        return fn
    for category in categories_of(kind):
        fn = table.get(category)
        if fn is not None:
            return fn
    return None


__all__ = ["ANY_AFFINE", "ANY_ELEMENTWISE", "ANY_LINEAR", "ANY_MONOTONE", "categories_of", "lookup"]
