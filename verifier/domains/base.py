"""The contract every abstract domain fulfils, built-in or third-party.

A domain is a class with a ``name`` and tables from IR op kind to transfer function:

* ``transfers`` (forward domains): ``f(domain, node, *input_states) -> state``, registered
  with ``@MyDomain.transfer("kind", …)`` — or for a whole category of ops,
  ``@MyDomain.transfer(ANY_ELEMENTWISE)`` (:mod:`verifier.ops.categories`) — and run by
  :func:`verifier.engine.propagate`;
* ``backward_transfers`` (backward domains): ``f(domain, context, node_id, Λ) ->
  (contributions to the inputs' Λ, constant)``, registered with
  ``@MyDomain.backward_transfer("kind", …)`` and run by
  :func:`verifier.engine.propagate_backward`.

A subclass inherits its bases' entries (looked up through the MRO, so an entry added to
a base later reaches every subclass) and may override them. Register a domain with
:func:`verifier.domains.register_domain`, or from another package through the
entry-point group ``verifier.domains``.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar

import networkx as nx
import torch

from ..engine import propagate
from ..linalg import interval_matmul
from ..ops.categories import lookup

_REGISTRATIONS = [0]  # bumped on every registration: invalidates the merged tables


class Domain:
    """Base class of abstract domains (forward ones; backward ones override ``bound``)."""

    name: ClassVar[str] = "abstract"
    description: ClassVar[str] = ""
    transfers: ClassVar[dict[str, Callable]] = {}
    backward_transfers: ClassVar[dict[str, Callable]] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "transfers" not in cls.__dict__:
            cls.transfers = {}  # each class owns its entries; lookups merge the MRO
        if "backward_transfers" not in cls.__dict__:
            cls.backward_transfers = {}

    @classmethod
    def transfer(cls, *kinds: str):
        """Decorator: register ``fn`` as this domain's forward transfer for ``kinds``."""
        return cls._registrar("transfers", kinds)

    @classmethod
    def backward_transfer(cls, *kinds: str):
        """Decorator: register ``fn`` as this domain's backward transfer for ``kinds``."""
        return cls._registrar("backward_transfers", kinds)

    @classmethod
    def _registrar(cls, table: str, kinds: tuple[str, ...]):
        def register(fn):
            for kind in kinds:
                cls.__dict__[table][kind] = fn
            _REGISTRATIONS[0] += 1
            return fn

        return register

    @classmethod
    def table(cls, backward: bool = False) -> dict[str, Callable]:
        """Every op kind's transfer for this class, its own entries over its bases'."""
        attr = "backward_transfers" if backward else "transfers"
        key = f"_merged_{attr}"
        cached = cls.__dict__.get(key)
        if cached is None or cached[0] != _REGISTRATIONS[0]:
            merged: dict[str, Callable] = {}
            for klass in reversed(cls.__mro__):
                merged.update(klass.__dict__.get(attr, {}))
            cached = (_REGISTRATIONS[0], merged)
            setattr(cls, key, cached)
        return cached[1]

    def transfer_for(self, kind: str) -> Callable | None:
        """The forward transfer for ``kind``: its own entry, else its category's
        (:mod:`verifier.ops.categories`); ``None`` if there is none."""
        return lookup(self.table(), kind)

    def backward_transfer_for(self, kind: str) -> Callable | None:
        """The backward transfer for ``kind`` (as :meth:`transfer_for`)."""
        return lookup(self.table(backward=True), kind)

    def supports(self, graph: nx.DiGraph) -> list[tuple[str, str]]:
        """``(node, reason)`` for every node this domain cannot bound (empty: it can bound
        the whole graph). The default asks the forward table; domains with other limits
        extend it."""
        find = self.backward_transfer_for if self.backward else self.transfer_for
        missing = []
        for n, data in graph.nodes(data=True):
            kind = data["kind"]
            if kind not in ("input", "constant") and find(kind) is None:
                missing.append((data.get("source", n), f"no {self.name} transfer for op kind '{kind}'"))
        return missing

    backward: ClassVar[bool] = False  # bounds through backward_transfers instead of transfers

    # --- hooks ---------------------------------------------------------------------
    def input_state(self, lower: torch.Tensor, upper: torch.Tensor) -> Any:
        raise NotImplementedError

    def constant_state(self, value: torch.Tensor) -> Any:
        raise NotImplementedError

    def concretize(self, state: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Elementwise ``(lower, upper)`` of a state, each ``(B, *shape)``."""
        raise NotImplementedError

    def lower_bound(self, graph: nx.DiGraph, lower: torch.Tensor, upper: torch.Tensor,
                    C: torch.Tensor | None = None) -> torch.Tensor:
        """The lower half of :meth:`bound` ``(B, k)``; backward domains compute it alone in
        one pass (what certified training needs)."""
        return self.bound(graph, lower, upper, C)[0]

    def bound(self, graph: nx.DiGraph, lower: torch.Tensor, upper: torch.Tensor,
              C: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Bounds on the flattened output ``f(x)`` (``(B, n)``) or on ``C·f(x)`` (``(B, k)``)
        for ``x`` in the box. The default runs the engine and applies ``C`` by interval
        arithmetic; domains may do better."""
        lb, ub = self.concretize(propagate(graph, self, lower, upper))
        lb, ub = lb.reshape(lb.shape[0], -1), ub.reshape(ub.shape[0], -1)
        if C is None:
            return lb, ub
        return interval_matmul(C, lb, ub)
