"""Split a bench matrix across machines with no coordination: `--shard K/N`.

Each cell goes to exactly one shard. The split balances an estimated cost and depends on
the matrix alone (its cells, and the corpus sizes the checksummed manifest pins), so every
job of a Slurm array, a Kubernetes Indexed Job or a CI matrix computes the same split on
its own, on any machine and checkout path:

* a model cell costs about (bytes it measures) × (the model's parameters), twice for a coded
  cell (compress and decompress). The parameters come from the model's name (`135m`,
  `1.5b`), without loading it; a name that says none counts as ``DEFAULT_MODEL_PARAMS``.
  Bytes are the cell's ``max_bytes``, capped by the manifest's size of the corpus, or
  ``DEFAULT_CORPUS_BYTES`` for a whole file the manifest does not know.
* model cells are placed largest first, each on the least-loaded shard (LPT scheduling),
  ties broken by the cell's path-independent id, then its place in the matrix;
* baselines, cheap and hard to estimate, are then dealt round-robin, least-loaded shard first.

Adding a cell to the matrix may move others to another shard: shards of one run must use
the same matrix (`bpcbench merge` checks its sha256). Cells of one shard run in the
matrix's order, so a shard loads each model once.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict
from functools import lru_cache

from bpcbench.corpora import load_manifest
from bpcbench.errors import BpcError

_SPEC = re.compile(r"^\s*([0-9]{1,9})\s*/\s*([0-9]{1,9})\s*$")
SHARD_FILE = "shard.json"  # in a shard's run directory: what `bpcbench merge` checks (runner.Runner.shard_record)
MAX_SHARDS = 100_000  # shards of one run; merge refuses a shard.json that claims more
_PARAMS = re.compile(r"(?<![a-z0-9.])(\d+(?:\.\d+)?)([mb])(?![a-z])")

DEFAULT_MODEL_PARAMS = 100_000_000  # a model whose name says nothing of its size
DEFAULT_CORPUS_BYTES = 100_000  # a whole corpus file the manifest does not list
BASELINE_PARAMS = 100_000  # a baseline timing counts like a model this size (~1000x faster than a 100M model)
CODED_FACTOR = 2  # a coded cell compresses and decompresses; an ideal one evaluates once


def parse(spec: str) -> tuple[int, int]:
    """'K/N' with 1 <= K <= N (1-based, like `split -n K/N`)."""
    m = _SPEC.match(spec or "")
    if not m:
        raise BpcError(f"--shard takes K/N (for example 2/8), got {spec!r}")
    k, n = int(m.group(1)), int(m.group(2))
    if n < 1 or not 1 <= k <= n:
        raise BpcError(f"--shard {spec}: K must be between 1 and N")
    if n > MAX_SHARDS:
        raise BpcError(f"--shard {spec}: at most {MAX_SHARDS:,} shards")
    return k, n


def cell_id(cell) -> str:
    """A stable identity for a cell: sha256 of its fields, independent of the process."""
    return hashlib.sha256(json.dumps(asdict(cell), sort_keys=True, default=str).encode()).hexdigest()


def _portable(cell) -> str:
    """The cell's fields with file paths cut to their names: machines with different
    checkout paths must still agree on the split."""
    fields = {k: (os.path.basename(v) if isinstance(v, str) and os.sep in v else v)
              for k, v in asdict(cell).items()}
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()


@lru_cache(maxsize=1)
def _manifest_bytes() -> dict[str, int]:
    try:
        return {name: c.bytes for name, c in load_manifest().items()}
    except BpcError:
        return {}


def model_params(model: str | None) -> int:
    """Parameters as the model's name states them ('smollm2-135m' -> 135e6, 'qwen2.5-1.5b' -> 1.5e9),
    else DEFAULT_MODEL_PARAMS. No file is read.

    >>> model_params("smollm2-135m"), model_params("/x/Qwen2.5-1.5B-Q4_K_M.gguf"), model_params("tiny.gguf")
    (135000000, 1500000000, 100000000)
    """
    name = os.path.basename(model or "").lower().removesuffix(".gguf")
    m = _PARAMS.search(name)
    if not m:
        return DEFAULT_MODEL_PARAMS
    return round(float(m.group(1)) * (1_000_000 if m.group(2) == "m" else 1_000_000_000))


def cell_bytes(cell) -> int:
    """The bytes a cell measures, as far as the matrix and the manifest say."""
    size = _manifest_bytes().get(cell.corpus)
    if cell.max_bytes:
        return min(cell.max_bytes, size) if size is not None else cell.max_bytes
    return size if size is not None else DEFAULT_CORPUS_BYTES


def cost(cell) -> int:
    """Estimated cost of a cell, in byte × parameter units (only ratios between cells matter)."""
    if cell.model is None:
        return cell_bytes(cell) * BASELINE_PARAMS * max(1, cell.repeats)
    return cell_bytes(cell) * model_params(cell.model) * (CODED_FACTOR if cell.measure == "coded" else 1)


def assign(cells: list, n: int) -> list[int]:
    """The 1-based shard of each cell (in the cells' order) among n."""
    owner = [0] * len(cells)
    load = [0] * (n + 1)  # load[k] for shard k; load[0] unused
    costs = [cost(c) for c in cells]
    ids = [_portable(c) for c in cells]
    models = sorted((i for i, c in enumerate(cells) if c.model is not None), key=lambda i: (-costs[i], ids[i], i))
    for i in models:
        k = min(range(1, n + 1), key=lambda s: (load[s], s))
        owner[i] = k
        load[k] += costs[i]
    order = sorted(range(1, n + 1), key=lambda s: (load[s], s))
    baselines = sorted((i for i, c in enumerate(cells) if c.model is None), key=lambda i: (-costs[i], ids[i], i))
    for j, i in enumerate(baselines):
        owner[i] = order[j % n]
    return owner


def loads(cells: list, n: int) -> list[int]:
    """Estimated cost of each shard 1..n (index 0 is shard 1)."""
    total = [0] * n
    for c, k in zip(cells, assign(cells, n)):
        total[k - 1] += cost(c)
    return total


def imbalance(cells: list, n: int) -> float:
    """max shard cost / mean shard cost: 1.0 is a perfect split."""
    total = loads(cells, n)
    mean = sum(total) / n
    return max(total) / mean if mean else 1.0


def select(cells: list, k: int, n: int) -> list:
    """The cells of shard k of n, in the matrix's order."""
    return [c for c, owner in zip(cells, assign(cells, n)) if owner == k]
