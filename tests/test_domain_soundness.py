"""Property tests: every abstract domain's bounds are sound for every supported ONNX op.

The op cases are those of :mod:`box_cases` (its ``CASES``: a small random ONNX
model per op and attribute combination). For each (domain × case) and each of a few
hypothesis-drawn random boxes (``BOXES`` of them bounded together in one call), the
domain's bounds on the outputs ``f(x)`` and on ``C·f(x)`` for a random spec matrix ``C``
(``(k, n)`` or ``(B, k, n)``) must contain

* onnxruntime's outputs on ≥ 1000 points sampled uniformly in each box (plus its centre,
  and its corners for small inputs), and
* onnxruntime's outputs on points found by a short projected-gradient attack (signed
  steps on the IR's own differentiable forward ``model(x)``) that maximises and
  minimises each output (a random subset of ``ATTACK_OUTPUTS`` of them when there are
  more) and each row of ``C``,

within ``tol = 1e-5·(1 + |bound|)``. The dual-LP bound is defined for affine + ReLU
networks only: on any other model it must raise a clear ``VerifierInputError``.

There is one test function per domain, ``test_<domain>_bounds_are_sound[case]``. The
sampled and attacked outputs depend on the case and the box, not on the domain, so they
are computed once per (case, box) and shared: every domain's test draws the same boxes
(one hypothesis seed for the session, random unless ``DOMAIN_SOUNDNESS_SEED`` is set;
failures print it). Any installed domain listed in ``DOMAIN_OPTIONS`` is tested; one
that is not installed is skipped.

Then: a regression test for α-CROWN on several boxes per call, and tests on small random
ReLU MLPs: α-CROWN is never looser than CROWN with the same intermediate bounds (and
equals it with 0 iterations), and every domain (the exact LP too) contains the sampled
and attacked outputs.
"""

from __future__ import annotations

import os
import random

import numpy as np
import onnx
import pytest
import torch
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

import verifier
from verifier.domains import available_domains
from verifier.errors import VerifierInputError
from onnx_builders import GraphBuilder, Reference, random_box, sample_box, save_model
from box_cases import BOXES, CASES, RTOL, SAMPLES, Built

N = "N"
SEED = int(os.environ.get("DOMAIN_SOUNDNESS_SEED", random.randrange(2**32)))
ATTACK_STEPS = 20
ATTACK_OUTPUTS = 12  # outputs attacked (both ways) per box, at most
ALPHA_OPTIONS = {"iterations": 10}

# Every domain to test, with the options that keep it fast (one not installed is skipped).
DOMAIN_OPTIONS = {"box": {}, "crown": {}, "crown-ibp": {}, "alpha-crown": ALPHA_OPTIONS, "dual-lp": {}, "deepz": {}}
BACKWARD = {"crown", "crown-ibp", "alpha-crown", "dual-lp"}

# ONNX ops the dual LP must refuse (everything nonlinear but ReLU), and the IR kinds they become.
DUAL_LP_REFUSES = {"LeakyRelu": "leaky_relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "MaxPool": "maxpool"}

SETTINGS = settings(
    max_examples=3, deadline=None, database=None, report_multiple_bugs=False,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: a failure prints its box, that is enough
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.function_scoped_fixture, HealthCheck.differing_executors])

# A box: (seed for the weights, the box and the samples; centre; maximal width). As in
# test_box_soundness, but hypothesis's first (simplest) example is not a (near-)point box.
box_params = st.tuples(
    st.integers(0, 2**32 - 1),
    st.floats(-2.0, 2.0, allow_nan=False),
    st.one_of(st.floats(0.25, 4.0, allow_nan=False), st.floats(1e-3, 0.25, allow_nan=False), st.just(0.0)),
)
spec_params = st.tuples(st.integers(1, 4), st.sampled_from(["k,n", "B,k,n"]))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("domain_soundness")


# --- what each case contains (decides the expected outcome) ----------------------------
def _case_info(name: str) -> dict:
    built = CASES[name][0](np.random.default_rng(0))
    nodes = list(built.model.graph.node)
    ops = {n.op_type for n in nodes}
    pool_ranks = {len(onnx.helper.get_attribute_value(a)) for n in nodes if n.op_type == "MaxPool"
                  for a in n.attribute if a.name == "kernel_shape"}
    return {"ops": ops, "maxpool_not_2d": bool(pool_ranks - {2})}


CASE_INFO = {name: _case_info(name) for name in CASES}


def _marks(domain: str, name: str) -> list:
    info = CASE_INFO[name]
    marks = list(CASES[name][1])
    if domain not in available_domains():
        marks.append(pytest.mark.skip(reason=f"the {domain} domain is not installed"))
    if domain == "dual-lp" and info["ops"] & set(DUAL_LP_REFUSES):
        return marks  # the test checks the documented VerifierInputError
    return marks


# --- checking --------------------------------------------------------------------------
def assert_contains(lo_seen: np.ndarray, hi_seen: np.ndarray, lb: np.ndarray, ub: np.ndarray, what: str) -> None:
    """``[lo_seen, hi_seen]`` (observed extremes) lies in ``[lb − tol, ub + tol]``."""
    low = lo_seen < lb - RTOL * (1 + np.abs(lb))
    high = hi_seen > ub + RTOL * (1 + np.abs(ub))
    if low.any() or high.any():
        j = int(np.argmax(low | high))
        raise AssertionError(
            f"{int(low.sum() + high.sum())} {what} bound(s) violated (DOMAIN_SOUNDNESS_SEED={SEED}); e.g. entry {j}: "
            f"observed [{lo_seen[j]!r}, {hi_seen[j]!r}] not in [{lb[j]!r}, {ub[j]!r}]")


def pgd_points(model, lo: np.ndarray, hi: np.ndarray, directions: np.ndarray, rng,
               steps: int = ATTACK_STEPS) -> np.ndarray:
    """Projected signed-gradient ascent of ``d·model(x)`` over the box, one start point per
    direction. ``lo``/``hi``: ``(B, *in)``; ``directions``: ``(B, m, n)``. Returns the final
    points ``(B, m, *in)`` as float32 values inside the (float32) boxes."""
    B, m = directions.shape[:2]
    lo_t, hi_t = torch.from_numpy(lo).unsqueeze(1), torch.from_numpy(hi).unsqueeze(1)
    width = hi_t - lo_t
    d = torch.from_numpy(directions)
    x = lo_t + width * torch.from_numpy(rng.random((B, m, *lo.shape[1:])))
    for t in range(steps):
        x = x.detach().requires_grad_(True)
        y = model(x.reshape(B * m, *lo.shape[1:])).reshape(B, m, -1)
        (grad,) = torch.autograd.grad((y * d).sum(), x)
        step = 0.5 * 0.8**t * width
        x = torch.minimum(torch.maximum(x.detach() + step * grad.sign(), lo_t), hi_t)
    x32 = x.numpy().astype(np.float32)
    return np.clip(x32, lo[:, None].astype(np.float32), hi[:, None].astype(np.float32))


class Evidence:
    """A case's model on ``BOXES`` random boxes, a random ``C``, and the extremes of the
    outputs onnxruntime gives on sampled and on attacked points of each box."""

    def __init__(self, name: str, box, spec, workdir):
        seed_, centre, width = box
        k, self.c_form = spec
        built: Built = CASES[name][0](np.random.default_rng(seed_))
        path = save_model(built.model, workdir, "case")
        self.model = model = verifier.load(path, check=True)
        assert model.fidelity is not None and model.fidelity.ok
        rng = np.random.default_rng(seed_)
        lo, hi = random_box(rng, model.input_shape, centre, width, batch=BOXES)
        self.lo, self.hi = torch.from_numpy(lo), torch.from_numpy(hi)
        n = model.output_size
        C = rng.normal(size=(BOXES if self.c_form == "B,k,n" else 1, k, n))
        C[..., rng.random(n) < 0.3] = 0.0  # some outputs unused
        self.C = np.broadcast_to(C, (BOXES, k, n))
        self.C_arg = torch.from_numpy(C[0] if self.c_form == "k,n" else C)
        ref = Reference(path, per_sample=built.per_sample, batch_axis=built.batch_axis)

        # Attack directions per box: ±e_j for some outputs j, ±(each row of C).
        outs = np.arange(n) if n <= ATTACK_OUTPUTS else np.sort(rng.choice(n, ATTACK_OUTPUTS, replace=False))
        unit = np.eye(n)[outs]
        dirs = np.stack([np.concatenate([unit, -unit, self.C[b], -self.C[b]]) for b in range(BOXES)])
        attacked = pgd_points(model, lo, hi, dirs, rng)
        assert np.all(attacked >= lo[:, None].astype(np.float32)) and np.all(attacked <= hi[:, None].astype(np.float32))
        ys_attacked = ref.run(attacked.reshape(-1, *lo.shape[1:])).reshape(BOXES, dirs.shape[1], n)

        self.seen = []  # per box: {(kind, "y" | "Cy"): (min, max)}
        for b in range(BOXES):
            xs = sample_box(rng, lo[b], hi[b], SAMPLES)
            assert np.all(xs >= lo[b]) and np.all(xs <= hi[b])
            ys = ref.run(xs)
            assert ys.shape == (len(xs), n), (ys.shape, n)
            seen = {}
            for kind, y in (("sampled", ys), ("PGD-attacked", ys_attacked[b])):
                cy = y @ self.C[b].T
                seen[kind, "y"] = (y.min(0), y.max(0))
                seen[kind, "Cy"] = (cy.min(0), cy.max(0))
            self.seen.append(seen)

    def check(self, lb: torch.Tensor, ub: torch.Tensor, target: str, domain: str) -> None:
        size = self.model.output_size if target == "y" else self.C.shape[1]
        assert lb.dtype == ub.dtype == torch.float64
        assert lb.shape == ub.shape == (BOXES, size), (lb.shape, ub.shape)
        lb, ub = lb.detach().numpy(), ub.detach().numpy()
        assert np.all(np.isfinite(lb)) and np.all(np.isfinite(ub))
        assert np.all(lb <= ub + RTOL * (1 + np.abs(ub)))
        what = "output" if target == "y" else f"C·y (C {self.c_form})"
        for b, seen in enumerate(self.seen):
            for kind in ("sampled", "PGD-attacked"):
                assert_contains(*seen[kind, target], lb[b], ub[b], f"{domain} {what}, box {b}, {kind}")


_EVIDENCE: dict = {}


def evidence(name: str, box, spec, workdir) -> Evidence:
    """Shared by the domains (each domain's test draws the same boxes: one seed)."""
    key = (name, box, spec)
    if key not in _EVIDENCE:
        _EVIDENCE[key] = Evidence(name, box, spec, workdir)
    return _EVIDENCE[key]


# --- the soundness grid: one test function per domain -----------------------------------
def check_domain(domain: str, name: str, box, spec, workdir, device: torch.device) -> None:
    """Bounds computed on ``device`` (the inputs and ``C`` moved there; the model's parameters
    follow the inputs), checked on the CPU against onnxruntime's outputs."""
    ev = evidence(name, box, spec, workdir)
    lo, hi, C_arg = ev.lo.to(device), ev.hi.to(device), ev.C_arg.to(device)
    options = DOMAIN_OPTIONS[domain]
    refused = CASE_INFO[name]["ops"] & set(DUAL_LP_REFUSES)
    if domain == "dual-lp" and refused:
        for C in (None, C_arg):
            with pytest.raises(VerifierInputError) as info:
                verifier.compute_bounds(ev.model, lo, hi, domain=domain, C=C)
            message = str(info.value)
            assert "dual-lp" in message and "ReLU" in message, message
            for op in refused:
                assert DUAL_LP_REFUSES[op] in message, message
        return
    lb, ub = verifier.compute_bounds(ev.model, lo, hi, domain=domain, **options)
    assert lb.device == ub.device == lo.device
    ev.check(lb.cpu(), ub.cpu(), "y", domain)
    lb, ub = verifier.compute_bounds(ev.model, lo, hi, domain=domain, C=C_arg, **options)
    ev.check(lb.cpu(), ub.cpu(), "Cy", domain)


def _domain_test(domain: str):
    """``test_<domain>_bounds_are_sound[case]``. One function per domain, not one grid:
    hypothesis's pytest plugin nests a settings object per parametrised call of a test
    function, and a thousand calls of one function overflow the recursion limit."""

    @pytest.mark.parametrize("name", [pytest.param(name, marks=_marks(domain, name), id=name) for name in CASES])
    @given(box=box_params, spec=spec_params)
    @seed(SEED)
    @SETTINGS
    def test(name, box, spec, workdir, device):
        check_domain(domain, name, box, spec, workdir, device)

    test.__name__ = test.__qualname__ = f"test_{domain.replace('-', '_')}_bounds_are_sound"
    test.__doc__ = f"{domain}: bounds contain sampled and PGD-attacked onnxruntime outputs, for every op case."
    return test


for _domain in DOMAIN_OPTIONS:
    _test = _domain_test(_domain)
    globals()[_test.__name__] = _test
del _domain, _test


# --- α-CROWN on several boxes per call (regression) ------------------------------------------
def _relu_only_model(workdir):
    g = GraphBuilder(np.random.default_rng(0), (N, 1))
    return verifier.load(save_model(g.model(g.op("Relu", g.x)), workdir, "relu"))


@pytest.mark.parametrize("boxes", [2, 3])
def test_alpha_crown_does_not_mix_boxes(boxes, workdir):
    """y = relu(x) on a dead, a crossing and an active box in one call. Before the fix
    (1cdd755) α (B, 2k, *S) was broadcast against the crossing mask (B, *S): a shape error
    unless B == 2k, and with B == 2k (here: 2 boxes, one spec row) box 0 took box 1's
    phase, giving the upper bound −0.5 < relu(x) = 0 on [−2, −1]."""
    model = _relu_only_model(workdir)
    lo = torch.tensor([[-2.0], [-1.0], [0.5]], dtype=torch.float64)[:boxes]
    hi = torch.tensor([[-1.0], [1.0], [1.0]], dtype=torch.float64)[:boxes]
    exact = (torch.tensor([[0.0], [0.0], [0.5]]), torch.tensor([[0.0], [1.0], [1.0]]))
    for C in (None, torch.ones(1, 1, dtype=torch.float64), torch.ones(boxes, 1, 1, dtype=torch.float64)):
        lb, ub = verifier.compute_bounds(model, lo, hi, domain="alpha-crown", C=C)
        assert lb.shape == ub.shape == (boxes, 1)
        assert torch.all(lb <= exact[0][:boxes] + 1e-12) and torch.all(ub >= exact[1][:boxes] - 1e-12), (lb, ub)


# --- ordering on small ReLU MLPs ------------------------------------------------------------
def build_relu_mlp(rng, sizes=(4, 8, 8, 3)) -> Built:
    g = GraphBuilder(rng, (N, sizes[0]))
    h = g.x
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        h = g.op("Gemm", h, g.weight(fan_out, fan_in), g.rand(fan_out, scale=0.5), transB=1)
        if i < len(sizes) - 2:
            h = g.op("Relu", h)
    return Built(g.model(h))


mlp_params = st.tuples(
    st.integers(0, 2**32 - 1),
    st.floats(-1.0, 1.0, allow_nan=False),
    st.floats(0.05, 2.0, allow_nan=False),
    st.sampled_from([(4, 8, 8, 3), (5, 6, 3), (4, 8, 8, 8, 3)]),
)


@given(params=mlp_params, k=st.integers(1, 4))
@settings(SETTINGS, max_examples=10)
def test_alpha_crown_never_looser_than_crown(params, k, workdir):
    """With the same intermediate bounds α-CROWN starts from CROWN's slopes and keeps the
    best value seen, so it is never looser; with 0 iterations it is CROWN."""
    seed_, centre, width, sizes = params
    rng = np.random.default_rng(seed_)
    model = verifier.load(save_model(build_relu_mlp(rng, sizes).model, workdir, "mlp"))
    lo, hi = (torch.from_numpy(a) for a in random_box(rng, model.input_shape, centre, width, batch=BOXES))
    C = torch.from_numpy(rng.normal(size=(k, model.output_size)))
    for intermediate, reference in (("crown", "crown"), ("ibp", "crown-ibp")):
        for spec in (None, C):
            base_lb, base_ub = verifier.compute_bounds(model, lo, hi, domain=reference, C=spec)
            lb, ub = verifier.compute_bounds(model, lo, hi, domain="alpha-crown", C=spec,
                                             intermediate=intermediate, **ALPHA_OPTIONS)
            assert torch.all(lb >= base_lb - 1e-9), (intermediate, lb, base_lb)
            assert torch.all(ub <= base_ub + 1e-9), (intermediate, ub, base_ub)
            lb0, ub0 = verifier.compute_bounds(model, lo, hi, domain="alpha-crown", C=spec,
                                               intermediate=intermediate, iterations=0)
            torch.testing.assert_close(lb0, base_lb, rtol=0, atol=1e-9)
            torch.testing.assert_close(ub0, base_ub, rtol=0, atol=1e-9)


@given(params=mlp_params, k=st.integers(1, 4))
@settings(SETTINGS, max_examples=5)
def test_every_domain_contains_relu_mlp_outputs(params, k, workdir):
    """All domains on ReLU MLPs (several boxes per call): ≥ 1000 samples and the PGD points
    of each box lie inside its bounds, on the outputs and on C·y."""
    seed_, centre, width, sizes = params
    rng = np.random.default_rng(seed_)
    path = save_model(build_relu_mlp(rng, sizes).model, workdir, "mlp")
    model = verifier.load(path)
    lo, hi = random_box(rng, model.input_shape, centre, width, batch=BOXES)
    n = model.output_size
    C = rng.normal(size=(k, n))
    ref = Reference(path)
    dirs = np.broadcast_to(np.concatenate([np.eye(n), -np.eye(n), C, -C]), (BOXES, 2 * (n + k), n))
    attacked = pgd_points(model, lo, hi, np.ascontiguousarray(dirs), rng)
    seen = [(ref.run(sample_box(rng, lo[b], hi[b], SAMPLES)), ref.run(attacked[b])) for b in range(BOXES)]
    lo_t, hi_t = torch.from_numpy(lo), torch.from_numpy(hi)
    for domain, options in {**DOMAIN_OPTIONS, "lp": {}}.items():  # lp: the exact triangle LP, small nets only
        if domain not in available_domains():
            continue
        lb, ub = (t.numpy() for t in verifier.compute_bounds(model, lo_t, hi_t, domain=domain, **options))
        clb, cub = (t.numpy() for t in verifier.compute_bounds(model, lo_t, hi_t, domain=domain,
                                                               C=torch.from_numpy(C), **options))
        for b, (sampled, pgd) in enumerate(seen):
            for kind, y in (("sampled", sampled), ("PGD-attacked", pgd)):
                assert_contains(y.min(0), y.max(0), lb[b], ub[b], f"{domain} output, box {b}, {kind}")
                cy = y @ C.T
                assert_contains(cy.min(0), cy.max(0), clb[b], cub[b], f"{domain} C·y, box {b}, {kind}")
