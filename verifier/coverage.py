"""Op coverage, read from the registries: which domain and which complete method handles
each IR op kind (``verifier ops``), which ones support a given model (``verifier check
MODEL --ops``), the op × domain table of docs/domains.md (:func:`op_table`) and the list of
ONNX ops the importer converts (:func:`onnx_ops_table`, docs/onnx-ops.md).

Both reports read one function, :func:`support`: what a domain or complete method
(:func:`checker`) refuses in a graph, split into the nodes it refuses and the
whole-network needs it misses (relu-split: "a network with ReLUs"). A kind's cell is
:func:`support` of a one-node probe graph of that kind (:func:`kind_cell`): ``yes``,
``-`` (the node is refused) or ``yes*`` (handled, in a network that meets the method's
needs); a model's line is :func:`support` of its graph. So the two reports cannot word
one op differently, and ``verify --method``/``--domain`` refuses up front exactly what
``check --ops`` says no to. Nothing here lists op kinds by hand: new ops and domains
appear by registering.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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


@dataclass
class Support:
    """What a domain or complete method says about a graph (:func:`support`): ``refused``,
    ``(node, reason)`` for the graph's nodes it cannot handle, and ``needs``, the reasons of
    whole-network needs the graph misses (e.g. "needs a network with ReLUs")."""

    refused: list[tuple[str, str]] = field(default_factory=list)
    needs: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether the graph is supported (nothing refused, no need missed)."""
        return not self.refused and not self.needs

    def describe(self, limit: int = 3) -> str:
        """The refusals as one line: up to ``limit`` refused nodes, then the missed needs."""
        parts = [f"{reason} (node '{node}')" for node, reason in self.refused[:limit]]
        if len(self.refused) > limit:
            parts.append(f"and {len(self.refused) - limit} more")
        return "; ".join(parts + self.needs)


def checker(name: str):
    """The complete method (:data:`~verifier.complete.methods.METHODS`) or an instance of
    the installed domain called ``name``; ``None`` for an unknown name or a plugin domain
    that cannot be built without options."""
    from .complete.methods import METHODS
    from .domains import available_domains

    if name in METHODS:
        return METHODS[name]
    cls = available_domains().get(name)
    if cls is None:
        return None
    try:
        return cls()
    except Exception:  # a plugin that needs options: its own bound() reports what it refuses
        return None


def support(checker, graph: nx.DiGraph) -> Support:
    """:class:`Support` of ``graph`` by ``checker`` (a domain instance or a complete
    method), from its ``supports(graph)``: entries naming a node of the graph (by node id
    or ONNX source name) are refusals, the others (``"(graph)"``) whole-network needs."""
    names = set(graph.nodes) | {data.get("source", n) for n, data in graph.nodes(data=True)}
    result = Support()
    for node, reason in checker.supports(graph):
        if node in names:
            result.refused.append((node, reason))
        else:
            result.needs.append(reason)
    return result


def refuse_unsupported(name: str, graph: nx.DiGraph, flag: str) -> None:
    """Refuse, before any bound is computed, a model (IR ``graph``) that the domain or
    complete method ``name`` cannot handle: :func:`support` of the graph (refused nodes and
    a method's whole-network needs), what ``verifier check MODEL --ops`` prints. ``auto``
    takes every model (what no method decides ends ``unknown``); an unknown name is left to
    the option checks. Raises :class:`~verifier.errors.VerifierInputError` naming ``flag``
    and up to three refused nodes."""
    from .errors import VerifierInputError

    found = checker(name)
    if found is None or name == "auto":
        return
    missing = support(found, graph)
    if not missing.ok:
        what = "decide" if flag == "--method" else "bound"
        raise VerifierInputError(f"{flag} {name} cannot {what} this model: {missing.describe()}")


YES, NO, YES_IF_NEEDS = "yes", "-", "yes*"


def kind_cell(checker, kind: str) -> str:
    """The report cell of op ``kind`` for ``checker``: :func:`support` of a one-node probe
    graph: ``yes``, ``-`` (the node is refused) or ``yes*`` (not refused, but the probe
    misses a whole-network need of the method: handled in a network that meets it)."""
    found = support(checker, _probe(kind))
    return NO if found.refused else YES_IF_NEEDS if found.needs else YES


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
    """Whether complete ``method`` handles ``kind`` (its :func:`kind_cell` is not ``-``)."""
    return kind_cell(method, kind) != NO


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


def checkers() -> list[tuple[str, object]]:
    """``(name, checker)`` of every installed domain (built-in first), then every complete method."""
    from .complete.methods import METHODS

    return [(d.name, d) for d in all_domains()] + list(METHODS.items())


def coverage_cells(kinds: list[str] | None = None) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """Column names (every installed domain, then every complete method) and, per op kind
    (default: every kind), each column's :func:`kind_cell`."""
    found = checkers()
    return [name for name, _ in found], [(kind, [kind_cell(c, kind) for _, c in found])
                                         for kind in (op_kinds() if kinds is None else kinds)]


def coverage_rows(kinds: list[str] | None = None) -> tuple[list[str], list[tuple[str, list[bool]]]]:
    """:func:`coverage_cells` as booleans: whether each column handles the kind (``yes`` or ``yes*``)."""
    columns, rows = coverage_cells(kinds)
    return columns, [(kind, [cell != NO for cell in cells]) for kind, cells in rows]


def _grid(columns: list[str], rows: list[tuple[str, list[str]]], counts: dict[str, int] | None = None) -> list[str]:
    """A plain-text table of :func:`kind_cell` values, the column names as headers."""
    first = max([len("op kind")] + [len(k) for k, _ in rows]) + (8 if counts else 0)
    widths = [max(4, len(c)) for c in columns]
    out = ["op kind".ljust(first) + "  " + "  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    for kind, cells in rows:
        label = kind if counts is None else f"{kind} (×{counts[kind]})"
        out.append(label.ljust(first) + "  " + "  ".join(cell.ljust(w) for cell, w in zip(cells, widths)))
    return out


def _legend(kinds: list[str]) -> list[str]:
    """What the cells mean, and each method's whole-network needs met by none of the probes
    of ``kinds`` (read from :func:`support`, as the cells are)."""
    lines = ["", f"{YES}: handled; {NO}: refused (the domain or method names the node in its supports()); "
                 f"{YES_IF_NEEDS}: handled in a network that also meets the method's needs:"]
    for name, found in checkers():
        needs = {need for kind in kinds for need in support(found, _probe(kind)).needs}
        lines += [f"  {name}: {need}" for need in sorted(needs)]
    return lines


def registry_report() -> str:
    """``verifier ops``: every IR op kind × every installed domain and complete method."""
    columns, rows = coverage_cells()
    lines = _grid(columns, rows) + _legend(op_kinds())
    lines.append("`verifier check MODEL --ops` checks a model.")
    return "\n".join(lines)


def model_report(graph: nx.DiGraph) -> str:
    """``verifier check MODEL --ops``: the model's op kinds (with counts) × domains and
    methods, then for each domain and method whether it supports this model, naming the
    nodes it refuses (its ``supports(graph)``)."""
    counts: dict[str, int] = {}
    for _, data in graph.nodes(data=True):
        if data["kind"] not in ("input", "constant"):
            counts[data["kind"]] = counts.get(data["kind"], 0) + 1
    columns, rows = coverage_cells(sorted(counts))
    lines = ["op kinds of this model:"] + _grid(columns, rows, counts) + _legend(sorted(counts))
    lines += ["", "support for this model:"]
    for name, found in checkers():
        verdict = support(found, graph)
        lines.append(f"  {name:18s} " + ("yes" if verdict.ok else f"no: {verdict.describe()}"))
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


__all__ = ["END", "ONNX_END", "ONNX_START", "START", "Support", "all_domains", "built_in_domains", "checker",
           "checkers", "coverage_cells", "coverage_rows", "domain_transfer", "kind_cell", "method_handles",
           "model_report", "onnx_ops_table", "op_kinds", "op_table", "refuse_unsupported", "registry_report",
           "support"]
