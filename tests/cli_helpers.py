"""Running the ``verifier`` CLI in-process and checking the bad-input contract: exit 2, no
verdict, one ``error:`` line naming the problem, never an internal error."""

from __future__ import annotations

from verifier.cli import main


def run(capsys, *argv):
    """``(exit code, stdout, stderr)`` of ``verifier *argv`` (argparse exits included)."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_refused(code, out, err, *words):
    """Exit 2, no ``result:`` line, one ``error:`` line (not an internal error) containing ``words``."""
    assert code == 2, (code, out, err)
    assert "result:" not in out
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "internal error" not in lines[0]
    for word in words:
        assert word in lines[0], lines[0]


def argv_with(command: str, base: dict[str, str], *extra) -> list[str]:
    """``command`` with the options ``base`` (option → value) and then ``extra``; an option
    that ``extra`` gives replaces the base one (the CLI refuses a single-valued option given
    twice). Flags without a value go in ``extra``."""
    given = {str(a) for a in extra if str(a).startswith("--")}
    return [command, *(x for k, v in base.items() if k not in given for x in (k, str(v))), *extra]
