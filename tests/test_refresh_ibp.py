"""``intermediate_bounds(refresh=True)``: the IBP bounds after each bounded node are
recomputed from its tightened bounds before the next node's crossing entries are chosen
(:meth:`verifier.domains.backward.BackwardDomain.intermediate_bounds`). On generator-like
nets, every bound contains the values of sampled inputs, fewer rows are bounded and no
more entries are left crossing. (Not elementwise tighter: an entry the refreshed IBP
already proves stable keeps that bound, which CROWN's pass might have tightened further;
a stable ReLU's relaxation does not depend on it.)"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import verifier.domains.backward as backward
from verifier.domains import get_domain
from verifier.engine import evaluate

sys.path.insert(0, str(Path(__file__).parent))
from test_patch_transposed import generator_net  # noqa: E402

F64 = torch.float64


@pytest.mark.parametrize("seed", [2, 3])
def test_refreshed_bounds_are_sound_and_cheaper(tmp_path, seed, monkeypatch):
    rng = np.random.default_rng(seed)
    model = generator_net(tmp_path, rng, [(4, 4, 2, (1, 1), 0), (3, 4, 2, (0, 0), 0)], [(3, 3, 2, 1), (4, 3, 2, 1)])
    graph = model.graph_for("cpu", F64)
    gen = torch.Generator().manual_seed(0)
    centre = torch.randn((2, *model.input_shape), dtype=F64, generator=gen)
    lower, upper = centre - 0.4, centre + 0.4
    rows = []
    real = backward.BackwardDomain.bound_rows

    def counting(self, graph, n, index, *args, **kwargs):
        rows.append(index.shape[1])
        return real(self, graph, n, index, *args, **kwargs)

    monkeypatch.setattr(backward.BackwardDomain, "bound_rows", counting)
    crown = get_domain("crown")
    plain = crown.intermediate_bounds(graph, lower, upper)
    plain_rows, rows[:] = sum(rows), []
    fresh = crown.intermediate_bounds(graph, lower, upper, refresh=True)
    assert sum(rows) < plain_rows
    crossing = lambda bounds: sum(int(((l < 0) & (u > 0)).sum()) for l, u in bounds.values())  # noqa: E731
    assert crossing(fresh) <= crossing(plain)
    xs = lower[:1] + (upper[:1] - lower[:1]) * torch.rand((400, *lower.shape[1:]), dtype=F64, generator=gen)
    values = evaluate(graph, xs, keep_all=True)
    for n, (l, u) in fresh.items():
        assert bool((values[n] >= l[:1] - 1e-9).all() and (values[n] <= u[:1] + 1e-9).all()), n
