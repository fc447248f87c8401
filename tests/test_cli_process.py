"""The command line as a process: SIGINT/SIGTERM end every command cleanly (``verify``
still reports, ``--json`` one JSON object with the verdict ``timeout``), a failed stdout
is an ``error:`` line (exit 2) and a closed pipe a quiet exit, ``--debug`` works before and
after the command, and ``python -m verifier`` runs the CLI.

The signals are real: the tests send them to their own process (with ``os.kill``) while
``main`` runs, from inside the command, so they arrive at a known stage."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

import verifier.cli as cli
import verifier.verify
from verifier.records import VERIFY_SCHEMA

from cli_helpers import run
from conftest import REPO

CASES = REPO / "tests" / "cases"
SMALL = CASES / "models" / "small5x3.onnx"
GOOD_SPEC = CASES / "spec" / "s_good.vnnlib"

jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is in the test extra: pip install -e '.[test]'")


@pytest.fixture(autouse=True)
def safety_net():
    """While a test runs, SIGINT and SIGTERM that ``main`` did not take over fail the test
    instead of killing pytest (what SIGTERM's default action would do)."""
    def unhandled(signum, frame):
        raise RuntimeError(f"{signal.Signals(signum).name} reached the test: main did not handle it")

    before = {sig: signal.signal(sig, unhandled) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in before.items():
        signal.signal(sig, handler)


def _signal_during_verify(monkeypatch, signum: int) -> list:
    """Make ``verify()`` send ``signum`` to this process once the model and spec are loaded
    (as a user's Ctrl-C or a harness's SIGTERM would during the search); the list records
    that it ran."""
    ran = []

    def interrupted_search(*args, **kwargs):
        ran.append(True)
        os.kill(os.getpid(), signum)
        raise AssertionError("the signal handler should have raised before this line")

    monkeypatch.setattr(verifier.verify, "verify", interrupted_search)
    return ran


@pytest.mark.parametrize("signum,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_during_verify_json_still_prints_one_record(capsys, monkeypatch, tmp_path, signum, code):
    ran = _signal_during_verify(monkeypatch, signum)
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    result_file = tmp_path / "result.txt"
    got, out, err = run(capsys, "verify", SMALL, GOOD_SPEC, "--json", "--result-file", result_file,
                        "--domain", "crown", "--seed", 7)
    assert ran and got == code, err
    lines = out.strip().splitlines()
    assert len(lines) == 1, out
    record = json.loads(lines[0])
    jsonschema.Draft202012Validator(VERIFY_SCHEMA).validate(record)
    name = signal.Signals(signum).name
    assert record["result"] == "timeout" and record["decided_by"] is None and record["counterexample"] is None
    assert record["notes"] == [f"interrupted by {name} after {record['time']['total']:.2f} s; no verdict"]
    assert record["regions"] == [{"index": 0, "decided_by": None, "notes": []}]  # the spec was read
    assert record["options"]["seed"] == 7 and record["domain"] == "crown"
    assert record["result_file"] == str(result_file) and result_file.read_text() == "timeout\n"
    err_lines = err.strip().splitlines()
    assert len(err_lines) == 1 and err_lines[0].startswith(f"error: interrupted by {name}"), err
    assert "Traceback" not in err
    assert {sig: signal.getsignal(sig) for sig in before} == before  # main restores the handlers


def test_signal_during_verify_text_is_one_error_line(capsys, monkeypatch):
    _signal_during_verify(monkeypatch, signal.SIGTERM)
    code, out, err = run(capsys, "verify", SMALL, GOOD_SPEC)
    assert code == 143 and "result:" not in out
    assert err.strip().splitlines() == [err.strip()] and err.startswith("error: interrupted by SIGTERM")


def test_interrupt_while_loading_the_commands_is_not_a_traceback(capsys, monkeypatch):
    """Ctrl-C while the plugin commands (and their imports) load: one line, exit 130."""
    def interrupted_import(sub):
        os.kill(os.getpid(), signal.SIGINT)
        raise AssertionError("not reached")

    monkeypatch.setattr(cli, "add_plugin_commands", interrupted_import)
    code, out, err = run(capsys, "domains")
    assert code == 130 and out == ""
    assert err == "error: interrupted by SIGINT\n"


def test_sigterm_in_another_command_exits_143(capsys, monkeypatch):
    def terminated(args):
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("not reached")

    monkeypatch.setattr(cli, "cmd_domains", terminated)
    code, out, err = run(capsys, "domains")
    assert code == 143 and err == "error: interrupted by SIGTERM\n"


def _verifier(*argv: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "verifier", *argv], capture_output=True, text=True, timeout=300,
                          **kwargs)


def test_python_dash_m_verifier_runs_the_cli():
    done = _verifier("domains")
    assert done.returncode == 0, done.stderr
    assert {"box", "crown", "milp", "activation-split"} <= {line.split()[0] for line in done.stdout.splitlines()
                                                            if line.strip()}


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_a_full_stdout_is_an_error_line_not_an_internal_error():
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "verifier", "domains"], stdout=full, stderr=subprocess.PIPE,
                              text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert done.stderr == "error: cannot write to stdout (No space left on device)\n"


@pytest.mark.parametrize("argv", [["--debug", "domains"], ["domains", "--debug"]])
def test_debug_before_or_after_the_command(argv):
    assert cli.build_parser().parse_args(argv).debug is True
    assert cli.build_parser().parse_args(argv[1:] if argv[0] == "--debug" else argv[:1]).debug is False


def test_every_command_takes_debug():
    commands = cli.build_parser()._subparsers._group_actions[0].choices  # plugin commands included
    assert {"verify", "bounds", "check", "vnncomp", "report", "domains", "ops"} <= set(commands)
    for name, sub in commands.items():
        assert "--debug" in sub._option_string_actions, name


def test_debug_after_the_command_shows_the_traceback(capsys, monkeypatch):
    def broken(args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(cli, "cmd_domains", broken)
    code, out, err = run(capsys, "domains")
    assert code == 3 and "internal error (RuntimeError: a bug)" in err
    with pytest.raises(RuntimeError, match="a bug"):
        cli.main(["domains", "--debug"])


def _imports_torch_eagerly() -> bool:
    """Whether ``import verifier`` imports torch (then a Ctrl-C during that import, before
    :func:`verifier.cli.main` runs, is Python's own KeyboardInterrupt with its traceback)."""
    done = subprocess.run([sys.executable, "-c", "import sys, verifier; print('torch' in sys.modules)"],
                          capture_output=True, text=True, timeout=300)
    return done.stdout.strip() == "True"


@pytest.mark.parametrize("delay", [0.6, 1.5, 3.0])
def test_a_real_ctrl_c_at_any_time_is_never_a_traceback(tmp_path, delay):
    """A real SIGINT at several moments (imports, parsing, loading, the search) of a long
    ``verify --json``: exit 130, one ``error:`` line, no traceback, stdout empty or one
    valid JSON record. (Not in the first tenths of a second: no program can handle a signal
    while the interpreter itself starts.)"""
    if _imports_torch_eagerly():
        pytest.skip("verifier/__init__.py imports torch before main() can install its handlers")
    import time

    argv = [sys.executable, "-m", "verifier", "verify", str(REPO / "models" / "mnist_small.onnx"),
            str(REPO / "models" / "properties" / "mnist_5_eps0.3.vnnlib"), "--no-attack", "--domain", "alpha-crown",
            "--domain-option", "iterations=1000000", "--json"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert err.startswith("error: interrupted by SIGINT"), err
    if out:
        jsonschema.Draft202012Validator(VERIFY_SCHEMA).validate(json.loads(out))


def test_a_signal_after_the_verdict_keeps_the_verdict(capsys, monkeypatch, tmp_path):
    """SIGTERM while the result file is being written: the verdict already reached is what
    the file and the JSON record say, not ``timeout``."""
    import verifier.counterexample

    write = verifier.counterexample.write_result
    calls = []

    def terminated_write(*args, **kwargs):
        calls.append(args)
        os.kill(os.getpid(), signal.SIGTERM)  # ignored the second time: the report is being written
        return write(*args, **kwargs)

    monkeypatch.setattr(verifier.counterexample, "write_result", terminated_write)
    result_file = tmp_path / "result.txt"
    code, out, err = run(capsys, "verify", SMALL, GOOD_SPEC, "--json", "--result-file", result_file,
                         "--domain", "box")
    record = json.loads(out)
    assert code == 143 and len(calls) == 2, err
    assert record["result"] in ("sat", "unsat", "unknown") and not any("interrupted" in n for n in record["notes"])
    assert result_file.read_text().split()[0] == record["result"]
    assert err.startswith(f"error: interrupted by SIGTERM after the verdict ({record['result']})")


def _swallowed_signal_then_failure(signum: int):
    """What a signal landing inside an extension module's initialisation does: the library
    swallows the exception, and the run fails later on the half-imported module (seen for
    real: a Ctrl-C about 1 s into ``verify`` gave ``RecursionError`` in numpy's
    ``__getattr__``, exit 3)."""
    def command(*args, **kwargs):
        try:
            os.kill(os.getpid(), signum)
        except KeyboardInterrupt:
            pass  # swallowed, as C code can
        raise RecursionError("maximum recursion depth exceeded")

    return command


def test_a_failure_after_a_swallowed_signal_is_the_interrupt_not_an_internal_error(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(cli, "_verify", _swallowed_signal_then_failure(signal.SIGINT))
    result_file = tmp_path / "result.txt"
    code, out, err = run(capsys, "verify", SMALL, GOOD_SPEC, "--json", "--result-file", result_file)
    assert code == 130, err
    record = json.loads(out)
    assert record["result"] == "timeout" and record["notes"][0].startswith("interrupted by SIGINT")
    assert result_file.read_text() == "timeout\n"
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: interrupted by SIGINT"), err

    monkeypatch.setattr(cli, "cmd_domains", _swallowed_signal_then_failure(signal.SIGTERM))
    code, out, err = run(capsys, "domains")
    assert code == 143 and err == "error: interrupted by SIGTERM\n"
    monkeypatch.setattr(cli, "cmd_domains", lambda args: 1 / 0)  # no signal this time: an internal error
    code, out, err = run(capsys, "domains")
    assert code == 3 and "ZeroDivisionError" in err


def test_a_swallowed_signal_does_not_make_the_run_unstoppable(capsys, monkeypatch):
    """After a first SIGINT some library swallowed, the run went on with SIGINT and SIGTERM
    ignored (only SIGKILL could stop it). A signal after the grace period raises again; one
    within it (the same Ctrl-C pressed twice) is ignored."""
    import time

    from verifier import cli_process

    monkeypatch.setattr(cli_process, "GRACE_SECONDS", 0.2)
    seen = []

    def command(args):
        for signum in (signal.SIGINT, signal.SIGINT):  # the second within the grace period
            try:
                os.kill(os.getpid(), signum)
            except KeyboardInterrupt:
                seen.append(signum)  # swallowed, as C code can
        time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGTERM)  # later: stops the run
        raise AssertionError("not reached")

    monkeypatch.setattr(cli, "cmd_domains", command)
    code, out, err = run(capsys, "domains")
    assert seen == [signal.SIGINT] and code == 143, err  # the signal that stopped the run
    assert err == "error: interrupted by SIGTERM\n"
