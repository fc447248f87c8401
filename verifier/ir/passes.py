"""Normalisation passes on the IR (run once after import)."""

from __future__ import annotations

import networkx as nx
import numpy as np
import torch

from .graph import add_input_edge

_BIASED = ("linear", "conv", "conv_transpose")


def _redirect(graph: nx.DiGraph, removed: str, kept: str, kept_changes: bool = True) -> None:
    """Move ``removed``'s consumers (and ONNX name bindings) onto ``kept``; drop ``removed``.

    With ``kept_changes`` (``kept`` changes value) the names that pointed to it no longer
    hold and are dropped."""
    for _, dst, slots in list(graph.out_edges(removed, data="slots")):
        for slot in slots:
            add_input_edge(graph, kept, dst, slot)
    names = graph.graph["onnx_to_ir"]
    for name, target in list(names.items()):
        if target == kept and kept_changes:
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


def _elementwise_chain_kinds() -> frozenset[str]:
    """Op kinds that act on each entry alone with one variable input: the registered
    elementwise relaxations and ``scale_shift`` (whose constants are permuted with it)."""
    from ..ops.relaxation import RELAXATIONS

    return frozenset(RELAXATIONS) | {"scale_shift"}


def _inverse(perm: list[int]) -> list[int]:
    inverse = [0] * len(perm)
    for k, p in enumerate(perm):
        inverse[p] = k
    return inverse


def _permuted_param(value: torch.Tensor, shape: tuple[int, ...], inverse: list[int]) -> torch.Tensor | None:
    """A constant that broadcasts to ``shape`` (a transpose's output) moved to the
    transpose's input layout (``inverse`` its inverse permutation); ``None`` when it does
    not broadcast."""
    if value.numel() == 1 and value.dim() <= len(shape):
        return value
    if not _broadcasts_to(tuple(value.shape), shape):
        return None
    padded = value.reshape((1,) * (len(shape) - value.dim()) + tuple(value.shape))
    return padded.permute(inverse).contiguous()


def cancel_transpose_pairs(graph: nx.DiGraph) -> nx.DiGraph:
    """Remove ``Transpose(p) → f₁ → … → f_k → Transpose(p⁻¹)`` where every ``f_i`` is
    elementwise (:func:`_elementwise_chain_kinds`) with that chain as its only consumer:
    ``p⁻¹(f(p(x))) = f(x)`` for an elementwise ``f`` whose constants are permuted by
    ``p⁻¹``, so the ``f_i`` run on ``x``'s layout and both transposes go (``k = 0`` too).

    Models exported from channels-last frameworks (Keras/Larq through tf2onnx) wrap each
    activation in an NCHW→NHWC→NCHW pair; without them a convolution's backward rows cross
    only convolutions, per-channel scales and activations, which CROWN keeps in patch form
    (:mod:`verifier.domains.patches`) instead of dense. The values are unchanged: names of
    the ``f_i`` (whose layout changes) are dropped, the closing transpose's go to ``f_k``."""
    kinds = _elementwise_chain_kinds()
    for closing in list(nx.topological_sort(graph)):
        if closing not in graph or graph.nodes[closing]["kind"] != "transpose":
            continue
        chain, node = [], closing
        while True:
            preds = list(graph.predecessors(node))
            if len(preds) != 1:
                break
            (prev,) = preds
            if graph.nodes[prev]["kind"] == "transpose" or prev == graph.graph["output"] \
                    or graph.nodes[prev]["kind"] not in kinds or graph.out_degree(prev) != 1:
                break
            chain.append(prev)
            node = prev
        preds = list(graph.predecessors(node))
        if len(preds) != 1 or graph.nodes[preds[0]]["kind"] != "transpose":
            continue
        opening = preds[0]
        perm = list(graph.nodes[opening]["attrs"]["perm"])
        if [perm[k] for k in graph.nodes[closing]["attrs"]["perm"]] != list(range(len(perm))):
            continue
        (source,) = graph.predecessors(opening)
        shape, inverse = tuple(graph.nodes[opening]["shape"]), _inverse(perm)
        moved = {}
        for n in chain:
            params = {k: v for k, v in graph.nodes[n].get("params", {}).items() if isinstance(v, torch.Tensor)}
            moved[n] = {k: _permuted_param(v, shape, inverse) for k, v in params.items()}
            if any(v is None for v in moved[n].values()):
                break
        else:
            _cancel(graph, opening, chain[::-1], closing, source, moved)
    graph.graph.pop("order", None)
    graph.graph.pop("_preds", None)
    return graph


def _cancel(graph: nx.DiGraph, opening: str, chain: list[str], closing: str, source: str, moved: dict) -> None:
    """Rewire ``source → chain → closing's consumers`` (see :func:`cancel_transpose_pairs`)."""
    names = graph.graph["onnx_to_ir"]
    layout = tuple(graph.nodes[source]["shape"])
    if chain:
        graph.remove_edge(opening, chain[0])
        add_input_edge(graph, source, chain[0], 0)
        for n in chain:
            graph.nodes[n]["shape"] = layout
            graph.nodes[n]["params"].update(moved[n])
            for name in [name for name, target in names.items() if target == n]:
                del names[name]
    else:
        graph.remove_edge(opening, closing)
    # the closing transpose's value is the chain's last (source's, unchanged, without a chain)
    _redirect(graph, closing, chain[-1] if chain else source, kept_changes=False)
    if graph.out_degree(opening) == 0 and graph.graph["output"] != opening:
        for name in [name for name, target in names.items() if target == opening]:
            del names[name]
        graph.remove_node(opening)
