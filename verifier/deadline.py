"""Wall-clock budgets shared by the attack, the domains and branch-and-bound.

A :class:`Deadline` can be made *active* for a block (``with deadline.active():``); long
loops inside the domains call :func:`checkpoint`, which raises :class:`Timeout` once the
active deadline has passed. This is how a timeout is honoured within a fraction of a
second even in the middle of one α-CROWN optimisation or one LP.

Timeout contract: a caller that promises an answer within ``T`` seconds starts one
``Deadline(T)`` *after* :func:`warm_up` (the one-time imports and first-use costs that no
loop can interrupt: the first ``torch.optim.Adam`` step imports ``torch._dynamo``, seconds on
a cold process) and passes it down (``verify(..., deadline=...)``); the model load and
fidelity check count against it.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from typing import Iterator


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

    @contextlib.contextmanager
    def active(self) -> Iterator["Deadline"]:
        """Make this the deadline :func:`checkpoint` checks, for the ``with`` block."""
        token = _ACTIVE.set(self)
        try:
            yield self
        finally:
            _ACTIVE.reset(token)


_WARM = False


def warm_up() -> None:
    """Pay once per process, before any clock starts, for what the search would otherwise do
    uninterruptibly on first use: one step of ``torch.optim.Adam`` and of autograd (the first
    optimiser step imports ``torch._dynamo``), and the imports of the complete methods, the LP
    and MILP solvers (scipy HiGHS) and onnxruntime. Idempotent; a fraction of a second after
    the first call's few seconds."""
    global _WARM
    if _WARM:
        return
    import torch

    param = torch.zeros(2, requires_grad=True)
    opt = torch.optim.Adam([param], lr=0.1)
    (param * param).sum().backward()
    opt.step()
    opt.zero_grad()
    import onnxruntime  # noqa: F401
    import scipy.optimize  # noqa: F401
    import scipy.sparse  # noqa: F401

    from .complete import activation_split, beta_crown, input_split, methods, milp, relu_split  # noqa: F401
    from .domains import alpha_crown, crown, lp  # noqa: F401
    _WARM = True


def checkpoint() -> None:
    """Raise :class:`Timeout` if the active deadline (if any) has passed."""
    deadline = _ACTIVE.get()
    if deadline is not None and deadline.expired():
        raise Timeout()


def remaining() -> float:
    """Seconds left on the active deadline (``inf`` without one)."""
    deadline = _ACTIVE.get()
    return float("inf") if deadline is None else deadline.remaining()
