"""Certified training: train any ONNX or torch model with bounds from the verifier's own
domains, export it to ONNX with its certificate, and re-check that certificate.

See ``docs/training.md``. Entry points: :func:`~verifier_plugins.training.trainer.train`,
:func:`~verifier_plugins.training.certify.certify`, :class:`~verifier_plugins.training.live.LiveModel`.
"""

__all__ = ["ARCHITECTURES", "LiveModel", "build_model", "margin_matrix"]

_LAZY = {"ARCHITECTURES": "architectures", "build_model": "architectures", "LiveModel": "live",
         "margin_matrix": "live"}


def __getattr__(name: str):
    """The names of ``__all__`` on first use: the core CLI loads this package for its
    ``train``/``certify`` sub-commands (``cli.add_commands``) on every run, and ``live``
    imports every domain (and so scipy's optimiser), which only training needs."""
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
