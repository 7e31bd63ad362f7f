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

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from bpcbench import __version__, environment
from bpcbench.atomic import write_bytes, write_text
from bpcbench.bench import inputs, results
from bpcbench.bench import shard as shard_mod
from bpcbench.bench.shard import SHARD_FILE  # not from runner: merge runs no model (numba, llama.cpp unloaded)
from bpcbench.errors import BpcError
from bpcbench.schema import Key, check_table

MAX_MATRIX_CELLS = 10_000_000  # more than any shard.json within inputs.MAX_JSON_BYTES can list
MISSING_LISTED = 10  # missing shards named in the message; the rest are counted

_STR = "a string"
RECORD_KEYS = {  # shard.json as runner.Runner.shard_record writes it
    "shard": Key(int, "a shard number from 1", required=True, minimum=1, maximum=shard_mod.MAX_SHARDS),
    "n": Key(int, "a number of shards from 1", required=True, minimum=1, maximum=shard_mod.MAX_SHARDS),
    "run_id": Key(str, _STR), "host": Key(str, _STR), "created_utc": Key(str, _STR), "matrix_name": Key(str, _STR),
    "matrix_sha256": Key(str, _STR, required=True),
    "matrix_cells": Key(int, "a number of cells from 0", required=True, minimum=0, maximum=MAX_MATRIX_CELLS),
    "bpcbench_version": Key(str, _STR, required=True), "llama_cpp_python_version": Key(str, _STR, required=True),
    "schema_version": Key(int, "an integer", required=True),
    "estimated_cost": Key(int, "an integer", minimum=0), "shard_costs": Key(list, "a list of integers"),
    "imbalance": Key((int, float), "a number"),
    "cells": Key(list, "a list of tables (index, key, label)", required=True),
}
CELL_KEYS = {"index": Key(int, "a cell index from 0", required=True, minimum=0, maximum=MAX_MATRIX_CELLS - 1),
             "key": Key(str, _STR, required=True), "label": Key(str, _STR, required=True)}
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
    """A shard's directory and its shard.json, every field checked (RECORD_KEYS, CELL_KEYS): one line
    naming the file and the field for anything runner.shard_record does not write."""
    d = Path(path)
    if not d.is_dir():
        raise BpcError(f"not a run directory: {d}")
    where = d / SHARD_FILE
    try:
        record = check_table(inputs.read_json_object(where), RECORD_KEYS, str(where))
    except FileNotFoundError:
        raise BpcError(f"{d}: no {SHARD_FILE}: not a shard (run it with `bpcbench bench --shard K/N`)") from None
    if record["shard"] > record["n"]:
        raise BpcError(f"{where}: shard {record['shard']} of n {record['n']}: shard must be <= n")
    cells = record["cells"]
    if len(cells) > record["matrix_cells"]:
        raise BpcError(f"{where}: cells lists {len(cells)} cells, but matrix_cells is {record['matrix_cells']}")
    seen = set()
    for i, cell in enumerate(cells):
        check_table(cell, CELL_KEYS, f"{where}: cells[{i}]")
        if cell["index"] >= record["matrix_cells"] or cell["index"] in seen:
            why = "twice" if cell["index"] in seen else f"past matrix_cells {record['matrix_cells']}"
            raise BpcError(f"{where}: cells[{i}]: index {cell['index']} {why}")
        seen.add(cell["index"])
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
    missing_shards = [k for k in range(1, first.n + 1) if k not in by_k]  # n <= MAX_SHARDS
    missing_cells = first.record["matrix_cells"] - len(owner)
    warnings = []
    if missing_shards or missing_cells:
        listed = ", ".join(map(str, missing_shards[:MISSING_LISTED]))
        listed += f", … ({len(missing_shards)} in all)" if len(missing_shards) > MISSING_LISTED else ""
        what = f"missing shard(s) {listed} of {first.n}" if missing_shards else "the shards do not cover the matrix"
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


def merged_env(shards: list[Shard], envs: list[dict]) -> dict:
    """Fields every shard's env.json shares, at the top; each shard's env under `shards`."""
    common = {k: v for k, v in envs[0].items() if all(k in e and e[k] == v for e in envs[1:])} if envs else {}
    common.pop("argv", None)
    hosts = list(dict.fromkeys(str(e.get("host") or s.record.get("host") or "?") for s, e in zip(shards, envs)))
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


def _inputs(shards: list[Shard], out: Path) -> tuple[str, int, str | None, list[dict], dict[str, bytes]]:
    """Everything merge writes, read and checked first: (results.csv text and its rows, matrix.toml text,
    the shards' env.json, the [lossy] files by name). A merged frame that read_csv would refuse (a cell that two
    shards measured) is refused here, before anything is written."""
    frames = [_frame(s) for s in shards]
    frame = pd.concat(frames, ignore_index=True).sort_values("_matrix_index", kind="stable")
    text = results.csv_text(frame.drop(columns="_matrix_index").reset_index(drop=True))
    try:
        n_rows = len(results.read_csv(out / "results.csv", text=text))
    except BpcError as exc:
        raise BpcError(f"the merged rows, not written: {exc}") from None
    try:
        matrix_text = inputs.read_text(shards[0].dir / "matrix.toml")
    except FileNotFoundError:
        matrix_text = None
    envs = [inputs.read_env(s.dir) for s in shards]
    lossy = {f.name: inputs.read_bytes(f, inputs.MAX_LOSSY_FILE_BYTES)  # a [lossy] table's curves (by shard 1)
             for s in shards for pattern in LOSSY_FILES for f in sorted(s.dir.glob(pattern))}
    return text, n_rows, matrix_text, envs, lossy


def merge(out_dir: str | os.PathLike, shard_dirs: list[str | os.PathLike], *, allow_incomplete: bool = False,
          force: bool = False, finish: Callable[[Path], object] | None = None) -> MergeResult:
    """Join the shards into `out_dir`; `finish` (the CLI passes report.render) then renders it.
    Every input is read and checked before the first file is written."""
    out = Path(out_dir)
    shards = sorted((read_shard(d) for d in shard_dirs), key=lambda s: s.k)
    missing_shards, missing_cells, warnings = check(shards, allow_incomplete)
    for s in shards:
        if s.dir.resolve() == out.resolve():
            raise BpcError(f"the output directory {out} is one of the shards; merge into a new directory")
    if out.exists() and not out.is_dir():
        raise BpcError(f"output {out} is not a directory")
    if (out / "results.csv").exists() and not force:
        raise BpcError(f"output exists: {out / 'results.csv'} (use -f to overwrite)")
    text, n_rows, matrix_text, envs, lossy = _inputs(shards, out)
    env = merged_env(shards, envs)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "results.csv", text)
    if matrix_text is not None:
        write_text(out / "matrix.toml", matrix_text)
    environment.write(out / "env.json", env)
    for name, data in lossy.items():
        write_bytes(out / name, data)
    if finish is not None:
        finish(out)
    return MergeResult(out, n_rows, [s.k for s in shards], missing_shards, missing_cells, warnings)
