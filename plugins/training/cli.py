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

METHODS = ["standard", "pgd", "ibp", "crown-ibp", "dual-lp", "colt", "double-margin", "landscape"]


def cmd_train(args) -> int:
    """``verifier train``: options checked up front (:mod:`.validation`), then :func:`.trainer.train`."""
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
    result = train(args.model, args.method, args.eps, args.epochs, args.out, data=args.data, eps_test=args.eps_test,
                   device=checked_device(args.device), resume=args.resume, batch_size=args.batch_size, lr=args.lr,
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
    """``verifier certify``: clean, PGD and certified accuracy; exit 1 when the model's
    stored certificate is not reproduced under the same settings."""
    from verifier.api import load
    from verifier.domains import available_domains
    from verifier.options import check_domain_construction, check_options, option_types

    from .certify import certify_model, read_metadata
    from .data import load_data
    from .validation import check_domain, check_int, check_model_fits, check_real

    count = check_int("--count", args.count, 1)
    check_real("--eps", args.eps, 0.0)
    options = key_value_options(args.domain_option)
    check_domain("--domain", args.domain, options)
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
