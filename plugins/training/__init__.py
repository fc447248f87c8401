"""Certified training: train any ONNX or torch model with bounds from the verifier's own
domains, export it to ONNX with its certificate, and re-check that certificate.

See ``docs/training.md``. Entry points: :func:`~verifier_plugins.training.trainer.train`,
:func:`~verifier_plugins.training.certify.certify`, :class:`~verifier_plugins.training.live.LiveModel`.
"""

from .architectures import ARCHITECTURES, build_model
from .live import LiveModel, margin_matrix

__all__ = ["ARCHITECTURES", "LiveModel", "build_model", "margin_matrix"]
