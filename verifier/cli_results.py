"""How ``verifier`` commands report results, and check outputs against inputs.

- :func:`report_verify`: ``verify``'s result file and its verdict on stdout (the
  ``--json`` record of :func:`verifier.records.verify_record`, or the text lines);
- :func:`interrupted_verify`: the same for a run stopped by SIGINT/SIGTERM
  (:mod:`verifier.cli_process`): before a verdict, the VNN-COMP word for a run stopped
  before its answer, ``timeout``, with a note saying so;
- :func:`check_vnncomp_output`: ``vnncomp --output`` must not be the instances CSV, a
  file it lists, or the benchmark's ``reference.csv``.

``args`` is the ``argparse`` namespace of the command; ``known`` is what ``verify`` has
established so far (``device``, ``options``, ``regions``, ``load`` seconds, ``result``).
"""

from __future__ import annotations

import json
import os
import sys
from types import SimpleNamespace

from .cli_process import Interrupted

INTERRUPTED_VERDICT = "timeout"  # what VNN-COMP records for a run stopped before its answer (run_instance.sh)


def verify_json(args, result, timeout: float | None, seed: int, known: dict) -> dict:
    """The ``verify --json`` record (:func:`verifier.records.verify_record`, schema
    :data:`~verifier.records.VERIFY_SCHEMA`) of ``result`` (``status``, ``counterexample``,
    ``seconds``, ``notes``); ``timeout`` in seconds or ``None``, ``seed`` the checked seed."""
    from .records import verify_record

    return verify_record(result, model=args.model, spec=args.spec, regions=known["regions"], domain=args.domain,
                         load_seconds=result.seconds if known["load"] is None else known["load"], timeout=timeout,
                         result_file=args.result_file, attack=not args.no_attack, seed=seed,
                         device=known["device"], dtype=args.dtype, domain_options=known["options"],
                         fidelity_check=not args.no_fidelity_check)


def report_verify(args, result, timeout: float | None, seed: int, known: dict) -> None:
    """Write ``--result-file`` (VNN-COMP format) and print ``result``'s verdict: the
    ``--json`` record (one line), or the notes, for ``sat`` the counterexample's summary
    (:func:`verifier.counterexample.describe_counterexample`, with ``known["spec"]``'s
    region), then the ``time:`` and ``result:`` lines. Raises ``OSError`` from writing the
    result file."""
    from .counterexample import describe_counterexample, write_result

    if args.result_file is not None:
        write_result(args.result_file, result.status, result.counterexample)
    if args.json:
        print(json.dumps(verify_json(args, result, timeout, seed, known), allow_nan=False))
        return
    for note in result.notes:
        print(note)
    cex = result.counterexample
    if cex is not None and known.get("spec") is not None:
        for line in describe_counterexample(cex, known["spec"].regions[cex.region_index]):
            print(line)
    print(f"time: {result.seconds:.3f} s")
    print(f"result: {result.status}")


def interrupted_verify(args, timeout: float | None, seed: int, known: dict, exc: Interrupted,
                       seconds: float) -> int:
    """Report a ``verify`` stopped by SIGINT/SIGTERM after ``seconds``: the result file and
    the ``--json`` record say :data:`INTERRUPTED_VERDICT` with the note ``interrupted by
    SIGNAL after S s; no verdict`` (a verdict already reached, ``known["result"]``, is
    reported as usual instead); stderr gets one ``error:`` line. Returns ``exc.exit_code``
    (130 for SIGINT, 143 for SIGTERM). Imports nothing heavy before a verdict (the signal
    may have cut an import short)."""
    from .outputs import write_atomic

    if known.get("result") is not None:  # the signal came while the verdict was being written
        report_verify(args, known["result"], timeout, seed, known)
        print(f"error: interrupted by {exc.name} after the verdict ({known['result'].status}), which is reported",
              file=sys.stderr)
        return exc.exit_code
    note = f"interrupted by {exc.name} after {seconds:.2f} s; no verdict"
    if args.result_file is not None:
        write_atomic(args.result_file, f"{INTERRUPTED_VERDICT}\n")
    if args.json:
        result = SimpleNamespace(status=INTERRUPTED_VERDICT, counterexample=None, seconds=seconds, notes=[note])
        print(json.dumps(verify_json(args, result, timeout, seed, known), allow_nan=False))
    print(f"error: {note}" + (f" ({args.result_file} says {INTERRUPTED_VERDICT})" if args.result_file else ""),
          file=sys.stderr)
    return exc.exit_code


def check_vnncomp_output(args) -> None:
    """Refuse a ``vnncomp --output`` that is the benchmark's instances CSV, its
    ``reference.csv`` (the published results ``verifier report`` reads), or a model or spec
    file one of its rows names (as written or with ``.gz``; every row, ``--limit`` or not),
    before anything is written (:func:`verifier.outputs.check_not_an_input`). Validates the
    run first (:func:`verifier.vnncomp.plan_benchmark`, which writes nothing), and the
    output folders (``--results-dir``, ``--proofs``) and ``--timings`` file, so that a
    refused one leaves no results folder behind; raises
    :class:`~verifier.errors.VerifierInputError`."""
    from pathlib import Path

    from .outputs import check_creatable_dir, check_not_an_input, check_output_file
    from .vnncomp import plan_benchmark, read_instances

    plan = plan_benchmark(args.bench_dir, instances_csv=args.instances, timeout_scale=args.timeout_scale,
                          output=args.output, results_dir=args.results_dir, domain=args.domain,
                          limit=args.limit)
    check_creatable_dir(plan.results_dir, "--results-dir")
    if args.proofs is not None:
        check_creatable_dir(args.proofs, "--proofs")
    if args.timings is not None:
        check_output_file(args.timings, "--timings")
    csv_path = Path(args.instances) if args.instances is not None else plan.bench_dir / "instances.csv"
    inputs: list[tuple[str, str | os.PathLike]] = [("the benchmark's instances CSV", csv_path)]
    reference = plan.bench_dir / "reference.csv"  # the published answers `verifier report` compares with
    if reference.exists():
        inputs.append(("the benchmark's reference.csv (its published results)", reference))
    for instance in read_instances(csv_path, plan.bench_dir):
        for what, name in (("model", instance.onnx), ("spec", instance.vnnlib)):
            path = plan.bench_dir / name
            inputs += [(f"the {what} {name} that {csv_path} lists", candidate)
                       for candidate in (path, path.with_name(path.name + ".gz")) if candidate.exists()]
    check_not_an_input(plan.output, "--output", inputs)
