"""INCOMPLETE.json: the marker a run directory holds while cells are still to run, so a
stopped run is never mistaken for a finished one (the runner writes it, report shows it)."""

from __future__ import annotations

import json
from pathlib import Path

from bpcbench.atomic import write_text
from bpcbench.bench import inputs
from bpcbench.errors import BpcError

INCOMPLETE = "INCOMPLETE.json"  # in a run directory while cells are still to run (left by an interrupted run)


def mark_incomplete(run_dir: Path, done: int, total: int, rounds: tuple[int, int] = (1, 1)) -> None:
    """Cells with a row so far, of total; rounds: (timing round under way, rounds in all)."""
    write_text(run_dir / INCOMPLETE, json.dumps({"cells_done": done, "cells_total": total, "timing_round": rounds[0],
                                                 "timing_rounds": rounds[1]}) + "\n")


def incomplete_note(run_dir: Path) -> str | None:
    """One line for a run that stopped before its last cell, or None."""
    try:
        doc = inputs.read_json_object(run_dir / INCOMPLETE)  # never a FIFO's wait, nor a forged size
        note = (f"INCOMPLETE run: {int(doc['cells_done'])} of {int(doc['cells_total'])} cells measured "
                f"(interrupted; the missing cells are not in results.csv)")
        r, rounds = int(doc.get("timing_round", 1)), int(doc.get("timing_rounds", 1))
        if doc["cells_done"] == doc["cells_total"] and r > 1:
            note = (f"INCOMPLETE run: every cell measured, but interrupted in timing round {r} of {rounds} "
                    f"(some timings have fewer values than the matrix asks for)")
        return note
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, BpcError):
        return "INCOMPLETE run: its INCOMPLETE.json marker is unreadable"
