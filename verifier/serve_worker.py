"""The worker side of ``verifier serve`` (:mod:`verifier.serve`): the one-time warm-up of
the server (:func:`warm_up_all`) and the forked worker that becomes the client's process
and runs its command line (:func:`run_worker`)."""

from __future__ import annotations

import gc
import os
import random
import signal
import sys
import time
import traceback

PRISTINE: dict = {}  # torch's random state right after import (a fresh process's)


def warm_up_all() -> float:
    """Import and initialise, once, everything a command needs: torch (its random state and
    thread count as a fresh process has them are kept for the workers, and the server runs
    single-threaded), numpy, onnx, onnxruntime, networkx,
    scipy's optimiser, the command line with its plugins, the domains and complete methods,
    and one optimiser step (:func:`verifier.deadline.warm_up`). Never touches CUDA (a
    forked worker could not use it). Returns the seconds it took."""
    start = time.monotonic()
    import torch

    PRISTINE["torch"] = torch.random.get_rng_state()
    PRISTINE["threads"] = torch.get_num_threads()
    # no OpenMP/MKL thread pool in the server: a forked child whose parent ran a parallel
    # region with worker threads hangs in its own first one (measured); each worker sets
    # the thread count back (fresh_state)
    torch.set_num_threads(1)
    import networkx  # noqa: F401
    import numpy  # noqa: F401
    import onnx  # noqa: F401
    import onnxruntime  # noqa: F401
    import scipy.optimize  # noqa: F401

    from . import api, cli, cli_results, fidelity, spec, verify, vnncomp  # noqa: F401
    from .deadline import warm_up
    from .domains import available_domains

    cli.build_parser()  # the plugins' commands, the report and proof commands
    available_domains()
    warm_up(optimizers=True)
    gc.collect()
    gc.freeze()  # the workers' collections skip what the server made: fewer copy-on-write page copies
    return time.monotonic() - start


def client_stream(fd: int, mode: str, template):
    """A fresh text stream on ``fd`` (the client's), encoded as ``template`` was; line
    buffered for stderr and for a terminal, as Python does at start-up."""
    line = mode == "w" and (fd == 2 or os.isatty(fd))
    return open(fd, mode, buffering=1 if line else -1, closefd=False,
                encoding=getattr(template, "encoding", None) or "utf-8",
                errors=getattr(template, "errors", None) or ("backslashreplace" if fd == 2 else "strict"))


def take_on_resources(message: dict) -> None:
    """The client's resource limits (the server checked that it can take them on), and as
    far as allowed its CPU affinity and niceness (these change only the speed)."""
    import resource

    for name, (soft, hard) in message["limits"].items():
        resource.setrlimit(getattr(resource, name), (soft, hard))
    try:
        os.sched_setaffinity(0, message.get("cpus") or os.sched_getaffinity(0))
        os.setpriority(os.PRIO_PROCESS, 0, int(message.get("nice", os.getpriority(os.PRIO_PROCESS, 0))))
    except (OSError, ValueError, TypeError):
        pass


def fresh_state() -> None:
    """In a forked worker, what a fresh process would have: torch's thread count and random
    state as right after ``import torch``, Python's and numpy's random state newly seeded."""
    import numpy
    import torch

    random.seed()
    numpy.random.seed()
    if "torch" in PRISTINE:
        torch.random.set_rng_state(PRISTINE["torch"])
        torch.set_num_threads(PRISTINE["threads"])


def run_worker(server, conn, message: dict, fds: list[int]) -> None:
    """The forked worker: become the client's process (folder, environment, umask, streams,
    fresh random states, default signals), run the command line and leave with its status
    (``os._exit``: nothing of the server's runs at exit)."""
    code = 3
    try:
        os.setpgid(0, 0)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        for sig in (signal.SIGTTIN, signal.SIGTTOU):  # a terminal that is not ours: EIO rather than a stop
            signal.signal(sig, signal.SIG_IGN)
        server.socket.close()
        conn.close()
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        sys.stdin, sys.stdout, sys.stderr = (client_stream(0, "r", sys.stdin), client_stream(1, "w", sys.stdout),
                                             client_stream(2, "w", sys.stderr))
        sys.__stdin__, sys.__stdout__, sys.__stderr__ = sys.stdin, sys.stdout, sys.stderr
        os.chdir(message["cwd"])
        os.environ.clear()
        os.environ.update(message["env"])
        os.umask(message["umask"])
        take_on_resources(message)
        sys.argv = ["verifier", *message["argv"]]
        fresh_state()
        from . import cli
        from .cli_parser import PLUGIN_ERRORS

        PLUGIN_ERRORS.clear()
        code = cli.main(message["argv"], client_started=float(message["started"]))
    except SystemExit as exc:  # argparse's error(): exit 2, as in-process
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if exc.code is not None and not isinstance(exc.code, int):
            print(exc.code, file=sys.stderr)
    except BaseException:  # what an in-process run would show, with its exit status
        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code)
