"""``verifier reach``'s command line: its options (importing no torch, so that building the CLI's
parser stays cheap) and the command, which imports :mod:`verifier.reach` when it runs."""

from __future__ import annotations

import os
import re

from .errors import VerifierInputError

DEFAULT_DIRECTIONS = 32
DEFAULT_SAMPLES = 10_000
MAX_CORNER_INPUTS = 10  # every corner of the box is sampled for at most 2**10 corners


def cmd_reach(args) -> int:
    """``verifier reach``: options checked first, the model loaded and checked against
    onnxruntime on the box, then :func:`reach_sets`; prints each set's extent and area and
    writes ``--plot``. Exit 0, or 2 for bad input (one ``error:`` line)."""
    import numpy as np

    from .api import load
    from .options import check_samples, check_seed
    from .outputs import check_not_an_input, check_output_file
    from .reach import directions, parse_input_box, parse_outputs, polygon_area, reach_sets

    if (args.input_box is None) == (args.spec is None):
        raise VerifierInputError("reach: give the input box with exactly one of --input-box l1:u1,l2:u2,... "
                                 "or --spec FILE.vnnlib")
    if args.region is not None and args.spec is None:
        raise VerifierInputError(f"--region {args.region}: only with --spec (it picks one of the spec's input "
                                 f"regions); --input-box gives a single box")
    samples = check_samples(args.samples, "--samples")
    seed = check_seed(args.seed, "--seed")
    directions(args.directions)
    if args.plot is not None:
        from .report_plot import check_plot_path

        check_output_file(args.plot, "--plot")
        check_not_an_input(args.plot, "--plot", [("the input model", args.model)]
                           + ([] if args.spec is None else [("the input spec", args.spec)]))
        check_plot_path(args.plot, "--plot")
    spec = None
    if args.spec is not None:
        from .spec import read_vnnlib

        spec = read_vnnlib(args.spec)
        region = spec_region(spec, args.region, args.spec)
    model = load(args.model, check=False)
    if spec is not None:
        spec.check_model(model.input_size, model.output_size)
        lower, upper = (t.reshape(-1).double() for t in spec.regions[region].float64_range())
    else:
        lower, upper = parse_input_box(args.input_box, model.input_size)
    outputs = parse_outputs(args.outputs, model.output_size)
    model.check(lower, upper)
    sets = reach_sets(model, lower, upper, outputs, args.directions, samples, seed)
    i, j = outputs
    ys = np.concatenate([sets.samples, sets.extremes])
    print(f"outputs Y_{i}, Y_{j}: {len(sets.samples)} sampled and {len(sets.extremes)} attacked outputs in "
          f"Y_{i} ∈ [{ys[:, 0].min():.6g}, {ys[:, 0].max():.6g}], Y_{j} ∈ [{ys[:, 1].min():.6g}, {ys[:, 1].max():.6g}]")
    for name, polygon in sets.polygons.items():
        extra = f", {sets.directions} directions" if name == "crown" else ""
        print(f"{name + ':':7s}{len(polygon)} vertices{extra}, Y_{i} ∈ [{polygon[:, 0].min():.6g}, "
              f"{polygon[:, 0].max():.6g}], Y_{j} ∈ [{polygon[:, 1].min():.6g}, {polygon[:, 1].max():.6g}], "
              f"area {polygon_area(polygon):.6g}")
    if args.plot is not None:
        from .reach_plot import write_reach_plot

        write_reach_plot(sets, args.plot, title=f"{os.path.basename(args.model)}: outputs Y_{i}, Y_{j}")
        print(f"plot: {args.plot}")
    return 0


def spec_region(spec, region: int | None, path: str) -> int:
    """The index of the input region of ``spec`` (a :class:`~verifier.spec.model.Spec` read
    from ``path``) that ``reach`` draws: ``region`` (``--region``), or 0 for a spec of one
    region. Raises :class:`VerifierInputError` for an index outside ``0..len(spec.regions)-1``
    and for a spec of several regions without ``--region`` (a picture of one box would
    silently leave the others out)."""
    count = len(spec.regions)
    if region is None:
        if count > 1:
            raise VerifierInputError(f"--spec {path} has {count} input regions and reach draws one box: choose it "
                                     f"with --region 0..{count - 1}")
        return 0
    if not 0 <= region < count:
        raise VerifierInputError(f"--region {region}: the spec {path} has {count} input region(s), 0..{count - 1}")
    return region


def add_reach_command(sub) -> None:
    """Add ``reach`` to the CLI's sub-parsers (``verifier/cli.py`` calls this in ``build_parser``)."""
    p = sub.add_parser("reach", help="sampled outputs and the Box / DeepZ / CROWN sets of two outputs over a box")
    # a value such as "-0.5:0.5,0:1" starts like an option; argparse takes it as a value when it
    # matches this pattern (its own pattern only accepts plain negative numbers)
    p._negative_number_matcher = re.compile(r"^-\.?\d")
    p.add_argument("model")
    p.add_argument("--input-box", metavar="L1:U1,L2:U2,...", help="one low:high pair per model input")
    p.add_argument("--spec", metavar="FILE.vnnlib", help="take the input box from a VNN-LIB spec instead")
    p.add_argument("--region", type=int, metavar="N",
                   help="with --spec: the spec's input region to draw, 0..count-1 (required when the spec has "
                        "several; a spec of one region needs none)")
    p.add_argument("--outputs", metavar="I,J", help="the two outputs drawn (default 0,1 for a two-output model)")
    p.add_argument("--samples", type=int, default=DEFAULT_SAMPLES,
                   help=f"uniform input samples (default {DEFAULT_SAMPLES}; box corners are added for ≤ "
                        f"{MAX_CORNER_INPUTS} moving inputs)")
    p.add_argument("--directions", type=int, default=DEFAULT_DIRECTIONS,
                   help=f"CROWN bounding directions, a multiple of 4 (default {DEFAULT_DIRECTIONS})")
    p.add_argument("--seed", type=int, default=0, help="seed of the samples (default 0)")
    p.add_argument("--plot", metavar="OUT.png", help="write the picture as PNG, SVG or PDF (by the extension); needs matplotlib "
                        "(extra 'plots')")
    p.set_defaults(func=cmd_reach)
