"""The cactus plot of a benchmark report: instances solved vs time, ours beside the
published tools. Needs matplotlib (the ``plots`` extra), imported only when a plot is drawn."""

from __future__ import annotations

import io
import os

from .errors import VerifierInputError
from .outputs import write_atomic
from .report import Report

MIN_SECONDS = 0.01  # times below this are drawn at it (the time axis is logarithmic)


def require_matplotlib(option: str = "--plot") -> None:
    """Raise :class:`VerifierInputError` naming ``option`` and the install command when
    matplotlib cannot be imported (so a plot is refused before any work)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise VerifierInputError(f"{option} needs matplotlib, which is not installed "
                                 f"(pip install matplotlib, or pip install -e \".[plots]\")") from None


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
    """The cactus plot of ``report`` as PNG bytes (8 × 5 inches at ``dpi``): one step line
    per tool, the number of instances solved within a time on a logarithmic time axis, ours
    drawn thicker; the instance count is the dashed ceiling. Raises
    :class:`VerifierInputError` when matplotlib is missing."""
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
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def write_cactus_plot(report: Report, path: str | os.PathLike, title: str | None = None) -> bytes:
    """Write :func:`cactus_png` to ``path`` atomically and return the PNG bytes. Raises
    :class:`VerifierInputError` when matplotlib is missing, ``OSError`` from the file system."""
    png = cactus_png(report, title)
    write_atomic(path, png)
    return png
