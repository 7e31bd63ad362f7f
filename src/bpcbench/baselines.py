"""Classical compressors on the same bytes as the model: the numbers a model has to beat.

Each runs in-process from its Python binding at its strongest common setting,
and every result is decompressed and compared, so a size is never reported
for output that does not round-trip.
"""

from __future__ import annotations

import _bz2
import _lzma
import bz2
import ctypes
import gzip
import lzma
import math
import platform
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import zstandard

try:
    import brotli
except ImportError:  # the bench extra's: compress and decompress (which import this module) run no baseline
    brotli = None

from bpcbench.errors import BpcError
from bpcbench.timing import Timing, time_calls, time_values

# `zstd --long` means a 128 MiB window; the decoder must be allowed that much.
ZSTD_LONG_WINDOW_LOG = 27
ZSTD_LONG_MAX_WINDOW_BYTES = 1 << ZSTD_LONG_WINDOW_LOG
BROTLI_LGWIN = 24
XZ_PRESET = 9 | lzma.PRESET_EXTREME


@dataclass(frozen=True)
class Baseline:
    name: str
    compress: Callable[[bytes], bytes]
    decompress: Callable[[bytes], bytes]
    library_version: str


@dataclass(frozen=True)
class BaselineResult:
    codec: str
    input_bytes: int
    coded_bytes: int
    encode: Timing  # seconds per call: mean ± std of `repeats` values (timing.time_calls)
    decode: Timing  # no values if decompression raised
    roundtrip_ok: bool
    bits_per_byte: float
    library_version: str
    error: str | None = None  # why roundtrip_ok is False; None when it is True

    @property
    def encode_seconds(self) -> float:
        return self.encode.mean

    @property
    def decode_seconds(self) -> float:
        return self.decode.mean


def _c_library_version(module: object, symbol: str) -> str:
    """The C library's own version string: Python's bz2 and lzma do not expose it."""
    try:
        func = getattr(ctypes.CDLL(module.__file__), symbol)
    except (AttributeError, OSError):
        return "unknown"
    func.restype = ctypes.c_char_p
    value = func()
    return value.decode("ascii", "replace").split(",")[0] if value else "unknown"


def _versions() -> dict[str, str]:
    python = f"Python {platform.python_version()}"
    libzstd = ".".join(map(str, zstandard.ZSTD_VERSION))
    zstd = f"zstandard {zstandard.__version__} / libzstd {libzstd}"
    return {
        "gzip": f"{python} gzip / zlib {zlib.ZLIB_RUNTIME_VERSION}",
        "bz2": f"{python} bz2 / libbz2 {_c_library_version(_bz2, 'BZ2_bzlibVersion')}",
        "lzma": f"{python} lzma / liblzma {_c_library_version(_lzma, 'lzma_version_string')}",
        "zstd": zstd,
        "brotli": f"brotli {brotli.__version__}" if brotli else "not installed",
    }


def _gzip_compress(data: bytes) -> bytes:
    # mtime=0 keeps the output a pure function of the input.
    return gzip.compress(data, compresslevel=9, mtime=0)


def _bz2_compress(data: bytes) -> bytes:
    return bz2.compress(data, compresslevel=9)


def _xz_compress(data: bytes) -> bytes:
    return lzma.compress(data, format=lzma.FORMAT_XZ, preset=XZ_PRESET)


def _xz_decompress(coded: bytes) -> bytes:
    return lzma.decompress(coded, format=lzma.FORMAT_XZ)


def _zstd19_compress(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=19, write_content_size=True).compress(data)


# Avoid ZstdCompressionParameters.estimated_compression_context_size() on these
# parameters: in zstandard 0.25.0 it dies with SIGFPE (floating point exception).
_ZSTD_LONG_PARAMS = zstandard.ZstdCompressionParameters.from_level(
    22,
    window_log=ZSTD_LONG_WINDOW_LOG,
    enable_ldm=True,
    write_content_size=True,
)


def _zstd22_long_compress(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(compression_params=_ZSTD_LONG_PARAMS).compress(data)


def _zstd_decompress(coded: bytes) -> bytes:
    # Frames carry their content size, so one-shot decompression knows the output size.
    decompressor = zstandard.ZstdDecompressor(max_window_size=ZSTD_LONG_MAX_WINDOW_BYTES)
    return decompressor.decompress(coded)


def _brotli_compress(data: bytes) -> bytes:
    return brotli.compress(data, quality=11, lgwin=BROTLI_LGWIN)


def _build() -> dict[str, Baseline]:
    versions = _versions()
    rows = [
        ("gzip-9", _gzip_compress, gzip.decompress, versions["gzip"]),
        ("bzip2-9", _bz2_compress, bz2.decompress, versions["bz2"]),
        ("xz-9e", _xz_compress, _xz_decompress, versions["lzma"]),
        ("zstd-19", _zstd19_compress, _zstd_decompress, versions["zstd"]),
        ("zstd-22-long", _zstd22_long_compress, _zstd_decompress, versions["zstd"]),
    ]
    if brotli is not None:
        rows.append(("brotli-11", _brotli_compress, brotli.decompress, versions["brotli"]))
    return {name: Baseline(name, enc, dec, version) for name, enc, dec, version in rows}


BASELINES: dict[str, Baseline] = _build()


def _describe_mismatch(decoded: bytes, data: bytes) -> str:
    common = min(len(decoded), len(data))
    differs = np.frombuffer(decoded, np.uint8, common) != np.frombuffer(data, np.uint8, common)
    where = f"first difference at byte {int(np.argmax(differs))}" if differs.any() else (
        "identical up to the shorter length"
    )
    return f"decoded {len(decoded)} bytes, expected {len(data)}; {where}"


def run_baseline(name: str, data: bytes, repeats: int = 1) -> BaselineResult:
    """Compress, decompress, compare: a failed round trip comes back flagged, never as a bare size.

    Each direction is timed as `repeats` values of at least timing.MIN_VALUE_SECONDS of
    work each, after one warm-up call whose output is the one checked.

    Decoder errors are caught on purpose: a broken baseline must show up as
    roundtrip_ok False in the result table rather than abort a whole matrix.
    """
    baseline = BASELINES.get(name)
    if baseline is None:
        raise BpcError(f"unknown baseline {name!r}; known: {', '.join(BASELINES)}")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise BpcError(f"repeats must be a positive integer, got {repeats!r}")
    data = bytes(data)

    coded, encode = time_calls(baseline.compress, data, repeats)
    error = None
    try:
        decoded, decode = time_calls(baseline.decompress, coded, repeats)
    except Exception as exc:  # any decoder failure is a failed round trip, reported below
        decode = Timing(())
        error = f"{name}: decompression failed: {type(exc).__name__}: {exc}"
    else:
        if not isinstance(decoded, bytes):
            decoded = bytes(decoded)
        if decoded != data:
            error = f"{name}: round trip mismatch: {_describe_mismatch(decoded, data)}"

    return BaselineResult(
        codec=name,
        input_bytes=len(data),
        coded_bytes=len(coded),
        encode=encode,
        decode=decode,
        roundtrip_ok=error is None,
        bits_per_byte=len(coded) * 8 / len(data) if data else math.nan,
        library_version=baseline.library_version,
        error=error,
    )


def retime(result: BaselineResult, data: bytes, values: int = 1) -> BaselineResult:
    """`result` with `values` more values of each direction, at the loops it was calibrated to:
    a later timing round (bench/runner.py spreads them across a run). One checked call of each
    direction comes first (the warm-up after whatever ran in between); an output that differs
    from the first round's ends the round trip as failed."""
    if not result.roundtrip_ok:
        return result
    baseline, data = BASELINES[result.codec], bytes(data)
    coded = baseline.compress(data)
    back = baseline.decompress(coded)
    if len(coded) != result.coded_bytes or back != data:
        return replace(result, roundtrip_ok=False,
                       error=f"{result.codec}: not deterministic: a later round wrote {len(coded)} bytes "
                             f"(the first {result.coded_bytes}) or did not decode to the input")
    return replace(result, encode=result.encode + time_values(baseline.compress, data, result.encode.loops, values),
                   decode=result.decode + time_values(baseline.decompress, coded, result.decode.loops, values))
