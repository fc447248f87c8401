"""``verifier serve`` (docs/serve.md): a served command gives the answers, files and exit
status of an in-process run; the server refuses another user, another source and a
changed import-time environment (the client then runs the command itself); a stale socket
is ignored; SIGTERM to the client stops the worker (exit 143) and the server keeps
serving; an idle server stops; a served ``verify`` gets no time beyond its client's."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from verifier import serve_client
from verifier.cli import main

from conftest import DEFAULT_MODEL, PROPERTIES, REPO

UNSAT, SAT = PROPERTIES / "mnist_0_eps0.02.vnnlib", PROPERTIES / "mnist_5_eps0.3.vnnlib"


def client_env(path: Path, **extra: str) -> dict[str, str]:
    """The environment of a client that uses the server on ``path``."""
    env = {k: v for k, v in os.environ.items() if k != "VERIFIER_NO_SERVE"}
    return {**env, "VERIFIER_SOCKET": str(path), **extra}


def wait_for(predicate, seconds: float = 180.0) -> None:
    end = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < end, "gave up waiting"
        time.sleep(0.1)


def start(path: Path, code: str | None = None, *args: str) -> subprocess.Popen:
    """A server on ``path`` (``verifier serve`` with ``args``, or the Python ``code``), its
    stderr in ``path.log``; returns once it listens."""
    log = open(f"{path}.log", "a")
    command = [sys.executable, "-c", code] if code else [sys.executable, "-m", "verifier.cli", "serve", *args]
    proc = subprocess.Popen(command, env=client_env(path), stdout=log, stderr=log, cwd=REPO)
    log.close()
    wait_for(lambda: "listening" in log_of(path) or proc.poll() is not None)
    assert proc.poll() is None, log_of(path)
    return proc


def light(path: Path, idle: float = 60, owner: str = "os.getuid()") -> subprocess.Popen:
    """A server without the warm-up, serving uid ``owner`` (a Python expression)."""
    return start(path, f"import os; from verifier.serve import serve; "
                       f"serve({str(path)!r}, {idle}, warm=False, owner_uid={owner})")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def log_of(path: Path) -> str:
    try:
        return Path(f"{path}.log").read_text()
    except FileNotFoundError:
        return ""


def folder(tmp: Path) -> Path:
    """A private folder with a short path (a Unix socket path has at most 107 bytes)."""
    short = Path(f"/tmp/vs-{os.getpid()}-{tmp.name[-20:]}")
    short.mkdir(mode=0o700)
    return short


@pytest.fixture(autouse=True)
def serving(monkeypatch):
    """This module's in-process clients may use a server (the suite may set VERIFIER_NO_SERVE)."""
    monkeypatch.delenv("VERIFIER_NO_SERVE", raising=False)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A warmed-up ``verifier serve --socket PATH --idle-timeout 600``, stopped afterwards."""
    base = folder(tmp_path_factory.mktemp("serve"))
    path = base / "s.sock"
    proc = start(path, None, "--socket", str(path), "--idle-timeout", "600")
    yield path
    stop(proc)
    assert not path.exists()  # the server removes its socket
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def private(tmp_path):
    base = folder(tmp_path)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def cli(args: list, env: dict[str, str], cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "verifier.cli", *map(str, args)], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=300, **kwargs)


def served_count(path: Path) -> int:
    return len(re.findall(r"^verifier serve: pid \d+: exit", log_of(path), re.M))


def counts(path: Path) -> tuple[int, int]:
    """Workers started and clients refused so far by the server on ``path``."""
    text = log_of(path)
    return len(re.findall(r"^verifier serve: pid \d+: verify", text, re.M)), text.count("refused:")


def new_worker(path: Path, started: int, refused: int) -> str:
    """The pid of the worker after the first ``started`` ones the server on ``path`` started;
    fails at once if the server refuses the client instead (the sources were edited while
    the test ran: the server then rightly refuses; rerun)."""

    def ready() -> bool:
        text = log_of(path)
        assert text.count("refused:") == refused, text
        return len(re.findall(r"^verifier serve: pid \d+: verify", text, re.M)) > started

    wait_for(ready)
    return re.findall(r"^verifier serve: pid (\d+): verify", log_of(path), re.M)[started]


def reading_stdin(pid: str) -> bool | None:
    """Whether the process ``pid`` waits in a read from its stdin pipe (``/proc``: its wait
    channel, else its system call); ``None`` where the kernel shows neither."""
    proc = Path("/proc") / pid
    try:
        wchan = (proc / "wchan").read_text().strip()
        if wchan not in ("", "0"):
            return "pipe" in wchan
        call = (proc / "syscall").read_text().split()
    except OSError:
        return None
    if not call or call[0] == "running":
        return False if call else None
    return call[:2] in (["0", "0x0"], ["63", "0x0"])  # read(0, ...) on x86-64 / arm64


def without_times(text: str) -> str:
    return re.sub(r"^time: .*$", "time: -", text, flags=re.M)


@pytest.mark.parametrize("spec, result", [(UNSAT, "unsat"), (SAT, "sat"), (Path("missing.vnnlib"), None)])
def test_served_verify_answers_as_in_process(server, tmp_path, spec, result):
    outcomes = []
    for name, env in (("served", client_env(server)), ("in-process", {**os.environ, "VERIFIER_NO_SERVE": "1"})):
        env["VERIFIER_CACHE_DIR"] = str(tmp_path / f"cache-{name}")  # both import the model afresh
        before = served_count(server)
        result_file = tmp_path / f"{name}.txt"
        done = cli(["verify", DEFAULT_MODEL, spec, "--result-file", result_file.name], env, tmp_path)
        assert served_count(server) == before + (name == "served"), log_of(server)
        outcomes.append((done.returncode, without_times(done.stdout), done.stderr,
                         result_file.read_text() if result_file.exists() else None))
    assert outcomes[0] == outcomes[1], log_of(server)
    code, out, err, written = outcomes[0]
    if result is None:  # bad input: one error line naming the file, exit 2, nothing written
        assert code == 2 and out == "" and written is None
        assert err.startswith("error: ") and "missing.vnnlib" in err and len(err.splitlines()) == 1
    else:
        assert code == 0 and out.splitlines()[-1] == f"result: {result}" and written.startswith(result)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_served_command_reads_the_clients_stdin_and_a_signal_stops_it(server, tmp_path, signum):
    """The worker reads the spec from the client's own stdin (a pipe kept open): SIGTERM or
    SIGINT to the client reaches it, the run ends as an in-process one does (exit 143 / 130,
    result file ``timeout``), and the server goes on serving."""
    before, (started, refused) = served_count(server), counts(server)
    proc = subprocess.Popen([sys.executable, "-m", "verifier.cli", "verify", str(DEFAULT_MODEL), "/dev/stdin",
                             "--result-file", "r.txt"], env=client_env(server), cwd=tmp_path,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    worker = new_worker(server, started, refused)
    if reading_stdin(worker) is None:
        time.sleep(3)  # cannot see it: give the worker time to get there
    wait_for(lambda: reading_stdin(worker) is not False and (time.sleep(0.3) or reading_stdin(worker) is not False))
    proc.send_signal(signum)
    # wait before communicate(): communicate closes the pipe at once, and a worker that sees end of
    # input before the forwarded signal would parse an empty spec (a race of the test, not the tool)
    proc.wait(timeout=120)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 128 + signum, (out, err)
    assert f"interrupted by {signal.Signals(signum).name}" in err
    assert (tmp_path / "r.txt").read_text().strip() == "timeout"
    assert served_count(server) == before + 1 and log_of(server).rstrip().endswith(f"exit {128 + signum}")
    done = cli(["verify", DEFAULT_MODEL, "/dev/stdin"], client_env(server), tmp_path, input=UNSAT.read_text())
    assert done.returncode == 0 and done.stdout.splitlines()[-1] == "result: unsat"
    assert served_count(server) == before + 2


def test_another_source_or_environment_is_refused_and_runs_in_process(server, tmp_path, monkeypatch):
    monkeypatch.setenv("VERIFIER_SOCKET", str(server))
    sock = serve_client.connect(server)
    with sock:
        forged = serve_client.request(["domains"], serve_client.start_time(), digest="0" * 64)
        serve_client.send_message(sock, forged, [0, 1, 2])
        reply, _ = serve_client.receive_message(sock)
    assert "source digest differs" in reply["refused"]
    before = served_count(server)
    monkeypatch.setattr(serve_client, "source_digest", lambda: "another version")
    assert serve_client.served(["domains"]) is None  # nothing ran: the caller runs it itself
    monkeypatch.undo()
    monkeypatch.setenv("VERIFIER_SOCKET", str(server))
    monkeypatch.delenv("VERIFIER_NO_SERVE", raising=False)
    log = log_of(server)
    for argv in (["verify", "m.onnx", "s.vnnlib", "--ray"], ["vnncomp", "bench", "--ray=local"], ["train"],
                 ["--version"], ["serve"]):
        assert serve_client.served(argv) is None, argv  # never served, not even asked
    assert log_of(server) == log
    # a variable read when torch is imported: the server's value would not be this client's
    done = cli(["domains"], client_env(server, OMP_NUM_THREADS="3"), tmp_path)
    assert done.returncode == 0 and "crown" in done.stdout
    assert served_count(server) == before
    assert "environment variable OMP_NUM_THREADS" in log_of(server)


def test_another_users_connection_is_refused(private):
    path = private / "s.sock"
    proc = light(path, owner="os.getuid() + 1")
    try:
        assert serve_client.served(["domains"], path) is None
        wait_for(lambda: "refused a connection of uid" in log_of(path), 30)
    finally:
        stop(proc)


def test_a_stale_socket_is_ignored_and_replaced(private, tmp_path):
    path = private / "s.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens
    assert path.is_socket() and serve_client.served(["domains"], path) is None
    done = cli(["domains"], client_env(path), tmp_path)
    assert done.returncode == 0 and "crown" in done.stdout and done.stderr == ""
    proc = light(path, idle=1)  # a new server takes the path over, and stops when idle
    assert proc.wait(60) == 0 and not path.exists()
    assert "idle for 1 s; stopping" in log_of(path)


def test_a_second_server_and_bad_options_are_refused(server, private, tmp_path):
    for args, words in ((["--socket", server], "already running"),
                        (["--socket", private / "s.sock", "--idle-timeout", "0"], "--idle-timeout"),
                        (["--socket", private / "no" / "s.sock"], "does not exist"),
                        (["--stop", "--detach"], "--stop"),
                        (["--socket", ""], "empty path"),
                        (["--socket", private / "plain.txt"], "is not a socket")):
        (private / "plain.txt").write_text("a user's file")
        done = cli(["serve", *args], {**os.environ, "VERIFIER_NO_SERVE": "1"}, tmp_path)
        assert done.returncode == 2 and done.stderr.startswith("error: ") and words in done.stderr, done.stderr
        assert len(done.stderr.splitlines()) == 1
    assert sorted(p.name for p in private.iterdir() if p.name.startswith("plain")) == ["plain.txt"]  # no .lock/.log


def test_served_deadline_counts_from_the_clients_start(capsys):
    """A client that started 1000 s ago gets no time left: --timeout 60 ends in timeout."""
    started = time.clock_gettime(time.CLOCK_BOOTTIME) - 1000
    assert main(["verify", str(DEFAULT_MODEL), str(UNSAT), "--timeout", "60"], client_started=started) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "result: timeout"
    assert main(["verify", str(DEFAULT_MODEL), str(UNSAT), "--timeout", "60"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "result: unsat"


@pytest.mark.skipif(shutil.which("bash") is None, reason="the VNN-COMP scripts need bash")
def test_prepare_instance_starts_a_server_that_run_instance_uses(private, tmp_path):
    path = private / "s.sock"
    env = client_env(path, VERIFIER_NO_KILL="1", VERIFIER_SERVE_IDLE="60", PYTHON=sys.executable,
                     VERIFIER_CACHE_DIR=str(tmp_path / "cache"))
    scripts = REPO / "scripts" / "vnncomp"
    try:
        done = subprocess.run(["bash", str(scripts / "prepare_instance.sh"), "v1", "mnist", str(DEFAULT_MODEL),
                               str(UNSAT)], capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0, done.stderr
        assert path.is_socket() and "listening on" in log_of(path)
        result = tmp_path / "result.txt"
        done = subprocess.run(["bash", str(scripts / "run_instance.sh"), "v1", "mnist", str(DEFAULT_MODEL),
                               str(UNSAT), str(result), "120"], capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0 and result.read_text().strip() == "unsat", done.stderr
        assert served_count(path) >= 1 and "verify" in log_of(path), log_of(path)  # "refused: ..." says why
    finally:
        subprocess.run([sys.executable, "-m", "verifier.cli", "serve", "--stop", "--socket", str(path)],
                       capture_output=True, env=env, timeout=60)
    wait_for(lambda: not path.exists(), 60)


FORKED_PARALLEL = """
import os, signal, torch
from verifier.serve_worker import fresh_state, warm_up_all
fresh = torch.get_num_threads()
warm_up_all()
a, x = torch.randn(1500, 1500, dtype=torch.float64), torch.randn(5_000_000)
(a @ a).sum(); (x.exp() + x.sin()).sum()  # parallel regions in the server (none today; must stay harmless)
pid = os.fork()
if pid == 0:
    signal.alarm(120)  # a worker hung in its first parallel region dies of SIGALRM
    fresh_state()
    (a @ a).sum(); (x.exp() + x.sin()).sum()
    os._exit(0 if torch.get_num_threads() == fresh else 1)
print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
"""


def test_a_forked_worker_runs_parallel_torch_ops_with_a_fresh_processs_threads():
    done = subprocess.run([sys.executable, "-c", FORKED_PARALLEL], capture_output=True, text=True, timeout=300,
                          cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "2"})
    assert done.returncode == 0 and done.stdout.strip() == "0", (done.stdout, done.stderr)
