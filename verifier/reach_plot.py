"""The picture of ``verifier reach --plot``: sampled outputs of two model outputs as dots
and the Box, DeepZ and CROWN polygons that contain them (Wong & Kolter 2018, seed 003,
Fig. 1 draws the convex outer bound the same way). Needs matplotlib (the ``plots``
extra), imported only when a plot is drawn."""

from __future__ import annotations

import os

import numpy as np

from .outputs import write_atomic
from .reach import ReachSets, polygon_area
from .report_plot import check_plot_path, figure_bytes, require_matplotlib

STYLE = {"box": ("tab:red", "Box"), "deepz": ("tab:green", "DeepZ"), "crown": ("tab:blue", "CROWN")}


def reach_image(sets: ReachSets, fmt: str = "png", title: str | None = None, dpi: int = 100) -> bytes:
    """The bytes of a ``fmt`` file (``png``, ``svg`` or ``pdf``; 6 × 6 inches, pixels at
    ``dpi`` for PNG) of ``sets``: the sampled outputs ``(Y_i, Y_j)`` as
    small grey dots, the attacked ones as black crosses, each domain's polygon (:data:`STYLE`: Box red, DeepZ green, CROWN
    blue) as a closed outline with a light fill, its area in the legend. Raises
    :class:`~verifier.errors.VerifierInputError` when matplotlib is missing, ``ValueError``
    for another ``fmt``."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Polygon

    i, j = sets.outputs
    fig = Figure(figsize=(6, 6), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.scatter(sets.samples[:, 0], sets.samples[:, 1], s=2, color="0.35", alpha=0.5, linewidths=0,
               label=f"{len(sets.samples)} sampled outputs", zorder=1, rasterized=True)
    if len(sets.extremes):
        ax.scatter(sets.extremes[:, 0], sets.extremes[:, 1], s=9, color="black", marker="x", linewidths=0.8,
                   label=f"{len(sets.extremes)} attacked outputs (PGD along each direction)", zorder=4)
    points = [sets.samples, sets.extremes]
    for name, polygon in sets.polygons.items():
        colour, label = STYLE.get(name, ("black", name))
        extra = f", {sets.directions} directions" if name == "crown" else ""
        text = f"{label}{extra} (area {polygon_area(polygon):.3g})"
        if len(polygon) >= 3:
            ax.add_patch(Polygon(polygon, closed=True, facecolor=colour, alpha=0.08, edgecolor="none", zorder=2))
        closed = np.concatenate([polygon, polygon[:1]])
        ax.plot(closed[:, 0], closed[:, 1], color=colour, linewidth=1.6, label=text, zorder=3)
        points.append(polygon)
    every = np.concatenate(points)
    low, high = every.min(0), every.max(0)
    pad = np.maximum((high - low) * 0.05, 1e-6)
    ax.set_xlim(low[0] - pad[0], high[0] + pad[0])
    ax.set_ylim(low[1] - pad[1], high[1] + pad[1])
    ax.set_xlabel(f"Y_{i}")
    ax.set_ylabel(f"Y_{j}")
    ax.set_title(title or f"Reachable outputs Y_{i}, Y_{j}")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize="small", framealpha=0.9)
    fig.tight_layout()
    return figure_bytes(fig, fmt)


def write_reach_plot(sets: ReachSets, path: str | os.PathLike, title: str | None = None) -> bytes:
    """Write :func:`reach_image` to ``path`` atomically, as PNG, SVG or PDF by its extension
    (:func:`~verifier.report_plot.check_plot_path`), and return the bytes written. Raises as
    :func:`reach_image` and :func:`~verifier.report_plot.check_plot_path`, and ``OSError``
    from the file system."""
    image = reach_image(sets, check_plot_path(path), title)
    write_atomic(path, image)
    return image
