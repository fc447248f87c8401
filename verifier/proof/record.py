"""What the search records for a proof certificate, while ``verify --proof`` runs.

A :class:`ProofRecorder` is made active for one :func:`~verifier.verify.verify` call by
:func:`recording`; the search code asks :func:`active` (``None`` when no proof is wanted,
so recording costs nothing otherwise) and reports what closed each part of the search
space:

* input splitting: the bisection tree of each region's box (:class:`BoxTree`: per node the
  split input and the midpoint, or a leaf);
* ReLU splitting: per region the root's claimed intermediate bounds and the slopes ``α``
  from which α-CROWN derived them and its final bound (:meth:`ProofRecorder.relu_root`),
  per disjunct the closed subdomains: split signs, ``α`` and ``β`` per spec row
  (:meth:`ProofRecorder.relu_leaves`); the parameters of each max-pool's relaxation on
  the root bounds (which entry of each window is selected, and whether it dominates);
* subdomains or disjuncts decided by HiGHS (an LP with every ReLU fixed, or the MILP):
  recorded as *trusted* (:meth:`ProofRecorder.trusted_leaves`,
  :meth:`ProofRecorder.trusted_disjunct`): the checker names them instead of re-deriving;
* anything the checker cannot re-derive (another complete method):
  :meth:`ProofRecorder.cannot_certify`, which makes the certificate say so.

Tensors are kept as given (the writer, :mod:`verifier.proof.writer`, converts them).
"""

from __future__ import annotations

import contextvars
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import torch

_ACTIVE: contextvars.ContextVar["ProofRecorder | None"] = contextvars.ContextVar("proof_recorder", default=None)


def active() -> "ProofRecorder | None":
    """The recorder of the running ``verify --proof``, or ``None``."""
    return _ACTIVE.get()


@contextmanager
def recording(recorder: "ProofRecorder | None") -> Iterator["ProofRecorder | None"]:
    """Make ``recorder`` active inside the ``with`` block (``None``: record nothing)."""
    token = _ACTIVE.set(recorder)
    try:
        yield recorder
    finally:
        _ACTIVE.reset(token)


class BoxTree:
    """The bisection tree of one region's box: node 0 is the box; a node split on input
    ``dim`` at ``mid`` has children ``left`` (``x_dim ≤ mid``) and ``right`` (``x_dim ≥ mid``);
    a node with ``dim = −1`` is a leaf (closed)."""

    def __init__(self):
        self.dim: list[torch.Tensor] = [torch.tensor([-1])]
        self.mid: list[torch.Tensor] = [torch.tensor([float("nan")], dtype=torch.float64)]
        self.parent: list[torch.Tensor] = [torch.tensor([-1])]
        self.count = 1
        self._splits: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self._closed: list[tuple[torch.Tensor, torch.Tensor]] = []

    def close(self, ids: torch.Tensor, lower: torch.Tensor) -> None:
        """Leaves ``ids`` ``(N,)`` closed with these lower bounds ``(N, k)`` of the stacked
        spec rows (the claims the checker compares its own bounds with)."""
        self._closed.append((ids.detach().cpu().long(), lower.detach().cpu().double()))

    def split(self, ids: torch.Tensor, dims: torch.Tensor, mids: torch.Tensor) -> torch.Tensor:
        """Record that nodes ``ids`` ``(N,)`` are split on ``dims`` at ``mids``; return the
        children's ids ``(2N,)`` (lefts, then rights, as the frontier stacks them)."""
        n = len(ids)
        children = torch.arange(self.count, self.count + 2 * n)
        self.count += 2 * n
        self._splits.append((ids.detach().cpu().long(), dims.detach().cpu().long(),
                             mids.detach().cpu().to(torch.float64)))
        return children

    def arrays(self) -> dict[str, torch.Tensor]:
        """``dim``, ``mid``, ``left``, ``right`` ``(M,)`` per node (``−1``: none) and ``claims``
        ``(M, k)``: each closed leaf's lower bounds (NaN elsewhere)."""
        dim = torch.full((self.count,), -1, dtype=torch.long)
        mid = torch.full((self.count,), float("nan"), dtype=torch.float64)
        left = torch.full((self.count,), -1, dtype=torch.long)
        right = torch.full((self.count,), -1, dtype=torch.long)
        first = 1
        for ids, dims, mids in self._splits:
            n = len(ids)
            dim[ids], mid[ids] = dims, mids
            left[ids] = torch.arange(first, first + n)
            right[ids] = torch.arange(first + n, first + 2 * n)
            first += 2 * n
        k = self._closed[0][1].shape[1] if self._closed else 1
        claims = torch.full((self.count, k), float("nan"), dtype=torch.float64)
        for ids, lower in self._closed:
            claims[ids] = lower
        return {"dim": dim, "mid": mid, "left": left, "right": right, "claims": claims}


@dataclass
class ReluRegion:
    """What closed one region under ReLU splitting (see the module docstring)."""

    claims: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    final_alpha: list[torch.Tensor] = field(default_factory=list)
    inter_rows: dict[int, torch.Tensor] = field(default_factory=dict)
    inter_alpha: dict[int, list[torch.Tensor]] = field(default_factory=dict)
    final_lower: torch.Tensor | None = None
    pools: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    leaves: dict[int, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]] = field(default_factory=dict)
    trusted: dict[int, list[torch.Tensor]] = field(default_factory=dict)
    trusted_disjuncts: dict[int, str] = field(default_factory=dict)


class ProofRecorder:
    """Everything one verification reports for its certificate, per region index."""

    def __init__(self):
        self.trees: dict[int, BoxTree] = {}
        self.relu: dict[int, ReluRegion] = {}
        self.uncertified: list[str] = []
        self.dtypes: set[str] = set()
        self.lp_nodes: int | None = None  # LPs per MILP-closed disjunct's certificate (None: the default, 0: none)

    def arithmetic(self, dtype: torch.dtype) -> None:
        """Note the dtype the recorded bounds were computed in (float32 claims are compared
        with a wider tolerance by the checker)."""
        self.dtypes.add(str(dtype).replace("torch.", ""))

    def box_tree(self, region: int) -> BoxTree:
        """A fresh bisection tree for ``region`` (replacing any earlier one)."""
        self.trees[region] = BoxTree()
        return self.trees[region]

    def relu_root(self, region: int, claims: list[tuple[torch.Tensor, torch.Tensor]], final_alpha: list[torch.Tensor],
                  inter_rows: dict[int, torch.Tensor], inter_alpha: dict[int, list[torch.Tensor]],
                  final_lower: torch.Tensor | None = None,
                  pools: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> None:
        """The root of ReLU splitting on ``region``: per ReLU (in topological order) the
        claimed bounds of its input ``(n,)`` each, the final pass's slopes ``(k, n)`` (one row
        per stacked spec row); per ReLU ``t`` whose input was tightened by optimised passes,
        the tightened entries ``(R,)`` and the slopes ``(2R, n_r)`` of each earlier ReLU ``r``
        (``R`` lower rows, then ``R`` upper rows); ``final_lower`` ``(k,)``: the final bounds
        claimed; ``pools``: per max-pool (in order) ``sel`` and ``dom`` ``(n_out,)`` of its
        relaxation on the root bounds (:func:`~verifier.proof.hooks.pool_parameters`)."""
        self.relu[region] = ReluRegion(claims, final_alpha, inter_rows, inter_alpha, final_lower, list(pools or []))

    def relu_leaves(self, region: int, disjunct: int, signs: torch.Tensor, alpha: torch.Tensor,
                    beta: torch.Tensor, lower: torch.Tensor) -> None:
        """Closed subdomains of ``disjunct``: split signs ``(N, T)`` (``T`` every ReLU's
        entries, in order), ``α``/``β`` ``(N, k, T)`` for the disjunct's ``k`` rows, and the
        lower bounds ``(N, k)`` they gave (claims)."""
        self.relu[region].leaves.setdefault(disjunct, []).append((signs.cpu(), alpha.cpu(), beta.cpu(),
                                                                  lower.detach().cpu().double()))

    def trusted_leaves(self, region: int, disjunct: int, signs: torch.Tensor) -> None:
        """Subdomains ``(N, T)`` of ``disjunct`` that an LP (HiGHS) closed with every ReLU fixed."""
        self.relu[region].trusted.setdefault(disjunct, []).append(signs.cpu())

    def trusted_disjunct(self, region: int, disjunct: int, reason: str) -> None:
        """``disjunct`` of ``region`` was decided by HiGHS's MILP (``reason`` says how)."""
        self.relu.setdefault(region, ReluRegion()).trusted_disjuncts[disjunct] = reason

    def cannot_certify(self, reason: str) -> None:
        """The verdict rests on something the checker cannot re-derive."""
        if reason not in self.uncertified:
            self.uncertified.append(reason)
