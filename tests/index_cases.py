"""Shared machinery of the index/shape/reduction op tests (``test_ops_index*.py``).

:func:`check_model` loads an ONNX model (fidelity check against onnxruntime on) and, in
every domain (box, deepz, crown, crown-ibp, alpha-crown, dual-lp, and lp when small),
bounds it over ``BOXES`` random boxes; onnxruntime's outputs on ≥ 1000 points sampled in
each box must lie inside the bounds (``tol = 1e-5·(1 + |bound|)``). :func:`wrap` puts an
op between optional ReLU layers so that the relaxations around it are not trivial.
"""

from __future__ import annotations

import math

import numpy as np
import torch

import verifier
from onnx_builders import GraphBuilder, Reference, random_box, sample_box, save_model
from box_cases import RTOL, SAMPLES, assert_within

BOXES = 2
LP_MAX = 200  # the LP runs when the input and output sizes are at most this
DOMAINS = {"box": {}, "deepz": {}, "crown": {}, "crown-ibp": {}, "alpha-crown": {"iterations": 3},
           "dual-lp": {}, "lp": {}}


def wrap(g: GraphBuilder, op, pre_relu: bool = False, post_relu: bool = False) -> str:
    """``op(h)`` where ``h`` is the input (or ``relu(a ⊙ x + b)``), then optionally ReLU of
    ``c ⊙ y + d``: the op sits between nonlinear layers."""
    h = g.x
    shape = [int(d) for d in g.input_shape]
    if pre_relu:
        h = g.op("Relu", g.op("Add", g.op("Mul", h, g.rand(*shape)), g.rand(*shape, scale=0.5)))
    y = op(h)
    if post_relu:
        y = g.op("Relu", g.op("Add", y, g.const(np.float32(0.1))))
    return y


def check_model(model, tmp_path, seed: int = 0, centre: float = 0.0, width: float = 2.0,
                domains=tuple(DOMAINS)) -> verifier.Model:
    """Load ``model`` (fidelity on) and check every domain's bounds contain onnxruntime's
    outputs on sampled points of random boxes (see the module docstring)."""
    path = save_model(model, tmp_path, "index")
    loaded = verifier.load(path, check=True)
    assert loaded.fidelity is not None and loaded.fidelity.ok
    rng = np.random.default_rng(seed)
    lo, hi = random_box(rng, loaded.input_shape, centre, width, batch=BOXES)
    ref = Reference(path, per_sample=True)
    ys = [ref.run(sample_box(rng, lo[b], hi[b], SAMPLES)) for b in range(BOXES)]
    small = math.prod(loaded.input_shape) <= LP_MAX and loaded.output_size <= LP_MAX
    for domain in domains:
        if domain == "lp" and not small:
            continue
        lb, ub = verifier.compute_bounds(loaded, torch.from_numpy(lo), torch.from_numpy(hi), domain=domain,
                                         **DOMAINS[domain])
        lb, ub = lb.detach().numpy(), ub.detach().numpy()
        assert np.all(np.isfinite(lb)) and np.all(np.isfinite(ub)), domain
        assert np.all(lb <= ub + RTOL * (1 + np.abs(ub))), domain
        for b in range(BOXES):
            assert_within(ys[b], lb[b], ub[b], f"{domain} output")
    return loaded


def kinds(model: verifier.Model) -> set[str]:
    """The IR op kinds of a loaded model."""
    return {d["kind"] for _, d in model.graph.nodes(data=True)}
