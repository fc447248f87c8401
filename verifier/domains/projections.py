"""Random Cauchy projections of the dual network (Wong et al. 2018) — an *estimate* for
training, not a sound bound.

With parallel ReLU slopes ``d = u/(u−ℓ)`` the dual network is the zonotope
``a + Σ_j G_j e_j`` of DeepZ, and every bound needs the ℓ1 norms ``Σ_j |G_j|``. Instead of
carrying all ``m`` generators, carry ``k`` random combinations ``P = Σ_j G_j c_j`` with
i.i.d. standard Cauchy ``c_j``: each entry of ``P`` is Cauchy with scale ``Σ_j |G_j|``, so
``median_k |P|`` estimates the ℓ1 norm at cost ``k`` instead of ``m``. The estimate can
fall below the true norm: never use it to certify.
"""

from __future__ import annotations

import torch

from ..engine import propagate
from ..linalg import centre_radius, spec_matrix
from .deepz import DeepZDomain, Zonotope


class ProjectedDualDomain(DeepZDomain):
    """DeepZ transfer functions on ``k`` Cauchy projections of the generators."""

    name = "dual-lp-projected"
    description = "Cauchy-projection estimate of the dual LP bound (training only; NOT sound)"

    def __init__(self, projections: int = 50, seed: int | None = None):
        super().__init__()
        if projections < 1:
            raise ValueError("projections must be at least 1")
        self.k = int(projections)
        self.generator = None if seed is None else torch.Generator().manual_seed(seed)

    def _cauchy(self, shape, like: torch.Tensor) -> torch.Tensor:
        u = torch.rand(shape, generator=self.generator, dtype=torch.float64).to(like)
        return torch.tan(torch.pi * (u - 0.5))

    def input_state(self, lower, upper):
        centre, radius = centre_radius(lower, upper)
        self.symbols = self.k
        return Zonotope(centre, radius.unsqueeze(1) * self._cauchy((lower.shape[0], self.k, *lower.shape[1:]), lower))

    def concretize(self, state):
        radius = state.generators.abs().median(dim=1).values
        return state.centre - radius, state.centre + radius

    def extend(self, scaled, centre, coefficients):
        fresh = coefficients.unsqueeze(1) * self._cauchy((centre.shape[0], self.k, *centre.shape[1:]), centre)
        if scaled.shape[1] < self.k:  # a branch that started from a constant
            scaled = torch.cat([scaled, scaled.new_zeros((scaled.shape[0], self.k - scaled.shape[1], *scaled.shape[2:]))], 1)
        return Zonotope(centre, scaled + fresh)

    def bound(self, graph, lower, upper, C=None):
        z = propagate(graph, self, lower, upper)
        B = z.centre.shape[0]
        flat_c, flat_g = z.centre.reshape(B, -1), z.generators.reshape(B, self.k, -1)
        C = spec_matrix(C, flat_c.shape[1], flat_c)
        centre = torch.einsum("bkn,bn->bk", C, flat_c)
        radius = torch.einsum("bkn,bpn->bkp", C, flat_g).abs().median(dim=-1).values
        return centre - radius, centre + radius
