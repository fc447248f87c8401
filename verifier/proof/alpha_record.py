"""α-CROWN that remembers, for its certificate, which slopes gave each bound it keeps.

:meth:`AlphaCrownDomain.optimise` keeps, per intermediate entry and per spec row, the
tightest bound over all its projected-Adam steps. The slopes of the step that produced a
kept bound are what a checker needs to re-derive it, so :class:`RecordingAlphaCrown`
(a subclass: the optimisation itself is unchanged) watches every intermediate and final
pass and keeps, per row, the slopes of the best step so far: ``best_inter[t][relu]``
``(B, 2R, *S)`` for the ``R`` tightened entries of pre-activation ``t`` (lower rows, then
upper rows) and ``best_final[relu]`` ``(B, k, *S)``.

A kept bound came from a step whose other bounds (and so its relaxations' lines) differ
from the final ones, and CROWN-style bounds are not monotone in those, so the kept bounds
are not exactly re-derivable. :meth:`RecordingAlphaCrown.reproducible` therefore
recomputes, once, the bounds that the recorded slopes give in one layer-by-layer pass
(IBP ∩ the first CROWN pass ∩ the recorded passes) and the final bound on them: the
certificate claims these, and the search under ``--proof`` starts from them.
"""

from __future__ import annotations

import torch

from ..domains.alpha_crown import AlphaCrownDomain


class RecordingAlphaCrown(AlphaCrownDomain):
    """:class:`AlphaCrownDomain` that records the slopes of its best bounds (module docstring)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.rows: dict = {}
        self.best_inter: dict = {}
        self.best_inter_value: dict = {}
        self.best_final: dict = {}
        self.best_final_value: torch.Tensor | None = None
        self._relus: list[str] = []
        self.initial: dict | None = None
        self._replaying = False

    def _intermediate_slopes(self, graph, bounds, lower):
        rows, inner = super()._intermediate_slopes(graph, bounds, lower)
        self.rows = rows
        for t, per in inner.items():
            R = rows[t].shape[1]
            lo = bounds[t][0].reshape(lower.shape[0], -1).gather(1, rows[t])
            hi = bounds[t][1].reshape(lower.shape[0], -1).gather(1, rows[t])
            self.best_inter_value[t] = (lo.detach().clone(), hi.detach().clone())
            self.best_inter[t] = {n: a.detach().expand(a.shape[0], 2 * R, *a.shape[2:]).clone() for n, a in per.items()}
        return rows, inner

    def intermediate_bounds(self, graph, lower, upper, alpha=None, rows=None, per_target=False, known=None):
        out = super().intermediate_bounds(graph, lower, upper, alpha, rows, per_target, known)
        if alpha is None and self.initial is None:
            self.initial = {n: (l.detach().clone(), u.detach().clone()) for n, (l, u) in out.items()}
        if per_target and alpha and rows and not self._replaying:
            with torch.no_grad():
                for t, index in rows.items():
                    if t not in self.best_inter or t not in alpha:
                        continue
                    R = index.shape[1]
                    lo = out[t][0].reshape(index.shape[0], -1).gather(1, index)
                    hi = out[t][1].reshape(index.shape[0], -1).gather(1, index)
                    best_lo, best_hi = self.best_inter_value[t]
                    better = torch.cat([lo > best_lo, hi < best_hi], 1)  # (B, 2R)
                    self.best_inter_value[t] = (torch.maximum(lo, best_lo), torch.minimum(hi, best_hi))
                    if not bool(better.any()):
                        continue
                    for n, a in alpha[t].items():
                        a = a.detach().expand(a.shape[0], 2 * R, *a.shape[2:])
                        mask = better.reshape(*better.shape, *([1] * (a.dim() - 2)))
                        self.best_inter[t][n] = torch.where(mask, a, self.best_inter[t][n])
        return out

    def final_pass(self, graph, lower, upper, lam, bounds, alpha=None, visit=None):
        value = super().final_pass(graph, lower, upper, lam, bounds, alpha, visit)
        if alpha and not self._replaying:
            with torch.no_grad():
                current = value.detach()
                if self.best_final_value is None:
                    better = torch.ones_like(current, dtype=torch.bool)
                    self.best_final_value = current.clone()
                else:
                    better = current > self.best_final_value
                    self.best_final_value = torch.maximum(current, self.best_final_value)
                for n, a in alpha.items():
                    a = a.detach().expand(a.shape[0], current.shape[1], *a.shape[2:])
                    mask = better.reshape(*better.shape, *([1] * (a.dim() - 2)))
                    old = self.best_final.get(n)
                    self.best_final[n] = a.clone() if old is None else torch.where(mask, a, old)
        return value

    def reproducible(self, graph, lower, upper, lam):
        """The bounds the recorded slopes give (class docstring): intermediate bounds (node →
        ``(l, u)``) and the final lower bounds ``(B, k)``."""
        self._replaying = True
        try:
            with torch.no_grad():
                inner = {t: dict(per) for t, per in self.best_inter.items()}
                bounds = self.intermediate_bounds(graph, lower, upper, inner or None, self.rows or None,
                                                  bool(inner), self.initial)
                alpha = {n: a for n, a in self.best_final.items()}
                final = self.final_pass(graph, lower, upper, lam, bounds, alpha or None)
        finally:
            self._replaying = False
        self.best_final_value = final
        return bounds, final
