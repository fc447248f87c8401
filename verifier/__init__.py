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

from .api import Model, compute_bounds, load  # noqa: E402
from .errors import VerifierInputError  # noqa: E402

__all__ = ["Model", "VerifierInputError", "compute_bounds", "load"]
