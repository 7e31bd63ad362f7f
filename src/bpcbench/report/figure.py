"""PNG plots, drawn on matplotlib's object-oriented Figure (no pyplot state) and written atomically.

matplotlib is imported inside the functions that draw (Agg canvas, no GUI backend), so importing
a plotting module (render, runner, merge) costs nothing until a plot is drawn.
"""

from __future__ import annotations

from pathlib import Path

from bpcbench.atomic import atomic_open

MARKERS = "osD^v<>ph*X"  # with the ten colours C0..C9: 110 codecs before a (colour, marker) pair repeats


def figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save(fig, path: Path) -> None:
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png")


def write(fig, path: Path) -> bool:
    """Save the figure, if there is one; say whether a file was written."""
    if fig is None:
        return False
    save(fig, path)
    return True


def plain_log_ticks(axis) -> None:
    axis.set_major_formatter(lambda v, _: f"{v:g}")
    axis.set_minor_formatter(lambda v, _: "")
