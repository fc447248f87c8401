"""Connecting to Ray: the one place that imports ``ray`` (lazily, only for ``--ray``).

``--ray`` without an address (``"local"``) starts a Ray instance on this machine with its
cores; ``--ray ADDRESS`` joins a running cluster (``auto``, ``HOST:PORT`` of a head started
with ``ray start --head``, or ``ray://HOST:10001`` through Ray Client). A session already
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
    try:
        if address in (None, "", LOCAL):
            ray.init(num_cpus=num_cpus or os.cpu_count() or 1, **quiet)
        else:
            ray.init(address=address, **quiet)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        first = (str(exc).splitlines() or [""])[0][:200]
        raise VerifierInputError(f"--ray {address}: cannot connect to a Ray cluster there ({first}); start one with "
                                 f"`ray start --head` and give its address (HOST:PORT, auto or ray://HOST:10001), "
                                 f"or give --ray alone for a local one") from None
    return ray


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
