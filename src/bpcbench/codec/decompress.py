"""decompress: a .bpcz container -> the original bytes, or one line saying why not.

The header has been range-checked by the container reader; here the decoder re-derives the
encoder's plan, finds the model by the hash the file records (never by a path from the file),
refuses a decode whose distributions could differ from the encoder's, and stops as soon as the
payload cannot hold the tokens still claimed. The original's hash guards every output.
"""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Iterator, Sequence
from typing import BinaryIO

import numpy as np
import zstandard

from bpcbench.codec import lossy
from bpcbench.codec.compress import Stats, segment_stats
from bpcbench.codec.container import (
    CODED,
    HASH_BYTES,
    LANE_MODEL,
    LANE_STORED,
    Container,
    Header,
    model_lanes,
)
from bpcbench.codec.session import Session, Settings
from bpcbench.errors import BpcError, CorruptInput, Mismatch
from bpcbench.llama.binding import default_threads
from bpcbench.llama.lanes import Plan
from bpcbench.models import find_by_hash

DEFAULT_MAX_OUTPUT_BYTES = 4 << 30  # a decode writes at most this much unless told otherwise
# KV cells (lanes x window) a decode allocates at most unless told otherwise: what the default
# settings use at their widest (32 lanes x 2,048)
DEFAULT_MAX_KV_CELLS = 32 * 2048


def decompress(blob: bytes, session: Session | None = None, model_spec: str | None = None,
               settings: Settings | None = None, force: bool = False, progress=None, *,
               threads: int | None = None, n_gpu_layers: int | None = None, model_dirs: Sequence[str] = (),
               max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
               max_kv_cells: int = DEFAULT_MAX_KV_CELLS, out: BinaryIO | None = None) -> tuple[bytes, Stats]:
    """Restore the bytes of a .bpcz file.

    Threads and offload are `settings`', or `threads` / `n_gpu_layers`, or the defaults; never
    the file's, which only says what the encoder used (a difference is refused unless `force`).
    Without `session`, the model is `model_spec`, or the one whose sha256 the file records, looked
    up in the registry, `model_dirs`, $BPCBENCH_MODEL_PATH and the cache.
    With `out`, the bytes are written to it as they come (zstd and stored ranges in pieces of at
    most a MiB, so memory stays bounded whatever the file claims) and b"" is returned; the caller
    must discard `out` on an error, since the checksum is known only at the end.
    """
    t0 = time.perf_counter()
    container = Container.from_bytes(blob)
    h = container.header
    if h.original_bytes > max_output_bytes:
        raise BpcError(f"the file would decode to {h.original_bytes:,} bytes, more than the limit of "
                       f"{max_output_bytes:,} (--max-output-bytes)")
    sink = _Sink(out, h.original_bytes)
    if h.method in CODED:
        text, n_pieces, state = _decode_model(container, session, model_spec, settings, force, progress,
                                              threads, n_gpu_layers, model_dirs, max_kv_cells)
        if h.ranges:
            _write_ranges(container, text, sink)
        else:
            sink.write(text)
    else:
        n_pieces, state = 0, ""
        if h.method == "stored":
            sink.write(container.payload)
        else:
            for piece in _zstd_pieces(container.payload, h.original_bytes):
                sink.write(piece)
    if sink.n != h.original_bytes or sink.sha.hexdigest()[: 2 * HASH_BYTES] != h.original_sha:
        raise CorruptInput("decoded data fails its checksum: the file is corrupt or was made under a different "
                           "model/build; nothing was written")
    return sink.data(), Stats(input_bytes=h.original_bytes, container_bytes=len(blob), n_tokens=h.n_tokens,
                              n_pieces=n_pieces, lanes=n_pieces, policy=h.policy if h.method in CODED else "",
                              method=h.method,
                              coded_bytes=len(container.model_payload) if h.method in CODED else 0,
                              header_bytes=container.header_bytes, seconds=time.perf_counter() - t0,
                              segments=segment_stats(container), mix=h.mix, mix_state=state)


class _Sink:
    """Where decoded bytes go: a buffer, or `out` written as they come; hashed and counted either
    way, and refused as soon as they pass `limit` (the header's length)."""

    def __init__(self, out: BinaryIO | None, limit: int):
        self.out, self.limit, self.n, self.sha = out, limit, 0, hashlib.sha256()
        self._buf = io.BytesIO() if out is None else None

    def write(self, piece: bytes) -> None:
        self.n += len(piece)
        if self.n > self.limit:
            raise CorruptInput("decoded data fails its checksum: more bytes than the header says; nothing was written")
        self.sha.update(piece)
        (self.out if self._buf is None else self._buf).write(piece)

    def data(self) -> bytes:
        return b"" if self._buf is None else self._buf.getvalue()


def _write_ranges(container: Container, text: bytes, sink: _Sink) -> None:
    """A version-4 file's original: its ranges in order, the model's ones cut from `text` (the
    model ranges joined), the others from their zstd frames or stored bytes."""
    if len(text) != container.header.text_bytes:
        raise CorruptInput("decoded data fails its checksum: the model's ranges decode to the wrong length")
    at = 0
    for (method, n, _), payload in zip(container.header.ranges, container.range_payloads):
        if method == LANE_MODEL:
            sink.write(text[at : at + n])
            at += n
        elif method == LANE_STORED:
            sink.write(payload)
        else:
            got = 0
            for piece in _zstd_pieces(payload, n):
                got += len(piece)
                sink.write(piece)
            if got != n:
                raise CorruptInput("compressed file's zstd range decodes to fewer bytes than its segment map says")


def _zstd_pieces(frame: bytes, limit: int) -> Iterator[bytes]:
    """A zstd frame's bytes in pieces of at most a MiB, read no further than `limit` + 1 (so too
    long shows, without a bomb)."""
    got = 0
    try:
        with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(frame)) as reader:
            while got <= limit and (piece := reader.read(min(1 << 20, limit + 1 - got))):
                got += len(piece)
                if got > limit:
                    raise CorruptInput("compressed file's zstd data decodes to more bytes than its header says")
                yield piece
    except zstandard.ZstdError:
        raise CorruptInput("compressed file's zstd frame is corrupt") from None


def _unzstd(frame: bytes, limit: int) -> bytes:
    """A zstd frame's bytes, at most `limit` of them."""
    return b"".join(_zstd_pieces(frame, limit))


def _decode_model(container, session, model_spec, settings, force, progress, threads, n_gpu_layers, model_dirs,
                  max_kv_cells):
    h = container.header
    plan = h.plan()
    if plan.kv_cells > max_kv_cells:
        raise BpcError(f"the file's plan needs {plan.kv_cells:,} KV cells, more than the limit of {max_kv_cells:,} "
                       f"(--max-kv-cells)")
    settings = settings or Settings(threads=threads or default_threads(), n_gpu_layers=n_gpu_layers or 0)
    if (early := _run_differences(h, settings)) and not force:  # before any model file is opened
        raise Mismatch(_refusal(early[0]))
    own = session is None
    if own:
        session = Session(model_spec or find_by_hash(h.model_sha, h.model_name, model_dirs),
                          n_gpu_layers=settings.n_gpu_layers)
    try:
        if session.model.n_ctx_train and h.context > session.model.n_ctx_train:
            raise CorruptInput(f"compressed file's window ({h.context:,} tokens) is longer than the model's "
                               f"training context ({session.model.n_ctx_train:,})")
        check_compatible(h, session, settings, force)
        coded = model_lanes(plan, h.lane_methods)
        if h.method == "lossy":
            tokens, state = lossy.decode_tokens(container, session, coded, settings.threads, progress), ""
        else:
            decoded = session.decode(coded, container.model_payload, settings.threads, h.shift, progress, h.mix)
            tokens, state = decoded.tokens, decoded.mix_state
        if not h.lane_methods:
            return session.vocab.detokenize(tokens), plan.n_lanes, state
        return _join_lanes(container, coded, tokens, session), plan.n_lanes, state
    finally:
        if own:
            session.close()


def _join_lanes(container: Container, coded: Plan, tokens: np.ndarray, session: Session) -> bytes:
    """The original of a SEGMENTS file: each lane's bytes in order, from the model's tokens or its segment."""
    offs, segments = coded.offsets(), iter(container.segments)
    out, limit = bytearray(), container.header.text_bytes
    for i, method in enumerate(container.header.lane_methods):
        if method == LANE_MODEL:
            out += session.vocab.detokenize(tokens[offs[i] : offs[i + 1]])
        else:
            seg = next(segments)
            out += seg if method == LANE_STORED else _unzstd(seg, limit - len(out))
        if len(out) > limit:
            raise CorruptInput("compressed file's lanes decode to more bytes than its header says")
    return bytes(out)


def check_compatible(h: Header, session: Session, settings: Settings, force: bool = False) -> list[str]:
    """Refuse (or, forced, warn about) a decode whose distributions could differ from the encoder's."""
    if not session.info.sha256.startswith(h.model_sha):
        raise Mismatch(f"model mismatch: file was compressed with {h.model_name} (sha256 {h.model_sha}…), "
                       f"this model has sha256 {session.info.sha256[: 2 * HASH_BYTES]}…")
    problems = _run_differences(h, settings)
    if h.method == "lossy":  # its coding's version is in its fingerprint; a first-version file is refused
        lossy.check_version(h.codec, session, settings.n_gpu_layers)
        here = lossy.fingerprint(session, settings.n_gpu_layers)
    else:
        here = session.fingerprint(settings.n_gpu_layers, h.mix)
    if h.codec != here:
        problems.append(f"llama.cpp build, CPU features, numpy, kernel build, coder or vocabulary differ from the "
                        f"encoder's (fingerprint: file {h.codec}, here {here})")
    if problems and not force:
        raise Mismatch(_refusal(problems[0]))
    return problems


def _refusal(problem: str) -> str:
    return problem + (" (decoding could produce wrong bytes; --allow-mismatch tries anyway, the checksum still "
                      "guards the output)")


def _run_differences(h: Header, settings: Settings) -> list[str]:
    """Thread count and offload: what the file recorded against what this run uses."""
    problems = []
    if h.threads != settings.threads:
        problems.append(f"thread count differs: file has {h.threads}, here {settings.threads} "
                        f"(pass --threads {h.threads})")
    if h.n_gpu_layers != settings.n_gpu_layers:
        problems.append(f"GPU offload (n_gpu_layers) differs: file has {h.n_gpu_layers}, here "
                        f"{settings.n_gpu_layers} (pass --n-gpu-layers {h.n_gpu_layers})")
    return problems
