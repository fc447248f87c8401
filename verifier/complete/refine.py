"""Per-subdomain tightening of intermediate bounds in branch-and-bound on activation inputs.

A subdomain ``D`` of the input box ``X`` narrows the intervals of some nodes ``z_j`` (the
inputs of the split activations) to ``[l^D_j, u^D_j]``; it stands for
``X_D = {x ∈ X : l^D_j ≤ z_j(x) ≤ u^D_j ∀j}``. Every other intermediate bound inherited from
the root (α-CROWN's over ``X``) is valid on ``X_D`` too, but it ignores the narrowing: after
a split on layer ``k`` the nodes behind it keep their root intervals. GenBaB and β-CROWN
recompute them per subdomain (Shi et al. 2024, §3; Wang et al. 2021, §3.1); here two
sound tightenings, each intersected with the bounds the subdomain already has (both are
valid on ``X_D``, so is their intersection):

* **box** (:meth:`SubdomainRefiner.box`): interval bound propagation (IBP, Gowal et al. 2018,
  eq. 6, the Box domain's transfers) from the input box, where every node that has bounds
  on ``X_D`` is intersected with them before its users read it. For ``x ∈ X_D`` every
  node's value lies in its interval by induction over the topological order (each transfer
  is sound, and the intersected bounds hold at ``x`` by definition of ``X_D`` or by the
  root's soundness). One batched forward pass per batch of subdomains; the nodes that no
  narrowed node reaches keep the root pass's intervals.
* **crown** (:meth:`SubdomainRefiner.crown`): CROWN passes (Zhang et al. 2018, §3.3) for the
  entries that cross 0 (a ReLU's kink, an S-shaped op's inflection point) of the split
  nodes behind other split nodes, with every relaxation built on the subdomain's (box-refined) intervals.
  For ``x ∈ X_D`` each activation's input lies in its subdomain interval, so its lines hold
  at ``x``; the resulting linear bound holds on ``X_D`` and its minimum over ``X ⊇ X_D``
  is a valid bound there. It costs one backward pass per bounded entry, so the caller runs
  it only while the subdomains are shallow (:data:`CROWN_MAX_DEPTH`) and on nodes with
  few such rows (:data:`CROWN_MAX_ROWS`).

An interval whose lower end passes its upper end proves ``X_D`` empty (the caller closes
the subdomain). NaN bounds (``∞ − ∞`` in interval arithmetic) are read as unbounded.
"""

from __future__ import annotations

import networkx as nx
import torch

from ..deadline import checkpoint
from ..domains.backward import Bounds
from ..domains.box import BoxDomain, Interval
from ..domains.crown import CrownDomain
from ..ir.graph import input_node, predecessors_by_slot, topological_order
from ..linalg import crossing, per_sample_rows
from ..ops import FORWARD

CROWN_MAX_DEPTH = 4  # subdomains at most this deep get CROWN-refined intermediate bounds
CROWN_MAX_ROWS = 4096  # CROWN rows per node and batch of subdomains, beyond which the node is not refined


def intersect(a: tuple[torch.Tensor, torch.Tensor], b: tuple[torch.Tensor, torch.Tensor] | None
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """``[max(l, l'), min(u, u')]`` elementwise (broadcast over the batch); a NaN end is
    read as unbounded (``−∞`` below, ``+∞`` above); ``b`` may be ``None``."""
    lo = torch.nan_to_num(a[0], nan=float("-inf"))
    hi = torch.nan_to_num(a[1], nan=float("inf"))
    if b is None:
        return lo, hi
    return (torch.maximum(lo, torch.nan_to_num(b[0], nan=float("-inf"))),
            torch.minimum(hi, torch.nan_to_num(b[1], nan=float("inf"))))


class SubdomainRefiner:
    """Tightens a batch of subdomains' intermediate bounds (module docstring).

    ``graph``: the model's IR; ``lower``/``upper``: the input box ``(1, *input_shape)``;
    ``root``: bounds valid on the whole box, node → ``(l, u)`` each ``(1, *S)``;
    ``narrowed``: the nodes whose intervals subdomains may narrow (the split nodes)."""

    def __init__(self, graph: nx.DiGraph, lower: torch.Tensor, upper: torch.Tensor, root: Bounds,
                 narrowed: list[str]):
        self.graph, self.lower, self.upper, self.root = graph, lower, upper, root
        self.order = topological_order(graph)
        self.narrowed = list(narrowed)
        behind: set[str] = set()
        for z in self.narrowed:
            behind |= nx.descendants(graph, z)
        self.varying = behind | set(self.narrowed)  # nodes whose interval may differ between subdomains
        self.behind = behind  # nodes a split can tighten
        self.domain = BoxDomain()
        self.crown_domain = CrownDomain()
        self._root_states = self._walk({n: (l, u) for n, (l, u) in root.items()}, 1, None)

    def _walk(self, bounds: Bounds, batch: int, seeds: dict[str, Interval] | None) -> dict[str, Interval]:
        """Box states of every node (``seeds``: states kept as given), each intersected with
        ``bounds`` where it has some."""
        states: dict[str, Interval] = dict(seeds or {})
        source = input_node(self.graph)
        if source not in states:
            states[source] = Interval(*intersect((self.lower.expand(batch, *self.lower.shape[1:]),
                                                  self.upper.expand(batch, *self.upper.shape[1:])),
                                                 bounds.get(source)))
        for n in self.order:
            if n in states:
                continue
            checkpoint()
            node = self.graph.nodes[n]
            if node["kind"] == "constant":
                states[n] = self.domain.constant_state(FORWARD["constant"](node, batch))
                continue
            transfer = self.domain.transfer_for(node["kind"])
            state = transfer(self.domain, node, *[states[p] for p in predecessors_by_slot(self.graph, n)])
            states[n] = Interval(*intersect(tuple(state), bounds.get(n)))
        return states

    def box(self, bounds: Bounds) -> Bounds:
        """The subdomains' ``bounds`` (node → ``(l, u)`` each ``(N, *S)``, at least every key
        of ``root``) tightened by the intersected IBP pass (module docstring); same keys
        and shapes."""
        count = next(iter(bounds.values()))[0].shape[0]
        seeds = {n: Interval(s.lower.expand(count, *s.lower.shape[1:]), s.upper.expand(count, *s.upper.shape[1:]))
                 for n, s in self._root_states.items() if n not in self.varying and self.graph.nodes[n]["kind"] != "constant"}
        states = self._walk(bounds, count, seeds)
        return {n: intersect(b, (states[n].lower, states[n].upper)) for n, b in bounds.items()}

    def crown(self, bounds: Bounds, shallow: torch.Tensor, max_rows: int = CROWN_MAX_ROWS) -> Bounds:
        """``bounds`` (as :meth:`box`) with the crossing entries (``l < 0 < u``: where an
        activation's lines are loosest) of every split node behind another split node
        re-bounded by CROWN passes on the subdomains where ``shallow`` ``(N,)`` holds, nodes in
        topological order (each pass sees the bounds tightened before it). A node whose
        rows over those subdomains exceed ``max_rows`` is skipped (it keeps its bounds):
        the cost is one backward pass per row."""
        index = shallow.nonzero().reshape(-1)
        if len(index) == 0:
            return bounds
        count = len(index)
        part = {n: (l[index], u[index]) for n, (l, u) in bounds.items()}
        lower = self.lower.expand(count, *self.lower.shape[1:])
        upper = self.upper.expand(count, *self.upper.shape[1:])
        for n in self.order:
            if n not in part or n not in self.behind or n not in self.narrowed:
                continue
            checkpoint()
            l, u = part[n]
            unstable = crossing(l, u).reshape(count, -1)
            if not bool(unstable.any()) or int(unstable.sum(dim=1).max()) * count > max_rows:
                continue
            rows = per_sample_rows(unstable)
            lb, ub = self.crown_domain.bound_rows(self.graph, n, rows, lower, upper, part)
            lb, ub = torch.nan_to_num(lb, nan=float("-inf")), torch.nan_to_num(ub, nan=float("inf"))
            l_flat, u_flat = l.reshape(count, -1), u.reshape(count, -1)
            l_flat = l_flat.scatter(1, rows, torch.maximum(l_flat.gather(1, rows), lb))
            u_flat = u_flat.scatter(1, rows, torch.minimum(u_flat.gather(1, rows), ub))
            part[n] = intersect((l_flat.reshape(l.shape), u_flat.reshape(u.shape)), None)
        out = {}
        for n, (l, u) in bounds.items():
            if n in self.behind:
                l, u = l.clone(), u.clone()
                l[index], u[index] = part[n]
            out[n] = (l, u)
        return out


__all__ = ["CROWN_MAX_DEPTH", "CROWN_MAX_ROWS", "SubdomainRefiner", "intersect"]
