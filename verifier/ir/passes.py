"""Normalisation passes on the IR (run once after import)."""

from __future__ import annotations

import networkx as nx
import numpy as np
import torch

from .graph import add_input_edge

_BIASED = ("linear", "conv", "conv_transpose")


def _redirect(graph: nx.DiGraph, removed: str, kept: str) -> None:
    """Move ``removed``'s consumers (and ONNX name bindings) onto ``kept``; drop ``removed``.

    ``kept`` changes value, so the names that pointed to it no longer hold."""
    for _, dst, slots in list(graph.out_edges(removed, data="slots")):
        for slot in slots:
            add_input_edge(graph, kept, dst, slot)
    names = graph.graph["onnx_to_ir"]
    for name, target in list(names.items()):
        if target == kept:
            del names[name]
        elif target == removed:
            names[name] = kept
    if graph.graph["output"] == removed:
        graph.graph["output"] = kept
    graph.remove_node(removed)


def _broadcasts_to(shape: tuple[int, ...], target: tuple[int, ...]) -> bool:
    """Whether ``shape`` broadcasts to ``target`` unchanged (numpy's rule; torch's
    ``broadcast_shapes`` would import its symbolic-shape machinery, ~0.3 s, on first use)."""
    try:
        return np.broadcast_shapes(target, shape) == target
    except ValueError:
        return False


def fuse_bias_adds(graph: nx.DiGraph) -> nx.DiGraph:
    """Fold ``y = W x`` followed by ``y + b`` (a unit-scale ``scale_shift``) into one op
    ``y = W x + b`` when the product has no other consumer."""
    for node_id in list(nx.topological_sort(graph)):
        if node_id not in graph:
            continue
        node = graph.nodes[node_id]
        if node["kind"] not in _BIASED or graph.out_degree(node_id) != 1 or node_id == graph.graph["output"]:
            continue
        (succ,) = graph.successors(node_id)
        nxt = graph.nodes[succ]
        if nxt["kind"] != "scale_shift" or not bool(torch.all(nxt["params"]["scale"] == 1)):
            continue
        shift = nxt["params"]["shift"]
        if node["kind"] != "linear":
            spatial = node["params"]["weight"].dim() - 2
            if shift.dim() != spatial + 1 or any(s != 1 for s in shift.shape[1:]) or shift.shape[0] not in (1, node["shape"][-spatial - 1]):
                continue
            shift = shift.reshape(-1).expand(node["shape"][-spatial - 1])
        elif not _broadcasts_to(tuple(shift.shape), tuple(node["shape"])):
            continue
        bias = node["params"].get("bias")
        node["params"]["bias"] = shift.clone() if bias is None else bias + shift
        node["source"] = f"{node['source']}+{nxt['source']}"
        _redirect(graph, succ, node_id)
    graph.graph.pop("order", None)
    graph.graph.pop("_preds", None)
    return graph
