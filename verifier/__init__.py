"""verifier: an ONNX-based, model-agnostic neural-network verifier.

Import names installed by this project: ``verifier`` (this package) and
``verifier_plugins`` (the plugins shipped in the repository's ``plugins/`` folder).

Quick start::

    import torch, verifier
    model = verifier.load("models/mnist_small.onnx")
    lb, ub = verifier.compute_bounds(model, lower, upper, domain="box")
"""

from .api import Model, compute_bounds, load
from .errors import VerifierInputError

__version__ = "0.1.0"
__all__ = ["Model", "VerifierInputError", "compute_bounds", "load"]
