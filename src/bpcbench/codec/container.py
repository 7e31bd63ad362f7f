"""The .bpcz file: what a decoder needs to reproduce the encoder's distributions, or refuse.

Layout (little-endian):
    b"BPCZ"  u16 format version  u32 header length  header (UTF-8 JSON, zlib with a preset dictionary)
Version 2: the tokens are coded in lanes (llama/lanes.py); version 1: in disjoint chunks.
    payload: u32 range-coder words
    u32 CRC-32 of everything before it
The CRC is checked before anything is inflated; the header inflates to at most 16 KiB and
every field is typed and range-checked (check_header) before anything uses it, so a
truncated, bit-flipped or forged file fails with one line before any model is loaded. The
original's sha256 in the header catches a decode that went wrong anyway.
"""

from __future__ import annotations

import json
import re
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from bpcbench.errors import CorruptInput

MAGIC = b"BPCZ"
FORMAT_VERSION = 2  # written by default; READABLE also decodes
READABLE = (1, 2)
MAX_HEADER_BYTES = 16 * 1024  # inflated JSON; a real header is ~300 bytes
MAX_ORIGINAL_BYTES = 1 << 40  # what any header may claim; decompress applies the user's own, smaller bound
_PREFIX = struct.Struct("<4sHI")

# zlib preset dictionary: the header's keys and usual values, so a typical header costs
# ~150 bytes instead of ~300. Part of format version 1: changing it needs a new version.
_ZDICT = (
    b'{"block_symbols":256,"bpcbench":"0.1.0","build":{"backend":"cpu","llama_cpp_python":"0.3.36",'
    b'"system_sha":""},"chunk_tokens":512,"coder":"constriction-0.5.0/range/two-level","fallback_bytes":0,'
    b'"max_width":32,"model":{"name":"smollm2-135m","sha256":""},"n_gpu_layers":0,"n_tokens":,'
    b'"numpy":"2.4.6","original_bytes":,"original_sha256":"","payload_words":,"start_token":1,"threads":2,'
    b'"vocab":"","width":32}gemma3-270m'
)
# Version 2 adds the lane plan's keys; version 1's dictionary is kept as it was.
_ZDICT_BY_VERSION = {
    1: _ZDICT,
    2: _ZDICT + b'"context":2048,"discard":512,"lanes":,"min_lane_tokens":8192,"policy":"lanes","slide":"shift"',
}


@dataclass
class Container:
    header: dict
    payload: np.ndarray  # uint32 words
    version: int = FORMAT_VERSION

    def to_bytes(self) -> bytes:
        z = zlib.compressobj(9, zlib.DEFLATED, -15, 9, zlib.Z_DEFAULT_STRATEGY, _ZDICT_BY_VERSION[self.version])
        header = z.compress(json.dumps(self.header, separators=(",", ":"), sort_keys=True).encode()) + z.flush()
        body = _PREFIX.pack(MAGIC, self.version, len(header)) + header
        body += np.asarray(self.payload, dtype="<u4").tobytes()
        return body + struct.pack("<I", zlib.crc32(body))

    @classmethod
    def from_bytes(cls, blob: bytes) -> "Container":
        if len(blob) < 4 or blob[:4] != MAGIC:
            raise CorruptInput("not a bpcbench compressed file (bad magic)")
        if len(blob) < _PREFIX.size + 4:
            raise CorruptInput("compressed file is truncated (shorter than its header)")
        _, version, header_len = _PREFIX.unpack_from(blob)
        if version not in READABLE:
            raise CorruptInput(
                f"unsupported format version {version}: this bpcbench reads versions {', '.join(map(str, READABLE))}"
            )
        body, (crc,) = blob[:-4], struct.unpack("<I", blob[-4:])
        end = _PREFIX.size + header_len
        if end > len(body):
            raise CorruptInput("compressed file is truncated (inside its header)")
        if zlib.crc32(body) != crc:  # checked before anything is inflated or allocated
            raise CorruptInput("compressed file is corrupt or truncated: CRC-32 mismatch")
        header = _parse_header(body[_PREFIX.size : end], version)
        check_header(header, version)
        payload_bytes = body[end:]
        if len(payload_bytes) % 4 or len(payload_bytes) // 4 != header["payload_words"]:
            raise CorruptInput("compressed file payload length does not match its header")
        return cls(header, np.frombuffer(payload_bytes, dtype="<u4").astype(np.uint32), version)


def _parse_header(raw: bytes, version: int) -> dict:
    """Inflate at most MAX_HEADER_BYTES (a zlib bomb stops there) and parse the JSON."""
    z = zlib.decompressobj(-15, _ZDICT_BY_VERSION[version])
    try:
        text = z.decompress(raw, MAX_HEADER_BYTES + 1)
        if len(text) > MAX_HEADER_BYTES or z.unconsumed_tail:
            raise CorruptInput(f"compressed file's header inflates past {MAX_HEADER_BYTES} bytes")
        header = json.loads(text + z.flush(MAX_HEADER_BYTES))
    except (ValueError, zlib.error, RecursionError):
        raise CorruptInput("compressed file has an unreadable header") from None
    if not isinstance(header, dict):
        raise CorruptInput("compressed file has an unreadable header (not an object)")
    return header


HEX16 = re.compile(r"[0-9a-f]{16}")
_INT31 = 2**31 - 1
# field -> (type, low, high) for numbers, (str, max length) for text; every field is required
_COMMON = {
    "threads": (int, 1, 1 << 20), "n_gpu_layers": (int, 0, 1 << 20), "start_token": (int, 0, _INT31),
    "n_tokens": (int, 0, MAX_ORIGINAL_BYTES), "fallback_bytes": (int, 0, MAX_ORIGINAL_BYTES),
    "block_symbols": (int, 2, 1 << 20), "original_bytes": (int, 0, MAX_ORIGINAL_BYTES),
    "payload_words": (int, 0, MAX_ORIGINAL_BYTES), "numpy": (str, 64), "coder": (str, 256), "bpcbench": (str, 64),
    "vocab": (str, 16), "original_sha256": (str, 16), "max_width": (int, 1, 1 << 20),
}
_BY_VERSION = {
    1: {"width": (int, 1, 1 << 20), "chunk_tokens": (int, 1, 1 << 24)},
    2: {"policy": (str, 16), "context": (int, 2, 1 << 24), "discard": (int, 1, 1 << 24),
        "min_lane_tokens": (int, 1, MAX_ORIGINAL_BYTES), "lanes": (int, 0, 1 << 20), "slide": (str, 16)},
}


def _field(header: dict, key: str, spec: tuple):
    value = header.get(key)
    kind = spec[0]
    if isinstance(value, bool) or not isinstance(value, kind):
        raise CorruptInput(f"compressed file's header field {key!r} is missing or not {kind.__name__}")
    if kind is int and not spec[1] <= value <= spec[2]:
        raise CorruptInput(f"compressed file's header field {key!r} is out of range: {value}")
    if kind is str and len(value) > spec[1]:
        raise CorruptInput(f"compressed file's header field {key!r} is too long")
    return value


def check_header(header: dict, version: int) -> None:
    """Every field typed and range-checked before anything uses it: a forged header gets one line."""
    for key, spec in {**_COMMON, **_BY_VERSION[version]}.items():
        _field(header, key, spec)
    model, build = header.get("model"), header.get("build")
    if not isinstance(model, dict) or not isinstance(build, dict):
        raise CorruptInput("compressed file's header lacks its model or build description")
    _field(model, "name", (str, 256))
    for key in ("sha256",):
        if not HEX16.fullmatch(str(model.get(key, ""))):
            raise CorruptInput("compressed file's header has no valid model sha256")
    for key in ("vocab", "original_sha256"):
        if not HEX16.fullmatch(header[key]):
            raise CorruptInput(f"compressed file's header field {key!r} is not a 16-digit hash")
    for key in ("llama_cpp_python", "system_sha", "backend"):
        _field(build, key, (str, 256))
    if header["n_tokens"] > header["original_bytes"] or header["fallback_bytes"] > header["original_bytes"]:
        raise CorruptInput("compressed file's header claims more tokens than bytes")
