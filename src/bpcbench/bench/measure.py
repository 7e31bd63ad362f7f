"""One cell -> its numbers: load what it needs (once per run), measure, check the round trip.

`Inputs` memoizes models, corpora and prefixes for a run, and keeps one model loaded at a
time (the runner orders cells model by model). `measure` dispatches on the cell's measure:

* ``baseline``: the classical compressor, round trip checked (baselines.run_baseline);
* ``ideal``: the model's cross-entropy, no file (codec.cross_entropy);
* ``coded``: compress, decompress with the same session, compare byte for byte.

Every timed quantity is `cell.repeats` values (timing.Timing: mean, std, n). A model cell
repeats the whole evaluation, compression or decompression, and every repeat must give the
same bits and the same file: a codec that is not deterministic fails the cell.
"""

from __future__ import annotations

import hashlib
import os
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
                    threads=cell.threads or measurement_threads(), n_gpu_layers=cell.n_gpu_layers or 0)


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


def measure(cell: Cell, inputs: Inputs, phase) -> dict:
    """The measured columns of one cell; `phase(desc)` gives a progress bar context (or None)."""
    data = inputs.data(cell)
    if cell.measure == BASELINE:
        with PeakMemory() as mem:
            r = baselines.run_baseline(cell.codec, data, repeats=cell.repeats)
        return {"coded_bytes": r.coded_bytes, "container_bytes": r.coded_bytes, "roundtrip_ok": r.roundtrip_ok,
                **timing_columns(r.encode, r.decode), "peak_rss_mb": mem.mb, "error": r.error}
    session = inputs.session(cell)
    s = settings(cell)
    out = {"backend": build_info(s.n_gpu_layers).backend}
    with PeakMemory() as mem:
        if cell.measure == "ideal":
            st = _ideal(cell, session, s, data, phase, out)
        else:
            st = _coded(cell, session, s, data, phase, out)
    out.update(n_tokens=st.n_tokens, n_chunks=st.n_chunks, fallback_bytes=st.fallback_bytes,
               ideal_bits=st.ideal_bits, peak_rss_mb=mem.mb, policy=st.policy, context_tokens=st.context,
               lanes=st.lanes, context_mean=st.context_mean, context_min=st.context_min, context_max=st.context_max,
               scored_bytes=st.scored_bytes, perplexity=st.perplexity,
               _ci_ideal=bootstrap_interval(st.chunk_ideal_bits, st.chunk_input_bytes))
    return out


def _desc(cell: Cell, what: str, k: int) -> str:
    repeat = f" ({k + 1}/{cell.repeats})" if cell.repeats > 1 else ""
    return f"{cell.codec} {what} {os.path.basename(cell.corpus)}{repeat}"


def _ideal(cell: Cell, session: Session, s: Settings, data: bytes, phase, out: dict):
    """Cross-entropy, `cell.repeats` times; every repeat must give the same bits."""
    seconds, first = [], None
    for k in range(cell.repeats):
        with phase(_desc(cell, "ideal", k)) as bar:
            st = cross_entropy.cross_entropy(data, session, s, progress=bar)
        seconds.append(st.seconds)
        first = first or st
        if st.ideal_bits != first.ideal_bits:
            out["error"] = (f"not deterministic: repeat {k + 1} gave {st.ideal_bits!r} ideal bits, "
                            f"the first {first.ideal_bits!r}")
            break
    out.update(timing_columns(Timing(tuple(seconds))))
    return first


def _coded(cell: Cell, session: Session, s: Settings, data: bytes, phase, out: dict):
    """Compress and decompress `cell.repeats` times, compare every output: the verdict goes
    into `out` (roundtrip_ok, error)."""
    enc, dec, blob, first = [], [], None, None
    for k in range(cell.repeats):
        with phase(_desc(cell, "compress", k)) as bar:
            b, st = coding.compress(data, session, s, progress=bar, fallback=False)  # measure the model
        enc.append(st.seconds)
        if blob is None:
            blob, first = b, st
            out.update(coded_bytes=st.coded_bytes, container_bytes=st.container_bytes)
        elif b != blob:
            out.update(roundtrip_ok=False, error=f"not deterministic: compression {k + 1} wrote another file "
                                                 f"({len(b)} bytes, the first {len(blob)})")
            break
    else:
        for k in range(cell.repeats):
            try:
                with phase(_desc(cell, "decompress", k)) as bar:
                    back, dst = decoding.decompress(blob, session, settings=s, progress=bar)
            except BpcError as exc:
                out.update(roundtrip_ok=False, error=f"decompression failed: {exc}")
                break
            dec.append(dst.seconds)
            if back != data:
                out.update(roundtrip_ok=False,
                           error=f"round trip mismatch: decoded {len(back)} bytes, expected {len(data)}")
                break
        else:
            out["roundtrip_ok"] = True
    out.update(timing_columns(Timing(tuple(enc)), Timing(tuple(dec))))
    return first
