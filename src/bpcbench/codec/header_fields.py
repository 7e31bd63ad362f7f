"""The container header's field encoding: minimal unsigned LEB128 varints, and a reader whose
every read is bounded by the header's bytes and names its field, so a forged header fails in one
line (codec/container.py lays the fields out)."""

from __future__ import annotations

from bpcbench.errors import CorruptInput

VARINT_BYTES = 8  # a varint is at most this long (56 bits: MAX_ORIGINAL_BYTES and any count fit)


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        out.append((value & 0x7F) | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            return bytes(out)


class Reader:
    """Bounded reads from the header: every read names its field, every failure is one line."""

    def __init__(self, data: memoryview, pos: int):
        self.data, self.pos = data, pos

    def take(self, n: int, field: str) -> bytes:
        if self.pos + n > len(self.data):
            raise CorruptInput(f"compressed file is truncated (inside its header, at {field})")
        self.pos += n
        return bytes(self.data[self.pos - n : self.pos])

    def varint(self, field: str, low: int, high: int) -> int:
        value = 0
        for i in range(VARINT_BYTES):
            byte = self.take(1, field)[0]
            value |= (byte & 0x7F) << (7 * i)
            if not byte & 0x80:
                if byte == 0 and i:
                    raise CorruptInput(f"compressed file's header field {field!r} is not minimally encoded")
                if not low <= value <= high:
                    raise CorruptInput(f"compressed file's header field {field!r} is out of range: {value}")
                return value
        raise CorruptInput(f"compressed file's header field {field!r} is too long")
