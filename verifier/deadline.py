"""Wall-clock budgets shared by the attack, the domains and branch-and-bound.

A :class:`Deadline` can be made *active* for a block (``with deadline.active():``); long
loops inside the domains call :func:`checkpoint`, which raises :class:`Timeout` once the
active deadline has passed. This is how a timeout is honoured within a fraction of a
second even in the middle of one α-CROWN optimisation or one LP.

Timeout contract: a caller that promises an answer within ``T`` seconds starts one
``Deadline(T)`` *after* :func:`warm_up` (the one-time imports and first-use costs that no
loop can interrupt: the first ``torch.optim.Adam`` step imports ``torch._dynamo``, seconds on
a cold process) and passes it down (``verify(..., deadline=...)``); the model load and
fidelity check count against it. ``verify`` warms up the optimisers only when its method
uses one, and extends a deadline it was given by the time that took.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from typing import TYPE_CHECKING, Iterator

if TYPE_CHECKING:
    import torch


class Timeout(Exception):
    """Raised when a :class:`Deadline` has passed."""


_ACTIVE: contextvars.ContextVar["Deadline | None"] = contextvars.ContextVar("verifier_deadline", default=None)


class Deadline:
    """A point in time; ``check()`` raises :class:`Timeout` once it has passed."""

    def __init__(self, seconds: float | None):
        self.start = time.monotonic()
        self.end = None if seconds is None else self.start + float(seconds)
        self.seconds = None if seconds is None else float(seconds)

    def remaining(self) -> float:
        return float("inf") if self.end is None else self.end - time.monotonic()

    def expired(self) -> bool:
        return self.remaining() <= 0

    def check(self) -> None:
        if self.expired():
            raise Timeout()

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def extend(self, seconds: float) -> None:
        """Move the end (and the start, so :meth:`elapsed` counts only the rest) ``seconds``
        later: for one-time start-up work (:func:`warm_up`) that a running clock must not pay."""
        self.start += seconds
        if self.end is not None:
            self.end += seconds

    @contextlib.contextmanager
    def active(self) -> Iterator["Deadline"]:
        """Make this the deadline :func:`checkpoint` checks, for the ``with`` block."""
        token = _ACTIVE.set(self)
        try:
            yield self
        finally:
            _ACTIVE.reset(token)


_WARM: set[str] = set()


def warm_up(optimizers: bool = True) -> float:
    """Pay once per process, before any clock starts, for what the search would otherwise do
    uninterruptibly on first use: the imports of onnxruntime (counterexamples are confirmed
    with it), the complete methods and CROWN; with ``optimizers`` (the default) also those of
    the LP and MILP solvers (scipy HiGHS), α-CROWN and β-CROWN, and one step of
    ``torch.optim.Adam`` and of autograd (the first optimiser imports ``torch._dynamo``, over
    a second on a cold process). Idempotent; returns the seconds it took (about 0 once done)."""
    start = time.monotonic()
    if "imports" not in _WARM:
        import onnxruntime  # noqa: F401

        from .complete import input_split, methods  # noqa: F401
        from .domains import crown  # noqa: F401
        _WARM.add("imports")
    if optimizers and "optimizers" not in _WARM:
        import scipy.optimize  # noqa: F401
        import scipy.sparse  # noqa: F401
        import torch

        from .complete import activation_split, beta_crown, milp, relu_split  # noqa: F401
        from .domains import alpha_crown, lp  # noqa: F401

        param = torch.zeros(2, requires_grad=True)
        opt = torch.optim.Adam([param], lr=0.1)
        (param * param).sum().backward()
        opt.step()
        opt.zero_grad()
        _WARM.add("optimizers")
    return time.monotonic() - start


def checkpoint() -> None:
    """Raise :class:`Timeout` if the active deadline (if any) has passed."""
    deadline = _ACTIVE.get()
    if deadline is not None and deadline.expired():
        raise Timeout()


def interruptible(output: "torch.Tensor") -> "torch.Tensor":
    """``output`` (a tensor autograd will differentiate), with :func:`checkpoint` hooked
    before every step of its backward pass: a gradient of α-CROWN's bound or of an attack's
    loss through a large network is one uninterruptible call otherwise (seconds on a
    vision transformer), and would carry the search that long past its deadline. A
    deadline that passes during ``output.backward()`` (or ``torch.autograd.grad``) raises
    :class:`Timeout` from it. Returns ``output`` itself; tensors without a graph are
    returned untouched. The hooks go with the graph (freed by the backward pass)."""
    seen, stack = set(), [getattr(output, "grad_fn", None)]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        fn.register_prehook(_check_in_backward)
        stack.extend(f for f, _ in fn.next_functions)
    return output


def _check_in_backward(grads):
    checkpoint()


def remaining() -> float:
    """Seconds left on the active deadline (``inf`` without one)."""
    deadline = _ACTIVE.get()
    return float("inf") if deadline is None else deadline.remaining()
