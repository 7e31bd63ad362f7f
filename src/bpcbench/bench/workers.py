"""`bench -j N`: a cell's first round, and whole cells in N spawned worker processes.

`first_round` is the one way a cell becomes a row (the cache, then `Measurement.first`), for
the runner's own loop and for a worker alike. With N > 1 jobs each cell is one task of a
ProcessPoolExecutor whose workers are *spawned*: llama.cpp's thread pools and fork do not mix.
A worker keeps its own `Inputs` (one model loaded at a time, as the runner's) and takes every
round of its cell back to back, since the cell's measurement state (its first file, its
timings) lives in that process; the runner's interleaved rounds (runner.more_rounds) are a
one-job affair. Rows come back to the runner, which writes results.csv in matrix order.
"""

from __future__ import annotations

import atexit
import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import nullcontext
from pathlib import Path

from bpcbench.bench import cache, results
from bpcbench.bench.matrix import BASELINE, Cell
from bpcbench.bench.measure import Inputs, Measurement, baseline_round, describe_row, key_material
from bpcbench.errors import BpcError


def guarded(row: dict, take) -> None:
    """row.update(take()); a failure of the cell's own becomes its error, the run goes on."""
    try:
        row.update(take())
    except BpcError as exc:
        row["error"] = str(exc)
    except Exception as exc:  # one broken cell must not end the run; it is reported as FAILED
        row["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0]


def first_round(cell: Cell, inputs: Inputs, cells: cache.CellCache, run_id: str, host: str, phase,
                jobs: int = 1) -> tuple[dict, bool, Measurement | None, tuple[str, dict] | None]:
    """A cell's row after its first round: (row, served from cache, the measurement still to
    repeat or None, its cache key and material). Never raises for a cell's own failure."""
    row = describe_row(cell, inputs, run_id, host)
    try:
        material = key_material(cell, inputs)
    except BpcError as exc:
        row["error"] = str(exc)
        return results.finish_row(row), False, None, None
    if jobs > 1:  # timed beside other cells: never served to (or from) a run of one job
        material["jobs"] = jobs
    key = row["cell_key"] = cache.key_of(material)
    hit = cells.get(key)
    if hit is not None:
        hit.update(run_id=run_id, cached=True)
        return results.finish_row({k: v for k, v in hit.items() if k in results.COLUMN_NAMES}), True, None, None
    m = Measurement(cell, inputs, phase)
    guarded(row, m.first)
    row = results.finish_row(row)
    if results.row_failed(row):
        return row, False, None, None
    if cell.repeats <= 1:
        cells.put(key, material, row)
        return row, False, None, None
    return row, False, m, (key, material)


_WORKER: dict = {}  # this worker process's run: id, host, cell cache, jobs, its own Inputs


def _start(run_id: str, host: str, cache_root: Path | None, read: bool, jobs: int) -> None:
    inputs = Inputs()
    atexit.register(inputs.close)  # llama.cpp's objects freed in order, not by the interpreter's teardown
    _WORKER.update(run_id=run_id, host=host, cache=cache.CellCache(cache_root, read=read), jobs=jobs, inputs=inputs)


def _cell(cell: Cell) -> tuple[dict, bool, float]:
    """One cell in a worker, every round back to back: (its row, served from cache, seconds)."""
    t0 = time.perf_counter()
    w = _WORKER
    row, cached, m, pending = first_round(cell, w["inputs"], w["cache"], w["run_id"], w["host"],
                                          lambda desc: nullcontext(None), w["jobs"])
    if m is None:
        return row, cached, time.perf_counter() - t0
    for r in range(2, cell.repeats + 1):
        if cell.measure == BASELINE:
            try:  # a fresh process per round, as runner.more_rounds takes them
                taken = baseline_round([m])[0]
            except Exception as exc:  # a worker that cannot start or died: the cell fails, the run goes on
                taken = {"error": f"baseline timing round {r}: {type(exc).__name__}: {exc}"}
            guarded(row, lambda value=taken: value)
        else:
            guarded(row, m.again)
        row = results.finish_row(row)
        if results.row_failed(row):
            return row, False, time.perf_counter() - t0
    w["cache"].put(*pending, row)
    return row, False, time.perf_counter() - t0


def run_pool(cells: list[tuple[int, Cell]], jobs: int, run: tuple, record: Callable[..., None],
             failed: Callable[[Cell, str], dict]) -> None:
    """Every (index, cell) a task of `jobs` spawned workers (started with `run`: run id, host,
    cache root, cache read, jobs); record(index, cell, row, cached, seconds) as each finishes.
    A worker that dies fails its cell (and, the pool broken, the cells still queued) with the
    row failed(cell, why) gives, as a cell's own error would."""
    pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_start,
                               initargs=run)
    try:
        futures = {pool.submit(_cell, cell): (index, cell) for index, cell in cells}
        for future in as_completed(futures):
            index, cell = futures[future]
            try:
                row, cached, seconds = future.result()
            except Exception as exc:  # the worker died or could not start
                row, cached, seconds = failed(cell, f"worker process: {type(exc).__name__}: {exc}".splitlines()[0]), \
                    False, 0.0
            record(index, cell, row, cached, seconds)
    except BaseException:  # interrupted or terminated: the workers' cells end with the run, not after it
        for process in list((pool._processes or {}).values()):  # Python < 3.14 has no terminate_workers()
            process.terminate()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
