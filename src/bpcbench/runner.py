"""Run a bench matrix: every cell measured once, cached on disk, written as it finishes.

* Each finished cell is stored as JSON under ``<cache>/cells/<key>.json``; the key is the
  sha256 of everything the result depends on (model and corpus sha256, codec, measure,
  settings, prefix, versions). A rerun with nothing changed is served from the cache in
  seconds, and an interrupted run resumes where it stopped.
* results.csv is rewritten (atomically) after every cell, so a crash loses one cell at most.
* A cell that fails is recorded with its error and the run goes on; the caller exits
  non-zero at the end (``RunResult.failed``).
* Each model is loaded once per run and reused for all its corpora.
* With ``shard=(k, n)`` only shard k of n runs (shard.py decides, from each cell's own
  content); ``shard.json`` in the run directory records which cells, of which matrix
  (sha256 of its text), under which versions, so ``bpcbench merge`` can join the shards.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import socket
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from . import __version__, environment, results
from . import shard as shard_mod
from .atomic import write_text
from .corpora import Corpus, count_characters, resolve
from .errors import BpcError
from .matrix import BASELINE, Cell, Matrix

CELLS_SUBDIR = "cells"
SHARD_FILE = "shard.json"


def cache_root() -> Path:
    """$BPCBENCH_CACHE, read now (not at import), else the models' cache directory."""
    env = os.environ.get("BPCBENCH_CACHE")
    if env:
        return Path(env)
    from .models import CACHE_DIR

    return CACHE_DIR


def make_run_id(name: str, now: datetime | None = None) -> str:
    now = now or datetime.now(timezone.utc)
    return f"{now:%Y%m%dT%H%M%SZ}-{name}"


def shard_dir_name(run_id: str, k: int, n: int) -> str:
    return f"{run_id}-shard-{k}-of-{n}"


def matrix_sha256(matrix: Matrix) -> str:
    """sha256 of the matrix text as read: shards of one run must agree on it."""
    return hashlib.sha256(matrix.text.encode("utf-8")).hexdigest()


def llama_cpp_python_version() -> str:
    try:
        return version("llama_cpp_python")
    except PackageNotFoundError:
        return "not installed"


# The modules whose code decides a model cell's numbers: a change to any of them must not
# be served a stale result from the cache, version bump or not.
_MEASURING_MODULES = ("tokenization", "llamacpp", "evaluation", "entropy_model", "coder",
                      "container", "codec", "ideal")


@functools.lru_cache(maxsize=1)
def measuring_code_sha256() -> str:
    h = hashlib.sha256()
    here = Path(__file__).resolve().parent
    for name in _MEASURING_MODULES:
        h.update((here / f"{name}.py").read_bytes())
    return h.hexdigest()


def take_prefix(data: bytes, max_bytes: int) -> bytes:
    """The first max_bytes bytes; for UTF-8 text cut back to a character boundary (≤ 3 bytes)."""
    if not max_bytes or len(data) <= max_bytes:
        return data
    if count_characters(data) is not None:
        for cut in range(max_bytes, max(max_bytes - 4, 0), -1):
            if count_characters(data[:cut]) is not None:
                return data[:cut]
    return data[:max_bytes]


class CellCache:
    """finished rows as JSON files; `read=False` (--no-cache) recomputes but still stores."""

    def __init__(self, root: Path | None, read: bool = True):
        self.dir = Path(root) / CELLS_SUBDIR if root is not None else None
        self.read = read

    def get(self, key: str) -> dict | None:
        if self.dir is None or not self.read:
            return None
        try:
            doc = json.loads((self.dir / f"{key}.json").read_text())
        except (OSError, ValueError):
            return None
        row = doc.get("row") if isinstance(doc, dict) else None
        if not isinstance(row, dict) or row.get("schema_version") != results.SCHEMA_VERSION:
            return None
        return row

    def put(self, key: str, material: dict, row: dict) -> None:
        if self.dir is None:
            return
        stored = {k: v for k, v in row.items() if k not in ("run_id", "cached")}
        try:
            write_text(self.dir / f"{key}.json", json.dumps({"key": material, "row": stored}, indent=1) + "\n")
        except OSError as exc:
            print(f"bpcbench: warning: cannot write cell cache {self.dir}: {exc.strerror or exc}", file=sys.stderr)


class PeakMemory:
    """Peak RSS of this process during a block: Linux VmHWM, reset at the start."""

    def __enter__(self):
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            self.reset = True
        except OSError:
            self.reset = False
        self.mb = None
        return self

    def __exit__(self, *exc):
        self.mb = self.read()

    @staticmethod
    def read() -> float | None:
        try:
            with open("/proc/self/status") as fh:
                for line in fh:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
        except (OSError, ValueError):
            pass
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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


class _Progress:
    """An overall cells bar plus one token bar per cell phase; silent when not on a TTY."""

    def __init__(self, total: int, enabled: bool | None):
        from tqdm import tqdm

        self.tqdm = tqdm
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.cells = tqdm(total=total, desc="cells", unit="cell", position=0, disable=not self.enabled,
                          file=sys.stderr, dynamic_ncols=True)

    def phase(self, desc: str):
        if not self.enabled:
            return nullcontext(None)
        return self.tqdm(total=0, desc=desc, unit="tok", position=1, leave=False, file=sys.stderr,
                         dynamic_ncols=True)

    def write(self, line: str) -> None:
        if self.enabled:
            self.tqdm.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr)

    def close(self):
        self.cells.close()


class Runner:
    def __init__(self, matrix: Matrix, out_dir: str | os.PathLike, *, use_cache: bool = True,
                 cache_dir: str | os.PathLike | None = None, progress: bool | None = None,
                 run_id: str | None = None, render: bool = True, shard: tuple[int, int] | None = None):
        self.full_matrix = matrix
        self.shard = shard
        # (index in the whole matrix, cell) of the cells this run measures, in matrix order
        self.indexed_cells = list(enumerate(matrix.cells))
        if shard is not None:
            keep = {id(c) for c in shard_mod.select(matrix.cells, *shard)}
            self.indexed_cells = [(i, c) for i, c in self.indexed_cells if id(c) in keep]
            matrix = replace(matrix, cells=[c for _, c in self.indexed_cells])
        self.matrix = matrix
        self.out_dir = Path(out_dir)
        self.run_id = run_id or make_run_id(matrix.name)
        self.cache = CellCache(Path(cache_dir) if cache_dir is not None else cache_root(), read=use_cache)
        self.progress_enabled = progress
        self.render = render
        self.host = socket.gethostname()
        self._models: dict[str, object] = {}  # spec -> ModelInfo or BpcError
        self._corpora: dict[str, object] = {}  # spec -> (Corpus, bytes) or BpcError
        self._inputs: dict[tuple[str, int], bytes] = {}
        self._session = None
        self._session_key = None
        self._load_errors: dict[tuple, BpcError] = {}

    # -- inputs ------------------------------------------------------------------------

    @staticmethod
    def _memo(table: dict, key, make):
        """make() once per key; an error is remembered too, so every cell using it fails alike."""
        if key not in table:
            try:
                table[key] = make()
            except BpcError as exc:
                table[key] = exc
        if isinstance(table[key], BpcError):
            raise table[key]
        return table[key]

    def model_info(self, spec: str):
        from .models import describe

        return self._memo(self._models, spec, lambda: describe(spec))

    def corpus(self, spec: str) -> tuple[Corpus, bytes]:
        def load():
            c = resolve(spec)
            return c, c.read_bytes()

        return self._memo(self._corpora, spec, load)

    def input_bytes(self, cell: Cell) -> bytes:
        key = (cell.corpus, cell.max_bytes)
        if key not in self._inputs:
            self._inputs[key] = take_prefix(self.corpus(cell.corpus)[1], cell.max_bytes)
        return self._inputs[key]

    def session(self, cell: Cell):
        key = (cell.model, cell.n_gpu_layers)
        if key in self._load_errors:
            raise self._load_errors[key]
        if self._session_key != key:
            self.close_session()
            from .codec import Session

            try:
                self._session = Session(cell.model, n_gpu_layers=cell.n_gpu_layers)
            except BpcError as exc:  # remembered: the model's other cells fail at once
                self._load_errors[key] = exc
                raise
            self._session_key = key
        return self._session

    def close_session(self) -> None:
        if self._session is not None:
            self._session.close()
        self._session = self._session_key = None

    # -- keys and rows -----------------------------------------------------------------

    def settings(self, cell: Cell):
        from .codec import Settings
        from .llamacpp import default_threads

        return Settings(chunk_tokens=cell.chunk_tokens, width=cell.width,
                        threads=cell.threads or default_threads(), n_gpu_layers=cell.n_gpu_layers)

    def key_material(self, cell: Cell) -> dict:
        corpus, _ = self.corpus(cell.corpus)
        data = self.input_bytes(cell)
        material = {
            "schema_version": results.SCHEMA_VERSION,
            "bpcbench": __version__,
            "codec": cell.codec,
            "measure": cell.measure,
            "corpus_sha256": corpus.sha256,
            "input_sha256": hashlib.sha256(data).hexdigest(),
            "max_bytes": cell.max_bytes,
        }
        if cell.measure == BASELINE:
            from .baselines import BASELINES

            material["library"] = BASELINES[cell.codec].library_version
            material["repeats"] = cell.repeats
        else:
            import numpy as np

            from . import coder
            from .container import FORMAT_VERSION
            from .llamacpp import build_info

            s = self.settings(cell)
            material.update(
                model_sha256=self.model_info(cell.model).sha256,
                chunk_tokens=s.chunk_tokens, width=s.width, threads=s.threads, n_gpu_layers=s.n_gpu_layers,
                llama_cpp_python=llama_cpp_python_version(), build=build_info(s.n_gpu_layers).as_dict(),
                coder=coder.VERSION, container_format=FORMAT_VERSION, numpy=np.__version__,
                code=measuring_code_sha256(),
            )
        return material

    def base_row(self, cell: Cell) -> dict:
        row = {
            "run_id": self.run_id,
            "timestamp_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "host": self.host,
            "cached": False,
            "codec": cell.codec,
            "measure": cell.measure,
            "max_bytes": cell.max_bytes,
            "bpcbench_version": __version__,
        }
        try:
            corpus, full = self.corpus(cell.corpus)
        except BpcError:
            row["corpus_name"] = os.path.basename(cell.corpus)
        else:
            data = self.input_bytes(cell)
            row.update(corpus_name=corpus.name, corpus_kind=corpus.kind, corpus_sha256=corpus.sha256,
                       corpus_file_bytes=len(full), corpus_bytes=len(data),
                       corpus_characters=count_characters(data),
                       input_sha256=hashlib.sha256(data).hexdigest())
            if len(data) < len(full):
                row["note"] = f"prefix: first {len(data)} of {len(full)} bytes"
        if cell.measure == BASELINE:
            from .baselines import BASELINES

            row.update(codec_library_version=BASELINES[cell.codec].library_version, backend="cpu")
            return row
        s = self.settings(cell)
        row.update(chunk_tokens=s.chunk_tokens, width=s.width, threads=s.threads, n_gpu_layers=s.n_gpu_layers,
                   llama_cpp_python_version=llama_cpp_python_version())
        try:
            info = self.model_info(cell.model)
        except BpcError:
            row["model_name"] = cell.codec.removeprefix("llm:")
        else:
            row.update(model_name=info.name, model_path=info.path, model_sha256=info.sha256,
                       model_arch=info.arch, model_quant_type=info.quant_type, model_file_bytes=info.file_bytes,
                       model_n_params=info.n_params, model_vocab_size=info.vocab_size)
        return row

    # -- measuring ---------------------------------------------------------------------

    def measure(self, cell: Cell, progress: _Progress) -> dict:
        data = self.input_bytes(cell)
        if cell.measure == BASELINE:
            from .baselines import run_baseline

            with PeakMemory() as mem:
                r = run_baseline(cell.codec, data, repeats=cell.repeats)
            return {"coded_bytes": r.coded_bytes, "container_bytes": r.coded_bytes, "roundtrip_ok": r.roundtrip_ok,
                    "encode_seconds": r.encode_seconds, "decode_seconds": r.decode_seconds,
                    "peak_rss_mb": mem.mb, "error": r.error}

        from .codec import compress, decompress
        from .ideal import cross_entropy
        from .llamacpp import build_info

        session = self.session(cell)
        s = self.settings(cell)
        out = {"backend": build_info(s.n_gpu_layers).backend}
        name = os.path.basename(cell.corpus)
        with PeakMemory() as mem:
            if cell.measure == "ideal":
                with progress.phase(f"{cell.codec} ideal {name}") as bar:
                    st = cross_entropy(data, session, s, progress=bar)
                out.update(encode_seconds=st.seconds)
            else:
                with progress.phase(f"{cell.codec} compress {name}") as bar:
                    blob, st = compress(data, session, s, progress=bar)
                out.update(coded_bytes=st.coded_bytes, container_bytes=st.container_bytes,
                           encode_seconds=st.seconds)
                try:
                    with progress.phase(f"{cell.codec} decompress {name}") as bar:
                        back, dst = decompress(blob, session, settings=s, progress=bar)
                except BpcError as exc:
                    out.update(roundtrip_ok=False, error=f"decompression failed: {exc}")
                else:
                    out["decode_seconds"] = dst.seconds
                    out["roundtrip_ok"] = back == data
                    if back != data:
                        out["error"] = f"round trip mismatch: decoded {len(back)} bytes, expected {len(data)}"
        out.update(n_tokens=st.n_tokens, n_chunks=st.n_chunks, fallback_bytes=st.fallback_bytes,
                   ideal_bits=st.ideal_bits, peak_rss_mb=mem.mb,
                   _ci_ideal=results.bootstrap_interval(st.chunk_ideal_bits, st.chunk_input_bytes))
        return out

    def run_cell(self, cell: Cell, progress: _Progress) -> tuple[dict, bool]:
        """-> (finished row, served from cache). Never raises for a cell's own failure."""
        row = self.base_row(cell)
        try:
            material = self.key_material(cell)
            key = hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()
        except BpcError as exc:
            row["error"] = str(exc)
            return results.finish_row(row), False
        row["cell_key"] = key
        hit = self.cache.get(key)
        if hit is not None:
            hit.update(run_id=self.run_id, cached=True)
            return results.finish_row({k: v for k, v in hit.items() if k in results.COLUMN_NAMES}), True
        try:
            row.update(self.measure(cell, progress))
        except BpcError as exc:
            row["error"] = str(exc)
        except Exception as exc:  # one broken cell must not end the run; it is reported as FAILED
            row["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0]
        row = results.finish_row(row)
        if not row["error"] and row["roundtrip_ok"] is not False:
            self.cache.put(key, material, row)
        return row, False

    # -- the run -----------------------------------------------------------------------

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
        return {
            "shard": k, "n": n, "run_id": self.run_id, "host": self.host,
            "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "matrix_name": self.full_matrix.name, "matrix_sha256": matrix_sha256(self.full_matrix),
            "matrix_cells": len(self.full_matrix.cells),
            "bpcbench_version": __version__, "llama_cpp_python_version": llama_cpp_python_version(),
            "schema_version": results.SCHEMA_VERSION,
            "cells": [{"index": i, "key": shard_mod.cell_key(c), "label": c.label()} for i, c in self.indexed_cells],
        }

    def run(self) -> RunResult:
        t0 = time.perf_counter()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        write_text(self.out_dir / "matrix.toml", self.matrix.text)
        if self.shard is not None:
            write_text(self.out_dir / SHARD_FILE, json.dumps(self.shard_record(), indent=1) + "\n")
        gpu_layers = max((c.n_gpu_layers or 0 for c in self.matrix.cells), default=0)
        environment.write(self.out_dir / "env.json", environment.collect(gpu_layers))
        cells = self.ordered_cells()
        done: dict[int, dict] = {}
        result = RunResult(self.out_dir, self.run_id, [])
        progress = _Progress(len(cells), self.progress_enabled)
        try:
            for index, cell in cells:
                progress.cells.set_postfix_str(cell.label(), refresh=True)
                row, cached = self.run_cell(cell, progress)
                done[index] = row
                result.n_cached += cached
                if row["error"] or row["roundtrip_ok"] is False:
                    line = f"FAILED {cell.label()}: {row['error'] or 'round trip failed'}"
                    result.failed.append(line)
                    progress.write(f"bpcbench: {line}")
                results.write_csv(self.out_dir / "results.csv", [done[i] for i in sorted(done)])
                progress.cells.update(1)
        finally:
            progress.close()
            self.close_session()
        result.rows = [done[i] for i in sorted(done)]
        if not result.rows:
            results.write_csv(self.out_dir / "results.csv", [])
        if self.render:
            from . import report

            report.render(self.out_dir)
        result.seconds = time.perf_counter() - t0
        return result


def run_matrix(matrix: Matrix, out_dir: str | os.PathLike | None = None, *, results_dir: str | os.PathLike = "results",
               use_cache: bool = True, cache_dir: str | os.PathLike | None = None, progress: bool | None = None,
               render: bool = True, shard: tuple[int, int] | None = None) -> RunResult:
    """Run every cell of `matrix` (or only shard (k, n) of them) into out_dir.

    out_dir defaults to results/<run-id>/, and to results/<run-id>-shard-K-of-N/ for a shard.
    """
    run_id = make_run_id(matrix.name)
    if out_dir is None:
        out_dir = Path(results_dir) / (run_id if shard is None else shard_dir_name(run_id, *shard))
    return Runner(matrix, out_dir, use_cache=use_cache, cache_dir=cache_dir, progress=progress,
                  run_id=run_id, render=render, shard=shard).run()

