"""What the ``verifier`` command line does as a process: signals and stdout failures.

- :func:`signals_raised`: inside the block, SIGINT and SIGTERM raise :class:`Interrupted`
  (a :class:`KeyboardInterrupt`, so no ``except Exception`` swallows it) in the main
  thread, so every command ends cleanly: ``verify`` still reports (``--json``: one JSON
  object, verdict ``timeout``), the others print one ``error: interrupted …`` line. Exit
  code ``128 + signal number``, the shell convention: 130 for SIGINT, 143 for SIGTERM.
  :func:`received_interrupt` tells whether one came, for a failure that follows a signal
  some C code swallowed.
- :func:`show_warning`: the verifier's own warnings (the IR cache's) as ``warning:`` lines,
  even where the CLI hides library warnings; :func:`shown` keeps a message on one line.
- :func:`guarded_stdout`: inside the block a failing write to stdout (``> /dev/full``, a
  disk that fills) raises :class:`StdoutError` (the CLI prints ``error: cannot write to
  stdout …``, exit 2) instead of an internal error; a closed pipe (``| head``) keeps
  raising ``BrokenPipeError``, which the CLI answers by stopping quietly.

Only the standard library is imported here, so the handlers are in place before the
first heavy import (torch takes seconds to import).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from typing import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived: ``signum``, ``name`` (``'SIGINT'``/``'SIGTERM'``) and
    ``exit_code`` (``128 + signum``: 130 for SIGINT, 143 for SIGTERM)."""

    def __init__(self, signum: int):
        self.signum = int(signum)
        self.name = signal.Signals(signum).name
        self.exit_code = 128 + self.signum
        super().__init__(self.name)


def interrupt_of(exc: KeyboardInterrupt) -> Interrupted:
    """``exc`` as an :class:`Interrupted` (a plain ``KeyboardInterrupt``, raised by Python's
    own handler before :func:`signals_raised` took over, is SIGINT)."""
    return exc if isinstance(exc, Interrupted) else Interrupted(signal.SIGINT)


_RECEIVED: list[int] = []  # the signals _raise_interrupted took since signals_raised() began
_ANSWERING = [False]  # the command is answering an interrupt (answering_interrupt): ignore more
_FIRST_AT = [0.0]  # time.monotonic() of the first signal
GRACE_SECONDS = 1.0  # a second signal this soon after the first is taken as the same Ctrl-C


def _raise_interrupted(signum: int, frame) -> None:
    """The handler: record the signal and raise :class:`Interrupted`. Further SIGINT/SIGTERM
    go to :func:`_raise_again`, which ignores them while the command reports (a second
    Ctrl-C must not cut the JSON record in half)."""
    _RECEIVED.append(int(signum))
    _FIRST_AT[0] = time.monotonic()
    for sig in SIGNALS:
        signal.signal(sig, _raise_again)
    raise Interrupted(signum)


def _raise_again(signum: int, frame) -> None:
    """The handler after a first signal: ignored while the command answers it
    (:func:`answering_interrupt`) or within :data:`GRACE_SECONDS` of it; later, the first
    :class:`Interrupted` was evidently swallowed by library code (an extension module's
    import can), and the run must still be stoppable: raise again."""
    _RECEIVED.append(int(signum))
    if _ANSWERING[0] or time.monotonic() - _FIRST_AT[0] < GRACE_SECONDS:
        return
    raise Interrupted(signum)


def answering_interrupt() -> None:
    """The command line starts answering an :class:`Interrupted` (its report, its ``error:``
    line): from now on SIGINT and SIGTERM are ignored (main thread only; elsewhere Python
    cannot change handlers, and :func:`_raise_again` ignores them anyway)."""
    _ANSWERING[0] = True
    if threading.current_thread() is threading.main_thread():
        for sig in SIGNALS:
            if signal.getsignal(sig) in (_raise_interrupted, _raise_again):
                signal.signal(sig, signal.SIG_IGN)


def received_interrupt() -> Interrupted | None:
    """The :class:`Interrupted` of the first SIGINT/SIGTERM taken inside the current
    :func:`signals_raised` block, or ``None``. A signal can land inside library code that
    swallows the exception (an extension module's initialisation during an import): the run
    then fails later on a half-imported module (a ``RecursionError`` in numpy's
    ``__getattr__``), and that failure is the interrupt's doing, not an internal error."""
    return Interrupted(_RECEIVED[0]) if _RECEIVED else None


@contextlib.contextmanager
def signals_raised() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise :class:`Interrupted` in the main thread;
    the previous handlers are restored on exit. Outside the main thread (where Python
    cannot install handlers) and for a signal the parent process set to be ignored (a
    background job's SIGINT), nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in SIGNALS}
    _RECEIVED.clear()
    _ANSWERING[0] = False
    for sig in SIGNALS:
        if previous[sig] is not signal.SIG_IGN:
            signal.signal(sig, _raise_interrupted)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def shown(text: str) -> str:
    """``text`` with invisible and control characters (a BOM, zero-width spaces, newlines)
    escaped as in ``repr``, so an error message stays one readable line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


# the start of the IR cache's own warnings (verifier.ir.cache_folder.WARNING_PREFIX): shown as
# one "warning:" line even where library warnings are hidden (README "The IR cache")
CACHE_WARNING = "IR cache: "


def show_warning(show):
    """A ``warnings.showwarning`` that prints the verifier's own warnings (the IR cache's,
    :data:`CACHE_WARNING`) as one ``warning: …`` line on stderr, and others with ``show``
    (the function it replaces)."""
    def shown_warning(message, category, filename, lineno, file=None, line=None):
        if str(message).startswith(CACHE_WARNING):
            print(f"warning: {shown(str(message))}", file=sys.stderr if file is None else file)
        else:
            show(message, category, filename, lineno, file, line)

    return shown_warning


class StdoutError(Exception):
    """Writing to stdout failed (other than a closed pipe); the message names stdout and the
    reason, e.g. ``cannot write to stdout (No space left on device)``."""


class _GuardedStream:
    """A proxy of a text stream whose ``write``/``flush`` turn an ``OSError`` other than
    ``BrokenPipeError`` into :class:`StdoutError`; everything else is the stream's own."""

    def __init__(self, stream):
        self._stream = stream

    def _guard(self, call, *args):
        try:
            return call(*args)
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise StdoutError(f"cannot write to stdout ({exc.strerror or exc})") from None

    def write(self, text: str) -> int:
        return self._guard(self._stream.write, text)

    def writelines(self, lines) -> None:
        return self._guard(self._stream.writelines, lines)

    def flush(self) -> None:
        return self._guard(self._stream.flush)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


@contextlib.contextmanager
def guarded_stdout() -> Iterator[None]:
    """Within the block ``sys.stdout`` is a :class:`_GuardedStream` of itself; it is flushed
    before the block ends (so a failure of buffered output surfaces here, not at interpreter
    exit) and restored afterwards."""
    stream = sys.stdout
    if stream is None:  # pythonw, or stdout closed by the parent
        yield
        return
    sys.stdout = _GuardedStream(stream)
    try:
        yield
        sys.stdout.flush()
    finally:
        sys.stdout = stream


def discard_stdout() -> None:
    """Point the process's stdout at ``/dev/null`` after a failed or closed stdout, so that
    the interpreter's last flush of the unwritten buffer does not fail a second time (and
    print "Exception ignored …" with exit code 120). A stdout without a file descriptor
    (captured by a test) is left alone."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def leave_now(code: int) -> None:
    """Flush stdout and stderr and end the process with ``code`` at once (``os._exit``),
    skipping interpreter shutdown (0.5–1.3 s under load after torch was imported, with
    nothing left to do); if a flush fails, return, and the normal exit reports it. Only for
    the program itself, once its files are written and closed: never in a library call."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:
        return
    os._exit(code)
