"""Complete verification on top of the domains: branch-and-bound (input splitting)."""

from .input_split import input_split_bab

__all__ = ["input_split_bab"]
