"""Elementwise nonlinear ops (Exp, Log, Sqrt, Reciprocal, Pow, Sin, Cos, Softplus, Erf, Gelu, Elu, Abs, Sign, Floor, Ceil, Round, HardSigmoid, HardSwish, Softmax, ...): one IR kind each with a relaxation entry in verifier/ops/."""

from __future__ import annotations

from .onnx_converters import converter  # noqa: F401
