"""The driver shared by the backward domains (CROWN, CROWN-IBP, α-CROWN, the dual LP).

A lower bound on ``Λ_t·v_t`` (``v_t`` the value of node ``t``) is the engine's backward
walk (:func:`verifier.engine.propagate_backward`) with the domain's registered backward
transfers (the CROWN rules, :mod:`verifier.domains.crown`), then the input concretisation
(:func:`verifier.engine.concretize_linear`). The relaxations need bounds on the inputs of
every node whose backward transfer is declared :func:`relaxed` (elementwise activations,
max-pooling, bilinear products): :meth:`BackwardDomain.intermediate_bounds` computes them
by IBP, then (``intermediate="crown"``) tightens the entries the declaration asks for
(crossing ones for activations) by their own backward passes (Zhang et al. 2018, §3.3:
the bound of layer ``k`` from the bounds of the layers below). Upper bounds are lower
bounds of ``−Λ``.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import networkx as nx
import torch

from ..deadline import checkpoint
from ..engine import concretize_linear, propagate, propagate_backward
from ..errors import VerifierInputError
from ..ir.graph import output_node, predecessors_by_slot, topological_order
from ..linalg import crossing, per_sample_rows, selection_rows, spec_matrix
from ..ops.categories import lookup
from ..ops.pool import MaxPoolRelaxation
from ..ops.relaxation import RELAXATIONS, Lines
from .base import Domain
from .box import BoxDomain
from .patches import (centre_spread, patch_bound, patch_bound_all, patchable, rearranged_patchable,
                      window_entries)

Bounds = dict[str, tuple[torch.Tensor, torch.Tensor]]
MAX_ENTRIES = 1 << 26  # Λ entries per backward pass before rows are chunked
ALL_ROWS_FRACTION = 0.5  # a convolution's entries are all bounded, in patch form, when this many are asked for


class Relaxed(NamedTuple):
    """What a backward transfer that relaxes its op declares (see :func:`relaxed`)."""

    refine: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    optimisable: Callable[[dict], bool]
    alpha_init: Callable[..., torch.Tensor] | None


def relaxed(refine: Callable = crossing, optimisable: Callable[[dict], bool] = lambda node: False,
            alpha_init: Callable[..., torch.Tensor] | None = None):
    """Decorator: declare that a backward transfer relaxes its op from bounds on **all** its
    inputs, so that :func:`pre_activation_nodes` lists them and
    :meth:`BackwardDomain.intermediate_bounds` computes them.

    ``refine(l, u)``: the entries of an input worth tightening by CROWN passes (default:
    the crossing ones, ``l < 0 < u``, where a piecewise-linear activation is not linear);
    ``optimisable(node)``: whether the relaxation has free parameters ``α ∈ [0, 1]``
    (α-CROWN optimises them); ``alpha_init(node, *input_bounds)`` (one ``(l, u)`` per
    input): their starting value ``(B, *A)``, for which the transfer equals CROWN's."""

    def mark(fn):
        fn.relaxed = Relaxed(refine, optimisable, alpha_init)
        return fn

    return mark


def declaration(graph: nx.DiGraph, n: str, domain=None) -> Relaxed | None:
    """The :func:`relaxed` declaration of node ``n``'s backward transfer in ``domain``
    (a backward domain class or instance; default :class:`BackwardDomain`), or ``None``."""
    table = (domain or BackwardDomain).table(backward=True)
    return getattr(lookup(table, graph.nodes[n]["kind"]), "relaxed", None)


def pre_activation_nodes(graph: nx.DiGraph, domain=None) -> list[str]:
    """Nodes whose bounds the relaxations need (every input of a node whose backward
    transfer is :func:`relaxed`), topologically."""
    need = []
    for n in topological_order(graph):
        if declaration(graph, n, domain) is not None:
            for p in predecessors_by_slot(graph, n):
                if p not in need:
                    need.append(p)
    return need


def refinable(graph: nx.DiGraph, n: str, l: torch.Tensor, u: torch.Tensor, domain=None) -> torch.Tensor:
    """The entries of node ``n`` (bounds ``l``, ``u``) that some relaxed consumer asks to
    tighten (the union of their ``refine`` masks)."""
    mask = torch.zeros_like(l, dtype=torch.bool)
    for s in graph.successors(n):
        found = declaration(graph, s, domain)
        if found is not None:
            mask = mask | found.refine(l, u)
    return mask


def _intersect(bounds, other):
    """``[max(l, l'), min(u, u')]`` (``other`` may be ``None``)."""
    if other is None:
        return bounds
    return torch.maximum(bounds[0], other[0]), torch.minimum(bounds[1], other[1])


def _refresh_ibp(graph: nx.DiGraph, states: dict, node: str, bounds: tuple[torch.Tensor, torch.Tensor]) -> None:
    """Set ``node``'s IBP state to ``bounds`` and recompute, in topological order, the IBP
    state of every node that depends on it, each intersected with its earlier state (both
    are sound)."""
    box = BoxDomain()
    order = topological_order(graph)
    states[node] = box.input_state(*bounds)
    dirty = {node}
    for v in order[order.index(node) + 1:]:
        preds = predecessors_by_slot(graph, v)
        if not any(p in dirty for p in preds):
            continue
        found = box.transfer_for(graph.nodes[v]["kind"])(box, graph.nodes[v], *[states[p] for p in preds])
        l, u = _intersect((found.lower, found.upper), (states[v].lower, states[v].upper))
        states[v] = box.input_state(l, u)
        dirty.add(v)


def elementwise_source(graph: nx.DiGraph, n: str, bounded) -> list[str] | None:
    """``[m, f₁, …, f_k = n]`` when node ``n`` is a chain of one-input elementwise ops
    (relaxed activations, ``scale_shift``) of a node ``m`` in ``bounded``; else ``None``.

    Each entry of ``n`` is then a function of one entry of ``m`` alone, and no linear
    relaxation bounds it tighter than the image of ``m``'s interval under the chain (the
    relaxations' lines hold on that interval and their backward pass is ``m``'s own pass,
    scaled), so :meth:`BackwardDomain.intermediate_bounds` takes that image instead of a
    backward pass per entry (Larq's ``sign(sign(x) + 0.1)``: 7,546 dense passes, 80 s, on
    the 3x30x30 traffic-sign net; a batch norm after a ReLU)."""
    chain, m = [n], n
    while graph.nodes[m]["kind"] in RELAXATIONS or graph.nodes[m]["kind"] == "scale_shift":
        preds = predecessors_by_slot(graph, m)
        if len(preds) != 1:
            return None
        m = preds[0]
        if m in bounded:
            return [m, *chain[::-1]]
        chain.append(m)
    return None


def chain_image(graph: nx.DiGraph, chain: list[str], bounds: tuple[torch.Tensor, torch.Tensor]
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Box's bounds of ``chain[-1]`` from ``bounds`` of ``chain[0]``, each op of the chain in
    turn (see :func:`elementwise_source`)."""
    box = BoxDomain()
    state = box.input_state(*bounds)
    for n in chain[1:]:
        state = box.transfer_for(graph.nodes[n]["kind"])(box, graph.nodes[n], state)
    return state.lower, state.upper


class BackwardPass:
    """What the backward transfers of one pass read besides ``Λ``: the graph, each
    nonlinear node's relaxation (built once from the intermediate ``bounds`` of its input,
    with the lower slopes ``alpha`` where given, else the domain's ``policy``)."""

    def __init__(self, graph: nx.DiGraph, bounds: Bounds, policy: str, alpha: dict | None = None,
                 mirrored: bool = False, fast: bool = False):
        self.graph, self.bounds, self.policy, self.alpha = graph, bounds, policy, alpha
        self.fast = fast  # transfers may use cheaper forms that round differently from their autograd ones
        self._lines: dict[str, Lines] = {}
        self._built: dict[str, object] = {}
        # with ``mirrored``, each relaxation adds here the constant of the rows −Λ (see BackwardDomain.mirrored_bound)
        self.mirror: list[torch.Tensor] | None = [] if mirrored else None

    def input_shapes(self, n: str) -> list[tuple]:
        return [tuple(self.graph.nodes[p]["shape"]) for p in predecessors_by_slot(self.graph, n)]

    def input_bounds(self, n: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``(l, u)`` ``(B, *S)`` of each input of node ``n``, in slot order."""
        return [self.bounds[p] for p in predecessors_by_slot(self.graph, n)]

    def free(self, n: str) -> torch.Tensor | None:
        """Node ``n``'s free relaxation parameters ``α`` (``(B, k, *A)``), or ``None``: the
        domain's default."""
        return None if self.alpha is None else self.alpha.get(n)

    def lines(self, n: str) -> Lines:
        """Node ``n``'s relaxation lines (:data:`~verifier.ops.relaxation.RELAXATIONS`)."""
        if n not in self._lines:
            (p,) = predecessors_by_slot(self.graph, n)
            node = self.graph.nodes[n]
            self._lines[n] = RELAXATIONS[node["kind"]].lines(node, *self.bounds[p], alpha=self.free(n),
                                                             policy=self.policy)
        return self._lines[n]

    def relaxation(self, n: str, build: Callable[[dict, torch.Tensor, torch.Tensor], object]):
        """``build(node, l, u)`` from the bounds of node ``n``'s one input, built once per pass
        (a relaxation that is not elementwise: max-pooling, softmax)."""
        if n not in self._built:
            (p,) = predecessors_by_slot(self.graph, n)
            self._built[n] = build(self.graph.nodes[n], *self.bounds[p])
        return self._built[n]

    def pool(self, n: str) -> MaxPoolRelaxation:
        """Node ``n``'s max-pool relaxation."""
        return self.relaxation(n, MaxPoolRelaxation)


class BackwardDomain(Domain):
    """Shared driver of backward domains: intermediate bounds, relaxations, final pass.
    ``intermediate``: ``"crown"`` or ``"ibp"``; ``norm``: ``inf`` (the box) or ``2`` (the
    ℓ2 ball of radius ``max r`` inside it, see :func:`~verifier.engine.concretize_linear`)."""

    policy = "adaptive"
    backward = True
    all_rows = True  # bound most of a convolution's entries as all of them (patch form, one group per location)
    exact_steps = False  # True: every pass rounds as its autograd form does (α-CROWN's near-ties need it)

    def __init__(self, intermediate: str = "crown", norm: float = float("inf")):
        if intermediate not in ("crown", "ibp"):
            raise VerifierInputError(f"intermediate bounds must be 'crown' or 'ibp', not '{intermediate}'")
        self.intermediate = intermediate
        self.norm = float(norm)

    def backward_bound(self, graph: nx.DiGraph, target: str, lam: torch.Tensor, lower: torch.Tensor,
                       upper: torch.Tensor, bounds: Bounds, alpha: dict | None = None, visit=None) -> torch.Tensor:
        """Lower bound ``(B, k)`` of ``Λ·v_target`` (``lam`` ``(B, k, *shape)``) over the input
        set, with the relaxations built from ``bounds`` (and lower slopes ``alpha``);
        ``visit`` as in :func:`~verifier.engine.propagate_backward`."""
        context = BackwardPass(graph, bounds, self.policy, alpha, fast=not self.exact_steps)
        lam_x, bias = propagate_backward(graph, self, target, lam, context, visit)
        return concretize_linear(lam_x, bias, lower, upper, self.norm)

    def mirrored_bound(self, graph: nx.DiGraph, target: str, lam: torch.Tensor, lower: torch.Tensor,
                       upper: torch.Tensor, bounds: Bounds) -> tuple[torch.Tensor, torch.Tensor]:
        """Lower bounds ``(B, k)`` of ``Λ·v_target`` and of ``−Λ·v_target`` from one pass of
        ``Λ``'s rows, for a domain whose relaxations have one slope for both lines
        (:meth:`mirrorable`: the dual LP on ReLU networks). Every transfer is then odd in ``Λ`` except for
        the relaxations' constants, so the rows ``−Λ`` end with ``−Λ_x`` and the constant
        ``−(bias − R₊) + R₋`` (``R₊``, ``R₋``: the relaxations' constants for ``Λ`` and
        for ``−Λ``, which they record), and ``min ∓Λ_x·x = ∓Λ_x·c − |Λ_x|·r``: half the
        work of the pass from ``[Λ, −Λ]``, the same bounds up to rounding."""
        context = BackwardPass(graph, bounds, self.policy, None, mirrored=True)
        lam_x, bias = propagate_backward(graph, self, target, lam, context)
        relaxed = sum(context.mirror, torch.zeros_like(bias))  # R₊ + R₋, accumulated by the transfers
        mirror_bias = -bias + relaxed
        value, spread = centre_spread(lam_x, lower, upper, self.norm)
        return value - spread + bias, -value - spread + mirror_bias

    def mirrorable(self, graph: nx.DiGraph) -> bool:
        """Whether every relaxation of ``graph`` in this domain has one slope for both lines
        (:meth:`mirrored_bound` applies); by default no."""
        return False

    def intermediate_bounds(self, graph: nx.DiGraph, lower: torch.Tensor, upper: torch.Tensor, alpha=None,
                            rows: dict | None = None, per_target: bool = False, known: dict | None = None,
                            refresh: bool = False) -> Bounds:
        """Bounds ``(l, u)`` of every node a relaxation needs (see module docstring).

        ``alpha`` fixes the lower slopes of these passes: node → ``(B, 1, *S)`` shared by
        every pass, or with ``per_target`` target → {node → ``(B, 2R, *S)``}, one slope per
        row of that target's pass (its ``R`` lower then ``R`` upper rows). ``rows`` (target
        → ``(B, R)`` flattened indices) fixes which entries are bounded; by default each
        sample's crossing entries are. ``known`` bounds (sound ones found earlier) are
        intersected in, node by node. With ``refresh``, the IBP bounds of the nodes after
        each bounded node are recomputed from its tightened bounds (intersected with the
        earlier ones) before their own entries are chosen: fewer entries look crossing,
        so fewer backward passes (cGAN 64×64's discriminator: 2,048 → 821 rows on one
        layer), and the bounds are equal or tighter."""
        states = propagate(graph, BoxDomain(), lower, upper, keep=True)
        need = pre_activation_nodes(graph, self)
        bounds = {n: (states[n].lower, states[n].upper) for n in need}
        if self.intermediate == "ibp":
            return bounds if known is None else {n: _intersect(b, known.get(n)) for n, b in bounds.items()}
        for n in need:
            checkpoint()
            if refresh:
                bounds[n] = _intersect(bounds[n], (states[n].lower, states[n].upper))
            chain = elementwise_source(graph, n, need)
            if chain is not None:  # the image of a bounded node's interval: no pass is tighter
                image = chain_image(graph, chain, bounds[chain[0]])
                bounds[n] = _intersect(_intersect(bounds[n], image), None if known is None else known.get(n))
            else:
                bounds[n] = self._tightened(graph, n, bounds, lower, upper, alpha, rows, per_target,
                                            None if known is None else known.get(n))
            if refresh:
                _refresh_ibp(graph, states, n, bounds[n])
        return bounds

    def _tightened(self, graph, n, bounds, lower, upper, alpha, rows, per_target, known):
        """Node ``n``'s bounds ∩ ``known``, its chosen (by default crossing) entries
        tightened by their backward passes (:meth:`intermediate_bounds`)."""
        l, u = _intersect(bounds[n], known)
        if graph.nodes[n]["kind"] == "input":
            return l, u
        if rows is not None and n in rows:
            index = rows[n]
        else:
            unstable = refinable(graph, n, l, u, self).reshape(l.shape[0], -1)
            if (rows is not None) or not bool(unstable.any()):
                return l, u
            index = per_sample_rows(unstable)  # each sample bounds only its own crossing entries
        slopes = (alpha or {}).get(n) if per_target else alpha
        lb, ub = self.bound_rows(graph, n, index, lower, upper, {**bounds, n: (l, u)}, slopes)
        l_flat, u_flat = l.reshape(l.shape[0], -1), u.reshape(u.shape[0], -1)
        l_flat = l_flat.scatter(1, index, torch.maximum(l_flat.gather(1, index), lb))
        u_flat = u_flat.scatter(1, index, torch.minimum(u_flat.gather(1, index), ub))
        return l_flat.reshape(l.shape), u_flat.reshape(u.shape)

    def bound_rows(self, graph: nx.DiGraph, node_id: str, index: torch.Tensor, lower: torch.Tensor,
                   upper: torch.Tensor, bounds: Bounds, alpha: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Lower and upper bounds ``(B, R)`` of the flattened entries ``index`` ``(B, R)`` of
        ``node_id``, in row chunks; ``alpha`` tensors are ``(B, 1, *S)`` or per row ``(B, 2R, *S)``."""
        moved = rearranged_patchable(self, graph, node_id)
        if moved is not None:  # a flattened convolution output: that convolution's entries, in patch form
            source, positions = moved
            return self.bound_rows(graph, source, positions.to(index.device)[index], lower, upper, bounds, alpha)
        shape = tuple(graph.nodes[node_id]["shape"])
        batch, R = lower.shape[0], index.shape[1]
        widest = max(math.prod(graph.nodes[m]["shape"]) for m in topological_order(graph))
        chunk = max(1, MAX_ENTRIES // max(1, 2 * batch * widest))
        per_row = alpha is not None and any(a.shape[1] == 2 * R and R > 0 for a in alpha.values())
        patches = patchable(self, graph, node_id)
        if patches and self.all_rows and not per_row and R >= ALL_ROWS_FRACTION * math.prod(shape):
            found = self._all_rows(graph, node_id, index, lower, upper, bounds, alpha)
            if found is not None:
                return found
        lbs, ubs = [], []
        for start in range(0, R, chunk):
            checkpoint()  # a layer's rows can take many seconds on a large net: the deadline between chunks
            part = index[:, start:start + chunk]
            slopes = alpha
            if per_row and part.shape[1] < R:
                stop = start + part.shape[1]
                slopes = {m: torch.cat([a[:, start:stop], a[:, R + start:R + stop]], 1) for m, a in alpha.items()}
            if patches and slopes is None and self.mirrorable(graph):  # windows, and ±e from one pass of e
                both = patch_bound(self, graph, node_id, part, torch.ones(part.shape[1]),
                                   BackwardPass(graph, bounds, self.policy, None, mirrored=True), lower, upper,
                                   self.norm)
            elif patches:  # a convolution's rows: coefficients as windows (verifier.domains.patches)
                sign = torch.cat([torch.ones(part.shape[1]), -torch.ones(part.shape[1])])
                both = patch_bound(self, graph, node_id, torch.cat([part, part], 1), sign,
                                   BackwardPass(graph, bounds, self.policy, slopes), lower, upper, self.norm)
            elif slopes is None and self.mirrorable(graph):
                both = torch.cat(self.mirrored_bound(graph, node_id, selection_rows(shape, part, lower), lower, upper,
                                                     bounds), 1)
            else:
                lam = selection_rows(shape, part, lower)
                both = self.backward_bound(graph, node_id, torch.cat([lam, -lam], 1), lower, upper, bounds, slopes)
            lbs.append(both[:, : part.shape[1]])
            ubs.append(-both[:, part.shape[1]:])
        return torch.cat(lbs, 1), torch.cat(ubs, 1)

    def _all_rows(self, graph: nx.DiGraph, node_id: str, index: torch.Tensor, lower: torch.Tensor,
                  upper: torch.Tensor, bounds: Bounds, alpha: dict | None) -> tuple[torch.Tensor, torch.Tensor] | None:
        """:meth:`bound_rows` for most of a convolution's entries: all of them in patch form
        (:func:`~verifier.domains.patches.patch_bound_all`, samples in chunks), then the
        asked ones; ``None`` where that form does not reach the input."""
        window = window_entries(self, graph, node_id)
        if window is None:
            return None
        n = math.prod(graph.nodes[node_id]["shape"])
        step = max(1, MAX_ENTRIES // (2 * n * window))
        lbs, ubs = [], []
        for start in range(0, lower.shape[0], step):
            part = slice(start, start + step)
            context = BackwardPass(graph, {m: (l[part], u[part]) for m, (l, u) in bounds.items()}, self.policy,
                                   None if alpha is None else {m: a[part] for m, a in alpha.items()},
                                   mirrored=alpha is None and self.mirrorable(graph))
            found = patch_bound_all(self, graph, node_id, context, lower[part], upper[part], self.norm)
            if found is None:
                return None
            lbs.append(found[0])
            ubs.append(found[1])
        return torch.cat(lbs).gather(1, index), torch.cat(ubs).gather(1, index)

    # --- the final pass -------------------------------------------------------------
    def spec_rows(self, graph: nx.DiGraph, lower: torch.Tensor, C: torch.Tensor | None) -> torch.Tensor:
        """``C`` (``(k, n)``, ``(B, k, n)`` or ``None`` for the identity) as the final pass's
        ``Λ`` ``(B, k, *output_shape)``."""
        out_shape = tuple(graph.nodes[output_node(graph)]["shape"])
        C = spec_matrix(C, math.prod(out_shape), lower)
        return C.reshape(C.shape[0], C.shape[1], *out_shape)

    def final_pass(self, graph: nx.DiGraph, lower: torch.Tensor, upper: torch.Tensor, lam: torch.Tensor,
                   bounds: Bounds, alpha: dict | None = None, visit=None) -> torch.Tensor:
        """Lower bounds ``(B, k)`` of ``Λ·f`` from the given intermediate ``bounds``."""
        return self.backward_bound(graph, output_node(graph), lam, lower, upper, bounds, alpha, visit)

    def lower_bound(self, graph: nx.DiGraph, lower: torch.Tensor, upper: torch.Tensor, C: torch.Tensor | None = None,
                    alpha: dict | None = None, bounds: dict | None = None, visit=None) -> torch.Tensor:
        """Lower bounds ``(B, k)`` of ``C·f`` only — one backward pass of ``k`` rows, half
        the work of :meth:`bound` (what certified training needs). ``alpha``: fixed lower
        slopes of the final pass, node → ``(B, 1 or k, *S)`` in ``[0, 1]``; ``bounds``:
        intermediate bounds to use instead of computing them (they must be sound);
        ``visit``: the hook of :func:`~verifier.engine.propagate_backward` (branch-and-bound
        reads and amends the coefficients ``Λ`` there)."""
        lam = self.spec_rows(graph, lower, C)
        if bounds is None:
            bounds = self.intermediate_bounds(graph, lower, upper)
        return self.final_pass(graph, lower, upper, lam, bounds, alpha, visit)

    def bound(self, graph, lower, upper, C=None):
        lam = self.spec_rows(graph, lower, C)
        k = lam.shape[1]
        bounds = self.intermediate_bounds(graph, lower, upper)
        if self.mirrorable(graph):
            lb, mirrored = self.mirrored_bound(graph, output_node(graph), lam, lower, upper, bounds)
            return lb, -mirrored
        both = self.final_pass(graph, lower, upper, torch.cat([lam, -lam], 1), bounds)
        return both[:, :k], -both[:, k:]


__all__ = ["BackwardDomain", "BackwardPass", "Bounds", "MAX_ENTRIES", "Relaxed", "declaration", "pre_activation_nodes",
           "refinable", "relaxed"]
