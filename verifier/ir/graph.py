"""Reading and evaluating the IR graph."""

from __future__ import annotations

from collections import Counter

import networkx as nx


def topological_order(graph: nx.DiGraph) -> list[str]:
    """Node ids in a topological order (cached on the graph)."""
    order = graph.graph.get("order")
    if order is None:
        order = list(nx.topological_sort(graph))
        graph.graph["order"] = order
    return order


def input_node(graph: nx.DiGraph) -> str:
    return graph.graph["input"]


def output_node(graph: nx.DiGraph) -> str:
    return graph.graph["output"]


def add_input_edge(graph: nx.DiGraph, src: str, dst: str, slot: int) -> None:
    """Record that ``src`` feeds input ``slot`` of ``dst``. One edge per pair of nodes carries
    every slot it feeds (``slots``), so an op may read the same value twice (``x + x``)."""
    if graph.has_edge(src, dst):
        graph.edges[src, dst]["slots"] = sorted(set(graph.edges[src, dst]["slots"]) | {slot})
    else:
        graph.add_edge(src, dst, slots=[slot])


def predecessors_by_slot(graph: nx.DiGraph, node_id: str) -> list[str]:
    """A node's inputs in slot order."""
    preds = graph.graph.setdefault("_preds", {})
    if node_id not in preds:
        ins = sorted((slot, src) for src, _, slots in graph.in_edges(node_id, data="slots") for slot in slots)
        preds[node_id] = [src for _, src in ins]
    return preds[node_id]


def parameter_count(graph: nx.DiGraph) -> int:
    """Number of scalar parameters held by the IR's nodes."""
    return sum(int(t.numel()) for _, d in graph.nodes(data=True) for t in d["params"].values())


def summary(graph: nx.DiGraph) -> str:
    """A human-readable description: input/output shapes, op counts, parameter count."""
    kinds = Counter(d["kind"] for _, d in graph.nodes(data=True) if d["kind"] not in ("input", "constant"))
    src_ops = Counter(graph.graph.get("onnx_ops", []))
    lines = [
        f"input  '{graph.graph['input_name']}': per-sample shape {list(graph.nodes[input_node(graph)]['shape'])}",
        f"output '{graph.graph['output_name']}': per-sample shape {list(graph.nodes[output_node(graph)]['shape'])}",
        "ONNX ops: " + ", ".join(f"{op}×{n}" for op, n in sorted(src_ops.items())),
        "IR ops:   " + ", ".join(f"{k}×{n}" for k, n in sorted(kinds.items())),
        f"parameters: {parameter_count(graph):,}",
    ]
    return "\n".join(lines)
