"""The ``verifier`` command line.

Exit codes: 0 success (for ``verify``: any verdict), 1 ``check`` found a mismatch or
``report`` found a wrong answer, 2 bad input (one ``error:`` line on stderr; also a
failed write to stdout), 3 internal error, 130 interrupted by SIGINT (Ctrl-C), 143 by
SIGTERM (``verify`` still writes ``--result-file`` and, with ``--json``, prints its one
JSON object, both with the verdict ``timeout``; :mod:`verifier.cli_process`), 141 stdout
closed by its reader (``| head``; nothing more is printed).

torch is imported only by the commands that need it, after the signal handlers are in
place (:func:`main`).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
import warnings

from .cli_parser import PLUGIN_ERRORS, Parser as _Parser, add_debug, add_verbosity
from .cli_process import (CACHE_WARNING, Interrupted, StdoutError, answering_interrupt, discard_stdout,  # noqa: F401
                          guarded_stdout, interrupt_of, leave_now, received_interrupt,
                          show_warning as _show_warning, shown as _shown, signals_raised)
from .errors import VerifierInputError
from .logs import configure as configure_logs, reset as reset_logs
from .options import DTYPES, key_value_options  # the training plugin imports both from here too

_LOG = logging.getLogger("verifier.cli")


MAX_CHECK_VALUES = 250_000_000  # check --samples: values of every IR node × samples (~2 GB in float64)


def _timeout(value: float | None) -> float | None:
    """``--timeout``: ``None`` or a finite number of seconds > 0."""
    if value is not None and not (math.isfinite(value) and value > 0):
        raise VerifierInputError(f"--timeout must be a finite number of seconds > 0, got {value}")
    return value


def checked_device(name: str, flag: str = "--device") -> str:
    """``--device``: cpu, or cuda / cuda:N when that device exists
    (:func:`verifier.options.check_device`); :class:`VerifierInputError` otherwise."""
    from .options import check_device

    return check_device(name, flag)





def _checked_domain_options(args) -> dict:
    """``--domain`` (or ``--method``) and ``--domain-option`` checked before any work; errors
    name the option the user gave."""
    from .options import check_domain_options

    flag = "--method" if getattr(args, "complete_method", None) is not None else "--domain"
    return check_domain_options(args.domain, key_value_options(args.domain_option), flag)


def _load_with_spec(args, known: dict | None = None):
    """Model and spec; the domain or complete method ``args.domain`` is checked against
    the model (:func:`refuse_unsupported`) before the fidelity check, which samples inside
    the spec's first input box. ``known`` (if given) receives ``regions``, the spec's
    number of input regions, and ``spec`` as soon as the spec is read."""
    from .api import load
    from .spec import read_vnnlib

    spec = read_vnnlib(args.spec)
    if known is not None:
        known["regions"], known["spec"] = len(spec.regions), spec
    model = load(args.model, check=False, cache=not args.no_cache)
    spec.check_model(model.input_size, model.output_size)
    from .complete.methods import METHODS

    from .coverage import refuse_unsupported

    refuse_unsupported(args.domain, model.graph, "--method" if args.domain in METHODS else "--domain")
    if not args.no_fidelity_check:
        region = spec.regions[0] if spec.regions else None
        model.check(None if region is None else region.lower, None if region is None else region.upper)
    return model, spec


def cmd_check(args) -> int:
    from .api import load
    from .ir import summary
    from .fidelity import check_fidelity

    from .options import check_samples

    samples = check_samples(args.samples, "--samples")
    model = load(args.model, check=False)
    per_sample = sum(math.prod(d.get("shape") or (1,)) for _, d in model.graph.nodes(data=True))
    if samples * per_sample > MAX_CHECK_VALUES:
        raise VerifierInputError(f"--samples {samples}: this model computes {per_sample} values per sample and all "
                                 f"samples run in one batch; at most {max(1, MAX_CHECK_VALUES // per_sample)} "
                                 f"samples fit in memory")
    print(summary(model.graph))
    if args.ops:
        from .coverage import model_report

        print(model_report(model.graph))
    report = check_fidelity(model.graph, samples=samples, raise_on_mismatch=False)
    print(report.describe())
    return 0 if report.ok else 1


def cmd_bounds(args) -> int:
    import torch

    from .api import compute_bounds

    from .domains import available_domains

    device, dtype = checked_device(args.device), DTYPES[args.dtype]
    if args.domain not in available_domains():
        raise VerifierInputError(f"bounds takes a domain ({', '.join(sorted(available_domains()))}), "
                                 f"not '{args.domain}'")
    options = _checked_domain_options(args)
    model, spec = _load_with_spec(args)
    lowers, uppers = [], []
    with torch.no_grad():
        for region in spec.regions:
            lb, ub = compute_bounds(model, region.lower.to(device, dtype), region.upper.to(device, dtype),
                                    domain=args.domain, **options)
            lowers.append(lb[0].double().cpu().tolist())
            uppers.append(ub[0].double().cpu().tolist())
    if args.json:
        print(json.dumps({"lower": lowers, "upper": uppers}))
        return 0
    for index, (lo, hi) in enumerate(zip(lowers, uppers)):
        print(f"input box {index} ({args.domain}):")
        for j, (a, b) in enumerate(zip(lo, hi)):
            print(f"  Y_{j}: [{a:.6g}, {b:.6g}]")
    return 0


def cmd_verify(args) -> int:
    """``verifier verify``: the checks that need no import first (timeout, seed, option
    syntax, ``--result-file``), then the device and options, the model and spec, and the
    search. SIGINT/SIGTERM at any point after those first checks still write the result
    file and print the ``--json`` record, with the verdict ``timeout``
    (:func:`verifier.cli_results.interrupted_verify`)."""
    from .options import check_seed
    from .outputs import check_not_an_input, check_output_file

    started = time.monotonic()
    timeout, seed = _timeout(args.timeout), check_seed(args.seed, "--seed")
    # what the record of an interrupted run can say: refined as the run gets further
    known = {"device": args.device, "options": key_value_options(args.domain_option), "regions": 0, "load": None}
    if args.result_file is not None:  # '' is refused, not ignored
        check_output_file(args.result_file, "--result-file")
        check_not_an_input(args.result_file, "--result-file",
                           [("the input model", args.model), ("the input spec", args.spec)])
    from .proof.cli import check_proof_output

    check_proof_output(args)  # --proof FILE: writable, not an input
    if getattr(args, "proof", None) is not None and args.result_file is not None:
        check_not_an_input(args.proof, "--proof", [("the --result-file", args.result_file)])
    try:
        return _verify(args, timeout, seed, known)
    except (Interrupted, Exception) as exc:
        if not isinstance(exc, Interrupted):
            if received_interrupt() is None or isinstance(exc, (StdoutError, BrokenPipeError)):
                raise
            exc = received_interrupt()  # a signal some library swallowed; this failure followed it
        answering_interrupt()  # a second Ctrl-C must not cut the report in half
        from .cli_results import interrupted_verify

        return interrupted_verify(args, timeout, seed, known, exc, time.monotonic() - started)


def _verify(args, timeout: float | None, seed: int, known: dict) -> int:
    """:func:`cmd_verify` after its import-free checks; fills ``known`` as it goes."""
    from .deadline import Deadline, warm_up

    if args.ray is None:
        from .verify import verify as search
    else:  # ray is imported only here (verifier/cluster, the 'cluster' extra); the address checked before any work
        from .cluster.ray_bab import verify_ray as search
        from .cluster.ray_session import check_address, require_ray

        require_ray()
        check_address(args.ray)
    device = known["device"] = checked_device(args.device)
    options = known["options"] = _checked_domain_options(args)
    warm_up(optimizers=False)  # one-time imports before the clock (verify() warms the optimisers it needs)
    deadline = Deadline(timeout)  # --timeout covers loading, the fidelity check and the search
    if _CLIENT_STARTED[0] is not None and deadline.end is not None:  # served: the clock started with the client
        deadline.end -= max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - _CLIENT_STARTED[0])
    model, spec = _load_with_spec(args, known)
    known["load"] = deadline.elapsed()  # seconds spent reading the files and checking fidelity
    from .proof.cli import recorded_verify

    result = recorded_verify(args, len(spec.regions), lambda: search(
        model, spec, domain=args.domain, deadline=deadline, device=device, dtype=DTYPES[args.dtype],
        attack=not args.no_attack, seed=seed, domain_options=options,
        **({} if args.ray is None else {"address": args.ray})))
    known["result"] = result  # from here on an interrupt reports this verdict, not timeout
    from .cli_results import report_verify

    report_verify(args, result, timeout, seed, known)
    return 0


def cmd_vnncomp(args) -> int:
    from .vnncomp import RESULTS, run_benchmark

    from .cli_results import check_vnncomp_output

    check_vnncomp_output(args)  # before anything starts or is written
    executor = None
    if args.ray is not None:  # ray is imported only here (verifier/cluster, the 'cluster' extra)
        from .cluster.ray_vnncomp import ray_executor

        executor = ray_executor(args.ray)
    output, counts = run_benchmark(args.bench_dir, instances_csv=args.instances, timeout_scale=args.timeout_scale,
                                   output=args.output, results_dir=args.results_dir, domain=args.domain,
                                   limit=args.limit, resume=args.resume, device=checked_device(args.device),
                                   dtype=DTYPES[args.dtype], fidelity=not args.no_fidelity_check,
                                   cache=not args.no_cache, executor=executor, proofs=args.proofs,
                                   timings=args.timings,
                                   progress=sys.stderr.isatty())  # a bar on a terminal only, not in logs
    print(", ".join(f"{name} {counts[name]}" for name in RESULTS) + f"; results: {output}")
    if counts["error"] and counts["error"] == sum(counts.values()):
        print(f"warning: every instance ended in error (see the messages above and {output})", file=sys.stderr)
        return 1
    return 0


def cmd_domains(args) -> int:
    from .complete.methods import METHODS
    from .domains import available_domains

    width = max(map(len, [*available_domains(), *METHODS]))  # one column for both lists
    for name, cls in sorted(available_domains().items()):
        print(f"{name:{width}s}  {getattr(cls, 'description', '')}")
    print("\ncomplete methods for `verify --method` (or --domain; see docs/complete.md):")
    for name, method in METHODS.items():
        print(f"{name:{width}s}  {method.description}")
    return 0


def cmd_ops(args) -> int:
    from .coverage import registry_report

    print(registry_report())
    return 0


def add_plugin_commands(sub) -> None:
    """Sub-commands of installed plugins: each entry point of the group
    ``verifier.commands`` is a function ``add_commands(sub)`` (the training plugin adds
    ``train`` and ``certify``). A plugin that fails to load is named when its command is
    asked for; the core commands keep working."""
    from importlib.metadata import entry_points

    for ep in entry_points(group="verifier.commands"):
        try:
            ep.load()(sub)
        except Exception as exc:  # a broken plugin must not break the core commands
            PLUGIN_ERRORS.append(f"plugin '{ep.name}' ({ep.value}) failed to load: {type(exc).__name__}: {exc}")


def _method_or_domain(args) -> None:
    """``--method NAME`` selects a complete method; it replaces ``--domain`` (whose complete
    method names keep working)."""
    method = getattr(args, "complete_method", None)
    if method is None:
        return
    from .complete.methods import METHODS

    if method not in METHODS:
        raise VerifierInputError(f"--method {method}: unknown; complete methods: {', '.join(METHODS)} "
                                 f"(a single domain's bound: --domain NAME)")
    if args.domain not in (method, "auto"):
        raise VerifierInputError(f"--method {method} and --domain {args.domain}: give one of them")
    args.domain = method


def build_parser() -> argparse.ArgumentParser:
    from .report_cli import add_report_command

    from . import __version__

    parser = _Parser(prog="verifier", description="Verify ONNX neural networks against VNN-LIB properties.")
    parser.add_argument("--version", action="version", version=f"verifier {__version__}")
    add_debug(parser, False)
    add_verbosity(parser, "default")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("check", help="import a model, summarise its IR and compare it with onnxruntime")
    p.add_argument("model")
    p.add_argument("--samples", type=int, default=4,
                   help="random inputs to compare, 1..100000 (default 4)")
    p.add_argument("--ops", action="store_true",
                   help="also print which domains and complete methods support this model's ops")
    p.set_defaults(func=cmd_check)

    def common(p, default_domain):
        p.add_argument("model")
        p.add_argument("spec", help="VNN-LIB file")
        p.add_argument("--domain", default=default_domain,
                       help=f"abstract domain (see `verifier domains`; default {default_domain})")
        p.add_argument("--domain-option", action="append", metavar="KEY=VALUE",
                       help="option passed to the domain, e.g. iterations=50 (repeatable)")
        p.add_argument("--device", default="cpu", help="cpu, or cuda / cuda:N when available")
        p.add_argument("--dtype", choices=sorted(DTYPES), default="float64", help="bound arithmetic (default float64)")
        p.add_argument("--no-fidelity-check", action="store_true", help="skip the onnxruntime agreement check")
        p.add_argument("--no-cache", action="store_true", help="import the model afresh (no IR cache; see README)")

    p = sub.add_parser("bounds", help="bound every model output over each input box of a spec")
    common(p, "box")
    p.add_argument("--json", action="store_true", help='print one JSON object {"lower": [[...]], "upper": [[...]]}')
    p.set_defaults(func=cmd_bounds)

    p = sub.add_parser("verify", help="decide a VNN-LIB property: sat / unsat / unknown / timeout")
    common(p, "auto")
    p.add_argument("--timeout", type=float, default=None, help="seconds (default: no limit)")
    p.add_argument("--result-file", help="write the VNN-COMP result (and counterexample) here")
    p.add_argument("--no-attack", action="store_true",
                   help="skip the falsification attack (sat can then only come from a complete method)")
    p.add_argument("--seed", type=int, default=0,
                   help="random seed of the attack (an integer in [0, 2**63-1]; default 0)")
    p.add_argument("--method", dest="complete_method",
                   help="complete method: auto, input-split, relu-split, milp or activation-split "
                        "(see `verifier domains`)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object (verdict, times, counterexample, per-region notes, what decided; "
                        "schema: docs/outputs.md) instead of text")
    p.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help="input-split and relu-split branch-and-bound on a Ray cluster at ADDRESS (alone: a local one with this "
                        "machine's cores); needs the cluster extra (docs/scale.md)")
    from .proof.cli import add_check_proof_command, add_proof_argument

    add_proof_argument(p)
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("vnncomp", help="run every instance of a VNN-COMP benchmark folder into a results CSV")
    p.add_argument("bench_dir", help="folder with instances.csv (onnx,vnnlib,timeout) and the files it names")
    p.add_argument("--instances", help="instances CSV to use instead of BENCH_DIR/instances.csv")
    p.add_argument("--timeout-scale", type=float, default=1.0,
                   help="multiply every instance timeout (a finite number > 0; default 1)")
    p.add_argument("--output", help="results CSV (default <benchmark>.csv)")
    p.add_argument("--results-dir", help="per-instance result files (default <output stem>_results/)")
    p.add_argument("--domain", default="auto",
                   help="auto (default), a complete method or a domain (see `verifier domains`)")
    p.add_argument("--method", dest="complete_method",
                   help="complete method (replaces --domain): auto, input-split, relu-split, milp or "
                        "activation-split")
    p.add_argument("--limit", type=int, help="only the first N instances (N >= 1)")
    p.add_argument("--resume", action="store_true",
                   help="skip instances already in the output CSV (its header is checked; a row cut by a kill "
                        "is dropped and rerun)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--proofs", metavar="DIR",
                   help="write a certificate of each unsat instance into DIR (docs/proofs.md; not with --ray)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float64", help="bound arithmetic (default float64)")
    p.add_argument("--no-fidelity-check", action="store_true", help="skip the onnxruntime agreement check")
    p.add_argument("--no-cache", action="store_true", help="import the models afresh (no IR cache; see README)")
    p.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help="run the instances on a Ray cluster at ADDRESS (alone: a local one with this machine's "
                        "cores); needs the cluster extra (docs/scale.md)")
    p.add_argument("--timings", metavar="FILE",
                   help="also write each instance's time split (load, parse, check, search seconds and the "
                        "subdomains bounded) to this CSV (docs/outputs.md)")
    p.set_defaults(func=cmd_vnncomp)


    add_report_command(sub)

    p = sub.add_parser("domains", help="list the installed abstract domains and complete methods")
    p.set_defaults(func=cmd_domains)

    p = sub.add_parser("ops", help="which domains and complete methods handle each IR op kind")
    p.set_defaults(func=cmd_ops)
    add_check_proof_command(sub)
    from .reach_cli import add_reach_command
    from .serve import add_serve_command

    add_reach_command(sub)
    add_serve_command(sub)
    add_plugin_commands(sub)
    for command in sub.choices.values():  # --debug after the command too (plugin commands included)
        add_debug(command, argparse.SUPPRESS)
        add_verbosity(command, argparse.SUPPRESS)
    parser.commands = sub.choices  # name -> the command's parser
    return parser


_CLIENT_STARTED: list[float | None] = [None]  # served: the client's start (CLOCK_BOOTTIME seconds)
_FAST_EXIT = [False]  # the command may leave with os._exit once its output is flushed (main)


def main(argv: list[str] | None = None, *, client_started: float | None = None) -> int:
    """Run the ``verifier`` command line ``argv`` (default ``sys.argv[1:]``); returns the
    exit code (see the module docstring). First of all SIGINT and SIGTERM are made to raise
    :class:`~verifier.cli_process.Interrupted` (restored on return), so an interrupt during
    the imports, the parsing or a command ends with one ``error:`` line, never a
    traceback. Library warnings (torch, onnx, the plugins) are not shown unless Python was
    asked for them (``-W``, ``PYTHONWARNINGS``) or ``--debug`` (before or after the command).

    As the program (``argv`` is ``None``: the ``verifier`` script, ``python -m verifier``,
    ``python -m verifier.cli``) the command goes to a running ``verifier serve`` if there is
    one (:func:`verifier.serve_client.served`; not with ``VERIFIER_NO_SERVE=1``), and a
    ``verify`` run here leaves with ``os._exit`` once its verdict is written and its output
    flushed (interpreter shutdown takes 0.5–1.3 s under load and has nothing left to do).
    ``client_started`` (the server's workers give it): the ``CLOCK_BOOTTIME`` second at which
    the client process started; a ``verify --timeout`` counts from it."""
    program = argv is None
    _CLIENT_STARTED[0], _FAST_EXIT[0] = client_started, False
    try:
        with signals_raised():
            code = None
            if program:
                from .serve_client import served

                code = served(sys.argv[1:])
            if code is None:
                code = _main(sys.argv[1:] if argv is None else list(argv))
    except KeyboardInterrupt as exc:  # only in the instants the handlers are installed or removed
        code = _report_interrupt(exc)
    finally:
        _CLIENT_STARTED[0] = None
    if program and _FAST_EXIT[0]:
        leave_now(code)
    return code


def _report_interrupt(exc: KeyboardInterrupt) -> int:
    """One ``error: interrupted by SIGNAL`` line; the exit code ``128 + signal number``."""
    answering_interrupt()
    exc = interrupt_of(exc)
    print(f"error: interrupted by {exc.name}", file=sys.stderr)
    return exc.exit_code


def _main(raw: list[str]) -> int:
    """:func:`main` with its signal handlers: warnings filter, guarded stdout, and the
    answers to an interrupt, a failed stdout and a closed pipe."""
    try:
        with warnings.catch_warnings():
            if not sys.warnoptions and "--debug" not in raw:
                warnings.simplefilter("ignore")
                warnings.filterwarnings("default", message=CACHE_WARNING, category=RuntimeWarning)
            warnings.showwarning = _show_warning(warnings.showwarning)
            with guarded_stdout():  # flushed inside: a full disk surfaces here, not at exit
                return _run(raw)
    except KeyboardInterrupt as exc:
        return _report_interrupt(exc)
    except StdoutError as exc:  # `verifier domains > /dev/full`: a bad output, not a bug
        discard_stdout()  # the unwritten buffer must not fail again at interpreter exit
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # stdout closed early (`verifier ops | head`): stop quietly, as a pipe expects
        discard_stdout()  # no second error at interpreter exit
        return 141  # 128 + SIGPIPE, what a shell reports for a command killed by a closed pipe


def _run(argv: list[str]) -> int:
    """:func:`main` inside its warning filter: parse, run the command, and turn bad input
    into one ``error:`` line (exit 2) and a bug into an internal error (exit 3, the
    traceback with ``--debug``)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # named by the command's parser (argparse names the top one: "see verifier --help")
        parser.commands[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    configure_logs("quiet" if getattr(args, "quiet", False) is True else args.verbosity)
    # verify writes its result file and --proof before returning; --ray needs its atexit shutdown
    _FAST_EXIT[0] = args.command == "verify" and args.ray is None
    try:
        _method_or_domain(args)
        return args.func(args)
    except (StdoutError, BrokenPipeError):
        raise  # answered by _main
    except Exception as exc:
        if received_interrupt() is not None:  # a signal some library swallowed (received_interrupt)
            raise received_interrupt() from None  # answered by _main: one "interrupted" line
        if isinstance(exc, VerifierInputError):
            print(f"error: {_shown(str(exc))}", file=sys.stderr)
            return 2
        # a bug: one line unless --debug
        if args.debug:
            raise
        first = _shown(str(exc).splitlines()[0]) if str(exc) else ""
        print(f"error: internal error ({type(exc).__name__}: {first}); rerun with --debug for details", file=sys.stderr)
        return 3
    finally:
        reset_logs()  # a program that calls main() in-process gets the library's logging back as it was


if __name__ == "__main__":
    sys.exit(main())
