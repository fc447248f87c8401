"""DoubleMargin's margin propagation (seed 002) as a small forward domain on the
verifier's engine.

A state is ``(z, s, v)``: the clean activation ``z``, the half-width margin ``s`` and the
finite-difference curvature margin ``v``, each ``(B, *shape)``. Transfers:

* linear ops (``LINEAR_PART``): ``z' = f(z)``, ``s' = |L| s``, ``v' = |L| v``;
* ops non-decreasing in every input entry (``add``, index maps, max-pooling):
  ``s' = f(s) − f(0)`` (and the same for ``v``);
* elementwise activations σ (the relaxation table's kinds):
  ``s' = ½(σ(z+s) − σ(z−s))``, ``v' = ½(σ(z+v) − σ(z−v)) + ½|σ(z+s+v) + σ(z−s−v) − 2σ(z)|``;

Input: ``z₀`` the box centre, ``s₀`` its half-width, ``v₀ = 0``. Not a sound bound.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from verifier.domains.base import Domain
from verifier.linalg import centre_radius
from verifier.ops import FORWARD, LINEAR_PART
from verifier.ops.categories import ANY_ELEMENTWISE, ANY_LINEAR, ANY_MONOTONE


class Margins(NamedTuple):
    z: torch.Tensor
    s: torch.Tensor
    v: torch.Tensor


class MarginDomain(Domain):
    """The forward domain of the module docstring (not registered: training only)."""

    name = "double-margin"
    description = "DoubleMargin's s/v margins (training only; NOT sound)"

    def input_state(self, lower, upper):
        centre, half = centre_radius(lower, upper)
        return Margins(centre, half, torch.zeros_like(half))

    def constant_state(self, value):
        return Margins(value, torch.zeros_like(value), torch.zeros_like(value))

    def concretize(self, state):
        return state.z - state.s - state.v, state.z + state.s + state.v


@MarginDomain.transfer(ANY_LINEAR)
def margin_linear(domain, node, x: Margins) -> Margins:
    part = LINEAR_PART[node["kind"]]
    return Margins(FORWARD[node["kind"]](node, x.z), part(node, x.s, True), part(node, x.v, True))


@MarginDomain.transfer(ANY_MONOTONE)
def margin_monotone(domain, node, *xs: Margins) -> Margins:
    fn = FORWARD[node["kind"]]
    zero = fn(node, *[torch.zeros_like(x.s) for x in xs])
    return Margins(fn(node, *[x.z for x in xs]), fn(node, *[x.s for x in xs]) - zero,
                   fn(node, *[x.v for x in xs]) - zero)


@MarginDomain.transfer(ANY_ELEMENTWISE)
def margin_activation(domain, node, x: Margins) -> Margins:
    fn = FORWARD[node["kind"]]
    f = lambda t: fn(node, t)  # noqa: E731
    z = f(x.z)
    s = 0.5 * (f(x.z + x.s) - f(x.z - x.s))
    v = 0.5 * (f(x.z + x.v) - f(x.z - x.v)) + 0.5 * (f(x.z + x.s + x.v) + f(x.z - x.s - x.v) - 2 * z).abs()
    return Margins(z, s, v)
