"""PNG plots, drawn on matplotlib's object-oriented Figure (no pyplot state) and written atomically.

matplotlib is imported inside the functions that draw (Agg canvas, no GUI backend), so importing
a plotting module (render, runner, merge) costs nothing until a plot is drawn.
"""

from __future__ import annotations

from pathlib import Path

from bpcbench.atomic import atomic_open

MARKERS = "osD^v<>ph*X"  # with the ten colours C0..C9: 110 codecs before a (colour, marker) pair repeats
# Views drawn in one figure, the first in results.csv order (summary.md says so, its tables have all):
# a panel or a bar group per view cannot be read beyond these, and drawing 5,000 panels took hours.
MAX_PANELS = 12  # bpb_vs_speed and bpb_vs_model_size: one panel per view
MAX_BAR_VIEWS = 30  # bpb_by_codec and bpb_split: bar groups per panel


def capped_title(title: str, shown: int, views: int) -> str:
    """The figure's title, with the cap said when it cut views."""
    return title if shown >= views else f"{title}\n(the first {shown} of {views:,} corpus views; summary.md has all)"


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
