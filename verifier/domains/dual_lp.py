"""The Wong–Kolter dual LP bound (seed 003: Wong & Kolter 2018, eq. 7 and Algorithm 1)."""

from __future__ import annotations

from ..errors import VerifierInputError
from ..ops import AFFINE_KINDS
from . import register_domain
from .backward import BackwardDomain


@register_domain
class DualLPDomain(BackwardDomain):
    """Wong–Kolter dual network bound (seed 003, eq. 7 and Algorithm 1).

    For ``ν_K = −c``, ``ν̂_i = W_iᵀ ν_{i+1}``, ``ν_i = D_i ν̂_i`` with ``D = 0`` (dead),
    ``1`` (active), ``u/(u−ℓ)`` (crossing), the bound is
    ``J = −Σ ν_{i+1}ᵀ b_i − xᵀ ν̂₁ − ε‖ν̂₁‖₁ + Σ_crossing ℓ_ij [ν_ij]₊``. This is the backward
    pass with both ReLU lines of slope ``u/(u−ℓ)`` (the upper one through ``(ℓ, 0)``), so it
    runs on the shared backward engine with the ``parallel`` slope policy; layer bounds
    (Algorithm 1) are the same recursion started from ``±I`` at each layer.
    Supported: affine ops (dense, conv, residual add, reshapes) and ReLU.

    ``projections=K`` switches to the random Cauchy projection estimate
    (:mod:`verifier.domains.projections`): faster on wide layers, for training only —
    it is **not a sound bound** and ``verify`` refuses it.
    """

    name = "dual-lp"
    description = "Wong-Kolter dual LP bound (ReLU networks)"
    policy = "parallel"

    ALLOWED = {"input", "constant", "relu"}

    def __init__(self, intermediate: str = "crown", norm: float = float("inf"), projections: int | None = None,
                 seed: int | None = None):
        super().__init__(intermediate, norm)
        self.projections, self.seed = projections, seed

    def supports(self, graph):
        """Affine ops and ReLU only (the paper's setting)."""
        return [(d.get("source", n), f"the dual-lp domain handles affine ops and ReLU only, not '{d['kind']}'")
                for n, d in graph.nodes(data=True) if d["kind"] not in self.ALLOWED | AFFINE_KINDS]

    def mirrorable(self, graph) -> bool:
        """On affine + ReLU networks both lines of a crossing ReLU have slope ``u/(u − ℓ)``:
        ``±c`` in one pass (:meth:`~verifier.domains.backward.BackwardDomain.mirrored_bound`)."""
        return not self.supports(graph)

    def _check(self, graph) -> None:
        bad = sorted({d["kind"] for _, d in graph.nodes(data=True)} - self.ALLOWED - AFFINE_KINDS)
        if bad:
            raise VerifierInputError(f"the dual-lp domain handles networks of affine ops and ReLU only; "
                                     f"this model has {', '.join(bad)} (use crown or alpha-crown)")

    def lower_bound(self, graph, lower, upper, C=None, alpha=None, bounds=None, visit=None):
        """One backward pass of the lower rows (the projected estimate's lower half with
        ``projections``)."""
        self._check(graph)
        if self.projections:
            return self.bound(graph, lower, upper, C)[0]
        return super().lower_bound(graph, lower, upper, C, alpha, bounds, visit)

    def bound(self, graph, lower, upper, C=None):
        self._check(graph)
        if self.projections:
            from .projections import ProjectedDualDomain

            return ProjectedDualDomain(self.projections, self.seed).bound(graph, lower, upper, C)
        return super().bound(graph, lower, upper, C)
