"""Op coverage, read from the registries: which domain and which complete method handles
each IR op kind (``verifier ops``), which ones support a given model (``verifier check
MODEL --ops``), the op × domain table of docs/domains.md (:func:`op_table`) and the list of
ONNX ops the importer converts (:func:`onnx_ops_table`, docs/onnx-ops.md).

A domain handles a kind when it has a transfer for it (``Domain.supports`` of a one-node
probe graph is empty); a complete method when its ``supports`` names no probe node
(graph-level needs, e.g. relu-split's "a network with ReLUs", are not per-op). Nothing
here lists op kinds by hand: new ops and domains appear by registering.
"""

from __future__ import annotations

import networkx as nx

START, END = "<!-- op-table:start -->", "<!-- op-table:end -->"
ONNX_START, ONNX_END = "<!-- onnx-ops:start -->", "<!-- onnx-ops:end -->"
ORDER = ["box", "deepz", "crown", "crown-ibp", "alpha-crown", "dual-lp", "lp"]
PROBE = "probe"


def op_kinds() -> list[str]:
    """Every IR op kind with concrete semantics (the constant leaf aside), sorted."""
    from .ops import FORWARD

    return sorted(k for k in FORWARD if k != "constant")


def built_in_domains() -> list:
    """Instances of the built-in domains (not plugins), in :data:`ORDER` then by name."""
    from .domains import DOMAINS

    built_in = {n for n, cls in DOMAINS.items() if cls.__module__.startswith("verifier.")}
    return [DOMAINS[n]() for n in [n for n in ORDER if n in built_in] + sorted(built_in - set(ORDER))]


def all_domains() -> list:
    """Instances of every installed domain (built-in first, then plugins by name)."""
    from .domains import available_domains

    first = built_in_domains()
    names = {d.name for d in first}
    extra = []
    for name, cls in sorted(available_domains().items()):
        if name not in names:
            try:
                extra.append(cls())
            except Exception:  # a plugin that cannot be built without options is left out
                continue
    return first + extra


def _probe(kind: str) -> nx.DiGraph:
    graph = nx.DiGraph()
    graph.add_node(PROBE, kind=kind, source=PROBE)
    return graph


def domain_transfer(domain, kind: str):
    """The registered transfer (or LP constraint builder) handling ``kind`` in ``domain``,
    or ``None`` where the domain refuses it."""
    if domain.supports(_probe(kind)):
        return None
    if domain.name == "lp":
        from .domains.lp_encoding import LP_CONSTRAINTS
        from .ops.categories import lookup

        return lookup(LP_CONSTRAINTS, kind)
    return domain.backward_transfer_for(kind) if domain.backward else domain.transfer_for(kind)


def method_handles(method, kind: str) -> bool:
    """Whether complete ``method`` names no probe node of ``kind`` in its ``supports``."""
    return not any(node == PROBE for node, _ in method.supports(_probe(kind)))


def _maths(kind: str) -> str:
    """Where the op's own maths lives: its relaxation entry or its adjoint."""
    from .ops import AFFINE_KINDS
    from .ops.adjoint import ADJOINTS
    from .ops.relaxation import RELAXATIONS

    if kind in RELAXATIONS:
        cls = type(RELAXATIONS[kind])
        return f"`{cls.__module__.rsplit('.', 1)[-1]}.{cls.__name__}`"
    if kind in AFFINE_KINDS:
        return "adjoint: " + (f"`{ADJOINTS[kind].__name__}`" if kind in ADJOINTS else "autograd")
    return "—"


def op_table() -> str:
    """The op × domain markdown table of docs/domains.md (built-in domains only): each cell
    names the transfer that handles the kind, ``—`` where the domain refuses it."""
    domains = built_in_domains()
    lines = ["| op kind | relaxation / adjoint | " + " | ".join(f"`{d.name}`" for d in domains) + " |",
             "|---|---|" + "---|" * len(domains)]
    for kind in op_kinds():
        cells = []
        for d in domains:
            fn = domain_transfer(d, kind)
            cells.append("—" if fn is None else f"`{fn.__name__}`")
        lines.append(f"| `{kind}` | {_maths(kind)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def coverage_rows(kinds: list[str] | None = None) -> tuple[list[str], list[tuple[str, list[bool]]]]:
    """Column names (every installed domain, then every complete method) and, per op kind,
    whether each handles it."""
    from .complete.methods import METHODS

    domains = all_domains()
    columns = [d.name for d in domains] + list(METHODS)
    rows = []
    for kind in op_kinds() if kinds is None else kinds:
        rows.append((kind, [domain_transfer(d, kind) is not None for d in domains]
                     + [method_handles(m, kind) for m in METHODS.values()]))
    return columns, rows


def _grid(columns: list[str], rows: list[tuple[str, list[bool]]], counts: dict[str, int] | None = None) -> list[str]:
    """A plain-text table: ``yes`` / ``-`` per cell, the column names as headers."""
    first = max([len("op kind")] + [len(k) for k, _ in rows]) + (8 if counts else 0)
    widths = [max(3, len(c)) for c in columns]
    out = ["op kind".ljust(first) + "  " + "  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    for kind, cells in rows:
        label = kind if counts is None else f"{kind} (×{counts[kind]})"
        out.append(label.ljust(first) + "  " + "  ".join(("yes" if ok else "-").ljust(w)
                                                          for ok, w in zip(cells, widths)))
    return out


def registry_report() -> str:
    """``verifier ops``: every IR op kind × every installed domain and complete method."""
    columns, rows = coverage_rows()
    lines = _grid(columns, rows)
    lines += ["", "yes: handled; -: refused (the domain or method names the node in its supports()).",
              "Complete methods also have whole-network needs (e.g. relu-split: a network with ReLUs); "
              "`verifier check MODEL --ops` checks a model."]
    return "\n".join(lines)


def model_report(graph: nx.DiGraph) -> str:
    """``verifier check MODEL --ops``: the model's op kinds (with counts) × domains and
    methods, then for each domain and method whether it supports this model, naming the
    nodes it refuses (its ``supports(graph)``)."""
    from .complete.methods import METHODS

    counts: dict[str, int] = {}
    for _, data in graph.nodes(data=True):
        if data["kind"] not in ("input", "constant"):
            counts[data["kind"]] = counts.get(data["kind"], 0) + 1
    columns, rows = coverage_rows(sorted(counts))
    lines = ["op kinds of this model:"] + _grid(columns, rows, counts) + ["", "support for this model:"]
    for name, checker in [(d.name, d) for d in all_domains()] + list(METHODS.items()):
        missing = checker.supports(graph)
        if not missing:
            lines.append(f"  {name:18s} yes")
            continue
        shown = "; ".join(f"{reason} (node '{node}')" for node, reason in missing[:3])
        more = f"; and {len(missing) - 3} more" if len(missing) > 3 else ""
        lines.append(f"  {name:18s} no: {shown}{more}")
    return "\n".join(lines)


def onnx_ops_table() -> str:
    """The markdown list of ONNX ops the importer converts (the keys of
    :data:`verifier.ir.onnx_converters.CONVERTERS`): the op, the converter function and
    the opset in which the ONNX standard first defines it (``onnx.defs``)."""
    import onnx.defs

    from .ir.onnx_converters import CONVERTERS

    lines = ["| ONNX op | converter | defined since opset |", "|---|---|---|"]
    for op in sorted(CONVERTERS, key=str.lower):
        fn = CONVERTERS[op]
        try:
            since = str(min(s.since_version for s in onnx.defs.get_all_schemas_with_history()
                            if s.name == op and s.domain in ("", "ai.onnx")))
        except ValueError:
            since = "—"
        lines.append(f"| `{op}` | `{fn.__module__.rsplit('.', 1)[-1]}.{fn.__name__}` | {since} |")
    return "\n".join(lines)


__all__ = ["END", "ONNX_END", "ONNX_START", "START", "all_domains", "built_in_domains", "coverage_rows",
           "domain_transfer", "method_handles", "model_report", "onnx_ops_table", "op_kinds", "op_table",
           "registry_report"]
