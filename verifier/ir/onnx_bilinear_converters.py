"""Ops of several variable inputs that are not affine (Mul and MatMul of two variables, Min/Max and ReduceMax/ReduceMin): bilinear and piecewise-linear IR nodes."""

from __future__ import annotations

from .onnx_converters import converter  # noqa: F401
