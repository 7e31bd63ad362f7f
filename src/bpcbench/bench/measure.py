"""One cell -> its numbers: load what it needs (once per run), measure, check the round trip.

`Inputs` memoizes models, corpora and prefixes for a run, and keeps one model loaded at a
time (the runner orders cells model by model). `Measurement` dispatches on the cell's measure:

* ``baseline``: the classical compressor, round trip checked (baselines.run_baseline);
* ``ideal``: the model's cross-entropy, no file (codec.cross_entropy);
* ``coded``: compress, decompress with the same session, compare byte for byte.

Every timed quantity is `cell.repeats` values (timing.Timing: mean, std, n), taken in rounds
(`Measurement`). A model cell repeats the whole evaluation, compression or decompression, and
every repeat must give the same bits and the same file: a codec that is not deterministic
fails the cell.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timezone

from bpcbench import __version__, baselines
from bpcbench.bench import cache
from bpcbench.bench.matrix import BASELINE, Cell
from bpcbench.codec import compress as coding
from bpcbench.codec import cross_entropy
from bpcbench.codec import decompress as decoding
from bpcbench.codec.session import (
    DEFAULT_MIN_LANE_TOKENS,
    DEFAULT_POLICY,
    DEFAULT_WIDTH,
    Session,
    Settings,
)
from bpcbench.corpora import Corpus, count_characters, resolve, take_prefix
from bpcbench.environment import PeakMemory
from bpcbench.errors import BpcError
from bpcbench.llama.binding import build_info, measurement_threads
from bpcbench.models import ModelInfo, describe
from bpcbench.stats import bootstrap_interval
from bpcbench.timing import Timing


def settings(cell: Cell) -> Settings:
    """The cell's settings as the matrix gave them (context None: the model's default, see Settings.resolved)."""
    return Settings(policy=cell.policy or DEFAULT_POLICY, context=cell.context, width=cell.width or DEFAULT_WIDTH,
                    min_lane_tokens=cell.min_lane_tokens or DEFAULT_MIN_LANE_TOKENS,
                    threads=cell.threads or measurement_threads(), n_gpu_layers=cell.n_gpu_layers or 0, mix=cell.mix)


class Inputs:
    """Models, corpora, prefixes and the loaded session of one run; a load error is
    remembered too, so every cell that needs the same thing fails alike and at once."""

    def __init__(self):
        self._memo: dict[tuple, object] = {}
        self._session: Session | None = None
        self._session_key = None

    def _once(self, key: tuple, make):
        if key not in self._memo:
            try:
                self._memo[key] = make()
            except BpcError as exc:
                self._memo[key] = exc
        if isinstance(self._memo[key], BpcError):
            raise self._memo[key]
        return self._memo[key]

    def model_info(self, spec: str) -> ModelInfo:
        return self._once(("model", spec), lambda: describe(spec))

    def corpus(self, spec: str) -> tuple[Corpus, bytes]:
        def load():
            c = resolve(spec)
            return c, c.read_bytes()

        return self._once(("corpus", spec), load)

    def data(self, cell: Cell) -> bytes:
        return self._once(("input", cell.corpus, cell.max_bytes),
                          lambda: take_prefix(self.corpus(cell.corpus)[1], cell.max_bytes))

    def session(self, cell: Cell) -> Session:
        key = (cell.model, cell.n_gpu_layers)
        if self._session_key != key:
            self.close()
            self._session = self._once(("session", *key), lambda: Session(cell.model, n_gpu_layers=cell.n_gpu_layers))
            self._session_key = key
        return self._session

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
        self._session = self._session_key = None


def key_material(cell: Cell, inputs: Inputs) -> dict:
    """Everything the cell's result depends on (the cache key is its sha256)."""
    corpus, _ = inputs.corpus(cell.corpus)
    material = cache.common_material(cell, corpus.sha256, inputs.data(cell))
    if cell.measure == BASELINE:
        return {**material, **cache.baseline_material(cell)}
    s = settings(cell)
    return {**material, **cache.model_material(s, inputs.model_info(cell.model).sha256,
                                               build_info(s.n_gpu_layers).as_dict())}


def describe_row(cell: Cell, inputs: Inputs, run_id: str, host: str) -> dict:
    """The row's identity and metadata columns, filled before anything is measured."""
    row = {"run_id": run_id, "timestamp_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "host": host, "cached": False, "codec": cell.codec, "measure": cell.measure,
           "max_bytes": cell.max_bytes, "bpcbench_version": __version__}
    try:
        corpus, full = inputs.corpus(cell.corpus)
    except BpcError:
        row["corpus_name"] = os.path.basename(cell.corpus)
    else:
        data = inputs.data(cell)
        row.update(corpus_name=corpus.name, corpus_kind=corpus.kind, corpus_sha256=corpus.sha256,
                   corpus_file_bytes=len(full), corpus_bytes=len(data), corpus_characters=count_characters(data),
                   input_sha256=hashlib.sha256(data).hexdigest())
        if len(data) < len(full):
            row["note"] = f"prefix: first {len(data)} of {len(full)} bytes"
    if cell.measure == BASELINE:
        row.update(codec_library_version=baselines.BASELINES[cell.codec].library_version, backend="cpu")
        return row
    s = settings(cell)
    row.update(policy=s.policy, context_tokens=s.context, width=s.width, threads=s.threads, n_gpu_layers=s.n_gpu_layers,
               llama_cpp_python_version=cache.llama_cpp_python_version())
    try:
        info = inputs.model_info(cell.model)
    except BpcError:
        row["model_name"] = cell.codec.removeprefix("llm:")
    else:
        row.update(model_name=info.name, model_path=info.path, model_sha256=info.sha256, model_arch=info.arch,
                   model_quant_type=info.quant_type, model_file_bytes=info.file_bytes,
                   model_n_params=info.n_params, model_vocab_size=info.vocab_size)
    return row


def timing_columns(encode: Timing, decode: Timing | None = None) -> dict:
    """The timing columns of a row: mean, std and n of each direction (results.COLUMNS)."""
    out = {"encode_seconds": encode.mean, "encode_seconds_std": encode.std, "timing_values": encode.n,
           "timing_loops": encode.loops}
    if decode is not None and decode.n:
        out.update(decode_seconds=decode.mean, decode_seconds_std=decode.std)
    return out


def _retime(job: tuple[baselines.BaselineResult, bytes]) -> baselines.BaselineResult:
    return baselines.retime(*job)


def baseline_round(ms: list[Measurement]) -> list[dict]:
    """One more round of these baseline cells, all timed in one fresh (spawned) worker process;
    their columns, as Measurement.again gives them.

    A fresh process per round because a process's own memory layout moves a baseline's speed
    more than anything inside one process does (docs/measurements.md: zstd-22-long decoding in
    six processes). pyperf runs its values in 20 worker processes for this reason; we spawn one
    per round.
    """
    if not ms:
        return []
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        retimed = list(pool.map(_retime, [(m.baseline, m.data) for m in ms]))
    return [m.again(r) for m, r in zip(ms, retimed)]


class Measurement:
    """One cell measured in rounds. `first()` loads what the cell needs, measures it once and
    returns the row's measured columns; each `again()` adds one timed value of every direction
    and checks the output did not change (a codec that is not deterministic fails the cell).
    The runner interleaves the rounds of all cells across the run (runner.py), so a cell's
    values span minutes, not one burst: drift of a shared machine shows in their spread."""

    def __init__(self, cell: Cell, inputs: Inputs, phase):
        self.cell, self.inputs, self.phase = cell, inputs, phase  # phase(desc): a progress bar context
        self.data = inputs.data(cell)
        self.rounds = 0
        self.encode = self.decode = Timing(())
        self.baseline = self.first_stats = self.blob = None

    def first(self) -> dict:
        cell = self.cell
        self.rounds = 1
        if cell.measure == BASELINE:
            with PeakMemory() as mem:
                r = self.baseline = baselines.run_baseline(cell.codec, self.data)
            return {"coded_bytes": r.coded_bytes, "container_bytes": r.coded_bytes, "roundtrip_ok": r.roundtrip_ok,
                    **timing_columns(r.encode, r.decode), "peak_rss_mb": mem.mb, "error": r.error}
        s = settings(cell)
        out = {"backend": build_info(s.n_gpu_layers).backend}
        with PeakMemory() as mem:
            error = self._model_round(out)
        st = self.first_stats
        out.update(error=error, **timing_columns(self.encode, self.decode))
        out.update(n_tokens=st.n_tokens, n_pieces=st.n_pieces, fallback_bytes=st.fallback_bytes,
                   ideal_bits=st.ideal_bits, peak_rss_mb=mem.mb, policy=st.policy, context_tokens=st.context,
                   lanes=st.lanes, context_mean=st.context_mean, context_min=st.context_min,
                   context_max=st.context_max, scored_bytes=st.scored_bytes, perplexity=st.perplexity,
                   _ci_ideal=bootstrap_interval(st.piece_bits, st.piece_bytes))
        if cell.measure != "ideal":
            out.update(coded_bytes=st.coded_bytes, container_bytes=st.container_bytes, roundtrip_ok=error is None)
        return out

    def again(self, retimed: baselines.BaselineResult | None = None) -> dict:
        """One more round: the updated timing columns, plus error (and roundtrip_ok False) if it
        failed. A baseline cell's round was taken by `baseline_round` and comes in as `retimed`."""
        self.rounds += 1
        if self.cell.measure == BASELINE:
            r = self.baseline = retimed
            out = timing_columns(r.encode, r.decode)
            return out if r.error is None else {**out, "roundtrip_ok": False, "error": r.error}
        error = self._model_round({})
        out = timing_columns(self.encode, self.decode)
        if error is not None:
            out.update(error=error, **({} if self.cell.measure == "ideal" else {"roundtrip_ok": False}))
        return out

    def _desc(self, what: str) -> str:
        k = f" ({self.rounds}/{self.cell.repeats})" if self.cell.repeats > 1 else ""
        return f"{self.cell.codec} {what} {os.path.basename(self.cell.corpus)}{k}"

    def _model_round(self, out: dict) -> str | None:
        """Evaluate (ideal) or compress + decompress (coded) once, append the timings; the error, if any."""
        session, s = self.inputs.session(self.cell), settings(self.cell)
        if self.cell.measure == "ideal":
            with self.phase(self._desc("ideal")) as bar:
                st = cross_entropy.cross_entropy(self.data, session, s, progress=bar)
            self.encode += Timing((st.seconds,))
            self.first_stats = self.first_stats or st
            if st.ideal_bits != self.first_stats.ideal_bits:
                return (f"not deterministic: round {self.rounds} gave {st.ideal_bits!r} ideal bits, "
                        f"the first {self.first_stats.ideal_bits!r}")
            return None
        with self.phase(self._desc("compress")) as bar:
            blob, st = coding.compress(self.data, session, s, progress=bar, fallback=False)  # measure the model
        self.encode += Timing((st.seconds,))
        if self.blob is None:
            self.blob, self.first_stats = blob, st
        elif blob != self.blob:
            return f"not deterministic: compression {self.rounds} wrote another file ({len(blob)} bytes, " \
                   f"the first {len(self.blob)})"
        try:
            with self.phase(self._desc("decompress")) as bar:
                back, dst = decoding.decompress(blob, session, settings=s, progress=bar)
        except BpcError as exc:
            return f"decompression failed: {exc}"
        self.decode += Timing((dst.seconds,))
        if back != self.data:
            return f"round trip mismatch: decoded {len(back)} bytes, expected {len(self.data)}"
        return None
