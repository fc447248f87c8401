"""Print the op × domain table of docs/domains.md from the registries.

Each cell names the registered transfer that handles the op kind in that domain (its
module and function), or ``—`` where the domain refuses the kind. Run
``python docs/op_table.py`` and paste the output between the ``op-table`` markers of
docs/domains.md; ``tests/test_docs_tables.py`` checks that the committed table is current.
"""

from __future__ import annotations

import networkx as nx

from verifier.domains import DOMAINS
from verifier.domains.lp_encoding import LP_CONSTRAINTS
from verifier.ops import AFFINE_KINDS, FORWARD
from verifier.ops.adjoint import ADJOINTS
from verifier.ops.categories import lookup
from verifier.ops.relaxation import RELAXATIONS

ORDER = ["box", "deepz", "crown", "crown-ibp", "alpha-crown", "dual-lp", "lp"]

START, END = "<!-- op-table:start -->", "<!-- op-table:end -->"


def _where(fn) -> str:
    return f"`{fn.__name__}`"


def _maths(kind: str) -> str:
    """Where the op's own maths lives: its relaxation entry or its adjoint."""
    if kind in RELAXATIONS:
        cls = type(RELAXATIONS[kind])
        return f"`{cls.__module__.rsplit('.', 1)[-1]}.{cls.__name__}`"
    if kind in AFFINE_KINDS:
        return "adjoint: " + (f"`{ADJOINTS[kind].__name__}`" if kind in ADJOINTS else "autograd")
    return "—"


def _cell(domain, kind: str) -> str:
    probe = nx.DiGraph()
    probe.add_node("probe", kind=kind, source="probe")
    if domain.supports(probe):
        return "—"
    if domain.name == "lp":
        return _where(lookup(LP_CONSTRAINTS, kind))
    fn = domain.backward_transfer_for(kind) if domain.backward else domain.transfer_for(kind)
    return _where(fn)


def op_table() -> str:
    """The markdown table (built-in domains only, in registration order)."""
    built_in = {n for n, cls in DOMAINS.items() if cls.__module__.startswith("verifier.")}  # not plugins
    names = [n for n in ORDER if n in built_in] + sorted(built_in - set(ORDER))
    domains = [DOMAINS[n]() for n in names]
    kinds = sorted(k for k in FORWARD if k != "constant")
    lines = ["| op kind | relaxation / adjoint | " + " | ".join(f"`{d.name}`" for d in domains) + " |",
             "|---|---|" + "---|" * len(domains)]
    for kind in kinds:
        lines.append(f"| `{kind}` | {_maths(kind)} | " + " | ".join(_cell(d, kind) for d in domains) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(op_table())
