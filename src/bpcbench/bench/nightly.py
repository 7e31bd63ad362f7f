"""`bpcbench nightly`: a small matrix every night into a dated directory, a history, a regression gate.

    results/
      history.csv            every nightly row, oldest first: nightly_dir, nightly_utc, then results.csv's columns
      nightly/
        2026-11-27/          one ordinary run directory per night (+ compare.txt, compare.json, nightly.json)
        2026-11-27.2/        a second run on the same (UTC) day
        2026-11-28-shard-1-of-4/   with --shard K/N (compared against the same shard of earlier nights)
        latest               a text file naming the latest run directory
        history.png          bits/byte and tokens/s over time per (codec, corpus)

Each run is compared with the last *passing* run (the latest earlier directory whose
nightly.json has exit code 0; the latest finished one if none passed) by
compare.compare_frames, so a regression stays visible on the following nights until it is
fixed instead of becoming the new baseline. A regression makes the exit status 1. The first
run has nothing to compare with and exits 0 unless a cell failed. The previous run's
results.csv is read (results.read_csv validates it) before anything is measured: a damaged
one is one line and exit 2, and that night leaves no directory and no history row behind; one
written under another results schema (an older bpcbench) is not compared, with a note.

Every cell is measured by default: a nightly gate that replays cached timings compares old
numbers with old numbers. `use_cache=True` (`--cache`) takes unchanged cells from the cell
cache; their speeds are then not judged (compare says "cached").
"""

from __future__ import annotations

import io
import json
import os
import re
import sys
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from bpcbench.atomic import atomic_open, write_text
from bpcbench.bench import compare, inputs, results
from bpcbench.bench import matrix as matrix_mod
from bpcbench.bench.runner import LossyStep, RunResult, run_matrix
from bpcbench.errors import BpcError, OtherSchema
from bpcbench.schema import Key, check_table

DEFAULT_MATRIX = matrix_mod.NIGHTLY_MATRIX
NIGHTLY_SUBDIR = "nightly"
HISTORY_FILE = "history.csv"
HISTORY_PLOT = "history.png"
LATEST_FILE = "latest"
DONE_FILE = "nightly.json"
LEAD_COLUMNS = ("nightly_dir", "nightly_utc")
DONE_KEYS = {"exit_code": Key(int, "an integer")}  # what is read back of nightly.json (the rest: for people)

# <YYYY-MM-DD>[-shard-K-of-N][.<n>]
_NAME = re.compile(r"^(\d{4}-\d{2}-\d{2})((?:-shard-\d+-of-\d+)?)(?:\.(\d+))?$")


def shard_tag(shard: tuple[int, int] | None) -> str:
    return f"-shard-{shard[0]}-of-{shard[1]}" if shard else ""


def parse_name(name: str) -> tuple[str, str, int] | None:
    """'2026-11-27.3' -> ('2026-11-27', '', 3); None for anything that is not a nightly directory."""
    m = _NAME.match(name)
    if not m:
        return None
    return m.group(1), m.group(2), int(m.group(3) or 1)


def run_dirs(nightly_dir: Path, tag: str = "") -> list[Path]:
    """Nightly run directories with this shard tag, oldest first (by date, then same-day number)."""
    found = []
    if nightly_dir.is_dir():
        for p in nightly_dir.iterdir():
            parsed = parse_name(p.name)
            if parsed and parsed[1] == tag and p.is_dir():
                found.append(((parsed[0], parsed[2]), p))
    return [p for _, p in sorted(found)]


def new_run_dir(nightly_dir: Path, day: str, tag: str = "") -> Path:
    """Create <day><tag>, or <day><tag>.2, .3, … if that day already has runs (mkdir is the lock)."""
    nightly_dir.mkdir(parents=True, exist_ok=True)
    seq = 1
    while True:
        path = nightly_dir / (f"{day}{tag}" if seq == 1 else f"{day}{tag}.{seq}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            seq += 1


def previous_run(nightly_dir: Path, current: Path, tag: str = "") -> Path | None:
    """The run to compare with: the latest passing run before `current` (nightly.json exit code 0),
    else the latest finished one (it has nightly.json), else None."""
    finished = []
    for p in run_dirs(nightly_dir, tag):
        if p.name == current.name:
            break
        if (p / DONE_FILE).exists() and (p / "results.csv").exists():  # not regular: refused when read
            finished.append(p)
    for p in reversed(finished):
        if _exit_code(p) == 0:
            return p
    return finished[-1] if finished else None


def _exit_code(run_dir: Path) -> int | None:
    """nightly.json's exit code (None: it has none); a file that is not a JSON object within inputs'
    limits, or whose exit_code is not an integer, is refused in one line naming it."""
    where = run_dir / DONE_FILE
    return check_table(inputs.read_json_object(where), DONE_KEYS, str(where), others=True).get("exit_code")


@contextmanager
def _locked(path: Path):
    """An exclusive lock on `path` (a lock file beside history.csv) while the block runs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            yield
            return
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def append_history(history: Path, run_dir: Path, nightly_utc: str) -> int:
    """Append a run's results.csv rows to history.csv: read + concatenate + write a temp file + rename.

    Values are kept as the text results.csv wrote them (the caller has validated it with
    results.read_csv). Columns are the union, old ones first, so history written under an older
    schema stays readable (its schema_version says which).
    """
    new = _read_text_csv(run_dir / "results.csv", inputs.MAX_RESULTS_BYTES)
    new.insert(0, LEAD_COLUMNS[1], nightly_utc)
    new.insert(0, LEAD_COLUMNS[0], run_dir.name)
    with _locked(history.with_name(f".{history.name}.lock")):
        old = read_history(history)
        frame = new if old is None else pd.concat([old, new], ignore_index=True, sort=False).fillna("")
        with atomic_open(history, "w") as fh:
            frame.to_csv(fh, index=False, lineterminator="\n")
    return len(new)


def _read_text_csv(path: Path, limit: int):
    """A CSV's cells as text, from a regular file within `limit` bytes; anything else one line."""
    data = inputs.read_bytes(path, limit)
    try:
        return pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False, encoding="utf-8")
    except (ValueError, pd.errors.EmptyDataError) as exc:  # ParserError and UnicodeDecodeError are ValueErrors
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]  # one line, whatever pandas says
        raise BpcError(f"{path}: cannot read: {first}") from None


def read_history(history: Path):
    """history.csv's cells as text (None if there is none yet), its first columns LEAD_COLUMNS."""
    if not history.exists() and not history.is_symlink():
        return None
    frame = _read_text_csv(history, inputs.MAX_HISTORY_BYTES)
    if tuple(frame.columns[:2]) != LEAD_COLUMNS:
        raise BpcError(f"{history}: header: does not start with {', '.join(LEAD_COLUMNS)}: not a bpcbench history.csv")
    return frame


def _previous_rows(previous: Path | None):
    """The previous run's results, read (so validated); None if there is none or it has another
    schema version (an older bpcbench wrote it)."""
    if previous is None:
        return None
    try:
        return results.read_csv(previous)
    except OtherSchema as exc:
        print(f"bpcbench nightly: not compared with {previous.name}: {exc}", file=sys.stderr)
        return None


def _before_the_run(nightly_dir: Path, run_dir: Path, tag: str, history: Path):
    """Every input of the night, read and checked before anything is measured or written: the run to
    compare with, its rows and matrix text, and history.csv. A refusal removes the (still empty) run_dir."""
    try:
        previous = previous_run(nightly_dir, run_dir, tag)
        old = _previous_rows(previous)
        previous_matrix = None
        if old is not None:
            try:
                previous_matrix = inputs.read_text(previous / "matrix.toml")
            except FileNotFoundError:
                pass
        read_history(history)
    except BaseException:
        run_dir.rmdir()  # a refused (or interrupted) night leaves no directory behind
        raise
    return (previous if old is not None else None), old, previous_matrix


@dataclass
class NightlyResult:
    run_dir: Path
    run: RunResult
    previous: Path | None
    comparison: compare.Comparison | None
    history_rows: int

    @property
    def exit_code(self) -> int:
        if self.comparison is not None:
            return 0 if self.comparison.ok and self.run.ok else 1
        return 0 if self.run.ok else 1


def _compare(previous: Path, old, run_dir: Path, new, matrices: tuple[str | None, str], thresholds: tuple[float, float],
             out):
    """The night against the last passing one: compare.txt and compare.json, the text on `out`."""
    comparison = compare.compare_frames(old, new, *thresholds, str(previous), str(run_dir),
                                        require_all=True)  # one matrix: a vanished cell is a regression
    text = compare.format_text(comparison)
    write_text(run_dir / "compare.txt", text + "\n")
    write_text(run_dir / "compare.json", compare.format_json(comparison) + "\n")
    if matrices[0] is not None and matrices[0] != matrices[1]:
        text += "\nnote: the matrix changed since the previous run"
    print(text, file=out)
    return comparison


def run_nightly(matrix_path: str | os.PathLike | None = None, results_dir: str | os.PathLike = "results", *,
                bpb_threshold: float = 0.5, speed_threshold: float = 10.0, shard: tuple[int, int] | None = None,
                use_cache: bool = False, cache_dir: str | os.PathLike | None = None, progress: bool | None = None,
                overrides: dict | None = None, now: datetime | None = None, out=None,
                finish: Callable[[Path], object] | None = None,
                plot_history: Callable[[Path, Path], object] | None = None,
                lossy: LossyStep | None = None) -> NightlyResult:
    """Run, record, compare; the comparison (or the first-run line) goes to `out` (stdout).

    `overrides` (threads, n_gpu_layers) replace the matrix's model settings, as `bench --threads` does.
    The drawing comes from the caller (report sits above bench): `finish` renders the night's run
    directory, `plot_history(history.csv, png)` draws the history, `lossy` runs a [lossy] table.
    """
    out = out or sys.stdout
    m = matrix_mod.load(matrix_path or DEFAULT_MATRIX)
    if overrides:
        m = matrix_mod.with_overrides(m, **overrides)
    now = now or datetime.now(timezone.utc)
    results_dir = Path(results_dir)
    nightly_dir = results_dir / NIGHTLY_SUBDIR
    tag = shard_tag(shard)
    run_dir = new_run_dir(nightly_dir, f"{now:%Y-%m-%d}", tag)
    history = results_dir / HISTORY_FILE
    previous, old, previous_matrix = _before_the_run(nightly_dir, run_dir, tag, history)
    print(f"bpcbench nightly: {run_dir}" + (f" (compared with: {previous.name})" if previous else ""),
          file=sys.stderr)

    run = run_matrix(m, run_dir, use_cache=use_cache, cache_dir=cache_dir, progress=progress, shard=shard,
                     lossy=lossy, finish=finish)
    new = results.read_csv(run_dir)  # validated before history.csv gets its rows
    nightly_utc = now.isoformat(timespec="seconds")
    n_hist = append_history(history, run_dir, nightly_utc)
    write_text(nightly_dir / LATEST_FILE, run_dir.name + "\n")
    if plot_history is not None:
        plot_history(history, nightly_dir / HISTORY_PLOT)
    print(f"{len(run.rows)} cells ({run.n_cached} from cache) in {run.seconds:.1f} s; "
          f"{n_hist} rows appended to {history}", file=sys.stderr)
    for line in run.failed:
        print(f"bpcbench: {line}", file=sys.stderr)

    comparison = None
    if previous is None:
        print("first nightly run, nothing to compare", file=out)
    else:
        comparison = _compare(previous, old, run_dir, new, (previous_matrix, m.text),
                              (bpb_threshold, speed_threshold), out)
    result = NightlyResult(run_dir, run, previous, comparison, n_hist)
    write_text(run_dir / DONE_FILE, json.dumps({
        "nightly_utc": nightly_utc, "run_id": run.run_id, "shard": list(shard) if shard else None,
        "previous": previous.name if previous else None, "cells": len(run.rows), "cached": run.n_cached,
        "failed": run.failed, "regressions": comparison.regressions if comparison else [],
        "exit_code": result.exit_code,
    }, indent=1) + "\n")
    return result
