"""The calls the search makes into the active :class:`~verifier.proof.record.ProofRecorder`:
they turn the search's per-node tensors into the certificate's per-ReLU order (every
ReLU of the IR in topological order, entries flattened; the checker numbers the ReLUs of
its own chain the same way)."""

from __future__ import annotations

import networkx as nx
import torch

from .record import active


def relu_order(graph: nx.DiGraph) -> list[tuple[str, str]]:
    """``(relu, pre-activation)`` node pairs in topological order."""
    from ..complete.beta_crown import relu_pre_activations

    return list(relu_pre_activations(graph).items())


def _flat(tensors: dict, keys: list[str], lead: int) -> torch.Tensor:
    """``tensors[key]`` for each key, flattened after the first ``lead`` axes, concatenated."""
    return torch.cat([tensors[k].reshape(*tensors[k].shape[:lead], -1) for k in keys], dim=-1)


def record_relu_root(region: int, graph: nx.DiGraph, domain, bounds: dict) -> None:
    """Record the root of ReLU splitting (see :meth:`ProofRecorder.relu_root`) from a
    :class:`~verifier.proof.alpha_record.RecordingAlphaCrown` that has optimised, and the
    bounds it returned (batch of one box)."""
    recorder = active()
    if recorder is None:
        return
    order = relu_order(graph)
    claims = [(bounds[z][0].reshape(-1).detach().cpu().double(), bounds[z][1].reshape(-1).detach().cpu().double())
              for _, z in order]
    k = 1 if domain.best_final_value is None else domain.best_final_value.shape[1]

    def slopes(found: dict, relu: str, i: int, count: int) -> torch.Tensor:
        """``(count, n)`` slopes of ReLU ``i``: recorded, else CROWN's adaptive ones."""
        a = found.get(relu)
        if a is None:
            l, u = claims[i]
            return (u > -l).double().expand(count, -1).clone()
        return a[0].reshape(count, -1).detach().cpu().double()

    final = [slopes(domain.best_final, relu, i, k) for i, (relu, _) in enumerate(order)]
    rows, alphas = {}, {}
    position = {z: i for i, (_, z) in enumerate(order)}
    for t, per in domain.best_inter.items():
        if t not in position:
            continue
        i = position[t]
        if i == 0:  # no ReLU below the first: its bounds need no slopes
            continue
        rows[i] = domain.rows[t][0].detach().cpu().long()
        alphas[i] = [slopes(per, relu, j, 2 * len(rows[i])) for j, (relu, _) in enumerate(order[:i])]
    value = domain.best_final_value
    recorder.relu_root(region, claims, final, rows, alphas,
                       None if value is None else value[0].detach().cpu().double(), pool_parameters(graph, bounds))


def pool_parameters(graph: nx.DiGraph, bounds: dict) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per max-pool node (topological order) the DeepPoly relaxation's parameters on
    ``bounds`` (batch of one box), as :class:`~verifier.ops.pool.MaxPoolRelaxation` builds
    them: ``sel`` ``(n_out,)`` int64, the selected entry's position in its window (the
    kernel's row-major order), and ``dom`` ``(n_out,)`` int8, whether it dominates the
    window. β-CROWN keeps the root bounds of a max-pool's input in every subdomain, so
    these are the parameters of the final pass and of every leaf."""
    from ..ir.graph import predecessors_by_slot, topological_order
    from ..ops.pool import MaxPoolRelaxation

    out = []
    for n in topological_order(graph):
        if graph.nodes[n]["kind"] != "maxpool":
            continue
        l, u = bounds[predecessors_by_slot(graph, n)[0]]
        rel = MaxPoolRelaxation(graph.nodes[n], l[:1], u[:1])
        out.append((rel.sel.reshape(-1).cpu().long(), rel.dominates.reshape(-1).cpu().to(torch.int8)))
    return out


def record_relu_leaves(engine, disjunct: int, dom) -> None:
    """Record the closed subdomains ``dom`` of ``disjunct`` (an engine whose
    ``proof_region`` is set by :func:`~verifier.complete.relu_split.relu_split_bab`)."""
    recorder, region = active(), getattr(engine, "proof_region", None)
    if recorder is None or region is None or len(dom) == 0:
        return
    order = relu_order(engine.graph)
    relus, pres = [r for r, _ in order], [z for _, z in order]
    recorder.relu_leaves(region, disjunct, _flat(dom.splits, pres, 1).to(torch.int8),
                         _flat(dom.alpha, relus, 2).double(), _flat(dom.beta, pres, 2).double(), dom.lb)


def record_trusted_leaves(engine, disjunct: int, splits: dict) -> None:
    """Record subdomains (split signs per pre-activation, ``(N, *S)``) that an LP closed."""
    recorder, region = active(), getattr(engine, "proof_region", None)
    if recorder is None or region is None:
        return
    pres = [z for _, z in relu_order(engine.graph)]
    recorder.trusted_leaves(region, disjunct, _flat(splits, pres, 1).to(torch.int8))


def record_trusted_disjunct(region: int, disjunct: int, reason: str) -> None:
    """Record that HiGHS's MILP decided ``disjunct`` of ``region``."""
    recorder = active()
    if recorder is not None:
        recorder.trusted_disjunct(region, disjunct, reason)


def cannot_certify(reason: str) -> None:
    """Record that the verdict rests on a step the checker cannot re-derive."""
    recorder = active()
    if recorder is not None:
        recorder.cannot_certify(reason)
