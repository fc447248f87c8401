"""Bounding a batch of ReLU-split subdomains (β-CROWN).

A subdomain fixes the sign of some pre-activations: ``s_j = +1`` means ``z_j ≥ 0``
(active), ``s_j = −1`` means ``z_j ≤ 0`` (inactive), ``s_j = 0`` unsplit. Its bound of
``Λ·f(x)`` over ``{x ∈ box : s_j z_j(x) ≥ 0}`` is

    min_x Λ·f(x)  ≥  max_{α∈[0,1], β≥0}  min_{x ∈ box}  Λ·f̃_α(x) − Σ_j β_j s_j z_j(x),

(weak duality: each added term is ``≤ 0`` on the subdomain). ``f̃_α`` is the CROWN
relaxation built from the intermediate bounds clamped by the splits (``l_j ← max(l_j, 0)``
when active, ``u_j ← min(u_j, 0)`` when inactive), so split neurons are exact. In the
backward pass the multipliers enter as ``Λ_z ← Λ_z − β ⊙ s`` at each pre-activation
``z``. The intermediate bounds are the root's (valid on every subdomain), clamped.

Every (α, β) gives a sound bound, so projected Adam steps on them never lose soundness;
the best bound per row over the steps is kept.

**Optimising in a narrower dtype** (``fast_graph``, e.g. float32 when the bounds are
float64): the Adam steps run on a float32 copy (network, box and root bounds rounded
outwards, :func:`~verifier.linalg.cast_outward`), keeping per row the α, β of its best
float32 step. Rounding can make a float32 bound exceed the real minimum, so no float32
value is ever used as a bound: each subdomain's kept bound is one non-optimised CROWN
evaluation in the bound dtype (float64) with those α, β cast up (exactly: every float32
is a float64) and the float64 root bounds. Any α ∈ [0, 1], β ≥ 0 gives a valid bound
(weak duality above), so this certified bound is exactly as sound as the float64 path's,
and a subdomain closes only if it refutes a row by the usual margin; float32 only decides
*which* α, β are tried.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import networkx as nx
import torch

from ..deadline import checkpoint
from ..ir.graph import input_node, predecessors_by_slot, topological_order
from ..domains.crown import CrownDomain
from ..linalg import cast_outward

Bounds = dict[str, tuple[torch.Tensor, torch.Tensor]]


def relu_pre_activations(graph: nx.DiGraph) -> dict[str, str]:
    """ReLU node → its pre-activation node (the node that is split)."""
    return {n: predecessors_by_slot(graph, n)[0] for n in topological_order(graph)
            if graph.nodes[n]["kind"] == "relu"}


@dataclass
class Subdomains:
    """A batch of ``N`` subdomains of one input box, for ``k`` spec rows.

    ``splits[z]``: ``(N, *S)`` in ``{−1, 0, +1}``; ``alpha[relu]`` and ``beta[z]``:
    ``(N, k, *S)``; ``lb``: ``(N, k)`` the best bounds so far; ``depth``: ``(N,)`` splits made.
    """

    splits: dict[str, torch.Tensor]
    alpha: dict[str, torch.Tensor]
    beta: dict[str, torch.Tensor]
    lb: torch.Tensor
    depth: torch.Tensor

    def __len__(self) -> int:
        return self.lb.shape[0]

    def select(self, index: torch.Tensor) -> "Subdomains":
        return Subdomains({n: t[index] for n, t in self.splits.items()}, {n: t[index] for n, t in self.alpha.items()},
                          {n: t[index] for n, t in self.beta.items()}, self.lb[index], self.depth[index])

    @staticmethod
    def concat(parts: list["Subdomains"]) -> "Subdomains":
        first = parts[0]
        return Subdomains({n: torch.cat([p.splits[n] for p in parts]) for n in first.splits},
                          {n: torch.cat([p.alpha[n] for p in parts]) for n in first.alpha},
                          {n: torch.cat([p.beta[n] for p in parts]) for n in first.beta},
                          torch.cat([p.lb for p in parts]), torch.cat([p.depth for p in parts]))


def clamp_to_splits(root: Bounds, splits: dict[str, torch.Tensor]) -> tuple[Bounds, torch.Tensor]:
    """The root bounds ``(1, *S)`` restricted by each subdomain's splits ``(N, *S)``, and
    ``(N,)`` which subdomains are empty (a split contradicts the bounds: ``l > u``)."""
    count = next(iter(splits.values())).shape[0]
    some = next(iter(root.values()))[0]
    empty = torch.zeros(count, dtype=torch.bool, device=some.device)
    out = {}
    for z, (l, u) in root.items():
        s = splits.get(z)
        if s is None:  # not split (e.g. a max-pool input): the root bounds, per subdomain
            out[z] = (l.expand(count, *l.shape[1:]), u.expand(count, *u.shape[1:]))
            continue
        l = torch.where(s > 0, l.clamp(min=0), l)
        u = torch.where(s < 0, u.clamp(max=0), u)
        out[z] = (l, u)
        empty |= (l > u).reshape(count, -1).any(dim=1)
    return out, empty


class BetaCrown:
    """β-CROWN bounds of ``Λ·f`` (rows ``lam`` ``(1, k, *out)``) on subdomains of one box.

    ``root``: intermediate bounds valid on the whole box (``(1, *S)`` each), e.g. from
    α-CROWN; ``iterations``/``lr_alpha``/``lr_beta``: the projected Adam schedule.
    """

    def __init__(self, graph: nx.DiGraph, lower: torch.Tensor, upper: torch.Tensor, lam: torch.Tensor,
                 root: Bounds, iterations: int = 20, lr_alpha: float = 0.1, lr_beta: float = 0.05,
                 norm: float = float("inf"), fast_graph: nx.DiGraph | None = None):
        self.graph, self.lower, self.upper, self.lam, self.root = graph, lower, upper, lam, root
        self.iterations, self.lr_alpha, self.lr_beta = iterations, lr_alpha, lr_beta
        self.pre = relu_pre_activations(graph)
        self.crown = CrownDomain(norm=norm)
        self.source = input_node(graph)
        # proof certificates (verify --proof): keep, per row, the α and β of the best step
        # and no bound inherited from the parent, so every kept bound is re-derivable
        self.track_best = False
        self.fast = None if fast_graph is None else self._narrow(fast_graph)

    def _narrow(self, graph: nx.DiGraph) -> "BetaCrown":
        """A copy of this engine on ``graph`` (the same network in a narrower dtype) with
        the box and the root bounds rounded outwards and ``Λ`` rounded to that dtype: the
        α, β optimisation of the module docstring's narrower dtype."""
        dtype = next((t.dtype for _, d in graph.nodes(data=True) for t in d["params"].values()
                      if t.is_floating_point()), torch.float32)
        fast = copy.copy(self)
        fast.graph, fast.fast = graph, None
        fast.lower, fast.upper = cast_outward(self.lower, self.upper, dtype)
        fast.lam = self.lam.to(dtype)
        fast.root = {z: cast_outward(l, u, dtype) for z, (l, u) in self.root.items()}
        return fast

    def clamp(self, splits: dict[str, torch.Tensor]) -> tuple[Bounds, torch.Tensor]:
        """The intermediate bounds of each subdomain and which are empty
        (:func:`clamp_to_splits`; a subclass with other splits overrides this)."""
        return clamp_to_splits(self.root, splits)

    def candidate_inputs(self, model, region, dom: Subdomains, record: dict) -> torch.Tensor | None:
        """``(N, n)`` candidate counterexamples: each subdomain's relaxed minimiser of its worst
        row, ``x* = argmin_box Λ_x·x`` (the corner picked by the signs of ``Λ_x``)."""
        lam_x = record.get(self.source)
        if lam_x is None:
            return None
        n = len(dom)
        row = dom.lb.argmin(dim=1)
        coeff = lam_x[torch.arange(n, device=row.device), row]
        return torch.where(coeff > 0, self.lower.expand_as(coeff), self.upper.expand_as(coeff)).reshape(n, -1)

    @property
    def rows(self) -> int:
        return self.lam.shape[1]

    def root_subdomain(self) -> Subdomains:
        """The whole box: no splits, CROWN's adaptive slopes, zero multipliers."""
        k, splits, alpha, beta = self.rows, {}, {}, {}
        for relu, z in self.pre.items():
            l, u = self.root[z]
            splits[z] = torch.zeros_like(l, dtype=torch.int8)
            alpha[relu] = (u > -l).to(l.dtype).unsqueeze(1).expand(-1, k, *l.shape[1:]).clone()
            beta[z] = torch.zeros_like(alpha[relu])
        lb = torch.full((1, k), float("-inf"), dtype=self.lam.dtype, device=self.lam.device)
        return Subdomains(splits, alpha, beta, lb, torch.zeros(1, dtype=torch.long, device=self.lam.device))

    def evaluate(self, bounds: Bounds, dom: Subdomains, alpha, beta, record: dict | None = None) -> torch.Tensor:
        """Lower bounds ``(N, k)`` of the rows on each subdomain for the given ``α``, ``β``
        (the inner minimum of the module docstring's objective, one CROWN pass with
        ``Λ_z −= β ⊙ s`` at each split pre-activation); ``record`` receives ``Λ`` at each
        ReLU and at the input."""
        n = len(dom)
        signs = {z: s.to(self.lam.dtype).unsqueeze(1) for z, s in dom.splits.items()}
        relus = set(self.pre) | {self.source}

        def visit(node, L):
            if node in signs:
                L = L - beta[node] * signs[node]
            if record is not None and node in relus:
                record[node] = L.detach()
            return L

        return self.crown.lower_bound(self.graph, self.lower.expand(n, *self.lower.shape[1:]),
                                      self.upper.expand(n, *self.upper.shape[1:]), self.lam.reshape(1, self.rows, -1),
                                      alpha, bounds, visit)

    def estimate(self, dom: Subdomains) -> torch.Tensor:
        """``(N, k)`` bounds with each subdomain's own α, β, not optimised, in the
        optimisation's dtype (the narrower one when ``fast_graph`` was given: a branching
        heuristic, not a sound bound then); ``+inf`` rows for empty subdomains are not
        marked (use :meth:`clamp`'s ``empty``)."""
        engine = self.fast or self
        bounds, _ = engine.clamp(dom.splits)
        alpha = {n: a.to(engine.lam.dtype) for n, a in dom.alpha.items()}
        beta = {z: b.to(engine.lam.dtype) for z, b in dom.beta.items()}
        with torch.no_grad():
            return engine.evaluate(bounds, dom, alpha, beta)

    def bound(self, dom: Subdomains, threshold: torch.Tensor | None = None) -> tuple[Subdomains, dict]:
        """Optimise α, β of every subdomain; return it with ``lb`` improved, and the
        coefficients ``Λ`` at each ReLU's output under the final multipliers (for
        branching). Subdomains whose splits are contradictory get ``lb = +inf``.
        Optimisation stops early once every row exceeds ``threshold`` ``(k,)``.
        With ``fast_graph``, the optimisation runs in its dtype and the bounds are
        certified in this engine's (module docstring); ``α``, ``β`` stay in the narrow dtype."""
        if self.fast is not None:
            return self._certified(dom, threshold)
        best, last, kept, record, empty = self._optimise(dom, threshold, self.track_best)
        best = torch.where(empty[:, None], torch.full_like(best, float("inf")), best)
        alpha, beta = kept if self.track_best else last
        return Subdomains(dom.splits, alpha, beta, best, dom.depth), record

    def _optimise(self, dom: Subdomains, threshold: torch.Tensor | None, track: bool):
        """The projected Adam steps of :meth:`bound`: ``(best, (α, β) of the last step,
        (α, β) of each row's best step or None without ``track``, record, empty)``;
        ``best`` ``(N, k)`` starts from ``dom.lb`` (from ``−inf`` with ``track``)."""
        bounds, empty = self.clamp(dom.splits)
        alpha = {n: a.clone().requires_grad_(True) for n, a in dom.alpha.items()}
        beta = {z: b.clone().requires_grad_(True) for z, b in dom.beta.items()}
        best = torch.full_like(dom.lb, float("-inf")) if track else dom.lb.clone()
        kept_alpha = {n: a.detach().clone() for n, a in alpha.items()} if track else None
        kept_beta = {z: b.detach().clone() for z, b in beta.items()} if track else None
        params = [{"params": list(alpha.values()), "lr": self.lr_alpha}, {"params": list(beta.values()), "lr": self.lr_beta}]
        opt = torch.optim.Adam([g for g in params if g["params"]]) if (alpha or beta) else None
        for step in range(self.iterations + 1):
            checkpoint()
            final = step == self.iterations or opt is None
            record = {} if final else None
            with torch.set_grad_enabled(not final):
                current = self.evaluate(bounds, dom, alpha, beta, record)
            value = torch.nan_to_num(current.detach(), nan=float("-inf"))  # NaN: no bound
            if track:
                _keep_best(value > best, alpha, kept_alpha)
                _keep_best(value > best, beta, kept_beta)
            best = torch.maximum(best, value)
            if final:
                break
            if threshold is not None and bool((best > threshold).any(dim=1).all()):
                with torch.no_grad():
                    record = {}
                    self.evaluate(bounds, dom, alpha, beta, record)
                break
            opt.zero_grad()
            (-current.sum()).backward()
            opt.step()
            with torch.no_grad():
                for a in alpha.values():
                    a.clamp_(0.0, 1.0)
                for b in beta.values():
                    b.clamp_(min=0.0)
        last = ({n: a.detach() for n, a in alpha.items()}, {z: b.detach() for z, b in beta.items()})
        return best, last, (kept_alpha, kept_beta) if track else None, record or {}, empty

    def _certified(self, dom: Subdomains, threshold: torch.Tensor | None) -> tuple[Subdomains, dict]:
        """:meth:`bound` with the optimisation in ``self.fast``'s dtype: each row's α, β of
        its best narrow step, evaluated once in this engine's dtype, give the bound (the
        maximum with the parent's certified bound, or, with :attr:`track_best`, that value
        alone, so that it is re-derivable from the α, β kept). The subdomains keep the last
        step's α, β (those of the best step with :attr:`track_best`), in the narrow dtype, and
        the record ``Λ`` is the narrow last step's (cast up): branching on it, as the
        full-width path does on its last step, needed 4× fewer subdomains than on the best
        step's on mnist_fc 256x4 prop_8 (ε 0.03); it only guides branching and candidates."""
        fast = self.fast
        narrow = Subdomains(dom.splits, {n: a.to(fast.lam.dtype) for n, a in dom.alpha.items()},
                            {z: b.to(fast.lam.dtype) for z, b in dom.beta.items()},
                            torch.full(dom.lb.shape, float("-inf"), dtype=fast.lam.dtype, device=dom.lb.device),
                            dom.depth)
        fast.iterations, fast.lr_alpha, fast.lr_beta = self.iterations, self.lr_alpha, self.lr_beta  # set later too
        _, last, kept, record, _ = fast._optimise(narrow, None if threshold is None else threshold.to(fast.lam.dtype),
                                                  True)
        bounds, empty = self.clamp(dom.splits)
        alpha = {n: a.to(self.lam.dtype) for n, a in kept[0].items()}
        beta = {z: b.to(self.lam.dtype) for z, b in kept[1].items()}
        with torch.no_grad():
            value = torch.nan_to_num(self.evaluate(bounds, dom, alpha, beta), nan=float("-inf"))
        lb = value if self.track_best else torch.maximum(dom.lb, value)
        lb = torch.where(empty[:, None], torch.full_like(lb, float("inf")), lb)
        alpha, beta = kept if self.track_best else last
        return Subdomains(dom.splits, alpha, beta, lb, dom.depth), {n: t.to(self.lam.dtype) for n, t in record.items()}


def _keep_best(better: torch.Tensor, current: dict, kept: dict) -> None:
    """``kept[n] ← current[n]`` on the ``(N, k)`` entries where ``better`` (parameters
    ``(N, k, *S)``)."""
    for n, t in current.items():
        mask = better.reshape(*better.shape, *([1] * (t.dim() - 2)))
        kept[n] = torch.where(mask, t.detach(), kept[n])
