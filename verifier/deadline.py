"""Wall-clock budgets shared by the attack, the domains and branch-and-bound."""

from __future__ import annotations

import time


class Timeout(Exception):
    """Raised when a :class:`Deadline` has passed."""


class Deadline:
    """A point in time; ``check()`` raises :class:`Timeout` once it has passed."""

    def __init__(self, seconds: float | None):
        self.start = time.monotonic()
        self.end = None if seconds is None else self.start + float(seconds)

    def remaining(self) -> float:
        return float("inf") if self.end is None else self.end - time.monotonic()

    def expired(self) -> bool:
        return self.remaining() <= 0

    def check(self) -> None:
        if self.expired():
            raise Timeout()

    def elapsed(self) -> float:
        return time.monotonic() - self.start
