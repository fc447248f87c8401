"""Where the library's notes go: Python :mod:`logging`, under the logger ``verifier`` (and
``verifier.<module>`` children, ``verifier_plugins.<module>`` for the plugins).

The library never prints a note itself. A program that imports it decides what it sees,
as with any library: by default Python shows warnings only (``logging.lastResort``), and
``logging.getLogger("verifier").setLevel(logging.DEBUG)`` plus a handler shows everything.
The command line (:func:`configure`) shows

* ``--quiet``: warnings and errors only (no ``note:`` lines; the results themselves —
  verdicts, tables, JSON — are printed on stdout either way);
* default: notes too (``note: …``, e.g. a results row cut by a kill that was left out);
* ``--verbose``: also the stages of the work as they happen (``debug: …``: model import
  and onnxruntime check, each incomplete domain's pass, the search, each benchmark instance).

Each record is one line on stderr, prefixed by its level: ``debug:``, ``note:``,
``warning:``, ``error:``.
"""

from __future__ import annotations

import logging
import sys

PREFIXES = {logging.DEBUG: "debug", logging.INFO: "note", logging.WARNING: "warning", logging.ERROR: "error",
            logging.CRITICAL: "error"}
LEVELS = {"quiet": logging.WARNING, "default": logging.INFO, "verbose": logging.DEBUG}
ROOTS = ("verifier", "verifier_plugins")


class _StderrLines(logging.Handler):
    """One ``level: message`` line per record on the *current* ``sys.stderr`` (looked up at
    each record, so a redirected or captured stderr receives it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = " ".join(record.getMessage().split("\n"))
            print(f"{PREFIXES.get(record.levelno, 'note')}: {text}", file=sys.stderr)
        except Exception:  # a handler must never raise into the code that logged
            self.handleError(record)


def configure(verbosity: str = "default") -> None:
    """Show the library's records at ``verbosity`` (``quiet``, ``default`` or ``verbose``,
    see the module docstring) as one line each on stderr; replaces a previous
    :func:`configure`. Raises ``ValueError`` for another verbosity (a programming error:
    the CLI's flags give only these three)."""
    if verbosity not in LEVELS:
        raise ValueError(f"verbosity {verbosity!r}: one of {', '.join(LEVELS)}")
    reset()
    for name in ROOTS:
        logger = logging.getLogger(name)
        logger.addHandler(_StderrLines())
        logger.setLevel(LEVELS[verbosity])
        logger.propagate = False  # one line per record, whatever the root logger does


def reset() -> None:
    """Undo :func:`configure`: the library's loggers as a program that imports ``verifier``
    finds them (no handler of ours, level unset, records propagate to the root logger)."""
    for name in ROOTS:
        logger = logging.getLogger(name)
        for handler in [h for h in logger.handlers if isinstance(h, _StderrLines)]:
            logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
        logger.propagate = True


def note(logger: logging.Logger, text: str, notes: list[str] | None = None) -> None:
    """``text`` appended to ``notes`` when the caller collects them (they are then part of
    its result), else logged at INFO (``note:``)."""
    if notes is None:
        logger.info(text)
    else:
        notes.append(text)
