"""Shared by the patch-form tests (test_backward_speed_parts, test_patch_transposed): a
random box around a normal sample, the ``dense`` switch that turns the patch path off,
a counter of a function's calls, and the α-CROWN rows-and-gradients comparison with the
dense passes."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
import torch

import verifier.domains.backward as backward
import verifier.domains.patches as patches
from verifier.linalg import per_sample_rows


def random_box(model, rng: np.random.Generator, batch: int, width: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(lower, upper)`` ``(batch, *input_shape)`` float64: a box of ``width`` around a
    standard normal sample."""
    x = torch.as_tensor(rng.normal(0, 1, (batch, *model.input_shape)), dtype=torch.float64)
    return x - width / 2, x + width / 2


def count_calls(monkeypatch, owner, name: str, real) -> list[int]:
    """Replace ``owner.name`` by ``real`` counted; returns the one-element call counter."""
    calls = [0]

    def counting(*args, **kwargs):
        calls[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, counting)
    return calls


@pytest.fixture
def dense(monkeypatch):
    """Switch the patch path off (every pass dense) inside a ``with dense():`` block."""
    class Switch:
        def __enter__(self):
            monkeypatch.setattr(backward, "patchable", lambda *a: False)

        def __exit__(self, *exc):
            monkeypatch.setattr(backward, "patchable", patches.patchable)

    return Switch


def assert_alpha_rows_match_dense(dom, graph, target, lower, upper, bounds, rows: int, dense, counter: list[int],
                                  tol: float, what: str) -> None:
    """α-CROWN's bounds of the first ``rows`` entries of ``target`` (random slopes on every
    optimisable node below it) and their gradients with respect to the slopes are equal,
    within ``tol``, with the patch path (which must have run: ``counter[0] > 0``, else
    ``what``) and with every pass dense."""
    l, _ = bounds[target]
    index = per_sample_rows(torch.ones_like(l, dtype=torch.bool).reshape(l.shape[0], -1))[:, :rows]
    R = index.shape[1]
    gen = torch.Generator().manual_seed(1)
    below = nx.ancestors(graph, target)
    alpha = {n: torch.rand((l.shape[0], 2 * R, *graph.nodes[n]["shape"]), dtype=torch.float64,
                           generator=gen).requires_grad_(True)
             for n in dom.optimisable(graph) if n in below}
    assert alpha, "no optimisable node below the target"

    def run():
        lb, ub = dom.bound_rows(graph, target, index, lower, upper, bounds, alpha)
        grads = torch.autograd.grad((lb.sum() - 2 * ub.sum()), list(alpha.values()))
        return lb.detach(), ub.detach(), grads

    fast = run()
    assert counter[0] > 0, what
    with dense():
        slow = run()
    torch.testing.assert_close(fast[0], slow[0], rtol=tol, atol=tol)
    torch.testing.assert_close(fast[1], slow[1], rtol=tol, atol=tol)
    for a, b in zip(fast[2], slow[2]):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)


def assert_bounds_match_dense(dom, graph, lower, upper, dense, counter: list[int], tol: float, what: str,
                              also_off=None):
    """Every intermediate bound and the final bound of ``dom`` are equal, within ``tol``,
    with the patch path (which must have run: ``counter[0] > 0``, else ``what``) and with
    every pass dense (and ``also_off()`` called first, to switch off more); returns the
    patch path's ``(intermediate, final)`` bounds."""
    fast = dom.intermediate_bounds(graph, lower, upper)
    fast_out = dom.bound(graph, lower, upper)
    assert counter[0] > 0, what
    if also_off is not None:
        also_off()
    with dense():
        slow = dom.intermediate_bounds(graph, lower, upper)
        slow_out = dom.bound(graph, lower, upper)
    for n in slow:
        for a, b in zip(fast[n], slow[n]):
            torch.testing.assert_close(a, b, rtol=tol, atol=tol)
    for a, b in zip(fast_out, slow_out):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)
    return fast, fast_out
