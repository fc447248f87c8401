"""verifier: an ONNX-based, model-agnostic neural-network verifier.

Import names installed by this project: ``verifier`` (this package) and
``verifier_plugins`` (the plugins shipped in the repository's ``plugins/`` folder).

Quick start::

    import torch, verifier
    model = verifier.load("models/mnist_small.onnx")
    lb, ub = verifier.compute_bounds(model, lower, upper, domain="box")
"""

import os as _os

# The bounds run many small tensor ops; with OpenMP's default busy-waiting, two torch
# processes (or any other load) on few cores slow each op down ~100× (measured: a 100×50
# matmul takes 30 ms instead of 0.1 ms). Passive waiting keeps multi-threaded speed-ups
# for large ops. Takes effect only if torch is imported after verifier (the CLI does so);
# set OMP_WAIT_POLICY yourself to override.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"  # before the imports below: verifier.ir.cache keys entries by it

from .errors import VerifierInputError  # noqa: E402

_API = ("Model", "compute_bounds", "load")


def __getattr__(name: str):
    """``Model``, ``compute_bounds`` and ``load`` import :mod:`verifier.api` (and torch) on first
    use, and a submodule (``verifier.ops``, …) on first access (PEP 562), so that
    :mod:`verifier.cli` installs its signal handlers before the seconds-long torch import."""
    if name in _API:
        from . import api

        return getattr(api, name)
    import importlib

    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{name}":
            raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None

__all__ = ["Model", "VerifierInputError", "compute_bounds", "load"]
