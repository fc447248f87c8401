"""The cactus plot of a benchmark report: instances solved vs time, ours beside the
published tools. Needs matplotlib (the ``plots`` extra), imported only when a plot is drawn.
The file is PNG, SVG or PDF, by its extension (:data:`PLOT_FORMATS`; anything else is
refused by :func:`check_plot_path` before any work)."""

from __future__ import annotations

import io
import os
from pathlib import Path

from .errors import VerifierInputError
from .outputs import write_atomic
from .report import Report

MIN_SECONDS = 0.01  # times below this are drawn at it (the time axis is logarithmic)
PLOT_FORMATS = ("png", "svg", "pdf")  # what --plot writes, by the file's extension (any case)


def require_matplotlib(option: str = "--plot") -> None:
    """Raise :class:`VerifierInputError` naming ``option`` and the install command when
    matplotlib cannot be imported (so a plot is refused before any work)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise VerifierInputError(f"{option} needs matplotlib, which is not installed "
                                 f"(pip install matplotlib, or pip install -e \".[plots]\")") from None


def check_plot_path(path: str | os.PathLike, option: str = "--plot") -> str:
    """The format (``'png'``, ``'svg'`` or ``'pdf'``) of the plot file ``path``, by its
    extension in any case, once matplotlib is known to be importable. Raises
    :class:`VerifierInputError` naming ``option`` for another extension (or none), and as
    :func:`require_matplotlib` does; so a plot is refused before any work."""
    fmt = Path(path).suffix[1:].lower()
    if fmt not in PLOT_FORMATS:
        raise VerifierInputError(f"{option} {path}: the plot is written as .png, .svg or .pdf (by the extension); "
                                 f"give a file name ending in one of them")
    require_matplotlib(option)
    return fmt


def figure_bytes(fig, fmt: str) -> bytes:
    """The matplotlib ``Figure`` ``fig`` saved as ``fmt`` (one of :data:`PLOT_FORMATS`): the
    bytes of a PNG, SVG or PDF file. Raises ``ValueError`` for another ``fmt``. Shared by
    every ``--plot`` (``report``, ``reach``, ``certify``), so each writes what its file's
    extension says."""
    if fmt not in PLOT_FORMATS:
        raise ValueError(f"plot format {fmt!r} is not one of {', '.join(PLOT_FORMATS)}")
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt)
    return buffer.getvalue()


def cactus_series(report: Report) -> dict[str, list[float]]:
    """Per tool (ours first, then the published tools in reference order), the sorted
    run times (seconds) of its correct-or-unchecked ``sat``/``unsat`` answers over every
    benchmark of ``report``: point ``k`` of the curve is (``times[k]``, ``k + 1``)."""
    series: dict[str, list[float]] = {}
    for bench in report.benchmarks:
        for summary in bench.summaries:
            series.setdefault(summary.tool, []).extend(summary.solved_times)
    return {tool: sorted(times) for tool, times in series.items()}


def cactus_png(report: Report, title: str | None = None, dpi: int = 100) -> bytes:
    """The cactus plot of ``report`` as PNG bytes (8 × 5 inches at ``dpi``): see
    :func:`cactus_image`."""
    return cactus_image(report, "png", title, dpi)


def cactus_image(report: Report, fmt: str = "png", title: str | None = None, dpi: int = 100) -> bytes:
    """The cactus plot of ``report`` as ``fmt`` (one of :data:`PLOT_FORMATS`) bytes, 8 × 5
    inches (pixels at ``dpi`` for PNG): one step line per tool, the number of instances
    solved within a time on a logarithmic time axis, ours drawn thicker; the instance count
    is the dashed ceiling. Raises :class:`VerifierInputError` when matplotlib is missing,
    ``ValueError`` for another ``fmt``."""
    if fmt not in PLOT_FORMATS:
        raise ValueError(f"plot format {fmt!r} is not one of {', '.join(PLOT_FORMATS)}")
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    series = cactus_series(report)
    instances = sum(b.summaries[0].instances for b in report.benchmarks)
    fig = Figure(figsize=(8, 5), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    longest = MIN_SECONDS * 10
    for index, (tool, times) in enumerate(series.items()):
        xs = [max(t, MIN_SECONDS) for t in times]
        longest = max([longest, *xs])
        ours = index == 0
        label = f"{tool} (ours), {len(xs)} solved" if ours else f"{tool}, {len(xs)} solved"
        ax.step([MIN_SECONDS, *xs], [0, *range(1, len(xs) + 1)], where="post", label=label,
                linewidth=2.5 if ours else 1.3, zorder=3 if ours else 2)
    ax.axhline(instances, color="grey", linestyle="--", linewidth=0.8, label=f"{instances} instances")
    ax.set_xscale("log")
    ax.set_xlim(MIN_SECONDS, longest * 1.5)
    ax.set_ylim(0, max(instances, 1) * 1.05)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("time limit (s)")
    ax.set_ylabel("instances solved (correct or unchecked)")
    ax.set_title(title or "Cactus plot: " + ", ".join(b.name for b in report.benchmarks))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper left", fontsize="small", framealpha=0.9)
    fig.tight_layout()
    return figure_bytes(fig, fmt)


def write_cactus_plot(report: Report, path: str | os.PathLike, title: str | None = None) -> bytes:
    """Write the cactus plot to ``path`` atomically in the format of its extension
    (:func:`check_plot_path`) and return it as PNG bytes (what an HTML page embeds). Raises
    :class:`VerifierInputError` for another extension or when matplotlib is missing,
    ``OSError`` from the file system."""
    fmt = check_plot_path(path)
    png = cactus_png(report, title)
    write_atomic(path, png if fmt == "png" else cactus_image(report, fmt, title))
    return png
