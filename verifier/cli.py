"""The ``verifier`` command line.

Exit codes: 0 success (for ``verify``: any verdict), 1 ``check`` found a mismatch,
2 bad input (one ``error:`` line on stderr), 3 internal error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

import torch

from .errors import VerifierInputError

DTYPES = {"float32": torch.float32, "float64": torch.float64}
MAX_CHECK_VALUES = 250_000_000  # check --samples: values of every IR node × samples (~2 GB in float64)


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line as one ``error:`` line (exit 2), like
    every other bad input, instead of a usage block."""

    def error(self, message: str):
        print(f"error: {self.prog}: {_shown(message)} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def _timeout(value: float | None) -> float | None:
    """``--timeout``: ``None`` or a finite number of seconds > 0."""
    if value is not None and not (math.isfinite(value) and value > 0):
        raise VerifierInputError(f"--timeout must be a finite number of seconds > 0, got {value}")
    return value


def _device(name: str) -> str:
    """``--device``: cpu, or cuda / cuda:N when that device exists
    (:func:`verifier.options.check_device`)."""
    from .options import check_device

    return check_device(name, "--device")


def _shown(text: str) -> str:
    """``text`` with invisible and control characters (a BOM, zero-width spaces, newlines)
    escaped as in ``repr``, so an error message stays one readable line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _domain_options(pairs: list[str] | None) -> dict:
    """``key=value`` strings → keyword arguments (numbers parsed, the rest kept as text;
    :func:`verifier.options.check_domain_options` converts and checks them)."""
    options = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise VerifierInputError(f"--domain-option expects key=value, got '{pair}'")
        for cast in (int, float):
            try:
                options[key] = cast(value)
                break
            except ValueError:
                continue
        else:
            options[key] = value
    return options


def _checked_domain_options(args) -> dict:
    """``--domain`` and ``--domain-option`` checked before any work."""
    from .options import check_domain_options

    return check_domain_options(args.domain, _domain_options(args.domain_option))


def _load_with_spec(args):
    """Model and spec; the fidelity check samples inside the spec's first input box."""
    from .api import load
    from .spec import read_vnnlib

    spec = read_vnnlib(args.spec)
    model = load(args.model, check=False)
    spec.check_model(model.input_size, model.output_size)
    if not args.no_fidelity_check:
        from .fidelity import check_fidelity

        region = spec.regions[0] if spec.regions else None
        model.fidelity = check_fidelity(model.graph, None if region is None else region.lower,
                                        None if region is None else region.upper)
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
    report = check_fidelity(model.graph, samples=samples, raise_on_mismatch=False)
    print(report.describe())
    return 0 if report.ok else 1


def cmd_bounds(args) -> int:
    from .api import compute_bounds

    from .domains import available_domains

    device, dtype = _device(args.device), DTYPES[args.dtype]
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
    from .counterexample import write_result
    from .deadline import Deadline, warm_up
    from .outputs import check_output_file
    from .verify import verify

    from .options import check_seed

    timeout, device = _timeout(args.timeout), _device(args.device)
    seed = check_seed(args.seed, "--seed")
    options = _checked_domain_options(args)
    if args.result_file is not None:  # '' is refused, not ignored
        check_output_file(args.result_file, "--result-file")
    warm_up()  # one-time imports and initialisation, before the clock starts
    deadline = Deadline(timeout)  # --timeout covers loading, the fidelity check and the search
    model, spec = _load_with_spec(args)
    result = verify(model, spec, domain=args.domain, deadline=deadline, device=device,
                    dtype=DTYPES[args.dtype], attack=not args.no_attack, seed=seed,
                    domain_options=options)
    for note in result.notes:
        print(note)
    print(f"time: {result.seconds:.3f} s")
    if args.result_file is not None:
        write_result(args.result_file, result.status, result.counterexample)
    print(f"result: {result.status}")
    return 0


def cmd_vnncomp(args) -> int:
    from .vnncomp import RESULTS, run_benchmark

    output, counts = run_benchmark(args.bench_dir, instances_csv=args.instances, timeout_scale=args.timeout_scale,
                                   output=args.output, results_dir=args.results_dir, domain=args.domain,
                                   limit=args.limit, resume=args.resume, device=_device(args.device),
                                   dtype=DTYPES[args.dtype], fidelity=not args.no_fidelity_check)
    print(", ".join(f"{name} {counts[name]}" for name in RESULTS) + f"; results: {output}")
    if counts["error"] and counts["error"] == sum(counts.values()):
        print(f"warning: every instance ended in error (see the messages above and {output})", file=sys.stderr)
        return 1
    return 0


def cmd_domains(args) -> int:
    from .domains import available_domains

    for name, cls in sorted(available_domains().items()):
        print(f"{name:14s} {getattr(cls, 'description', '')}")
    print("\ncomplete methods for `verify --domain` (see docs/complete.md):")
    for name, text in (("auto", "attack, box, crown, then input-split or relu-split (default)"),
                       ("input-split", "branch-and-bound on input boxes (CROWN), for low-dimensional inputs"),
                       ("relu-split", "branch-and-bound on ReLU signs (alpha/beta-CROWN), LP for fully split ones"),
                       ("milp", "exact mixed-integer program (HiGHS), big-M from alpha-CROWN bounds")):
        print(f"{name:14s} {text}")
    return 0


def cmd_train(args) -> int:
    import os

    from verifier_plugins.training.trainer import CHECKPOINT, train
    from verifier_plugins.training.validation import CheckpointError, check_out_folder

    for pair in args.option or []:
        if "=" not in pair or pair.startswith("="):
            raise VerifierInputError(f"--option expects key=value, got '{pair}'")
    options = _domain_options(args.option)
    if args.resume:  # from the command line, --resume needs a checkpoint to resume from
        ckpt = os.path.join(check_out_folder(args.out), CHECKPOINT)
        if not os.path.isfile(ckpt):
            raise CheckpointError(f"--resume: no checkpoint {ckpt} to resume from; run without --resume to start")
    result = train(args.model, args.method, args.eps, args.epochs, args.out, data=args.data, eps_test=args.eps_test,
                   device=_device(args.device), resume=args.resume, batch_size=args.batch_size, lr=args.lr,
                   train_count=args.train_count, test_count=args.test_count, eval_count=args.eval_count,
                   seed=args.seed, warmup=args.warmup, ramp=args.ramp, ramp_shape=args.ramp_shape,
                   kappa=tuple(args.kappa) if args.kappa else None, beta=tuple(args.beta) if args.beta else None,
                   decay_every=args.decay_every, decay_factor=args.decay_factor, projections=args.projections,
                   certify_domain=args.certify_domain, eval_domains=args.eval_domains,
                   progress=not args.quiet, method_options=options)
    if "onnx" in result:
        print(f"model: {result['onnx']}")
    return 0


def cmd_certify(args) -> int:
    from verifier_plugins.training.certify import certify_model, read_metadata
    from verifier_plugins.training.data import load_data
    from verifier_plugins.training.validation import check_domain, check_int, check_model_fits, check_real

    from .api import load

    count = check_int("--count", args.count, 1)
    check_real("--eps", args.eps, 0.0)
    options = _domain_options(args.domain_option)
    check_domain("--domain", args.domain, options)
    from .domains import available_domains
    from .options import check_domain_construction, check_options, option_types

    cls = available_domains()[args.domain]  # string values (intermediate=…) checked by constructing it
    check_domain_construction(args.domain, cls, check_options(options, option_types(cls), f"domain '{args.domain}'"))
    if args.data != "mnist" and not args.data.endswith(".npz"):
        raise VerifierInputError(f"--data {args.data}: must be mnist or an .npz file with x_test, y_test "
                                 f"(and x_train, y_train)")
    model = load(args.model)
    data = load_data(args.data, test_count=count, need_train=False)
    check_model_fits(args.model, model.input_shape, model.output_size, data, use_train=False)
    cert = certify_model(model, data.x_test, data.y_test, args.eps, args.domain, dtype=DTYPES[args.dtype],
                         data=data.name, **options)
    print(f"clean accuracy:     {cert.clean_accuracy:.4f}")
    print(f"PGD accuracy:       {cert.pgd_accuracy:.4f}")
    print(f"certified accuracy: {cert.certified_accuracy:.4f} ({cert.domain}, eps={cert.eps:g}, {cert.count} points)")
    meta = read_metadata(args.model)
    if "certificate" in meta:
        c = meta["certificate"]
        same = (c["domain"], c["count"], float(c["eps"]), c.get("dtype")) == (cert.domain, cert.count, cert.eps, cert.dtype)
        note = "reproduced" if same and c["certified_accuracy"] == cert.certified_accuracy else \
            ("DIFFERENT" if same else "not comparable: other domain/count/eps/dtype")
        print(f"metadata certificate: {c['certified_accuracy']:.4f} ({c['domain']}, eps={c['eps']:g}, "
              f"{c['count']} points) — {note}")
        if same and note == "DIFFERENT":
            return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="verifier", description="Verify ONNX neural networks against VNN-LIB properties.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("check", help="import a model, summarise its IR and compare it with onnxruntime")
    p.add_argument("model")
    p.add_argument("--samples", type=int, default=4,
                   help="random inputs to compare, 1..100000 (default 4)")
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

    p = sub.add_parser("bounds", help="bound every model output over each input box of a spec")
    common(p, "box")
    p.add_argument("--json", action="store_true", help='print one JSON object {"lower": [[...]], "upper": [[...]]}')
    p.set_defaults(func=cmd_bounds)

    p = sub.add_parser("verify", help="decide a VNN-LIB property: sat / unsat / unknown / timeout")
    common(p, "auto")
    p.add_argument("--timeout", type=float, default=None, help="seconds")
    p.add_argument("--result-file", help="write the VNN-COMP result (and counterexample) here")
    p.add_argument("--no-attack", action="store_true",
                   help="skip the falsification attack (sat can then only come from a complete method)")
    p.add_argument("--seed", type=int, default=0,
                   help="random seed of the attack (an integer in [0, 2**63-1]; default 0)")
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
    p.add_argument("--limit", type=int, help="only the first N instances (N >= 1)")
    p.add_argument("--resume", action="store_true",
                   help="skip instances already in the output CSV (its header is checked; a row cut by a kill "
                        "is dropped and rerun)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float64", help="bound arithmetic (default float64)")
    p.add_argument("--no-fidelity-check", action="store_true", help="skip the onnxruntime agreement check")
    p.set_defaults(func=cmd_vnncomp)

    p = sub.add_parser("train", help="certified training of an architecture, ONNX model or torch module; exports ONNX")
    p.add_argument("--model", default="wong-kolter", help="architecture name (see docs/training.md) or an .onnx file")
    p.add_argument("--method", default="crown-ibp",
                   choices=["standard", "pgd", "ibp", "crown-ibp", "dual-lp", "colt", "double-margin", "landscape"])
    p.add_argument("--eps", type=float, required=True, help="training epsilon (L-infinity, input space)")
    p.add_argument("--eps-test", type=float, help="evaluation/certification epsilon (default --eps)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--out", required=True, help="output folder (log.jsonl, checkpoint.pt, model.onnx)")
    p.add_argument("--data", default="mnist", help="mnist or an .npz with x_train, y_train, x_test, y_test")
    p.add_argument("--device", default="cpu")
    p.add_argument("--resume", action="store_true",
                   help="continue from OUT/checkpoint.pt (it must exist and come from the same options)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--train-count", type=int, help="use the first N training samples")
    p.add_argument("--test-count", type=int, default=1000, help="test points certified at the end (default 1000)")
    p.add_argument("--eval-count", type=int, default=100, help="held-out points evaluated every epoch (default 100)")
    p.add_argument("--eval-domains", default="box,crown", help="domains of the per-epoch verified accuracy")
    p.add_argument("--certify-domain", default="crown", help="domain of the exported certificate (default crown)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--warmup", type=float, help="epochs at eps=0 (default: the method's)")
    p.add_argument("--ramp", type=float, help="epochs of the eps ramp (default: the method's)")
    p.add_argument("--ramp-shape", choices=["linear", "smooth"], default="linear")
    p.add_argument("--kappa", type=float, nargs=2, metavar=("START", "END"), help="clean-loss weight schedule")
    p.add_argument("--beta", type=float, nargs=2, metavar=("START", "END"), help="CROWN weight schedule (crown-ibp)")
    p.add_argument("--decay-every", type=float, help="lr step decay period in epochs (after the ramp)")
    p.add_argument("--decay-factor", type=float)
    p.add_argument("--projections", type=int, help="dual-lp: random Cauchy projections K (training only)")
    p.add_argument("--option", action="append", metavar="KEY=VALUE",
                   help="method option, e.g. latent_steps=5, l1=1e-5, stages=2 (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("certify", help="clean, PGD and certified accuracy of an ONNX classifier on a test set")
    p.add_argument("model")
    p.add_argument("--data", default="mnist")
    p.add_argument("--eps", type=float, required=True)
    p.add_argument("--domain", default="crown")
    p.add_argument("--domain-option", action="append", metavar="KEY=VALUE")
    p.add_argument("--count", type=int, default=1000, help="first N test points, N >= 1 (default 1000)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float64")
    p.set_defaults(func=cmd_certify)

    p = sub.add_parser("domains", help="list the installed abstract domains")
    p.set_defaults(func=cmd_domains)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except VerifierInputError as exc:
        print(f"error: {_shown(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: one line unless --debug
        if args.debug:
            raise
        first = _shown(str(exc).splitlines()[0]) if str(exc) else ""
        print(f"error: internal error ({type(exc).__name__}: {first}); rerun with --debug for details", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
