"""``verifier report``'s command line: its options and the command (the tables and plot
themselves are :mod:`verifier.report`, :mod:`verifier.report_csv`, :mod:`verifier.report_plot`)."""

from __future__ import annotations

import logging
import os

from .errors import VerifierInputError

_LOG = logging.getLogger("verifier.cli")


def cmd_report(args) -> int:
    """``verifier report``: tables of a results CSV beside the published tools (stdout),
    optionally as markdown / HTML files and a cactus plot; exit 1 when one of our answers is
    wrong. Every path is checked before anything is read or written."""
    from .outputs import check_not_an_input, check_output_file, write_atomic
    from .report import build_report, load_reference, read_all_results, render_html, render_markdown, render_text

    outputs = {flag: path for flag, path in (("--markdown", args.markdown), ("--html", args.html),
                                             ("--plot", args.plot)) if path is not None}
    inputs = ([("the input results CSV", path) for path in args.results]
              + [("the --reference CSV", path) for path in args.reference or []])
    for flag, path in outputs.items():
        check_output_file(path, flag)
        check_not_an_input(path, flag, inputs)
    seen: dict[str, str] = {}
    for flag, path in outputs.items():
        if os.path.realpath(path) in seen:
            raise VerifierInputError(f"{seen[os.path.realpath(path)]} and {flag} name the same file {path}; "
                                     f"give each output its own file")
        seen[os.path.realpath(path)] = flag
    if args.plot is not None:
        from .report_plot import check_plot_path

        check_plot_path(args.plot, "--plot")
    if args.bench_root is not None and not os.path.isdir(args.bench_root):
        raise VerifierInputError(f"--bench-root {args.bench_root}: not a folder (it holds <benchmark>/reference.csv)")
    notes: list[str] = []
    rows = read_all_results(args.results, notes)
    if not rows:
        raise VerifierInputError(f"{', '.join(args.results)}: no result rows (expected "
                                 f"benchmark,onnx,vnnlib,prepare_time,result,run_time lines)")
    references = [load_reference(path, "--reference") for path in args.reference or []]
    report = build_report(rows, references, args.bench_root)
    used = {b.reference for b in report.benchmarks}
    notes += [f"--reference {ref.path} lists none of the results' instances" for ref in references
              if ref.path not in used]
    for note in notes + report.notes:
        _LOG.info(note)
    png = None
    if args.plot is not None:
        from .report_plot import write_cactus_plot

        png = write_cactus_plot(report, args.plot)
    if args.markdown is not None:
        plot = None if args.plot is None else os.path.relpath(args.plot, os.path.dirname(os.path.abspath(args.markdown)))
        write_atomic(args.markdown, render_markdown(report, plot))
    if args.html is not None:
        write_atomic(args.html, render_html(report, png))
    print(render_text(report), end="")
    return 1 if report.any_wrong else 0


def add_report_command(sub) -> None:
    """Add ``report`` to the CLI's sub-parsers (``verifier/cli.py`` calls this in ``build_parser``)."""
    p = sub.add_parser("report", help="tables (and a cactus plot) of a vnncomp results CSV beside the published tools")
    p.add_argument("results", nargs="+", metavar="RESULTS.csv",
                   help="results of `verifier vnncomp` (benchmark,onnx,vnnlib,prepare_time,result,run_time)")
    p.add_argument("--reference", action="append", metavar="REFERENCE.csv",
                   help="a VNN-COMP reference.csv (expected answers, published tools); repeatable")
    p.add_argument("--bench-root", help="folder holding <benchmark>/reference.csv for benchmarks no --reference lists")
    p.add_argument("--markdown", metavar="OUT.md", help="also write the report as markdown")
    p.add_argument("--html", metavar="OUT.html", help="also write the report as one HTML page")
    p.add_argument("--plot", metavar="OUT.png",
                   help="write the cactus plot (instances solved vs time) as PNG, SVG or PDF (by the extension); "
                        "needs matplotlib (extra 'plots')")
    p.set_defaults(func=cmd_report)
