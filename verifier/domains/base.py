"""The contract every abstract domain fulfils, built-in or third-party.

A domain is a class with a ``name``, a table ``transfers`` from IR op kind to transfer
function ``f(domain, node, *input_states) -> state``, and three hooks the engine and
the API call. Register it with :func:`verifier.domains.register_domain`, or from another
package through the entry-point group ``verifier.domains``.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar

import networkx as nx
import torch


class Domain:
    """Base class of abstract domains (forward ones; backward ones override ``bound``)."""

    name: ClassVar[str] = "abstract"
    description: ClassVar[str] = ""
    transfers: ClassVar[dict[str, Callable]] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.transfers = dict(cls.transfers)  # each subclass owns its table

    @classmethod
    def transfer(cls, *kinds: str):
        """Decorator: register ``fn`` as this domain's transfer function for ``kinds``."""

        def register(fn):
            for kind in kinds:
                cls.transfers[kind] = fn
            return fn

        return register

    # --- hooks ---------------------------------------------------------------------
    def input_state(self, lower: torch.Tensor, upper: torch.Tensor) -> Any:
        raise NotImplementedError

    def constant_state(self, value: torch.Tensor) -> Any:
        raise NotImplementedError

    def concretize(self, state: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Elementwise ``(lower, upper)`` of a state, each ``(B, *shape)``."""
        raise NotImplementedError

    def bound(self, graph: nx.DiGraph, lower: torch.Tensor, upper: torch.Tensor,
              C: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Bounds on the flattened output ``f(x)`` (``(B, n)``) or on ``C·f(x)`` (``(B, k)``)
        for ``x`` in the box. The default runs the engine and applies ``C`` by interval
        arithmetic; domains may do better."""
        from ..engine import propagate
        from ..linalg import interval_matmul

        lb, ub = self.concretize(propagate(graph, self, lower, upper))
        lb, ub = lb.reshape(lb.shape[0], -1), ub.reshape(ub.shape[0], -1)
        if C is None:
            return lb, ub
        return interval_matmul(C, lb, ub)
