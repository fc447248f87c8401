"""The client side of ``verifier serve`` (:mod:`verifier.serve`), and what both sides share.

A ``verifier`` command run from a shell first asks a running server (if any) to run it:
:func:`served` connects to the server's Unix socket, checks that the server belongs to
this user (``SO_PEERCRED``), sends the command line, the working folder, the environment,
the umask, the process's start time and its own stdin/stdout/stderr (``SCM_RIGHTS``), and
gets back the pid of the forked worker (to which it forwards SIGINT and SIGTERM) and then
the exit status. Without a server, for a command the server does not run, with
``VERIFIER_NO_SERVE=1``, or when the server refuses (another user, another version or
source of the tool, an environment that changes what was imported), :func:`served`
returns ``None`` and the command runs in this process as before (docs/serve.md).

Only the standard library is imported here (no torch, numpy or onnx): this runs before the
command line is parsed.

Messages on the socket: a 4-byte big-endian length and that many bytes of UTF-8 JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import stat
import struct
import sys
import time
from pathlib import Path

#: the commands a server runs; the others (``serve`` itself, the plugins' ``train`` and
#: ``certify``, ``--help``/``--version``) always run in the calling process
SERVED = frozenset({"verify", "bounds", "check", "domains", "ops", "vnncomp", "report", "check-proof", "reach"})
#: options of the top-level parser that take no value (what may precede the command)
GLOBAL_FLAGS = frozenset({"--debug", "--quiet", "--verbose"})
#: environment variables (by prefix) read when torch and the other libraries are imported
#: or initialised: a client whose values differ from the server's runs in-process
IMPORT_ENV_PREFIXES = ("PYTHON", "OMP_", "MKL_", "KMP_", "GOMP_", "OPENBLAS_", "CUDA_", "NVIDIA_", "TORCH",
                       "PYTORCH_", "LD_", "ORT_", "CUBLAS_", "CUDNN_", "LANG", "LC_")  # LANG/LC_*: stdio encoding
#: the client's resource limits a worker takes on (``ulimit -v``, ``-t``, ...)
LIMITS = ("RLIMIT_AS", "RLIMIT_DATA", "RLIMIT_CPU", "RLIMIT_FSIZE", "RLIMIT_NOFILE", "RLIMIT_STACK", "RLIMIT_CORE")
HEADER = struct.Struct(">I")
MAX_MESSAGE = 16 * 2**20  # bytes of one JSON message (the environment and argv fit easily)
PACKAGE = Path(__file__).resolve().parent
REPLY_SECONDS = 10.0  # how long a client waits for the worker's pid before running the command itself


def disabled() -> bool:
    """``VERIFIER_NO_SERVE`` is set (to anything but ``''``/``'0'``): no server is used or started."""
    return os.environ.get("VERIFIER_NO_SERVE", "") not in ("", "0")


def default_socket() -> Path:
    """The socket a server listens on and a client tries: ``$VERIFIER_SOCKET`` if set, else
    ``verifier/serve.sock`` in ``$XDG_RUNTIME_DIR`` (a per-user folder) when that is set,
    else in ``/tmp/verifier-UID`` (created private, mode 0700, by the server)."""
    explicit = os.environ.get("VERIFIER_SOCKET", "")
    if explicit:
        return Path(explicit)
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    folder = Path(runtime) / "verifier" if runtime else Path(f"/tmp/verifier-{os.getuid()}")
    return folder / "serve.sock"


def private_folder(folder: Path) -> str | None:
    """Why ``folder`` is not a private folder of this user (``None`` when it is: a real
    folder, not a link, owned by this user, no access for group or others)."""
    try:
        info = os.lstat(folder)
    except OSError as exc:
        return f"{folder}: {exc.strerror}"
    if not stat.S_ISDIR(info.st_mode):
        return f"{folder} is not a folder"
    if info.st_uid != os.getuid():
        return f"{folder} belongs to uid {info.st_uid}, not to this user ({os.getuid()})"
    if info.st_mode & 0o077:
        return f"{folder} has mode {stat.S_IMODE(info.st_mode):o}; a private folder has 700"
    return None


def source_digest() -> str:
    """SHA-256 (hex) of the tool's version, this Python (interpreter, environment, version)
    and the path, size and modification time of every ``.py`` file of the ``verifier``
    package and of the plugins shipped with it: a server answers only clients whose digest
    equals its own (taken when it started), so an edited source or another installation
    never gets a stale answer."""
    from . import __version__

    python = f"{os.path.realpath(sys.executable)}\0{sys.prefix}\0{sys.version}"  # bin/python or bin/python3
    digest = hashlib.sha256(f"{__version__}\0{python}".encode())
    for root in (PACKAGE, PACKAGE.parent / "plugins", PACKAGE.parent / "verifier_plugins"):
        if not root.is_dir():
            continue
        for folder, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for name in sorted(files):
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    info = os.stat(path)
                    digest.update(f"{os.path.relpath(path, root.parent)}\0{info.st_size}\0{info.st_mtime_ns}\0"
                                  .encode())
    return digest.hexdigest()


def process_fingerprint(environ: dict[str, str] | None = None) -> dict:
    """What was fixed when this interpreter started and imported its libraries: interpreter
    flags and warning options, ``sys.path`` (after its first entry, the script's or current
    folder), and the environment variables of :data:`IMPORT_ENV_PREFIXES`. A server refuses a
    client whose fingerprint differs (:func:`fingerprint_difference`)."""
    environ = os.environ if environ is None else environ
    return {"flags": list(sys.flags), "warnoptions": list(sys.warnoptions), "xoptions": sorted(f"{k}={v}" for k, v in sys._xoptions.items()),
            "path": sys.path[1:],
            "env": {k: v for k, v in sorted(environ.items()) if k.startswith(IMPORT_ENV_PREFIXES)}}


def fingerprint_difference(server: dict, client: dict) -> str | None:
    """The first difference between two :func:`process_fingerprint` results, named (e.g.
    ``"environment variable OMP_NUM_THREADS: '1' here, '4' in the server"``), or ``None``."""
    for key in ("flags", "warnoptions", "xoptions", "path"):
        if server.get(key) != client.get(key):
            return f"interpreter {key}"
    env_s, env_c = server.get("env", {}), client.get("env", {})
    for name in sorted(set(env_s) | set(env_c)):
        if env_s.get(name) != env_c.get(name):
            return f"environment variable {name}: {env_c.get(name)!r} here, {env_s.get(name)!r} in the server"
    return None


def start_time() -> float:
    """When this process started, in seconds of ``CLOCK_BOOTTIME`` (from ``/proc/self/stat``,
    10 ms resolution), so that a server's worker can count a deadline from the client's
    start; the current time where ``/proc`` is not available."""
    try:
        with open("/proc/self/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
        return int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22 of proc(5): starttime
    except (OSError, ValueError, IndexError):
        return time.clock_gettime(time.CLOCK_BOOTTIME)


def send_message(sock: socket.socket, message: dict, fds: list[int] = ()) -> None:
    """Send ``message`` as length-prefixed JSON, with the file descriptors ``fds`` attached
    (``SCM_RIGHTS``) to its first byte."""
    data = json.dumps(message).encode()
    payload = HEADER.pack(len(data)) + data
    sent = socket.send_fds(sock, [payload], list(fds)) if fds else sock.send(payload)
    if sent < len(payload):
        sock.sendall(payload[sent:])


def receive_message(sock: socket.socket, max_fds: int = 0) -> tuple[dict | None, list[int]]:
    """One message from :func:`send_message` and the file descriptors that came with it;
    ``(None, [])`` when the peer closed the connection first. Raises ``ValueError`` on a
    malformed message (its descriptors are closed)."""
    fds: list[int] = []
    data = b""
    try:
        while len(data) < HEADER.size or len(data) < HEADER.size + HEADER.unpack_from(data)[0]:
            if len(data) >= HEADER.size and HEADER.unpack_from(data)[0] > MAX_MESSAGE:
                raise ValueError("message too long")
            want = HEADER.size - len(data) if len(data) < HEADER.size else \
                HEADER.size + HEADER.unpack_from(data)[0] - len(data)
            if max_fds and not fds and not data:
                chunk, got, _flags, _addr = socket.recv_fds(sock, want, max_fds)
                fds.extend(got)
            else:
                chunk = sock.recv(want)
            if not chunk:
                if data:
                    raise ValueError("connection closed in the middle of a message")
                return None, fds
            data += chunk
        message = json.loads(data[HEADER.size:])
        if not isinstance(message, dict):
            raise ValueError("not a JSON object")
        return message, fds
    except (ValueError, UnicodeDecodeError):
        for fd in fds:
            os.close(fd)
        raise


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """``(pid, uid, gid)`` of the process at the other end of a connected Unix socket
    (``SO_PEERCRED``: taken by the kernel at ``connect``/``listen``, not claimed by the peer)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)


def peer_uid(sock: socket.socket) -> int:
    """The user id of the process at the other end of a connected Unix socket."""
    return peer_credentials(sock)[1]


def command_of(argv: list[str]) -> str | None:
    """The sub-command of a ``verifier`` command line: the first argument after the global
    flags (:data:`GLOBAL_FLAGS`); ``None`` when there is none or another option comes first
    (``--help``, ``--version``, a mistake: those run in-process)."""
    for arg in argv:
        if arg in GLOBAL_FLAGS:
            continue
        return None if arg.startswith("-") else arg
    return None


def connect(path: Path, timeout: float = 2.0, explicit: bool = False) -> socket.socket | None:
    """A connection to a server of this user at ``path``, or ``None``: no socket there, a
    socket not owned by this user, in a folder that is not private (for the default path;
    ``explicit``: a path the user named, with ``--socket`` or ``VERIFIER_SOCKET``, is not
    held to that), nobody listening (a stale socket: ignored), or a listener of another user."""
    try:
        info = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISSOCK(info.st_mode) or info.st_uid != os.getuid():
        return None
    if not explicit and not os.environ.get("VERIFIER_SOCKET") and private_folder(path.parent) is not None:
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(os.fspath(path))
        if peer_uid(sock) != os.getuid():
            sock.close()
            return None
        sock.settimeout(None)
        return sock
    except OSError:
        sock.close()
        return None


def request(argv: list[str], started: float, digest: str | None = None) -> dict:
    """The request :func:`served` sends for ``argv`` (also used by the tests to send a
    forged one): digest, command line, working folder, environment, umask, start time, CPU
    affinity, niceness and resource limits."""
    umask = os.umask(0o022)
    os.umask(umask)
    import resource

    return {"kind": "run", "digest": source_digest() if digest is None else digest, "argv": list(argv),
            "cwd": os.getcwd(), "env": dict(os.environ), "umask": umask, "started": started,
            "fingerprint": process_fingerprint(), "cpus": sorted(os.sched_getaffinity(0)),
            "nice": os.getpriority(os.PRIO_PROCESS, 0),
            "limits": {name: list(resource.getrlimit(getattr(resource, name))) for name in LIMITS}}


def served(argv: list[str], path: Path | None = None) -> int | None:
    """Run the ``verifier`` command line ``argv`` in a running server and return its exit
    status; ``None`` (nothing was run) when it cannot or should not be served: see the
    module docstring. SIGINT and SIGTERM received meanwhile are forwarded to the worker,
    which answers them as an in-process run does (exit 130 / 143)."""
    if disabled() or command_of(argv) not in SERVED or any(a.split("=")[0] == "--ray" for a in argv):
        return None  # --ray: Ray's driver needs its exit handlers, which a worker does not run
    started = start_time()
    sock = connect(default_socket() if path is None else path)  # first: without a server, nothing else
    if sock is None:
        return None
    try:
        for fd in (0, 1, 2):
            os.fstat(fd)
        message = request(argv, started)
    except OSError:  # a closed standard stream, a deleted working folder: in-process, as before
        sock.close()
        return None
    pending: list[int] = []
    worker: list[int] = []

    def forward(signum: int, frame) -> None:
        if worker:
            try:
                os.kill(worker[0], signum)
            except ProcessLookupError:
                pass
        else:
            pending.append(signum)

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for sig in previous:
            if previous[sig] is not signal.SIG_IGN:
                signal.signal(sig, forward)
        try:
            sock.settimeout(REPLY_SECONDS)  # a server that does not answer (stuck, overloaded) is not used
            send_message(sock, message, [0, 1, 2])
            reply, _ = receive_message(sock)
            sock.settimeout(None)
        except (OSError, ValueError):
            return None  # nothing was started (a worker forked after this sees the connection closed and dies)
        if reply is None or "pid" not in reply:
            return None  # refused (another version, another environment) or the server stopped
        worker.append(int(reply["pid"]))
        for signum in pending:
            forward(signum, None)
        try:
            reply, _ = receive_message(sock)
        except (OSError, ValueError):
            reply = None
        if reply is None or not isinstance(reply.get("exit"), int):
            print(f"error: the verifier server's worker (pid {worker[0]}) ended without an exit status "
                  f"(server stopped?); rerun with VERIFIER_NO_SERVE=1", file=sys.stderr)
            return 3
        return reply["exit"]
    finally:
        sock.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        if pending and not worker:  # nothing ran: the signal goes to this process's own handler
            signal.raise_signal(pending[0])
