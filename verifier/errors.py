"""Exceptions that the command line turns into one clear message and exit code 2.

Every problem with what the user gave us (a file, a model, a spec, an option) is a
:class:`VerifierInputError`; anything else is a bug in the verifier itself.
"""

from __future__ import annotations


class VerifierInputError(Exception):
    """Bad input: the message names the problem and, where possible, what to do."""


class ModelError(VerifierInputError):
    """The ONNX file is missing, corrupt, malformed or holds invalid parameters."""


class UnsupportedModelError(ModelError):
    """The model uses ops (or op attributes) the verifier cannot handle.

    ``problems`` lists every ``(op_type, node_name, reason)`` found, so that a user sees
    all of them at once rather than one per run.
    """

    def __init__(self, problems: list[tuple[str, str, str]]):
        self.problems = list(problems)
        parts = [f"{op} (node '{name}'{': ' + why if why else ''})" for op, name, why in self.problems]
        super().__init__(f"unsupported ONNX ops: {'; '.join(parts)}")


class SpecError(VerifierInputError):
    """The VNN-LIB file (or an L-infinity spec) is malformed or does not fit the model."""


class FidelityError(ModelError):
    """The IR's forward evaluation disagrees with onnxruntime."""
