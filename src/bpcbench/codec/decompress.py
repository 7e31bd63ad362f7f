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
from collections.abc import Sequence

import numpy as np
import zstandard

from bpcbench.codec import lossy
from bpcbench.codec.compress import Stats
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
               max_kv_cells: int = DEFAULT_MAX_KV_CELLS) -> tuple[bytes, Stats]:
    """Restore the bytes of a .bpcz file.

    Threads and offload are `settings`', or `threads` / `n_gpu_layers`, or the defaults; never
    the file's, which only says what the encoder used (a difference is refused unless `force`).
    Without `session`, the model is `model_spec`, or the one whose sha256 the file records, looked
    up in the registry, `model_dirs`, $BPCBENCH_MODEL_PATH and the cache.
    """
    t0 = time.perf_counter()
    container = Container.from_bytes(blob)
    h = container.header
    if h.original_bytes > max_output_bytes:
        raise BpcError(f"the file would decode to {h.original_bytes:,} bytes, more than the limit of "
                       f"{max_output_bytes:,} (--max-output-bytes)")
    if h.method in CODED:
        data, n_pieces = _decode_model(container, session, model_spec, settings, force, progress,
                                       threads, n_gpu_layers, model_dirs, max_kv_cells)
    else:
        data, n_pieces = _unpack(container), 0
    if len(data) != h.original_bytes or hashlib.sha256(data).hexdigest()[: 2 * HASH_BYTES] != h.original_sha:
        raise CorruptInput("decoded data fails its checksum: the file is corrupt or was made under a different "
                           "model/build; nothing was written")
    return data, Stats(input_bytes=len(data), container_bytes=len(blob), n_tokens=h.n_tokens, n_pieces=n_pieces,
                       lanes=n_pieces, policy=h.policy if h.method in CODED else "", method=h.method,
                       coded_bytes=len(container.model_payload) if h.method in CODED else 0,
                       header_bytes=container.header_bytes, seconds=time.perf_counter() - t0)


def _unpack(container: Container) -> bytes:
    """A stored or zstd container's bytes."""
    if container.header.method == "stored":
        return container.payload
    return _unzstd(container.payload, container.header.original_bytes)


def _unzstd(frame: bytes, limit: int) -> bytes:
    """A zstd frame's bytes, read no further than `limit` + 1 (so too long shows, without a bomb)."""
    try:
        with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(frame)) as reader:
            out = bytearray()
            while len(out) <= limit and (piece := reader.read(min(1 << 20, limit + 1 - len(out)))):
                out += piece
    except zstandard.ZstdError:
        raise CorruptInput("compressed file's zstd frame is corrupt") from None
    return bytes(out)


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
            tokens = lossy.decode_tokens(container, session, coded, settings.threads, progress)
        else:
            tokens = session.decode(coded, container.model_payload, settings.threads, h.shift, progress)
        if not h.lane_methods:
            return session.vocab.detokenize(tokens), plan.n_lanes
        return _join_lanes(container, coded, tokens, session), plan.n_lanes
    finally:
        if own:
            session.close()


def _join_lanes(container: Container, coded: Plan, tokens: np.ndarray, session: Session) -> bytes:
    """The original of a SEGMENTS file: each lane's bytes in order, from the model's tokens or its segment."""
    offs, segments = coded.offsets(), iter(container.segments)
    out, limit = bytearray(), container.header.original_bytes
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
    here = (lossy.fingerprint if h.method == "lossy" else Session.fingerprint)(session, settings.n_gpu_layers)
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
