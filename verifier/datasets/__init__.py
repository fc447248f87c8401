"""Datasets shipped with the project (MNIST subset in idx format)."""

from .mnist import load_mnist

__all__ = ["load_mnist"]
