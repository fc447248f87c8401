"""The independent proof checker (``verifier check-proof MODEL SPEC PROOF``).

It re-derives every bound of a certificate written by ``verify --proof`` with its own
small implementation: its own ONNX reader (:mod:`~verifier.proofcheck.network`), its
own interval and Lagrangian (CROWN-multiplier) bounds in outward-rounded float64
(:mod:`~verifier.proofcheck.rounding`, :mod:`~verifier.proofcheck.bounds`), its own cover
checks (:mod:`~verifier.proofcheck.check`). It imports nothing from the verifier's
domains, operators, engine or search; it uses the project's VNN-LIB parser to read the
spec. What it trusts and what it does not: docs/proofs.md.
"""
