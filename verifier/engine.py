"""The abstract-interpretation engine: walk the IR in topological order and dispatch
each node to the active domain's transfer function for its op kind.

The engine knows nothing about any domain; a domain knows nothing about graph walking.
"""

from __future__ import annotations

from typing import Any

import networkx as nx
import torch

from .deadline import checkpoint
from .errors import VerifierInputError
from .ir.graph import input_node, predecessors_by_slot, topological_order
from .ops import FORWARD


def propagate(graph: nx.DiGraph, domain, lower: torch.Tensor, upper: torch.Tensor,
              keep: bool = False) -> Any:
    """Push the input set ``[lower, upper]`` (batched, ``(B, *input_shape)``) through the
    graph in ``domain``; return the output node's abstract state (or, with ``keep``, the
    states of all nodes keyed by node id)."""
    states: dict[str, Any] = {}
    batch = lower.shape[0]
    source = input_node(graph)
    for node_id in topological_order(graph):
        checkpoint()
        node = graph.nodes[node_id]
        kind = node["kind"]
        if node_id == source:
            states[node_id] = domain.input_state(lower, upper)
        elif kind == "constant":
            states[node_id] = domain.constant_state(FORWARD["constant"](node, batch))
        else:
            transfer = domain.transfers.get(kind)
            if transfer is None:
                raise VerifierInputError(f"domain '{domain.name}' has no transfer function for op kind '{kind}' "
                                         f"(node '{node['source']}')")
            args = [states[p] for p in predecessors_by_slot(graph, node_id)]
            states[node_id] = transfer(domain, node, *args)
    return states if keep else states[graph.graph["output"]]
