"""`bpcbench merge`: join the shards of one bench run (`bench --shard K/N`) into one run directory.

Each shard's run directory holds ``shard.json`` (runner.Runner.shard_record): shard k of n,
the sha256 of the matrix text, the bpcbench, llama-cpp-python and schema versions, and the
matrix index of every cell it ran, in results.csv order. Merging checks that the shards
belong together before anything is written, and refuses (one line, exit 2) when:

* they ran different matrices (matrix sha256 differs) or different versions;
* they split the matrix into different numbers of shards;
* a shard index is given twice, or a cell turns up in two shards;
* a shard's results.csv does not hold the cells its shard.json lists (an interrupted shard),
  or is damaged (results.read_csv names the file, row and column);
* a shard is missing, unless ``allow_incomplete`` (then it warns and merges what is there).

The merged directory is an ordinary run: results.csv (rows in the matrix's order),
matrix.toml, env.json (fields every shard shares at the top, each shard's own under
``shards``), summary.md and plots rendered by the caller's `finish` (report/render.py).

    bpcbench bench bench/default.toml --shard 1/2 --out r/s1    # machine 1
    bpcbench bench bench/default.toml --shard 2/2 --out r/s2    # machine 2
    bpcbench merge --out r/merged r/s1 r/s2
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from bpcbench import __version__, environment
from bpcbench.atomic import write_bytes, write_text
from bpcbench.bench import results
from bpcbench.bench.runner import SHARD_FILE
from bpcbench.errors import BpcError

_RECORD_KEYS = ("shard", "n", "matrix_sha256", "matrix_cells", "bpcbench_version", "llama_cpp_python_version",
                "schema_version", "cells")
_VERSION_KEYS = (("bpcbench_version", "bpcbench"), ("llama_cpp_python_version", "llama-cpp-python"),
                 ("schema_version", "results schema"))


@dataclass
class Shard:
    dir: Path
    record: dict

    @property
    def k(self) -> int:
        return self.record["shard"]

    @property
    def n(self) -> int:
        return self.record["n"]

    @property
    def name(self) -> str:
        return f"{self.dir} (shard {self.k}/{self.n})"


@dataclass
class MergeResult:
    out_dir: Path
    n_rows: int
    shards: list[int]
    missing_shards: list[int] = field(default_factory=list)
    missing_cells: int = 0
    warnings: list[str] = field(default_factory=list)


def read_shard(path: str | os.PathLike) -> Shard:
    d = Path(path)
    if not d.is_dir():
        raise BpcError(f"not a run directory: {d}")
    try:
        record = json.loads((d / SHARD_FILE).read_text())
    except FileNotFoundError:
        raise BpcError(f"{d}: no {SHARD_FILE}: not a shard (run it with `bpcbench bench --shard K/N`)") from None
    except (OSError, ValueError) as exc:
        raise BpcError(f"{d / SHARD_FILE}: cannot read: {exc}") from None
    missing = [k for k in _RECORD_KEYS if not isinstance(record, dict) or k not in record]
    if missing:
        raise BpcError(f"{d / SHARD_FILE}: missing {', '.join(missing)}")
    return Shard(d, record)


def check(shards: list[Shard], allow_incomplete: bool = False) -> tuple[list[int], int, list[str]]:
    """Raise BpcError if the shards do not belong together; -> (missing shards, missing cells, warnings)."""
    if not shards:
        raise BpcError("merge needs at least one shard directory")
    first = shards[0]
    for s in shards[1:]:
        if s.n != first.n:
            raise BpcError(f"shards of different N: {first.name} and {s.name}")
    for s in shards[1:]:
        if s.record["matrix_sha256"] != first.record["matrix_sha256"]:
            raise BpcError(f"shards of different matrices: {first.dir} (matrix sha256 "
                           f"{first.record['matrix_sha256'][:12]}…) and {s.dir} ({s.record['matrix_sha256'][:12]}…)")
    for key, what in _VERSION_KEYS:
        for s in shards[1:]:
            if s.record[key] != first.record[key]:
                raise BpcError(f"shards measured with different {what} versions: {first.dir} has "
                               f"{first.record[key]}, {s.dir} has {s.record[key]}")
    if first.record["schema_version"] != results.SCHEMA_VERSION:
        raise BpcError(f"{first.dir}: results schema version {first.record['schema_version']}, "
                       f"but this bpcbench reads {results.SCHEMA_VERSION}")
    by_k: dict[int, Shard] = {}
    for s in shards:
        if s.k in by_k:
            raise BpcError(f"shard {s.k}/{s.n} given twice: {by_k[s.k].dir} and {s.dir}")
        by_k[s.k] = s
    owner: dict[int, Shard] = {}
    for s in shards:
        for cell in s.record["cells"]:
            i = cell["index"]
            if i in owner:
                raise BpcError(f"cell {cell.get('label', i)!r} is in two shards: {owner[i].dir} and {s.dir}")
            owner[i] = s
    missing_shards = [k for k in range(1, first.n + 1) if k not in by_k]
    missing_cells = first.record["matrix_cells"] - len(owner)
    warnings = []
    if missing_shards or missing_cells:
        what = (f"missing shard(s) {', '.join(map(str, missing_shards))} of {first.n}" if missing_shards
                else "the shards do not cover the matrix")
        message = f"{what}: {missing_cells} of {first.record['matrix_cells']} cells not measured"
        if not allow_incomplete:
            raise BpcError(f"{message} (pass --allow-incomplete to merge what is there)")
        warnings.append(message)
    return missing_shards, missing_cells, warnings


def _frame(shard: Shard):
    frame = results.read_csv(shard.dir / "results.csv")
    cells = shard.record["cells"]
    if len(frame) != len(cells):
        raise BpcError(f"{shard.dir}: results.csv has {len(frame)} rows but {SHARD_FILE} lists {len(cells)} cells "
                       "(an interrupted shard? run it again, finished cells come from the cache)")
    frame = frame.copy()
    frame["_matrix_index"] = [c["index"] for c in cells]
    return frame


def merged_env(shards: list[Shard]) -> dict:
    """Fields every shard's env.json shares, at the top; each shard's env under `shards`."""
    envs = []
    for s in shards:
        try:
            envs.append(json.loads((s.dir / "env.json").read_text()))
        except (OSError, ValueError):
            envs.append({})
    common = {k: v for k, v in envs[0].items() if all(k in e and e[k] == v for e in envs[1:])} if envs else {}
    common.pop("argv", None)
    hosts = list(dict.fromkeys(e.get("host") or s.record.get("host") or "?" for s, e in zip(shards, envs)))
    return {
        **common,
        "host": common.get("host", ", ".join(hosts)),
        "merged_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "merged_by": {"bpcbench": __version__, "argv": list(sys.argv)},
        "shards": [{"shard": s.k, "n": s.n, "dir": str(s.dir), "run_id": s.record.get("run_id"),
                    "host": e.get("host") or s.record.get("host"), "cells": len(s.record["cells"]), "env": e}
                   for s, e in zip(shards, envs)],
    }


LOSSY_FILES = ("lossy.csv", "lossy.png", "reconstruction-*.txt")  # a [lossy] table's files (lossy/curve.py)


def merge(out_dir: str | os.PathLike, shard_dirs: list[str | os.PathLike], *, allow_incomplete: bool = False,
          force: bool = False, finish: Callable[[Path], object] | None = None) -> MergeResult:
    """Join the shards into `out_dir`; `finish` (the CLI passes report.render) then renders it."""
    out = Path(out_dir)
    shards = sorted((read_shard(d) for d in shard_dirs), key=lambda s: s.k)
    missing_shards, missing_cells, warnings = check(shards, allow_incomplete)
    for s in shards:
        if s.dir.resolve() == out.resolve():
            raise BpcError(f"the output directory {out} is one of the shards; merge into a new directory")
    if (out / "results.csv").exists() and not force:
        raise BpcError(f"output exists: {out / 'results.csv'} (use -f to overwrite)")
    frames = [_frame(s) for s in shards]
    frame = pd.concat(frames, ignore_index=True).sort_values("_matrix_index", kind="stable")
    frame = frame.drop(columns="_matrix_index").reset_index(drop=True)
    out.mkdir(parents=True, exist_ok=True)
    results.write_csv(out / "results.csv", frame)
    try:
        write_text(out / "matrix.toml", (shards[0].dir / "matrix.toml").read_text())
    except FileNotFoundError:
        pass
    environment.write(out / "env.json", merged_env(shards))
    for f in (f for s in shards for pattern in LOSSY_FILES for f in sorted(s.dir.glob(pattern))):
        write_bytes(out / f.name, f.read_bytes())  # a [lossy] table's curves (drawn by shard 1)
    if finish is not None:
        finish(out)
    return MergeResult(out, len(frame), [s.k for s in shards], missing_shards, missing_cells, warnings)
