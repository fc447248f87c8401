"""Command-line pieces of proof certificates, registered by :mod:`verifier.cli`:
``verify --proof FILE`` (:func:`add_proof_argument`, :func:`check_proof_output`,
:func:`recorded_verify`) and ``verifier check-proof MODEL SPEC PROOF``
(:func:`add_check_proof_command`). Exit codes of ``check-proof``: 0 ``proof valid``,
1 the first leaf that fails (or a certificate that certifies nothing), 2 a certificate of
another model or spec, an unreadable file, or a malformed certificate (a key or array
missing or of the wrong type or shape) (one ``error:`` line)."""

from __future__ import annotations

import sys
from typing import Callable

from ..errors import VerifierInputError

MAX_LP_NODES = 10_000_000


def add_proof_argument(parser) -> None:
    """``--proof FILE`` on ``verify``."""
    parser.add_argument("--proof", metavar="FILE",
                        help="write a certificate of an unsat verdict that `verifier check-proof` re-checks "
                             "(docs/proofs.md)")
    parser.add_argument("--proof-lp-nodes", metavar="N", type=int, default=None,
                        help="with --proof: at most N LPs (and 60 s) per disjunct the MILP closed, to build the LP "
                             "branch-and-bound that makes it checkable (default 2000; 0: leave it trusted to HiGHS)")


def check_proof_output(args) -> None:
    """Refuse an unwritable ``--proof`` path, or one that is an input, and a
    ``--proof-lp-nodes`` outside ``[0, 10⁷]`` or without ``--proof``, before any work."""
    nodes = getattr(args, "proof_lp_nodes", None)
    if nodes is not None and not 0 <= nodes <= MAX_LP_NODES:
        raise VerifierInputError(f"--proof-lp-nodes must be an integer in [0, {MAX_LP_NODES}], got {nodes}")
    if getattr(args, "proof", None) is None:
        if nodes is not None:
            raise VerifierInputError("--proof-lp-nodes needs --proof FILE (it bounds the certificate's LP search)")
        return
    from .. import outputs

    outputs.check_output_file(args.proof, "--proof")
    if hasattr(outputs, "check_not_an_input"):
        outputs.check_not_an_input(args.proof, "--proof", [("the input model", args.model), ("the input spec", args.spec)])


def recorded_verify(args, regions: int, run: Callable[[], object]):
    """``run()`` (the verification), recording its certificate when ``--proof`` is given;
    writes the certificate and prints one ``proof: …`` line (stderr under ``--json``, so
    stdout stays one JSON object). Returns ``run()``'s result."""
    path = getattr(args, "proof", None)
    if path is None:
        return run()
    remote = getattr(args, "ray", None) is not None  # shards of the search run in other processes, unrecorded
    result, line = recorded(path, args.model, args.spec, regions, run,
                            ["--ray: the search ran on a Ray cluster, whose workers record nothing"] if remote else [],
                            lp_nodes=getattr(args, "proof_lp_nodes", None))
    print(line, file=sys.stderr if getattr(args, "json", False) else sys.stdout)
    return result


def recorded(path: str, model_path: str, spec_path: str, regions: int, run: Callable[[], object],
             unrecorded: list[str] | None = None, lp_nodes: int | None = None):
    """``(run(), line)``: the verification run with a recorder active, its certificate
    written to ``path`` when the verdict is ``unsat`` (``vnncomp --proofs DIR`` calls this
    per instance), and one line saying what was written. ``unrecorded``: reasons the run
    cannot be certified whatever it records (the certificate says so); ``lp_nodes``: the
    LP branch-and-bound's cap per disjunct the MILP closed (:mod:`~verifier.proof.milp_tree`;
    ``None`` its default, 0 none)."""
    from .record import ProofRecorder, recording
    from .writer import build_certificate, write_certificate

    recorder = ProofRecorder()
    recorder.lp_nodes = lp_nodes
    for reason in unrecorded or []:
        recorder.cannot_certify(reason)
    with recording(recorder):
        result = run()
    if result.status != "unsat":
        return result, f"proof: not written (the verdict is {result.status}; only unsat has a certificate)"
    index, arrays = build_certificate(recorder, model_path, spec_path, regions, result.status)
    size = write_certificate(path, index, arrays)
    if index["certified"]:
        trusted = [f"region {e['index']}, disjunct {d['index']}" for e in index["regions"]
                   for d in e.get("disjuncts", []) if d.get("milp")]
        plural = "s" if len(trusted) != 1 else ""
        note = f"; {len(trusted)} disjunct{plural} trusted to HiGHS's MILP: {', '.join(trusted)}" if trusted else ""
        return result, f"proof: {path} ({size / 1e6:.2f} MB; check it with `verifier check-proof`{note})"
    return result, f"proof: {path} says the verdict is uncertified: {'; '.join(index['uncertified'])}"


def cmd_check_proof(args) -> int:
    """``verifier check-proof MODEL SPEC PROOF``."""
    import errno
    import os
    import stat

    from ..proofcheck.check import ProofRefused, check_proof

    for what, path in (("MODEL", args.model), ("SPEC", args.spec), ("PROOF", args.proof)):
        try:
            mode = os.stat(path).st_mode
        except OSError as exc:  # missing, a symlink loop, a path through a file, no permission: say which
            reason = "no such file" if exc.errno == errno.ENOENT else \
                "a symbolic link loop" if exc.errno == errno.ELOOP else exc.strerror or str(exc)
            raise VerifierInputError(f"{what} {path}: {reason}; give a file") from None
        if stat.S_ISDIR(mode):
            raise VerifierInputError(f"{what} {path} is a folder; give a file")
        if not stat.S_ISREG(mode):  # a FIFO or device: never opened (it could block)
            raise VerifierInputError(f"{what} {path} is not a regular file (a pipe, FIFO or device); give a file")
    try:
        report = check_proof(args.model, args.spec, args.proof)
    except ProofRefused as exc:
        raise VerifierInputError(str(exc)) from None
    for item in report.trusted:
        print(f"trusted (not re-derived): {item}")
    print(f"checked {report.leaves} leaves in {report.seconds:.2f} s")
    if report.valid and report.trusted:
        print(f"{report.message} (with {len(report.trusted)} parts trusted to HiGHS)")
    else:
        print(report.message)
    return 0 if report.valid else 1


def add_check_proof_command(sub) -> None:
    """The ``check-proof`` sub-command."""
    p = sub.add_parser("check-proof", help="re-check a certificate of unsat written by `verify --proof`")
    p.add_argument("model", help="the ONNX model the certificate is for")
    p.add_argument("spec", help="the VNN-LIB spec the certificate is for")
    p.add_argument("proof", help="the certificate (verify --proof FILE)")
    p.set_defaults(func=cmd_check_proof)
