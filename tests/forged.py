"""Forged .bpcz files, shared by tests/codec/test_hostile.py and fuzz/forged_containers.py.

Each case is (bytes, a regex the one-line error must match). `forged` rewrites header fields
through the real writer (so the CRC is right and only the reader's checks stand in the way);
`raw_cases` damages bytes the writer would never produce.
"""

from __future__ import annotations

import dataclasses
import hashlib
import struct
import zlib

from bpcbench.codec.container import LANE_MODEL, LANE_STORED, LANE_ZSTD, Container
from bpcbench.codec.entropy_model import max_tokens
from bpcbench.codec.header_fields import varint as _varint  # the writer's own varint
from bpcbench.codec.mixing import MODES


def reseal(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def forged(blob: bytes, **changes) -> bytes:
    """A container whose header fields are changed, written by the real writer (so the CRC is right)."""
    c = Container.from_bytes(blob)
    return Container(dataclasses.replace(c.header, **changes), c.payload).to_bytes()


def patched(blob: bytes, at: int, new: bytes) -> bytes:
    body = blob[:-4]
    return reseal(body[:at] + new + body[at + len(new):])


def raw_cases(blob: bytes) -> dict[str, tuple[bytes, str]]:
    body = blob[:-4]
    return {
        # bit 2: chunks coded by bpcbench <= 0.3.0's padded evaluator, refused before any field is read
        "flags-retired-padded-chunks": (patched(blob, 5, bytes([blob[5] | 4])), "retired padded-chunks layout"),
        "flags-on-a-stored-file": (patched(blob, 5, b"\x80"), "without the model method"),
        "varint-not-minimal": (reseal(body[:6] + b"\x80\x00" + body[6:]), "not minimally encoded|out of range"),
        "varint-too-long": (reseal(body[:6] + b"\xff" * 9 + body[6:]), "too long"),
        "header-bomb-v2": (reseal(struct.pack("<4sHI", b"BPCZ", 2, 8) + zlib.compress(b"x" * (1 << 20))[:8]),
                           "format version 2"),
        "truncated-in-header": (reseal(body[:12]), "truncated"),
        "crc-wrong": (blob[:-1] + bytes([blob[-1] ^ 1]), "CRC-32"),
        "empty": (b"", "bad magic"),
        "magic-only": (b"BPCZ", "truncated"),
    }


def field_cases(blob: bytes) -> dict[str, tuple[bytes, str]]:
    """Header fields out of range, or in range but hostile, each written into `blob`."""
    c = Container.from_bytes(blob)
    context, most = c.header.context, max_tokens(len(c.payload))
    cases = {
        "n-tokens-10e12": ({"n_tokens": 10**12}, "out of range"),
        "original-bytes-2e50": ({"original_bytes": 2**50}, "out of range"),
        "threads-10e5": ({"threads": 100_000}, r"thread count differs: file has 100000"),
        "threads-2e21": ({"threads": 2**21}, "out of range"),
        "context-1": ({"context": 1}, "out of range"),
        "discard-equals-context": ({"discard": context}, "out of range"),
        "width-0": ({"width": 0}, "out of range"),
        "width-2e17": ({"width": 2**17}, "out of range"),
        "width-257-lanes": ({"width": 257}, "out of range"),  # llama.cpp's most sequences is 256
        "name-a-path": ({"model_name": "/etc/shadow"}, "not a plain file name"),
        "name-dotdot": ({"model_name": ".."}, "not a plain file name"),
        "name-control-char": ({"model_name": "a\nb"}, "not a plain file name"),
        "tokens-beyond-the-payload": ({"n_tokens": 10**6, "original_bytes": 10**6}, "more than its .*payload can hold"),
        "kv-cache-of-2e20-cells": ({"context": 1 << 20}, "KV cells, more than the limit"),
        # 256 lanes of one token each, 65,536 cells (1.5 GB for SmolLM2) that a few bytes cannot pay for
        "kv-cells-256-lanes-of-one-token": ({"n_tokens": 256, "original_bytes": 256, "width": 256,
                                            "min_lane_tokens": 1, "context": 256, "discard": 64},
                                           "KV cells, more than the limit .* payload pays for"),
        # as many tokens as the payload may claim: decoding starts, and stops when the bits run out
        "payload-spent-mid-decode": ({"n_tokens": most, "original_bytes": most}, "payload is spent"),
    }
    return {name: (forged(blob, **changes), message) for name, (changes, message) in cases.items()}


def ranged(model_blob: bytes, text: bytes, apart: bytes) -> bytes:
    """A version-4 file by the real writer: `text` (which `model_blob` codes), then `apart` stored."""
    c = Container.from_bytes(model_blob)
    h = c.header
    header = dataclasses.replace(h, original_bytes=len(text) + len(apart),
                                 original_sha=hashlib.sha256(text + apart).hexdigest()[: len(h.original_sha)],
                                 ranges=((LANE_MODEL, len(text), 0), (LANE_STORED, len(apart), len(apart))))
    return Container(header, apart + c.payload).to_bytes()


def with_map(blob: bytes, segment_map: bytes, version: int = 4, flags: int | None = None,
             payload: bytes | None = None) -> bytes:
    """`blob` (a version-4 file) with its segment map replaced by raw bytes: counts, method bytes
    and lengths the writer would never write."""
    c = Container.from_bytes(blob)
    head = bytearray(_version_4_head(c.header))
    head[4], head[5] = version, head[5] | 4 if flags is None else flags
    return reseal(bytes(head) + segment_map + (c.payload if payload is None else payload))


def _version_4_head(h) -> bytes:
    """`h`'s header bytes without its segment map but with version 4's mix byte (h's own mix)
    right after the fingerprint (written mixed, the only version-4 head without a map the writer
    makes, and its mix byte set back)."""
    mixed = Container(dataclasses.replace(h, ranges=(), mix="match"), b"").to_bytes()[:-4]
    key = bytes.fromhex(h.model_sha) + bytes.fromhex(h.codec)
    at = mixed.index(key) + len(key)
    return mixed[:at] + bytes([MODES.index(h.mix)]) + mixed[at + 1:]


def range_cases(blob: bytes) -> dict[str, tuple[bytes, str]]:
    """The segment map of a version-4 file (`blob`: text coded by the model, then stored bytes)
    forged every way its reader can be reached; all refused from the header, before any model."""
    h = Container.from_bytes(blob).header
    (_, text, _), (_, apart, _) = h.ranges

    def entry(method: int, n: int, frame: int | None = None) -> bytes:
        return bytes([method]) + _varint(n) + (b"" if frame is None else _varint(frame))

    maps = {
        "segment-count-0": (_varint(0), "'segment count' is out of range"),
        "segment-count-1": (_varint(1) + entry(LANE_MODEL, h.original_bytes), "'segment count' is out of range"),
        "segment-count-2e20": (_varint(1 << 20), "'segment count' is out of range"),
        "segment-count-past-the-header": (_varint(1000) + entry(LANE_MODEL, text) + entry(LANE_STORED, apart),
                                          "segment count .* more than its header holds"),
        "segment-count-not-minimal": (b"\x82\x00" + entry(LANE_MODEL, text) + entry(LANE_STORED, apart),
                                      "not minimally encoded"),
        "segment-method-byte-3": (_varint(2) + entry(LANE_MODEL, text) + entry(3, apart),
                                  "method byte 3, out of range"),
        "segment-method-byte-255": (_varint(2) + entry(255, text) + entry(LANE_STORED, apart),
                                    "method byte 255, out of range"),
        "segments-overlap": (_varint(2) + entry(LANE_MODEL, text + 10) + entry(LANE_STORED, apart),
                             "runs past the end"),
        "segment-length-past-the-end": (_varint(2) + entry(LANE_MODEL, text) + entry(LANE_STORED, 1 << 40),
                                        "runs past the end"),
        "segment-length-2e60": (_varint(2) + entry(LANE_MODEL, text) + b"\x02" + b"\xff" * 9, "too long"),
        "segment-length-0": (_varint(2) + entry(LANE_MODEL, 0) + entry(LANE_STORED, apart), "out of range"),
        "segments-short-of-the-end": (_varint(2) + entry(LANE_MODEL, text) + entry(LANE_STORED, apart - 1),
                                      "segments cover"),
        "segments-same-method": (_varint(3) + entry(LANE_MODEL, 1) + entry(LANE_MODEL, text - 1)
                                 + entry(LANE_STORED, apart), "same method"),
        "segments-none-for-the-model": (_varint(2) + entry(LANE_STORED, text) + entry(LANE_ZSTD, apart, 5),
                                        "no range for the model"),
        "segment-zstd-frame-past-the-payload": (_varint(2) + entry(LANE_MODEL, text) + entry(LANE_ZSTD, apart, 1 << 30),
                                                "longer than its payload"),
    }
    cases = {name: (with_map(blob, m), message) for name, (m, message) in maps.items()}
    cases["segment-map-truncated"] = (with_map(blob, _varint(2) + entry(LANE_MODEL, text), payload=b""),
                                      "truncated|more than its header holds")
    cases["version-4-without-a-map"] = (with_map(blob, b"", flags=blob[5] & ~4), "no segment map")
    cases["version-4-map-on-a-stored-file"] = (with_map(blob, b"", flags=4), "version 4 has the stored method")
    return cases


def group_cases(blob: bytes) -> dict[str, tuple[bytes, str]]:
    """Version 5's lane groups (`blob`: a model file of one group) forged: a count out of range
    written by the writer, and raw bytes it never writes; all refused from the header."""
    h = Container.from_bytes(blob).header
    two = forged(blob, lane_groups=2)
    key = bytes.fromhex(h.model_sha) + bytes.fromhex(h.codec)
    at = two.index(key) + len(key) + 1  # the lane_groups varint, right after version 5's mix byte
    cases = {f"lane-groups-byte-{b}": (patched(two, at, bytes([b])), "'lane_groups' is out of range")
             for b in (0, 1, 3, 0x7F)}
    cases["lane-groups-3"] = (forged(blob, lane_groups=3), "'lane_groups' is out of range: 3")
    cases["lane-groups-not-minimal"] = (reseal(two[:at] + b"\x82\x00" + two[at + 1 : -4]), "not minimally encoded")
    cases["lane-groups-on-a-lossy-file"] = (forged(blob, method="lossy", lane_groups=2),
                                            "version 5 has the lossy method")
    return cases
