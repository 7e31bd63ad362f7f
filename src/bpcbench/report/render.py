"""Re-render a run directory: summary.md and plots from results.csv, env.json and matrix.toml alone,
so `bpcbench report RUN_DIR` shows an old run with today's formatting."""

from __future__ import annotations

import os
from pathlib import Path

from bpcbench.atomic import write_text
from bpcbench.bench import inputs
from bpcbench.bench.incomplete import incomplete_note
from bpcbench.bench.results import read_csv
from bpcbench.errors import BpcError
from bpcbench.report import plots
from bpcbench.report.markdown import summary_markdown

def render(run_dir: str | os.PathLike) -> list[Path]:
    """(Re)write the plots of a run directory that carry information (plots.RUN_PLOTS; one that has
    none now is removed, not left stale) and summary.md, which links exactly those, from its results.csv."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise BpcError(f"not a run directory: {run_dir}")
    frame = read_csv(run_dir / "results.csv")
    env = inputs.read_env(run_dir)  # a regular file within its limit, else one line: never a FIFO's wait
    try:
        matrix_text = inputs.read_text(run_dir / "matrix.toml")
    except FileNotFoundError:
        matrix_text = None
    plot_links = []  # (file name, caption) of the plots written now: summary.md links these and no others
    for name, caption, plot in plots.RUN_PLOTS:
        if plot(frame, run_dir / name):
            plot_links.append((name, caption))
        else:  # nothing to show now: a plot left by an earlier render of this directory would be stale
            (run_dir / name).unlink(missing_ok=True)
    if (run_dir / "lossy.png").is_file():  # a matrix's [lossy] curves (lossy/curve.py)
        plot_links.append(("lossy.png", "Rate against distortion: the [lossy] curves (lossy.csv)"))
    summary = run_dir / "summary.md"
    note = incomplete_note(run_dir)
    write_text(summary, (f"> **{note}**\n\n" if note else "") + summary_markdown(frame, env, matrix_text, plot_links))
    return [summary] + [run_dir / name for name, _ in plot_links if name != "lossy.png"]
