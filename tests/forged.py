"""Forged .bpcz files, shared by tests/codec/test_hostile.py and fuzz/forged_containers.py.

Each case is (bytes, a regex the one-line error must match). `forged` rewrites header fields
through the real writer (so the CRC is right and only the reader's checks stand in the way);
`raw_cases` damages bytes the writer would never produce.
"""

from __future__ import annotations

import dataclasses
import struct
import zlib

from bpcbench.codec.container import Container
from bpcbench.codec.entropy_model import max_tokens


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
        # as many tokens as the payload may claim: decoding starts, and stops when the bits run out
        "payload-spent-mid-decode": ({"n_tokens": most, "original_bytes": most}, "payload is spent"),
    }
    return {name: (forged(blob, **changes), message) for name, (changes, message) in cases.items()}
