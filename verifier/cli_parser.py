"""The ``verifier`` command line's argument parser (:mod:`verifier.cli` builds its commands).

- :class:`Parser`: ``argparse`` that reports a bad command line as one ``error:`` line
  (exit 2), like every other bad input, instead of a usage block, and whose single-valued
  options may be given once (:class:`StoreOnce`).
- :data:`PLUGIN_ERRORS`: plugins whose commands failed to load, named when an unknown
  command is asked for.

Only the standard library is imported here: the parser is built before torch is.
"""

from __future__ import annotations

import argparse
import sys

from .cli_process import shown

PLUGIN_ERRORS: list[str] = []  # "plugin 'NAME' (VALUE) failed to load: ...", filled by cli.add_plugin_commands


class StoreOnce(argparse._StoreAction):
    """argparse's ``store`` for an option that may be given once: a second value (``verify
    --timeout 5 --timeout 600``, where argparse would silently keep the last) is a bad
    command line, reported through :meth:`Parser.error`. Positional arguments store as
    usual; repeatable options say ``action="append"`` and are not affected."""

    def __call__(self, parser, namespace, values, option_string=None):
        if option_string is not None:
            given = parser.given_options
            if self.dest in given:
                parser.error(f"{'/'.join(self.option_strings)} is given twice ({given[self.dest]} and "
                             f"{option_string} {_value_text(values)}); give it once")
            given[self.dest] = f"{option_string} {_value_text(values)}"
        super().__call__(parser, namespace, values, option_string)


def _value_text(values) -> str:
    """An option's parsed value(s) as the error message shows them."""
    return " ".join(map(str, values)) if isinstance(values, list) else str(values)


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line as one ``error:`` line on stderr (exit 2)
    naming the command and its ``--help``, and refuses a single-valued option given twice
    (:class:`StoreOnce`, the default action of every parser and sub-parser built from it)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register("action", None, StoreOnce)
        self.register("action", "store", StoreOnce)
        self.given_options: dict[str, str] = {}

    def parse_known_args(self, args=None, namespace=None):
        """argparse's, with the record of options given reset for this parse."""
        self.given_options = {}  # dest -> how it was given
        return super().parse_known_args(args, namespace)

    def error(self, message: str):
        """Print ``error: PROG: MESSAGE (see PROG --help)`` (plus the plugins that failed to
        load, for an unknown command) and exit with code 2."""
        plugins = "".join(f"; {e}" for e in PLUGIN_ERRORS) if "invalid choice" in message else ""
        print(f"error: {self.prog}: {shown(message + plugins)} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def add_verbosity(parser: argparse.ArgumentParser, default) -> None:
    """Give ``parser`` ``--quiet`` and ``--verbose`` (each unless it has one; ``train`` has
    its own ``--quiet``, which also silences notes), as :func:`add_debug` does ``--debug``."""
    if "--quiet" not in parser._option_string_actions:
        parser.add_argument("--quiet", dest="verbosity", action="store_const", const="quiet", default=default,
                            help="no note: lines on stderr (warnings, errors and the results only)")
    if "--verbose" not in parser._option_string_actions:
        parser.add_argument("--verbose", dest="verbosity", action="store_const", const="verbose", default=default,
                            help="also debug: lines on stderr, the stages of the work as they happen")


def add_debug(parser: argparse.ArgumentParser, default) -> None:
    """Give ``parser`` the ``--debug`` flag (unless it has one). Sub-commands get it with
    ``default=argparse.SUPPRESS``, so that ``verifier --debug CMD`` is not reset by the
    sub-command's own default."""
    if "--debug" not in parser._option_string_actions:
        parser.add_argument("--debug", action="store_true", default=default,
                            help="show tracebacks of internal errors and library warnings")
