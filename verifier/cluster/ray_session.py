"""Connecting to Ray: the one place that imports ``ray`` (lazily, only for ``--ray``).

``--ray`` without an address (``"local"``) starts a Ray instance on this machine with its
cores (``ray.init(address="local")``: never the cluster that ``RAY_ADDRESS`` names or one
that ``ray start`` left running); ``--ray ADDRESS`` joins a running cluster (``auto``,
``HOST:PORT`` of a head started with ``ray start --head``, or ``ray://HOST:10001`` through
Ray Client). A session already
open in this process (``ray.init`` called before, e.g. by a test fixture) is reused.
"""

from __future__ import annotations

import logging
import os

from ..errors import VerifierInputError

LOCAL = "local"  # the --ray value without an address: start Ray on this machine
MISSING = 'error: --ray needs the cluster extra: pip install -e ".[cluster]"'


def require_ray():
    """The ``ray`` module; :class:`VerifierInputError` (``--ray needs the cluster extra``)
    when it is not installed."""
    try:
        import ray
    except ImportError:
        raise VerifierInputError(MISSING.removeprefix("error: ")) from None
    return ray


def connect(address: str | None = LOCAL, num_cpus: int | None = None):
    """``ray`` connected to a cluster (see the module docstring for ``address``);
    ``num_cpus`` only for a local start (default: this machine's cores).

    Raises :class:`VerifierInputError` naming ``--ray ADDRESS`` when no cluster answers
    there (start one with ``ray start --head``)."""
    ray = require_ray()
    if ray.is_initialized():
        return ray
    quiet = dict(logging_level=logging.ERROR, log_to_driver=False, include_dashboard=False)
    check_address(address)
    try:
        if address in (None, "", LOCAL):  # "local": a new instance, whatever RAY_ADDRESS or a running head says
            ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 1, **quiet)
        else:
            ray.init(address=address, **quiet)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        first = (str(exc).splitlines() or [""])[0][:200]
        raise VerifierInputError(f"--ray {address}: cannot connect to a Ray cluster there ({first}); start one with "
                                 f"`ray start --head` and give its address (HOST:PORT, auto or ray://HOST:10001), "
                                 f"or give --ray alone for a local one") from None
    return ray


def check_address(address: str | None, seconds: float = 10.0) -> None:
    """Refuse (:class:`VerifierInputError`) a ``--ray`` address that is neither ``local``
    (or ``None``), ``auto``, nor a ``HOST:PORT`` / ``ray://HOST:PORT`` where something accepts
    a TCP connection within ``seconds`` (``ray.init`` would retry an unreachable address for
    minutes). A session already open in this process is reused whatever the address."""
    import socket

    if address in (None, "", LOCAL, "auto") or is_connected():
        return

    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        raise VerifierInputError(f"--ray {address}: not an address; give HOST:PORT of a head started with "
                                 f"`ray start --head`, auto, ray://HOST:10001, or --ray alone for a local cluster")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=seconds).close()
    except OSError as exc:
        raise VerifierInputError(f"--ray {address}: no Ray cluster answers there ({exc.strerror or exc}); start one "
                                 f"with `ray start --head` and give its address, or --ray alone for a local "
                                 f"cluster") from None


def is_connected() -> bool:
    """Whether this process has a Ray session open (without importing ``ray`` otherwise)."""
    import sys

    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


def cluster_cpus(ray) -> int:
    """Whole CPUs the connected cluster offers (at least 1): the number of workers to start."""
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def portable_model(model):
    """A copy of ``model`` (a :class:`verifier.api.Model`) that pickles, to send to Ray
    workers once (``ray.put``): the same IR (parameter tensors shared, not copied) without
    the onnxruntime sessions and per-node caches, which the workers rebuild on first use
    (sessions from ``graph.graph["path"]``: on a cluster of several machines the ONNX file
    must be at that path on every node for counterexamples to be confirmed)."""
    from ..api import Model
    from ..ops import CACHE

    graph = model.graph.copy()  # node attribute dicts are copied, their values shared
    graph.graph = {k: v for k, v in model.graph.graph.items() if not k.startswith("_ort_session")}
    for _, data in graph.nodes(data=True):
        data.pop(CACHE, None)
    return Model(graph, model.fidelity)


MAX_RESTARTS = 4      # a worker process that dies is restarted this many times
MAX_TASK_RETRIES = 2  # a call whose worker died is run again this many times, then fails with RayActorError
_POOLS: dict[str, list] = {}  # Ray session → this driver's workers


class Worker:
    """The one Ray actor class of the cluster paths: runs a module-level function
    ``fn(state, *args)`` with ``state`` a dict that lives as long as the actor process
    (loaded models, a vnncomp run's :class:`~verifier.vnncomp.InstanceRunner`, …). A worker
    is started once per driver process and Ray session and reused by every later
    ``--ray`` call (process start and imports, seconds, are paid once); a restarted worker
    starts with an empty state, which every function rebuilds on demand."""

    def __init__(self):
        self.state: dict = {}

    def call(self, fn, *args):
        """``fn(state, *args)``."""
        return fn(self.state, *args)


def workers(ray, count: int) -> list:
    """``count`` :class:`Worker` actors of this driver (one CPU each, named
    ``verifier-worker-<i>``; ``ray.get_actor`` finds them), started on first use and
    reused; a worker that dies is restarted (:data:`MAX_RESTARTS`) and its call rerun
    (:data:`MAX_TASK_RETRIES`)."""
    pool = _POOLS.setdefault(session_key(ray), [])
    remote = ray.remote(num_cpus=1, max_restarts=MAX_RESTARTS, max_task_retries=MAX_TASK_RETRIES)(Worker)
    while len(pool) < count:
        pool.append(remote.options(name=f"verifier-worker-{len(pool)}").remote())
    return pool[:count]


def session_key(ray) -> str:
    """This driver's Ray session: its job id and node id (a new ``ray.init`` in the same
    process may reuse the job id, never the node id), for the actors kept per session."""
    context = ray.get_runtime_context()
    return f"{context.get_job_id()}@{context.get_node_id()}"


def retire(ray, actor) -> None:
    """Drop a worker that died for good from the pool (the next call starts another)."""
    for pool in _POOLS.values():
        if actor in pool:
            pool.remove(actor)
    ray.kill(actor, no_restart=True)


def model_from(state: dict, shared: list):
    """In a worker: the model behind the object-store reference ``shared[0]`` (a
    :func:`portable_model`), fetched once per worker process and kept in ``state``."""
    return fetched(state, "model", shared[0])


def fetched(state: dict, kind: str, ref):
    """In a worker: the object behind the object-store reference ``ref``, fetched once per
    worker process and kept in ``state`` (one object of each ``kind`` at a time: a new
    reference of that kind replaces the old one)."""
    import ray

    key = (kind, ref.hex())
    if key not in state:
        for old in [k for k in state if isinstance(k, tuple) and k[0] == kind]:
            del state[old]
        state[key] = ray.get(ref)
    return state[key]
