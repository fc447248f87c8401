"""The picture of ``verifier certify --plot``: clean, PGD and certified accuracy against the
L∞ radius ε, one colour per model (``--compare`` adds models to the same axes). Needs
matplotlib (the ``plots`` extra), imported only when a plot is drawn; without it the
option is refused before any work (:func:`verifier.report_plot.require_matplotlib`)."""

from __future__ import annotations

import os
from typing import Sequence

from verifier.outputs import write_atomic
from verifier.report_plot import check_plot_path, figure_bytes, require_matplotlib

from .certify import Certificate


def curves_image(curves: Sequence[tuple[str, Sequence[Certificate]]], fmt: str = "png", title: str | None = None,
                 dpi: int = 100) -> bytes:
    """The bytes of a ``fmt`` file (``png``, ``svg`` or ``pdf``; 7 × 4.5 inches, pixels at
    ``dpi`` for PNG) of accuracy vs ε for each ``(label, certificates)``
    of ``curves``: the certified accuracy as a solid line with markers, PGD accuracy dashed
    and the clean accuracy dotted, in one colour per model; ε (input units) on the x axis
    in increasing order, accuracy in [0, 1] on the y axis. Every certificate of one model
    shares its data, count and domain (one :func:`~.certify.certify_curve` call).

    Raises :class:`~verifier.errors.VerifierInputError` when matplotlib is missing and
    ``ValueError`` for an empty ``curves``, a model without certificates or another ``fmt``."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not curves or any(not certs for _, certs in curves):
        raise ValueError("curves_image needs at least one model with at least one certificate")
    fig = Figure(figsize=(7, 4.5), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    colours = [f"C{i % 10}" for i in range(len(curves))]
    for (label, certs), colour in zip(curves, colours):
        points = sorted(certs, key=lambda c: c.eps)
        eps = [c.eps for c in points]
        ax.plot(eps, [c.certified_accuracy for c in points], color=colour, marker="o", linewidth=2,
                label=f"{label}: certified ({points[0].domain})")
        ax.plot(eps, [c.pgd_accuracy for c in points], color=colour, marker="x", linestyle="--", linewidth=1.2,
                label=f"{label}: PGD")
        ax.axhline(points[0].clean_accuracy, color=colour, linestyle=":", linewidth=1, label=f"{label}: clean")
    first = curves[0][1][0]
    ax.set_xlabel("ε (L∞ radius, input units)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title or f"Accuracy vs ε: {first.data}, first {first.count} test points")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower left", fontsize="small", framealpha=0.9)
    fig.tight_layout()
    return figure_bytes(fig, fmt)


def write_curves_plot(curves: Sequence[tuple[str, Sequence[Certificate]]], path: str | os.PathLike,
                      title: str | None = None) -> bytes:
    """Write :func:`curves_image` to ``path`` atomically, as PNG, SVG or PDF by its extension
    (:func:`~verifier.report_plot.check_plot_path`), and return the bytes written. Raises as
    :func:`curves_image` and :func:`~verifier.report_plot.check_plot_path`, and ``OSError``
    from the file system."""
    image = curves_image(curves, check_plot_path(path), title)
    write_atomic(path, image)
    return image
