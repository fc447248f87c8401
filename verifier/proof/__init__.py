"""Proof certificates of ``unsat`` verdicts (``verify --proof FILE``).

:mod:`verifier.proof.record` collects, while the search runs, what closed each part of
the input region and of the ReLU phases; :mod:`verifier.proof.writer` writes it as one
archive (a JSON index and numpy arrays, with the model's and the spec's SHA-256);
:mod:`verifier.proof.cli` adds the command-line pieces. The independent checker is
:mod:`verifier.proofcheck` (docs/proofs.md).
"""
