"""The header of a GGUF file: its scalar fields, the lengths of its array fields and its tensor table.

Written by hand rather than through gguf's GGUFReader, which reads the same header but makes a
numpy view of every element of every array field (SmolLM2's vocabulary and merges: 147,000 views,
3.6 s a file, docs/measurements.md): a ladder reads one header per level, and those parses were the
largest part of its host time. This walks the header once with struct and skips the arrays' items;
the type tables (GGMLQuantizationType, GGML_QUANT_SIZES) are gguf's. Little-endian files only (what
llama.cpp writes). tests/test_gguf_header.py compares every figure with GGUFReader's.

Everything read is bounded by the file's size before it is used; a malformed header raises
ValueError, which the callers turn into their one-line errors.
"""

from __future__ import annotations

import math
import mmap
import os
import struct
from dataclasses import dataclass

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

MAGIC = 0x46554747  # "GGUF" little-endian
VERSIONS = (2, 3)
MAX_DIMS = 4  # GGML_MAX_DIMS
DEFAULT_ALIGNMENT = 32
# GGUFValueType: fixed item sizes (struct formats); 8 is a string, 9 an array
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


@dataclass(frozen=True)
class Array:
    """An array field: its item type and length (its items are not read)."""

    item_type: int
    count: int


@dataclass(frozen=True)
class Tensor:
    name: str
    shape: tuple[int, ...]
    tensor_type: GGMLQuantizationType
    offset: int  # from the start of the data section

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)

    @property
    def n_bytes(self) -> int:
        block, size = GGML_QUANT_SIZES[self.tensor_type]
        return self.n_elements * size // block


@dataclass(frozen=True)
class Header:
    version: int
    fields: dict  # key -> int | float | bool | str | Array
    tensors: list
    data_offset: int


class _Cursor:
    def __init__(self, buf, end: int):
        self.buf, self.pos, self.end = buf, 0, end

    def take(self, n: int) -> int:
        if n < 0 or self.pos + n > self.end:
            raise ValueError(f"truncated header: {n} bytes wanted at offset {self.pos} of {self.end}")
        at = self.pos
        self.pos += n
        return at

    def unpack(self, fmt: str):
        return struct.unpack_from(fmt, self.buf, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        n = self.unpack("<Q")
        at = self.take(n)
        return bytes(self.buf[at:at + n]).decode("utf-8", "replace")

    def value(self, vtype: int):
        if vtype in _SCALARS:
            return self.unpack(_SCALARS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            item, count = self.unpack("<I"), self.unpack("<Q")
            if item in _SCALARS:
                self.take(count * struct.calcsize(_SCALARS[item]))
            elif item == _ARRAY:  # no writer makes them; refusing keeps the walk flat
                raise ValueError(f"an array of arrays at offset {self.pos}")
            elif count > self.end:  # every item takes at least one byte
                raise ValueError(f"array of {count} items in a {self.end}-byte file")
            else:
                for _ in range(count):
                    self.value(item)
            return Array(item, count)
        raise ValueError(f"unknown value type {vtype} at offset {self.pos}")


def read_header(path: str | os.PathLike) -> Header:
    """The header of the GGUF at `path` (ValueError if it is not one or is cut short)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < 24:
            raise ValueError(f"{size} bytes: too short for a GGUF header")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            return _parse(_Cursor(buf, len(buf)))


def _parse(c: _Cursor) -> Header:
    if c.unpack("<I") != MAGIC:
        raise ValueError("GGUF magic invalid")
    version = c.unpack("<I")
    if version not in VERSIONS:
        raise ValueError(f"GGUF version {version} (little-endian {', '.join(map(str, VERSIONS))} only)")
    n_tensors, n_kv = c.unpack("<Q"), c.unpack("<Q")
    if n_tensors > c.end or n_kv > c.end:
        raise ValueError(f"{n_tensors} tensors and {n_kv} fields in a {c.end}-byte file")
    fields = {}
    for _ in range(n_kv):
        key = c.string()
        if key in fields:
            raise ValueError(f"field {key!r} twice")
        vtype = c.unpack("<I")
        if key == "general.alignment" and vtype != 4:
            raise ValueError(f"general.alignment of value type {vtype}, not uint32")
        fields[key] = c.value(vtype)
    tensors, names = [], set()
    for _ in range(n_tensors):
        name = c.string()
        n_dims = c.unpack("<I")
        if not 0 < n_dims <= MAX_DIMS:
            raise ValueError(f"tensor {name!r} has {n_dims} dimensions")
        shape = tuple(c.unpack("<Q") for _ in range(n_dims))
        raw_type, offset = c.unpack("<I"), c.unpack("<Q")
        try:
            tensor_type = GGMLQuantizationType(raw_type)
        except ValueError:
            raise ValueError(f"tensor {name!r} has unknown type {raw_type}") from None
        if name in names:
            raise ValueError(f"tensor {name!r} twice")
        names.add(name)
        tensors.append(Tensor(name, shape, tensor_type, offset))
    align = fields.get("general.alignment", DEFAULT_ALIGNMENT)
    if type(align) is not int or align <= 0 or align & (align - 1):
        raise ValueError(f"invalid alignment {align!r}")
    data_offset = -(-c.pos // align) * align
    if data_offset > c.end:
        raise ValueError(f"data section at {data_offset}, past the end of the file")
    for t in tensors:
        if data_offset + t.offset + t.n_bytes > c.end:
            raise ValueError(f"tensor {t.name!r} ends past the end of the file")
    return Header(version, fields, tensors, data_offset)
