"""How a results.csv of an older schema version becomes one of today's, version by version.

Every version this project has written stays readable (a nightly history, a reference run or
a colleague's CSV from last month must not turn unreadable with the next release); a version
newer than this bpcbench knows is refused in one line. Each step takes the header and the
text rows of version N to those of N + 1; a column a step adds is left empty where the old
file cannot say its value (the readers treat empty cells as unknown, never as zero).

* 2 -> 3: timings got a spread: `encode_seconds_std`, `decode_seconds_std`, `timing_values`,
  `timing_loops` added, and `ci_warning`; all empty in a migrated row (version 2 kept one
  value per timing, so there is no spread to give).
* 3 -> 4: `n_chunks` renamed `n_pieces` (it counts lanes, chunks, windows or blocks).

>>> header, rows = upgrade(["schema_version", "n_chunks"], [["3", "7"]], 3)
>>> header, rows
(['schema_version', 'n_pieces'], [['4', '7']])
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from bpcbench.errors import BpcError, OtherSchema

# The schema results.csv is written in (bench/results.py), defined here beside the steps that
# lead to it, and free of pandas so the cell cache can ask it on the core install.
# 2: policy, context_tokens, lanes, context_*; 3: timing mean ± std and n, BCa, ci_warning;
# 4: n_chunks -> n_pieces.
SCHEMA_VERSION = 4
OLDEST = 2  # the first schema results.csv files were kept in (results/reference/context-smollm2)

Rows = list[list[str]]


def _add(names: tuple[str, ...]) -> Callable[[list[str], Rows], tuple[list[str], Rows]]:
    def step(header: list[str], rows: Rows) -> tuple[list[str], Rows]:
        new = [n for n in names if n not in header]
        return header + new, [row + [""] * len(new) for row in rows]
    return step


def _rename(old: str, new: str) -> Callable[[list[str], Rows], tuple[list[str], Rows]]:
    def step(header: list[str], rows: Rows) -> tuple[list[str], Rows]:
        return [new if h == old else h for h in header], rows
    return step


STEPS: dict[int, Callable[[list[str], Rows], tuple[list[str], Rows]]] = {  # version N -> N + 1
    2: _add(("ci_warning", "encode_seconds_std", "decode_seconds_std", "timing_values", "timing_loops")),
    3: _rename("n_chunks", "n_pieces"),
}


def upgrade(header: list[str], rows: Rows, version: int) -> tuple[list[str], Rows]:
    """Header and rows of a file whose rows are all of schema `version` (OLDEST <= version <= today's),
    as today's schema has them, schema_version cells included."""
    current = version
    while current in STEPS:
        header, rows = STEPS[current](header, rows)
        current += 1
    if "schema_version" in header:
        i = header.index("schema_version")
        rows = [row[:i] + [str(current)] + row[i + 1:] for row in rows]
    return header, rows


def to_current(path: Path, header: list[str], rows: Rows, current: int) -> tuple[list[str], Rows]:
    """An older schema's rows (OLDEST on) migrated to `current`'s; a newer or unknown one refused in one line."""
    if "schema_version" not in header or not rows:
        return header, rows
    i = header.index("schema_version")
    version = rows[0][i]
    if not re.fullmatch(r"[0-9]{1,6}", version) or int(version) == current:
        return header, rows  # not a version number: the column check names the cell
    if int(version) > current or int(version) < OLDEST:
        raise OtherSchema(f"{path}: row 1, column schema_version: {version}, but this bpcbench reads "
                          f"{OLDEST} to {current} (use a bpcbench that reads {version})")
    for n, row in enumerate(rows, start=1):
        if row[i] != version:
            raise BpcError(f"{path}: row {n}, column schema_version: {row[i]!r}, but row 1 has {version}")
    return upgrade(header, rows, int(version))
