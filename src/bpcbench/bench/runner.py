"""Run a bench matrix: every cell measured once, cached on disk, written as it finishes.

* Cells run baselines first, then model by model, so each model is loaded once per run.
* results.csv is rewritten (atomically) after every cell, so a crash loses one cell at most.
* A cell that fails is recorded with its error and the run goes on; the caller exits
  non-zero at the end (``RunResult.failed``).
* On a terminal, progress bars; elsewhere (cron, CI) one plain line per finished cell on stderr.
* With ``shard=(k, n)`` only shard k of n runs (shard.py decides, from the matrix alone,
  balancing estimated cost); ``shard.json`` in the run directory records which cells, of which matrix
  (sha256 of its text), under which versions, so ``bpcbench merge`` can join the shards.
* With ``jobs=N`` (``bench -j N``) cells run in N spawned worker processes (workers.py), the
  threads split between them: a model cell that sets no threads gets measurement_threads() // N.
  The rows are a one-job run's whose cells use those threads, bit for bit; results.csv keeps
  matrix order whatever order cells finish in. Timings taken beside other cells are not a quiet
  machine's, so N is in each cell's cache key (N > 1) and in env.json.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Collection
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

from tqdm import tqdm

from bpcbench import __version__, defaults, environment
from bpcbench.atomic import write_text
from bpcbench.bench import cache, results, workers
from bpcbench.bench import shard as shard_mod
from bpcbench.bench.matrix import BASELINE, Cell, LossyPlan, Matrix
from bpcbench.bench.workers import guarded
from bpcbench.bench.measure import Inputs, Measurement, baseline_round, describe_row
from bpcbench.errors import BpcError
from bpcbench.llama.binding import load_warning, measurement_threads
from bpcbench.bench.incomplete import INCOMPLETE, mark_incomplete

SHARD_FILE = shard_mod.SHARD_FILE  # the record merge reads (bench/shard.py)
JSON_FILE = "results.json"


def write_json(run_dir: str | os.PathLike) -> Path:
    """results.json: results.csv's rows as JSON records, under the CSV's column names (read back
    through results.read_csv, so both files hold the same values; empty cells are null)."""
    frame = results.read_csv(Path(run_dir) / "results.csv")
    records = frame.astype(object).where(frame.notna(), None).to_dict("records")
    path = Path(run_dir) / JSON_FILE
    write_text(path, json.dumps(records, indent=1, allow_nan=False) + "\n")
    return path


def shard_dir_name(run_id: str, k: int, n: int) -> str:
    return f"{run_id}-shard-{k}-of-{n}"


def matrix_sha256(matrix: Matrix) -> str:
    """sha256 of the matrix text as read: shards of one run must agree on it."""
    return hashlib.sha256(matrix.text.encode("utf-8")).hexdigest()


# (the [lossy] table, its threads resolved; run directory; log) -> one FAILED line per failed point
LossyStep = Callable[[LossyPlan, Path, Callable[[str], None]], list[str]]


@dataclass
class RunResult:
    out_dir: Path
    run_id: str
    rows: list[dict]
    n_cached: int = 0
    seconds: float = 0.0
    failed: list[str] = field(default_factory=list)  # one line per failed cell

    @property
    def ok(self) -> bool:
        return not self.failed


def cell_line(k: int, n: int, label: str, row: dict, seconds: float, cached: bool) -> str:
    """The plain per-cell line of a run off a terminal (cron, CI):
    `[3/86] gzip-9 · alice29[:16k]: 3.391 bits/byte, 0.1 s (cached)`, or `...: FAILED: <why>`."""
    if results.row_failed(row):
        return f"[{k}/{n}] {label}: FAILED: {row.get('error') or 'round trip failed'}"
    bpb = row.get("bits_per_byte")
    what = "no bits/byte" if bpb is None else f"{bpb:.3f} bits/byte"
    return f"[{k}/{n}] {label}: {what}, {seconds:.1f} s" + (" (cached)" if cached else "")


class _Progress:
    """On a terminal: an overall cells bar plus one token bar per cell phase. Elsewhere (progress
    None and stderr not a TTY): one plain line per finished cell. progress=False: only failures."""

    def __init__(self, total: int, enabled: bool | None):
        self.total = total
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.lines = enabled is None and not self.enabled
        self.cells = tqdm(total=total, desc="cells", unit="cell", position=0, disable=not self.enabled,
                          file=sys.stderr, dynamic_ncols=True)

    def phase(self, desc: str):
        if not self.enabled:
            return nullcontext(None)
        return tqdm(total=0, desc=desc, unit="tok", position=1, leave=False, file=sys.stderr, dynamic_ncols=True)

    def write(self, line: str) -> None:
        if self.enabled:
            tqdm.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr, flush=True)

    def cell_done(self, k: int, label: str, row: dict, seconds: float, cached: bool) -> None:
        if self.lines:
            self.write(cell_line(k, self.total, label, row, seconds, cached))
        elif results.row_failed(row):
            self.write(f"bpcbench: FAILED {label}: {row['error'] or 'round trip failed'}")
        self.cells.update(1)

    def close(self):
        self.cells.close()


class Runner:
    def __init__(self, matrix: Matrix, out_dir: str | os.PathLike, *, use_cache: bool = True,
                 cache_dir: str | os.PathLike | None = None, progress: bool | None = None,
                 run_id: str | None = None, shard: tuple[int, int] | None = None,
                 formats: Collection[str] | None = None, lossy: LossyStep | None = None,
                 finish: Callable[[Path], object] | None = None, jobs: int = 1):
        self.full_matrix = matrix
        self.jobs = jobs
        self.shard = shard
        # (index in the whole matrix, cell) of the cells this run measures, in matrix order
        self.indexed_cells = list(enumerate(matrix.cells))
        if shard is not None:
            owners = shard_mod.assign(matrix.cells, shard[1])
            self.indexed_cells = [(i, c) for i, c in self.indexed_cells if owners[i] == shard[0]]
            matrix = replace(matrix, cells=[c for _, c in self.indexed_cells])
        if jobs > 1:  # the threads split between the workers, fixed here (a worker would see its siblings' load)
            per_job = max(1, measurement_threads() // jobs)
            matrix = replace(matrix, cells=[replace(c, threads=per_job) if c.is_llm and not c.threads else c
                                            for c in matrix.cells])
            self.indexed_cells = list(zip([i for i, _ in self.indexed_cells], matrix.cells))
        self.matrix = matrix
        self.out_dir = Path(out_dir)
        self.run_id = run_id or defaults.run_id(matrix.name)
        self.cache_root = Path(cache_dir) if cache_dir is not None else defaults.cache_root()
        self.cache = cache.CellCache(self.cache_root, read=use_cache)
        self.progress_enabled = progress
        # results.csv is always written; "json" adds results.json, "md" summary.md and the plots (None: all)
        self.formats = {"csv", "json", "md"} if formats is None else set(formats)
        self.finish = finish if "md" in self.formats else None
        self.lossy_step = lossy
        self.host = socket.gethostname()
        self.inputs = Inputs()
        self.pending: dict[int, tuple[str, dict]] = {}  # id(measurement) -> its cache key and material

    def run_cell(self, cell: Cell, progress: _Progress) -> tuple[dict, bool, Measurement | None]:
        """-> (row after its first round, served from cache, the measurement still to repeat or None).
        Never raises for a cell's own failure."""
        row, cached, m, pending = workers.first_round(cell, self.inputs, self.cache, self.run_id, self.host,
                                                      progress.phase, self.jobs)
        if m is not None:
            self.pending[id(m)] = pending
        return row, cached, m

    def more_rounds(self, done: dict[int, dict], measured: dict[int, Measurement], progress: _Progress,
                    failed: list[str]) -> None:
        """Rounds 2, 3, … : one more value of every cell that asks for it, cells in run order, so
        a cell's values are spread across the run instead of taken back to back (one burst misses
        slow drift), and each round of the baselines runs in a fresh worker process
        (measure.baseline_round: a process's memory layout moves their speed most)."""
        rounds = max((m.cell.repeats for m in measured.values()), default=1)
        for r in range(2, rounds + 1):
            t_round = time.perf_counter()
            mark_incomplete(self.out_dir, len(done), len(done), (r, rounds))
            due = [(i, m) for i, m in measured.items() if m.cell.repeats >= r]
            base = [(i, m) for i, m in due if m.cell.measure == BASELINE]
            try:
                taken = dict(zip([i for i, _ in base], baseline_round([m for _, m in base])))
            except Exception as exc:  # a worker that cannot start or died: those cells fail, the run goes on
                taken = {i: {"error": f"baseline timing round {r}: {type(exc).__name__}: {exc}"} for i, _ in base}
            for index, m in due:
                row = done[index]
                guarded(row, (lambda value=taken[index]: value) if index in taken else m.again)
                done[index] = row = results.finish_row(row)
                if results.row_failed(row):
                    del measured[index]
                    failed.append(f"FAILED {m.cell.label()}: {row['error'] or 'round trip failed'}")
                    progress.write(f"bpcbench: {failed[-1]}")
                elif r == m.cell.repeats:
                    self.cache.put(*self.pending.pop(id(m)), row)
            results.write_csv(self.out_dir / "results.csv", [done[i] for i in sorted(done)])
            if progress.lines or progress.enabled:
                progress.write(f"timing round {r}/{rounds}: {sum(m.cell.repeats >= r for m in measured.values())} "
                               f"cells, {time.perf_counter() - t_round:.1f} s")

    def run_lossy(self, progress: _Progress) -> list[str]:
        """The [lossy] table's curves into the run directory, by the step the caller gave (the
        lossy package sits beside bench, so bench runs it without importing it); its FAILED lines."""
        if self.lossy_step is None:
            return ["FAILED lossy: this run was started without the lossy step its [lossy] table needs"]
        self.inputs.close()  # the bench's model out of memory before the curves load theirs
        log = progress.write if (progress.lines or progress.enabled) else (lambda m: None)
        plan = replace(self.matrix.lossy, threads=self.matrix.lossy.threads or measurement_threads())
        try:
            return self.lossy_step(plan, self.out_dir, log)
        except BpcError as exc:
            return [f"FAILED lossy: {exc}"]

    def ordered_cells(self) -> list[tuple[int, Cell]]:
        """Baselines first (before any model inflates the process), then model by model."""
        first_seen: dict = {}
        for i, c in enumerate(self.matrix.cells):
            first_seen.setdefault((c.model, c.n_gpu_layers), i)
        indexed = list(enumerate(self.matrix.cells))
        return sorted(indexed, key=lambda ic: (ic[1].measure != BASELINE,
                                               first_seen[(ic[1].model, ic[1].n_gpu_layers)], ic[0]))

    def shard_record(self) -> dict:
        """shard.json: what `bpcbench merge` checks before joining shards (rows in results.csv order)."""
        k, n = self.shard
        loads = shard_mod.loads(self.full_matrix.cells, n)
        return {
            "shard": k, "n": n, "run_id": self.run_id, "host": self.host,
            "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "matrix_name": self.full_matrix.name, "matrix_sha256": matrix_sha256(self.full_matrix),
            "matrix_cells": len(self.full_matrix.cells),
            "bpcbench_version": __version__, "llama_cpp_python_version": cache.llama_cpp_python_version(),
            "schema_version": results.SCHEMA_VERSION,
            # shard.py's cost estimate (byte x parameter units): this shard's, every shard's, max / mean
            "estimated_cost": loads[k - 1], "shard_costs": loads,
            "imbalance": round(shard_mod.imbalance(self.full_matrix.cells, n), 4),
            "cells": [{"index": i, "key": shard_mod.cell_id(c), "label": c.label()} for i, c in self.indexed_cells],
        }

    def _start(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        write_text(self.out_dir / "matrix.toml", self.matrix.text)
        if self.shard is not None:
            record = self.shard_record()
            write_text(self.out_dir / SHARD_FILE, json.dumps(record, indent=1) + "\n")
            mean = sum(record["shard_costs"]) / record["n"]
            share = record["estimated_cost"] / mean if mean else 1.0
            print(f"bpcbench: shard {record['shard']}/{record['n']}: {len(record['cells'])} of "
                  f"{record['matrix_cells']} cells, estimated cost {share:.2f} x the mean shard "
                  f"(imbalance max/mean {record['imbalance']:.2f})", file=sys.stderr)
        gpu_layers = max((c.n_gpu_layers or 0 for c in self.matrix.cells), default=0)
        env = environment.collect(gpu_layers)
        env["bench_jobs"] = self.jobs  # cells measured side by side (bench -j N); each row's threads are its own
        environment.write(self.out_dir / "env.json", env)
        if (warning := load_warning()) is not None:
            print(f"bpcbench: warning: {warning}", file=sys.stderr)

    def run_pool(self, cells: list[tuple[int, Cell]], record) -> None:
        """bench -j N (workers.run_pool); a cell whose worker died gets a failed row of its own."""
        def failed(cell: Cell, why: str) -> dict:
            return results.finish_row({**describe_row(cell, self.inputs, self.run_id, self.host), "error": why})

        workers.run_pool(cells, self.jobs, (self.run_id, self.host, self.cache_root, self.cache.read, self.jobs),
                         record, failed)

    def run(self) -> RunResult:
        t0 = time.perf_counter()
        self._start()
        done: dict[int, dict] = {}
        measured: dict[int, Measurement] = {}  # cells with timing rounds still to take
        result = RunResult(self.out_dir, self.run_id, [])
        cells = self.ordered_cells()
        rounds = max((c.repeats for _, c in cells), default=1)
        mark_incomplete(self.out_dir, 0, len(cells))  # removed once the last cell is in
        progress = _Progress(len(cells), self.progress_enabled)

        def record(index: int, cell: Cell, row: dict, cached: bool, seconds: float) -> None:
            done[index] = row
            result.n_cached += cached
            results.write_csv(self.out_dir / "results.csv", [done[i] for i in sorted(done)])
            progress.cell_done(len(done), cell.label(), row, seconds, cached)
            mark_incomplete(self.out_dir, len(done), len(cells), (1, rounds))

        try:
            if self.jobs > 1:
                self.run_pool(cells, record)
            else:
                for index, cell in cells:
                    progress.cells.set_postfix_str(cell.label(), refresh=True)
                    t_cell = time.perf_counter()
                    row, cached, m = self.run_cell(cell, progress)
                    if m is not None:
                        measured[index] = m
                    record(index, cell, row, cached, time.perf_counter() - t_cell)
            result.failed += [f"FAILED {cell.label()}: {done[i]['error'] or 'round trip failed'}"
                              for i, cell in cells if results.row_failed(done[i])]  # in run order
            self.more_rounds(done, measured, progress, result.failed)
            if self.matrix.lossy is not None and (self.shard is None or self.shard[0] == 1):
                result.failed += self.run_lossy(progress)
        finally:
            progress.close()
            self.inputs.close()
        result.rows = [done[i] for i in sorted(done)]
        (self.out_dir / INCOMPLETE).unlink(missing_ok=True)
        if not result.rows:
            results.write_csv(self.out_dir / "results.csv", [])
        if "json" in self.formats:
            write_json(self.out_dir)
        if self.finish is not None:
            self.finish(self.out_dir)
        result.seconds = time.perf_counter() - t0
        return result


def run_matrix(matrix: Matrix, out_dir: str | os.PathLike | None = None, *, results_dir: str | os.PathLike = "results",
               use_cache: bool = True, cache_dir: str | os.PathLike | None = None, progress: bool | None = None,
               shard: tuple[int, int] | None = None, formats: Collection[str] | None = None,
               lossy: LossyStep | None = None, finish: Callable[[Path], object] | None = None,
               jobs: int = 1) -> RunResult:
    """Run every cell of `matrix` (or only shard (k, n) of them) into out_dir, `jobs` cells at a time.

    out_dir defaults to results/<run-id>/, and to results/<run-id>-shard-K-of-N/ for a shard.
    results.csv is always written; `formats` picks the others: "json" (results.json), "md"
    (summary.md and the plots); None writes all. Two steps come from the caller, since what they
    need sits beside or above bench: `lossy` draws a [lossy] table's curves (the CLI passes
    lossy.curve's), `finish` renders the run directory when "md" is asked for (report.render).
    """
    run_id = defaults.run_id(matrix.name)
    if out_dir is None:
        out_dir = Path(results_dir) / (run_id if shard is None else shard_dir_name(run_id, *shard))
    return Runner(matrix, out_dir, use_cache=use_cache, cache_dir=cache_dir, progress=progress,
                  run_id=run_id, shard=shard, formats=formats, lossy=lossy, finish=finish, jobs=jobs).run()
