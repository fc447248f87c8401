"""Specifications: a list of input boxes, each with a disjunction of conjunctions of
linear output constraints (the *unsafe* set, VNN-LIB style)."""

from .model import Conjunction, InputRegion, Spec
from .linf import linf_robustness_spec
from .vnnlib import parse_vnnlib, read_vnnlib

__all__ = ["Conjunction", "InputRegion", "Spec", "linf_robustness_spec", "parse_vnnlib", "read_vnnlib"]
