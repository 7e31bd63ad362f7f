"""ladder.md and ladder.png of a ladder run, from its document (ladder/results.py `document`),
so a ladder.json alone renders them again."""

from __future__ import annotations

import os
from pathlib import Path

from bpcbench.atomic import write_text
from bpcbench.report.curves import plot_ladder
from bpcbench.report.findings import ladder_markdown


def write_report(doc: dict, out_dir: str | os.PathLike) -> dict[str, Path]:
    """ladder.md (the findings) and ladder.png (the curves) into out_dir; their paths."""
    paths = {"md": Path(out_dir) / "ladder.md", "png": Path(out_dir) / "ladder.png"}
    write_text(paths["md"], ladder_markdown(doc))
    plot_ladder(doc, paths["png"])
    return paths
