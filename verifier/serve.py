"""``verifier serve``: a persistent worker that saves each command its start-up (docs/serve.md).

Issue 14: run once per process, as VNN-COMP's ``run_instance.sh`` does, a verdict the
search finds in 0.5 s costs seconds of interpreter start, ``import torch`` and the other
imports, and interpreter exit. The server pays for those once: it imports and warms up
everything a command needs (:func:`verifier.serve_worker.warm_up_all`), then listens on a
Unix socket (:mod:`socketserver`: ``UnixStreamServer`` + ``ForkingMixIn``). For each
connection a handler process checks the peer (same user, ``SO_PEERCRED``), the client's
source digest and import-time environment (:mod:`verifier.serve_client`), forks a worker
and reports its pid and then its exit status. The worker (:mod:`verifier.serve_worker`)
takes on the client's working folder, environment, umask, limits, stdin/stdout/stderr
(passed over the socket, ``SCM_RIGHTS``) and command line, and runs
:func:`verifier.cli.main` on it in-process, so the answers, the files written and the exit
status are those of an in-process run; a ``verify`` deadline counts from the client's
start. The handler kills the worker (its whole process group) when the client goes away
(``timeout --kill-after``, ``kill -9``).

Only the standard library serves; torch and the rest are what the worker runs.
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import socket
import socketserver
import sys
import time
from pathlib import Path

from .errors import VerifierInputError
from .serve_client import (LIMITS, command_of, default_socket, fingerprint_difference, peer_credentials, peer_uid,
                           private_folder, process_fingerprint, receive_message, send_message, source_digest)
from .serve_worker import run_worker, warm_up_all

POLL_SECONDS = 5.0  # how often an idle server looks at its clock and reaps finished handlers


def _log(text: str) -> None:
    """One ``verifier serve: …`` line on the server's stderr."""
    try:
        print(f"verifier serve: {text}", file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


class _Server(socketserver.ForkingMixIn, socketserver.UnixStreamServer):
    """The listening socket; each connection is handled in a forked process (:func:`_handle`)."""

    block_on_close = False  # a stopping server does not wait for running commands
    max_children = 64

    def __init__(self, path: str, digest: str, owner_uid: int, lock, fingerprint: dict):
        self.digest, self.owner_uid, self.handled, self.lock = digest, owner_uid, False, lock
        self.fingerprint = fingerprint  # taken before the imports (torch sets variables of its own)
        super().__init__(path, _Handler)

    def process_request(self, request, client_address) -> None:
        self.handled = True
        sys.stdout.flush()
        sys.stderr.flush()
        super().process_request(request, client_address)


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        _handle(self.server, self.request)


def _handle(server: _Server, conn) -> None:
    """One connection, in its own process: check the peer, read the request, answer a
    ``stop``, refuse a client of another source or environment, else fork the
    worker, send its pid, wait for it (killing it if the client goes away) and send
    ``{"exit": status}``."""
    for sig in (signal.SIGINT, signal.SIGHUP):  # a terminal's signals are the server's, not the commands'
        signal.signal(sig, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the server's own handler (_loop)
    server.lock.close()  # only the server holds the lock: a new one may start while commands finish
    uid = peer_uid(conn)
    if uid != server.owner_uid:
        _log(f"refused a connection of uid {uid} (this server serves uid {server.owner_uid} only)")
        return
    conn.settimeout(10)
    try:
        message, fds = receive_message(conn, max_fds=3)
    except (OSError, ValueError) as exc:
        _log(f"refused a malformed request ({exc})")
        return
    if message is None:
        return
    if message.get("kind") == "stop":
        for fd in fds:
            os.close(fd)
        send_message(conn, {"stopping": True})
        _log("stopping (asked by a client)")
        os.kill(os.getppid(), signal.SIGTERM)
        return
    reason = _refusal(server, message, fds)
    if reason is not None:
        for fd in fds:
            os.close(fd)
        _log(f"refused: {reason}; the client runs the command itself")
        send_message(conn, {"refused": reason})
        return
    conn.settimeout(None)
    if select.select([conn], [], [], 0)[0] and not conn.recv(1, socket.MSG_PEEK):
        _log("the client went away before its command started")  # it runs the command itself
        for fd in fds:
            os.close(fd)
        return
    pid = os.fork()
    if pid == 0:
        run_worker(server, conn, message, fds)  # never returns
    try:
        os.setpgid(pid, pid)  # as the worker does: its group exists before the client can go away
    except OSError:
        pass
    for fd in fds:
        os.close(fd)
    _log(f"pid {pid}: {command_of(message['argv'])} (client pid {peer_credentials(conn)[0]})")
    try:
        send_message(conn, {"pid": pid})
    except OSError:
        pass
    status = _wait(pid, conn)
    try:
        send_message(conn, {"exit": status})
    except OSError:
        pass
    _log(f"pid {pid}: exit {status}")


def _refusal(server: _Server, message: dict, fds: list[int]) -> str | None:
    """Why a ``run`` request is not served (``None``: it is)."""
    if message.get("kind") != "run":
        return f"unknown request kind {message.get('kind')!r}"
    if message.get("digest") != server.digest:
        return "another version or source of the verifier (source digest differs; restart the server)"
    if len(fds) != 3:
        return f"{len(fds)} file descriptors came, not 3 (stdin, stdout, stderr)"
    if not (isinstance(message.get("argv"), list) and all(isinstance(a, str) for a in message["argv"])
            and isinstance(message.get("cwd"), str) and isinstance(message.get("env"), dict)
            and isinstance(message.get("umask"), int) and isinstance(message.get("started"), (int, float))):
        return "malformed request"
    return _limits_refusal(message.get("limits")) or \
        fingerprint_difference(server.fingerprint, message.get("fingerprint") or {})


def _limits_refusal(limits) -> str | None:
    """Why the worker could not take on the client's resource limits (a limit above the
    server's hard limit cannot be raised), or ``None``."""
    import resource

    if not isinstance(limits, dict):
        return "malformed request (limits)"
    for name, value in limits.items():
        if name not in LIMITS or not (isinstance(value, list) and len(value) == 2):
            return f"malformed request (limit {name!r})"
        hard = resource.getrlimit(getattr(resource, name))[1]
        if hard != resource.RLIM_INFINITY and (value[1] == resource.RLIM_INFINITY or value[1] > hard):
            return f"the client's {name} hard limit {value[1]} is above the server's {hard}"
    return None


def _wait(pid: int, conn) -> int:
    """Wait for the worker ``pid``; if the client's connection closes first, kill the
    worker's process group. The exit status, ``128 + N`` for a worker killed by signal N."""
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):  # before Linux 5.3: poll
        pidfd = None
    client_gone = False
    while True:
        if pidfd is None:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done == pid:
                return _exit_code(status)
        watched = ([] if pidfd is None else [pidfd]) + ([] if client_gone else [conn])
        ready, _, _ = select.select(watched, [], [], None if pidfd is not None else 0.05)
        if conn in ready and not conn.recv(1):
            client_gone = True
            _log(f"pid {pid}: the client went away; killing the worker")
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if pidfd is not None and pidfd in ready:
            os.close(pidfd)
            return _exit_code(os.waitpid(pid, 0)[1])


def _exit_code(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def _socket_path(path: str | None) -> Path:
    """The socket path to serve on, its folder made (the default one private, mode 0700) and
    checked; :class:`VerifierInputError` naming ``--socket`` otherwise."""
    if path is not None and not path:
        raise VerifierInputError("--socket: empty path (give the socket's path, or leave --socket out for the default)")
    target = Path(path) if path else default_socket()
    if not path and not os.environ.get("VERIFIER_SOCKET"):
        try:
            target.parent.mkdir(mode=0o700, parents=False, exist_ok=True)
        except OSError as exc:
            raise VerifierInputError(f"cannot make the socket folder {target.parent}: {exc.strerror}") from None
        problem = private_folder(target.parent)
        if problem is not None:
            raise VerifierInputError(f"the socket folder is not private: {problem}; give --socket PATH")
    elif not target.parent.is_dir():
        raise VerifierInputError(f"--socket {target}: the folder {target.parent} does not exist")
    if len(os.fsencode(target)) > 107:
        raise VerifierInputError(f"--socket {target}: longer than a Unix socket path may be (107 bytes)")
    if target.exists() and not (target.is_socket() or target.is_symlink()):  # before the lock, log and fork
        raise VerifierInputError(f"--socket {target} exists and is not a socket; give another path")
    return target


def _lock(path: Path):
    """Hold ``PATH.lock`` for the server's life (``flock``): a second server on the same
    path is refused at once. :class:`VerifierInputError` when one holds it."""
    lock = path.with_name(path.name + ".lock")
    handle = open(os.open(lock, os.O_RDWR | os.O_CREAT, 0o600), "r+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = handle.read().strip()
        handle.close()
        raise _Running(f"a verifier server is already running on {path}" + (f" (pid {owner})" if owner else ""))
    handle.truncate(0)
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


class _Running(VerifierInputError):
    """Another server holds the socket's lock."""


def serve(socket_path: str | None = None, idle_timeout: float | None = None, *, detach: bool = False,
          warm: bool = True, owner_uid: int | None = None) -> int:
    """Run a server on ``socket_path`` (default :func:`verifier.serve_client.default_socket`)
    until SIGINT/SIGTERM, a client's ``stop``, or ``idle_timeout`` seconds (> 0; ``None``:
    never) without a command. ``detach``: return (0) once a background server is ready, or
    at once when one is already running. ``warm=False`` skips :func:`warm_up_all` (the
    tests' light servers); ``owner_uid`` (default: this user) is the only user served.
    Raises :class:`VerifierInputError` for a bad path or timeout, or a server already running
    (not with ``detach``). Returns the exit status."""
    if idle_timeout is not None and not (0 < idle_timeout < float("inf")):
        raise VerifierInputError(f"--idle-timeout must be a finite number of seconds > 0, got {idle_timeout}")
    path = _socket_path(socket_path)
    try:
        lock = _lock(path)
    except _Running as exc:
        if detach:
            print(f"note: {exc}", file=sys.stderr)
            return 0
        raise
    ready = None
    if detach:
        read_end, ready = os.pipe()
        if os.fork():
            os.close(ready)
            lock.close()
            with os.fdopen(read_end, "rb") as pipe:
                said = pipe.read().decode(errors="replace").strip()
            if said.startswith("listening"):
                print(f"verifier serve: {said}", file=sys.stderr)
                return 0
            print(f"error: the verifier server did not start: {said or 'it exited'} (log: {path}.log)",
                  file=sys.stderr)
            return 1
        os.close(read_end)
        os.setsid()
        log = os.open(f"{path}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(null)
        os.close(log)
        lock.seek(0)
        lock.truncate(0)
        lock.write(str(os.getpid()))
        lock.flush()
    code = _run(path, idle_timeout, ready, warm, os.getuid() if owner_uid is None else owner_uid, lock)
    if detach:
        os._exit(code)
    return code


def _run(path: Path, idle_timeout: float | None, ready: int | None, warm: bool, owner_uid: int, lock) -> int:
    """Warm up, listen, serve until stopped or idle; the socket removed at the end."""
    server = None
    try:
        fingerprint, digest = process_fingerprint(), source_digest()  # before the imports: a file
        seconds = warm_up_all() if warm else 0.0  # edited meanwhile changes the clients' digest
        if path.is_socket() or path.is_symlink():
            path.unlink()  # stale: its server is gone (we hold the lock)
        elif path.exists():
            raise VerifierInputError(f"--socket {path} exists and is not a socket; give another path")
        server = _Server(os.fspath(path), digest, owner_uid, lock, fingerprint)
        os.chmod(path, 0o600)
        said = (f"listening on {path} (pid {os.getpid()}, warmed up in {seconds:.1f} s, idle timeout "
                f"{'none' if idle_timeout is None else f'{idle_timeout:g} s'})")
        _log(said)
        if ready is not None:
            os.write(ready, said.encode())
            os.close(ready)
            ready = None
        return _loop(server, idle_timeout)
    except KeyboardInterrupt as exc:  # the CLI's Interrupted: SIGINT / SIGTERM during the warm-up
        _log(f"stopped by {getattr(exc, 'name', 'SIGINT')}")
        return 0
    except Exception as exc:
        if ready is not None:
            os.write(ready, f"{type(exc).__name__}: {exc}".encode())
        raise
    finally:
        if ready is not None:
            os.close(ready)
        if server is not None:
            server.server_close()
            try:
                path.unlink()
            except OSError:
                pass
        lock.close()  # a new server may start while this interpreter shuts down


def _loop(server: _Server, idle_timeout: float | None) -> int:
    """Serve until SIGINT/SIGTERM or ``idle_timeout`` seconds without a command. The signals
    only set a flag and wake the loop (a self-pipe): an exception raised by a handler could
    land in a finaliser and be lost, leaving the server running."""
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    stopped: list[int] = []

    def on_signal(signum: int, frame) -> None:
        stopped.append(signum)
        try:
            os.write(wake_write, b"x")
        except OSError:
            pass

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    poll = POLL_SECONDS if idle_timeout is None else min(POLL_SECONDS, idle_timeout)
    server.timeout, last = 0, time.monotonic()
    try:
        while not stopped:
            ready, _, _ = select.select([server.socket, wake_read], [], [], poll)
            if server.socket in ready and not stopped:
                server.handle_request()
            server.collect_children()
            if server.handled or server.active_children:
                server.handled, last = False, time.monotonic()
            if idle_timeout is not None and time.monotonic() - last >= idle_timeout:
                _log(f"idle for {idle_timeout:g} s; stopping")
                return 0
        _log(f"stopped by {signal.Signals(stopped[0]).name}")
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        os.close(wake_read)
        os.close(wake_write)


def stop(socket_path: str | None = None) -> int:
    """Ask the server on ``socket_path`` (default: the default socket) to stop; 0 when one
    was asked, 1 (with an ``error:`` line) when none answers there."""
    from .serve_client import connect

    path = Path(socket_path) if socket_path else default_socket()
    sock = connect(path, explicit=bool(socket_path))  # the server on a --socket path need not be in a private folder
    if sock is None:
        print(f"error: no verifier server of this user answers on {path}", file=sys.stderr)
        return 1
    with sock:
        send_message(sock, {"kind": "stop"})
        receive_message(sock)
    print(f"verifier serve: asked the server on {path} to stop", file=sys.stderr)
    return 0


def cmd_serve(args) -> int:
    """``verifier serve``: run the server (:func:`serve`), or with ``--stop`` stop it (:func:`stop`)."""
    if args.stop:
        if args.idle_timeout is not None or args.detach:
            raise VerifierInputError("serve --stop takes only --socket")
        return stop(args.socket)
    return serve(args.socket, args.idle_timeout, detach=args.detach)


def add_serve_command(sub) -> None:
    """Add ``serve`` to the ``verifier`` sub-command parsers ``sub``."""
    p = sub.add_parser("serve", help="a persistent worker that runs the verifier commands without their start-up "
                                     "(docs/serve.md)")
    p.add_argument("--socket", metavar="PATH",
                   help="Unix socket to listen on (default $VERIFIER_SOCKET, else verifier/serve.sock in "
                        "$XDG_RUNTIME_DIR or /tmp/verifier-UID)")
    p.add_argument("--idle-timeout", type=float, metavar="SECONDS",
                   help="stop after this many seconds without a command (default: never)")
    p.add_argument("--detach", action="store_true",
                   help="run in the background; return once it listens (at once if one already runs)")
    p.add_argument("--stop", action="store_true", help="ask the running server to stop")
    p.set_defaults(func=cmd_serve)
