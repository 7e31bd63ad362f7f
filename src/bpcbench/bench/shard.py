"""Split a bench matrix across machines with no coordination: `--shard K/N`.

Each cell goes to exactly one shard, decided by the cell's own content (a hash of its
fields), so every job of a Slurm array, a Kubernetes Indexed Job or a CI matrix computes
the same split on its own, and a cell keeps its shard when other cells are added.
Cells of one shard run in the matrix's order, so a shard loads each model once.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict

from bpcbench.errors import BpcError

_SPEC = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def parse(spec: str) -> tuple[int, int]:
    """'K/N' with 1 <= K <= N (1-based, like `split -n K/N`)."""
    m = _SPEC.match(spec or "")
    if not m:
        raise BpcError(f"--shard takes K/N (for example 2/8), got {spec!r}")
    k, n = int(m.group(1)), int(m.group(2))
    if n < 1 or not 1 <= k <= n:
        raise BpcError(f"--shard {spec}: K must be between 1 and N")
    return k, n


def cell_id(cell) -> str:
    """A stable identity for a cell: sha256 of its fields, independent of the process."""
    return hashlib.sha256(json.dumps(asdict(cell), sort_keys=True, default=str).encode()).hexdigest()


def _portable(cell) -> str:
    """The cell's fields with file paths cut to their names: machines with different
    checkout paths must still agree on the split."""
    fields = {k: (os.path.basename(v) if isinstance(v, str) and os.sep in v else v)
              for k, v in asdict(cell).items()}
    return json.dumps(fields, sort_keys=True, default=str)


def shard_of(cell, n: int) -> int:
    """The 1-based shard a cell belongs to among n."""
    return int(hashlib.sha256(_portable(cell).encode()).hexdigest()[:15], 16) % n + 1


def select(cells: list, k: int, n: int) -> list:
    return [c for c in cells if shard_of(c, n) == k]
