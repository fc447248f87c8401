"""The training plugin's sub-commands, ``verifier train`` and ``verifier certify``.

The core command line knows nothing of this plugin: it finds :func:`add_commands`
through the entry-point group ``verifier.commands`` (``pyproject.toml``) and calls it
with its sub-parser collection. Errors are raised as
:class:`~verifier.errors.VerifierInputError` and reported by the core CLI (one
``error:`` line, exit 2).
"""

from __future__ import annotations

import os

from verifier.cli import DTYPES, checked_device, key_value_options
from verifier.errors import VerifierInputError

CERTIFY_BATCH, CERTIFY_PGD_STEPS, CERTIFY_SEED = 50, 20, 0  # certify's points per bound pass, PGD steps, seed
METHODS = ["standard", "pgd", "ibp", "crown-ibp", "dual-lp", "colt", "double-margin", "landscape"]


def cmd_train(args) -> int:
    """``verifier train``: options checked up front (:mod:`.validation`), then :func:`.trainer.train`
    in this process, on ``--nproc`` processes (:func:`.distributed.launch`), or as one rank of
    the process group ``torchrun`` started (:func:`.distributed.init_from_env`)."""
    from .distributed import init_from_env, launch
    from .trainer import CHECKPOINT, train
    from .validation import CheckpointError, check_out_folder

    for pair in args.option or []:
        if "=" not in pair or pair.startswith("="):
            raise VerifierInputError(f"--option expects key=value, got '{pair}'")
    options = key_value_options(args.option, "--option")
    if args.resume:  # from the command line, --resume needs a checkpoint to resume from
        ckpt = os.path.join(check_out_folder(args.out), CHECKPOINT)
        if not os.path.isfile(ckpt):
            raise CheckpointError(f"--resume: no checkpoint {ckpt} to resume from; run without --resume to start")
    device = checked_device(args.device)
    # launched by torchrun: join its group; else --nproc processes here (1: this process)
    run = train if init_from_env(device) is not None else (lambda **kw: launch(args.nproc, **kw))
    result = run(model=args.model, method=args.method, eps=args.eps, epochs=args.epochs, out=args.out, data=args.data,
                 eps_test=args.eps_test, device=device, resume=args.resume, batch_size=args.batch_size, lr=args.lr,
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
    """``verifier certify``: clean, PGD and certified accuracy at each radius of ``--eps``
    for the model and every ``--compare`` model (all loaded and checked before any work),
    printed as text or one JSON record (``--json``, :mod:`.certify_record`), optionally
    drawn (``--plot``, :mod:`.certify_plot`); exit 1 when a model's stored certificate is
    not reproduced under the same settings."""
    import json
    import time

    from verifier.api import load
    from verifier.domains import available_domains
    from verifier.options import check_domain_construction, check_options, option_types
    from verifier.outputs import check_output_file

    from .certify import check_eps_values, certify_curve, read_metadata, stored_certificate_status
    from .certify_record import ModelCurve, certify_record
    from .data import load_data
    from .validation import check_domain, check_int, check_model_fits

    started = time.monotonic()
    count = check_int("--count", args.count, 1)
    radii = check_eps_values("--eps", args.eps)
    options = key_value_options(args.domain_option)
    check_domain("--domain", args.domain, options)
    cls = available_domains()[args.domain]  # string values (intermediate=…) checked by constructing it
    check_domain_construction(args.domain, cls, check_options(options, option_types(cls), f"domain '{args.domain}'"))
    if args.data != "mnist" and not args.data.endswith(".npz"):
        raise VerifierInputError(f"--data {args.data}: must be mnist or an .npz file with x_test, y_test "
                                 f"(and x_train, y_train)")
    paths = [args.model, *(args.compare or [])]
    if args.plot is not None:
        from verifier.outputs import check_not_an_input
        from verifier.report_plot import check_plot_path

        check_output_file(args.plot, "--plot")
        check_not_an_input(args.plot, "--plot", [("an input model", path) for path in paths]
                           + ([] if args.data == "mnist" else [("the --data file", args.data)]))
        check_plot_path(args.plot, "--plot")  # PNG, SVG or PDF by the extension; matplotlib importable
    if len(set(map(os.path.realpath, paths))) < len(paths):
        raise VerifierInputError(f"--compare: a model is named twice ({', '.join(paths)}); give each model once")
    models = [load(path) for path in paths]
    data = load_data(args.data, test_count=count, need_train=False)
    for path, model in zip(paths, models):
        check_model_fits(path, model.input_shape, model.output_size, data, use_train=False)
    curve_of = certify_curve
    if args.ray is not None:  # ray is imported only here (verifier/cluster, the 'cluster' extra)
        from functools import partial

        from .ray_certify import certify_curve_ray

        curve_of = partial(certify_curve_ray, ray_address=args.ray)  # the same certificates, batches on Ray
    curves = []
    for path, model in zip(paths, models):
        began = time.monotonic()
        certs = curve_of(model, data.x_test, data.y_test, radii, args.domain, batch=CERTIFY_BATCH,
                         dtype=DTYPES[args.dtype], pgd_steps=CERTIFY_PGD_STEPS, seed=CERTIFY_SEED,
                         data=data.name, **options)
        stored = read_metadata(path).get("certificate")
        status = None if stored is None else stored_certificate_status(stored, certs)[0]
        curves.append(ModelCurve(path, certs, stored, status, time.monotonic() - began))
    if args.plot is not None:
        from .certify_plot import write_curves_plot

        write_curves_plot([(os.path.basename(c.model), c.certificates) for c in curves], args.plot)
    if args.json:
        record = certify_record(curves, plot=args.plot, seed=CERTIFY_SEED, pgd_steps=CERTIFY_PGD_STEPS,
                                batch=CERTIFY_BATCH, domain_options=options,
                                total_seconds=time.monotonic() - started)
        print(json.dumps(record, allow_nan=False))
    else:
        for curve in curves:
            _print_curve(curve, header=len(curves) > 1)
    return 1 if any(c.status == "different" for c in curves) else 0


def _print_curve(curve, header: bool) -> None:
    """The text lines of one model's ``certify`` result: one radius as three lines (the
    format of a single-ε run), several as a table; then the stored certificate's line."""
    certs = curve.certificates
    if header:
        print(f"model: {curve.model}")
    if len(certs) == 1:
        cert = certs[0]
        print(f"clean accuracy:     {cert.clean_accuracy:.4f}")
        print(f"PGD accuracy:       {cert.pgd_accuracy:.4f}")
        print(f"certified accuracy: {cert.certified_accuracy:.4f} ({cert.domain}, eps={cert.eps:g}, {cert.count} points)")
    else:
        print(f"clean accuracy:     {certs[0].clean_accuracy:.4f} ({certs[0].count} points)")
        print(f"{'eps':<10} {'PGD accuracy':<14} certified accuracy ({certs[0].domain})")
        for cert in certs:
            print(f"{cert.eps:<10g} {cert.pgd_accuracy:<14.4f} {cert.certified_accuracy:.4f}")
    if curve.stored is not None:
        c = curve.stored
        note = {"reproduced": "reproduced", "different": "DIFFERENT",
                "not comparable": "not comparable: other domain/count/eps/dtype"}[curve.status]
        print(f"metadata certificate: {c['certified_accuracy']:.4f} ({c['domain']}, eps={c['eps']:g}, "
              f"{c['count']} points) — {note}")


def add_commands(sub) -> None:
    """Add ``train`` and ``certify`` to the core CLI's sub-parsers (the ``verifier.commands``
    entry point)."""
    p = sub.add_parser("train", help="certified training of an architecture, ONNX model or torch module; exports ONNX")
    p.add_argument("--model", default="wong-kolter", help="architecture name (see docs/training.md) or an .onnx file")
    p.add_argument("--method", default="crown-ibp", choices=METHODS)
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
    p.add_argument("--nproc", type=int, default=1,
                   help="train on N processes of this machine with DistributedDataParallel (gloo on CPU, one GPU "
                        "each on CUDA; same loss curve as one process); under torchrun the group comes from the "
                        "environment (docs/scale.md)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("certify", help="clean, PGD and certified accuracy of an ONNX classifier on a test set")
    p.add_argument("model")
    p.add_argument("--data", default="mnist")
    p.add_argument("--eps", required=True,
                   help="L-infinity radius, or several separated by commas (0.01,0.02,0.05,0.1) for a curve")
    p.add_argument("--domain", default="crown")
    p.add_argument("--domain-option", action="append", metavar="KEY=VALUE")
    p.add_argument("--count", type=int, default=1000, help="first N test points, N >= 1 (default 1000)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float64")
    p.add_argument("--compare", action="extend", nargs="+", metavar="OTHER.onnx",
                   help="more models certified on the same data and radii, drawn on the same plot")
    p.add_argument("--plot", metavar="OUT.png",
                   help="write accuracy vs eps (clean, PGD, certified) as PNG, SVG or PDF (by the extension); "
                        "needs matplotlib (extra 'plots')")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object instead of text (schema: docs/outputs.md)")
    p.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help="certify the batches on a Ray cluster at ADDRESS (alone: a local one with this machine's "
                        "cores): the same certificates; needs the cluster extra (docs/scale.md)")
    p.set_defaults(func=cmd_certify)
