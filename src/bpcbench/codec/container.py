"""The .bpcz file: what a decoder needs to reproduce the encoder's distributions, or refuse.

Layout (little-endian):
    b"BPCZ"  u16 format version  u32 header length  header (UTF-8 JSON, zlib with a preset dictionary)
Version 2: the tokens are coded in lanes (llama/lanes.py); version 1: in disjoint chunks.
    payload: u32 range-coder words
    u32 CRC-32 of everything before it
The CRC lets a truncated or bit-flipped file fail before any model is loaded; the
original's sha256 in the header catches a decode that went wrong anyway.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from bpcbench.errors import CorruptInput

MAGIC = b"BPCZ"
FORMAT_VERSION = 2  # written by default; READABLE also decodes
READABLE = (1, 2)
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
        if zlib.crc32(body) != crc:
            try:
                expected = _parse_header(body[_PREFIX.size : end], version)["payload_words"] * 4 + end + 4
            except Exception:
                expected = None
            if expected is not None and expected != len(blob):
                raise CorruptInput(
                    f"compressed file is truncated or padded: {len(blob)} bytes, expected {expected}"
                )
            raise CorruptInput("compressed file is corrupt: CRC-32 mismatch")
        try:
            header = _parse_header(body[_PREFIX.size : end], version)
        except (ValueError, zlib.error):
            raise CorruptInput("compressed file has an unreadable header") from None
        payload_bytes = body[end:]
        if len(payload_bytes) % 4 or len(payload_bytes) // 4 != header.get("payload_words"):
            raise CorruptInput("compressed file payload length does not match its header")
        return cls(header, np.frombuffer(payload_bytes, dtype="<u4").astype(np.uint32), version)


def _parse_header(raw: bytes, version: int) -> dict:
    z = zlib.decompressobj(-15, _ZDICT_BY_VERSION[version])
    return json.loads(z.decompress(raw) + z.flush())
