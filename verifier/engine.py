"""The abstract-interpretation engine: the one forward walk and the one backward walk
over the IR, in topological order and its reverse. Each dispatches a node to the active
domain's registered transfer for its op kind; the engine knows nothing about any domain,
and a domain knows nothing about graph walking.

* Forward (:func:`propagate`): every node's abstract state from its inputs' states
  (Box, DeepZ, third-party domains). Concrete evaluation (:func:`evaluate`,
  :func:`evaluate_from`) is the same walk in the concrete semantics :data:`CONCRETE`.
* Backward (:func:`propagate_backward`): coefficients ``Λ`` of a linear form of one node,
  pushed to the input (CROWN, Zhang et al. 2018, Thm. 3.2; DeepPoly back-substitution,
  Singh et al. 2019, §4): each node's transfer turns its ``Λ`` into contributions to its
  inputs' ``Λ`` and a constant; :func:`concretize_linear` then minimises ``Λ·x + bias``
  over the input box.
"""

from __future__ import annotations

from typing import Any, Callable

import networkx as nx
import torch

from .deadline import checkpoint
from .errors import VerifierInputError
from .ir.graph import input_node, output_node, predecessors_by_slot, topological_order
from .linalg import centre_radius, dot
from .ops import FORWARD


def _walk_forward(graph: nx.DiGraph, domain, seeds: dict[str, Any], batch: int,
                  nodes: set[str] | None = None) -> dict[str, Any]:
    """States of every node (or of ``nodes`` only) in topological order, from the
    ``seeds`` (node → state, e.g. the input's); constants enter through
    ``domain.constant_state``, every other node through its registered transfer."""
    states = dict(seeds)
    for node_id in topological_order(graph):
        if node_id in seeds or (nodes is not None and node_id not in nodes):
            continue
        checkpoint()
        node = graph.nodes[node_id]
        kind = node["kind"]
        if kind == "constant":
            states[node_id] = domain.constant_state(FORWARD["constant"](node, batch))
            continue
        transfer = domain.transfer_for(kind)
        if transfer is None:
            raise VerifierInputError(f"domain '{domain.name}' has no transfer function for op kind '{kind}' "
                                     f"(node '{node.get('source', node_id)}')")
        args = []
        for p in predecessors_by_slot(graph, node_id):
            if p not in states:
                raise VerifierInputError(f"node '{node.get('source', node_id)}' reads '{p}', which is neither "
                                         f"computed from the starting node nor a constant")
            args.append(states[p])
        states[node_id] = transfer(domain, node, *args)
    return states


def propagate(graph: nx.DiGraph, domain, lower: torch.Tensor, upper: torch.Tensor, keep: bool = False) -> Any:
    """Push the input set ``[lower, upper]`` (batched, ``(B, *input_shape)``) through the
    graph in ``domain``; return the output node's abstract state (or, with ``keep``, the
    states of all nodes keyed by node id). Raises :class:`VerifierInputError` for an op
    kind the domain has no transfer for."""
    seeds = {input_node(graph): domain.input_state(lower, upper)}
    states = _walk_forward(graph, domain, seeds, lower.shape[0])
    return states if keep else states[output_node(graph)]


class ConcreteSemantics:
    """The concrete semantics as a forward domain: a state is a tensor ``(B, *shape)``
    and every op kind's transfer is its forward function (:data:`verifier.ops.FORWARD`)."""

    name = "concrete"

    def __init__(self):
        self._transfers: dict[str, Callable] = {}

    def transfer_for(self, kind: str) -> Callable | None:
        if kind not in FORWARD:
            return None
        if kind not in self._transfers:  # FORWARD is read at each call (tests may patch an entry)
            self._transfers[kind] = lambda domain, node, *xs: FORWARD[kind](node, *xs)
        return self._transfers[kind]

    @staticmethod
    def constant_state(value: torch.Tensor) -> torch.Tensor:
        return value


CONCRETE = ConcreteSemantics()


def evaluate(graph: nx.DiGraph, x: torch.Tensor, keep_all: bool = False):
    """Evaluate the model on a batch ``x`` of shape ``(B, *input_shape)``: the output
    ``(B, *output_shape)``, or with ``keep_all`` a dict from node id to value (for locating
    where two implementations diverge)."""
    values = _walk_forward(graph, CONCRETE, {input_node(graph): x}, x.shape[0])
    return values if keep_all else values[output_node(graph)]


def evaluate_from(graph: nx.DiGraph, node: str, value: torch.Tensor) -> torch.Tensor:
    """The output ``(B, *output_shape)`` of ``graph`` when ``node`` takes ``value``
    ``(B, *shape)``. Raises :class:`VerifierInputError` when a node below ``node`` reads a
    non-constant value computed before it."""
    below = nx.descendants(graph, node)
    values = _walk_forward(graph, CONCRETE, {node: value}, value.shape[0],
                           below | {n for n in graph.nodes if graph.nodes[n]["kind"] == "constant"})
    return values[output_node(graph)]


BackwardTransfer = Callable[..., tuple[list[torch.Tensor], torch.Tensor | None]]


def propagate_backward(graph: nx.DiGraph, domain, target: str, lam: torch.Tensor, context: Any,
                       visit: Callable[[str, torch.Tensor], torch.Tensor] | None = None
                       ) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Push the linear form ``Λ·v_target`` back to the input: returns ``(Λ_x, bias)`` with
    ``Λ·v_target ≥ Λ_x·x + bias`` for every input ``x`` of the domain's input set
    (``Λ_x`` ``(B, k, *input_shape)``, ``None`` if the target does not depend on the
    input; ``bias`` ``(B, k)``).

    ``lam`` is ``(B, k, *shape_of_target)``. Each node's accumulated ``Λ`` goes, in reverse
    topological order, to ``domain.backward_transfer_for(kind)(domain, context, node_id, Λ)``,
    which returns the contributions to its inputs' ``Λ`` (in slot order) and a constant
    ``(B, k)`` (or ``None``); constants add ``Λ·value``. ``visit(node_id, Λ)``, if given,
    sees each node's ``Λ`` before its transfer and returns the ``Λ`` to use (β-CROWN adds its
    split multipliers there and reads the coefficients its branching needs)."""
    lams = {target: lam}
    bias = torch.zeros(lam.shape[:2], dtype=lam.dtype, device=lam.device)
    source = input_node(graph)
    for n in reversed(topological_order(graph)):
        if n not in lams or n == source:
            continue
        checkpoint()
        L = lams.pop(n)
        if visit is not None:
            L = visit(n, L)
        node = graph.nodes[n]
        kind = node["kind"]
        if kind == "constant":
            bias = bias + dot(L, FORWARD["constant"](node, 1))
            continue
        transfer = domain.backward_transfer_for(kind)
        if transfer is None:
            raise VerifierInputError(f"domain '{domain.name}' has no backward transfer for op kind '{kind}' "
                                     f"(node '{node.get('source', n)}')")
        contributions, constant = transfer(domain, context, n, L)
        if constant is not None:
            bias = bias + constant
        for p, c in zip(predecessors_by_slot(graph, n), contributions):
            lams[p] = lams[p] + c if p in lams else c
    L = lams.get(source)
    if L is not None and visit is not None:
        L = visit(source, L)
    return L, bias


def concretize_linear(lam: torch.Tensor | None, bias: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor,
                      norm: float = float("inf")) -> torch.Tensor:
    """``min Λ·x + bias`` ``(B, k)`` over the box ``[lower, upper]`` ``(B, *S)``:
    ``Λ·c − |Λ|·r`` (Hölder with the ℓ∞ ball of centre ``c``, radius ``r``); with ``norm=2``
    over the ℓ2 ball of radius ``max r`` around ``c`` instead: ``Λ·c − ε‖Λ‖₂``."""
    if lam is None:
        return bias
    centre, radius = centre_radius(lower, upper)
    value = dot(lam, centre) + bias
    if norm == float("inf"):
        return value - dot(lam.abs(), radius)
    eps = radius.reshape(radius.shape[0], -1).max(dim=1).values
    return value - eps[:, None] * lam.reshape(*lam.shape[:2], -1).norm(p=2, dim=-1)
