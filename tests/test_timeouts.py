"""The timeout contract (issue 11, class 11) and verify()'s up-front checks of its arguments.

- ``verify(timeout=T)`` returns within about a second of ``T`` with ``timeout`` on a problem
  it cannot decide, for every complete method; one-time start-up work (the first
  ``torch.optim.Adam`` imports ``torch._dynamo``, seconds on a cold process) happens in
  :func:`verifier.deadline.warm_up`, before the clock starts;
- ``verify(deadline=D)`` uses a clock the caller started earlier (model load included);
- a bad ``timeout``/``domain_options``/spec raises :class:`VerifierInputError` before any work.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

import verifier
from test_domain_ordering import relu_mlp
from verifier.deadline import Deadline, warm_up
from verifier.errors import SpecError, VerifierInputError
from verifier.spec.model import Conjunction, InputRegion, Spec
from verifier.verify import verify

pytestmark = pytest.mark.usefixtures("one_torch_thread")

F64 = torch.float64


def _margin_spec(lo, hi, n_out: int, b: float) -> Spec:
    """Unsafe iff ``y_0 − y_1 ≤ b`` on the box ``[lo, hi]``."""
    A = torch.zeros(1, n_out, dtype=F64)
    A[0, 0], A[0, 1] = 1.0, -1.0
    region = InputRegion(torch.as_tensor(lo, dtype=F64), torch.as_tensor(hi, dtype=F64),
                         [Conjunction(A, torch.tensor([b], dtype=F64))])
    return Spec([region], len(lo), n_out, "margin")


@pytest.fixture(scope="module")
def hard_net(tmp_path_factory):
    """A random 40-input ReLU net (3×96) and the spec ``y_0 − y_1 ≤ −10`` on ``[−1, 1]^40``:
    PGD's minimum of ``y_0 − y_1`` is about −1.6 and α-CROWN's lower bound −68, so no method
    decides it in a second (and the attack finds nothing)."""
    warm_up()  # once per process, before any clock (verify() does it too, outside its clock)
    rng = np.random.default_rng(7)
    path = tmp_path_factory.mktemp("timeouts") / "hard.onnx"
    relu_mlp(path, rng, (40, 96, 96, 96, 2))
    model = verifier.load(path)
    return path, model, _margin_spec(np.full(40, -1.0), np.full(40, 1.0), 2, -10.0)


@pytest.mark.parametrize("domain", ["auto", "relu-split", "milp", "alpha-crown"])
def test_timeout_returns_within_a_second(hard_net, domain):
    _, model, spec = hard_net
    timeout = 1.0
    start = time.monotonic()
    result = verify(model, spec, domain=domain, timeout=timeout, attack=domain == "auto")
    wall = time.monotonic() - start
    assert result.status in ("timeout", "unknown"), (result.status, result.notes)
    if domain != "alpha-crown":  # one bound: may end early with unknown
        assert result.status == "timeout", (result.status, result.notes)
    assert result.seconds < timeout + 1.0, result.seconds
    assert wall < timeout + 1.0, wall


def test_input_split_timeout(hard_net, tmp_path):
    """A 6-input net with a threshold just under its minimum: input splitting cannot finish
    in a second and must stop at the deadline."""
    rng = np.random.default_rng(3)
    path = tmp_path / "six.onnx"
    relu_mlp(path, rng, (6, 64, 64, 64, 2))
    model = verifier.load(path)
    x = torch.as_tensor(rng.uniform(-1, 1, (20000, 6)))
    with torch.no_grad():
        y = model(x)
    spec = _margin_spec(np.full(6, -1.0), np.full(6, 1.0), 2, float((y[:, 0] - y[:, 1]).min()) - 1e-3)
    start = time.monotonic()
    result = verify(model, spec, domain="input-split", timeout=1.0, attack=False)
    assert time.monotonic() - start < 2.0
    assert result.status in ("timeout", "unsat"), result.status  # never sat without a confirmed point


def test_started_deadline_is_used(hard_net):
    """``deadline=``: the caller's clock (already running) bounds the run; an expired one
    gives ``timeout`` at once."""
    _, model, spec = hard_net
    expired = Deadline(0.05)
    time.sleep(0.1)
    start = time.monotonic()
    result = verify(model, spec, domain="relu-split", deadline=expired, attack=False)
    assert result.status == "timeout"
    assert time.monotonic() - start < 0.5
    running = Deadline(1.5)
    time.sleep(0.5)  # e.g. the model load, counted against the caller's budget
    result = verify(model, spec, domain="relu-split", deadline=running, attack=False)
    assert result.status == "timeout"
    assert running.elapsed() < 1.5 + 1.0


def test_cold_process_first_optimiser_is_outside_the_clock(hard_net):
    """In a fresh process the first α-CROWN optimisation would import ``torch._dynamo``
    (seconds) inside the deadline; verify() warms up before starting its clock."""
    path, _, spec = hard_net
    lo = spec.regions[0].lower.tolist()
    b = float(spec.regions[0].disjuncts[0].b[0])
    code = textwrap.dedent(f"""
        import torch, verifier
        from verifier.spec.model import Conjunction, InputRegion, Spec
        from verifier.verify import verify
        model = verifier.load({str(path)!r})
        A = torch.tensor([[1.0, -1.0]], dtype=torch.float64)
        lo = torch.tensor({lo!r}, dtype=torch.float64)
        spec = Spec([InputRegion(lo, -lo, [Conjunction(A, torch.tensor([{b!r}], dtype=torch.float64))])], 40, 2)
        r = verify(model, spec, domain="relu-split", timeout=1.0, attack=False)
        print(r.status, r.seconds)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    status, seconds = out.stdout.split()[-2:]
    assert status == "timeout"
    assert float(seconds) < 2.0, seconds


def test_warm_up_is_idempotent_and_cheap_the_second_time():
    warm_up()
    start = time.monotonic()
    warm_up()
    assert time.monotonic() - start < 0.05
    assert "torch._dynamo" in sys.modules


@pytest.mark.parametrize("timeout", [float("nan"), float("inf"), 0, -1.0, "2", True])
def test_bad_timeout_is_an_input_error(hard_net, timeout):
    _, model, spec = hard_net
    with pytest.raises(VerifierInputError, match="timeout"):
        verify(model, spec, timeout=timeout)


@pytest.mark.parametrize("options,domain", [(["batch", 4], "relu-split"), ({1: 2}, "relu-split"),
                                            ({"bogus": 1}, "auto"), ({"batch": 0}, "relu-split"),
                                            ({"iterations": "abc"}, "relu-split"),
                                            ({"time_limit": float("nan")}, "milp")])
def test_bad_domain_options_are_input_errors(hard_net, options, domain):
    _, model, spec = hard_net
    with pytest.raises(VerifierInputError):
        verify(model, spec, domain=domain, domain_options=options, timeout=5)


def test_bad_specs_built_in_code_are_refused(hard_net):
    """verify() validates a spec it did not read: an empty box, a NaN bound or coefficient,
    no region at all — never an answer."""
    _, model, spec = hard_net
    region = spec.regions[0]
    conj = region.disjuncts[0]
    lo = region.lower.clone()
    lo[3] = 2.0  # above its upper bound 1
    nan_lo = region.lower.clone()
    nan_lo[0] = float("nan")
    nan_b = Conjunction(conj.A, torch.tensor([float("nan")], dtype=F64))
    bad = [Spec([InputRegion(lo, region.upper, [conj])], 40, 2),
           Spec([InputRegion(nan_lo, region.upper, [conj])], 40, 2),
           Spec([InputRegion(region.lower, region.upper, [nan_b])], 40, 2),
           Spec([], 40, 2)]
    for s in bad:
        with pytest.raises(SpecError):
            verify(model, s, timeout=5)
