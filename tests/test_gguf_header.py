"""gguf_header.read_header against gguf's own GGUFReader: every field, array length and tensor; and a
malformed header (cut short, forged counts) refused with ValueError, never read past its end."""

from __future__ import annotations

import struct

import pytest
from gguf import GGUFReader, GGUFValueType

from bpcbench import gguf_header, models
from bpcbench.errors import BpcError


def _smollm2_path() -> str:
    try:
        return models.describe("smollm2-135m").path
    except BpcError as e:
        pytest.skip(f"SmolLM2 not installed ({e})")


@pytest.fixture(params=["tiny", "smollm2"])
def gguf_path(request, tiny_model_path):
    return str(tiny_model_path) if request.param == "tiny" else _smollm2_path()


def test_the_header_is_what_gguf_reads(gguf_path):
    ours, theirs = gguf_header.read_header(gguf_path), GGUFReader(gguf_path, "r")
    fields = {k: f for k, f in theirs.fields.items() if not k.startswith("GGUF.")}
    assert list(ours.fields) == list(fields)
    for key, f in fields.items():
        if f.types[0] == GGUFValueType.ARRAY:
            assert ours.fields[key] == gguf_header.Array(int(f.types[1]), len(f.data)), key
        else:
            assert ours.fields[key] == f.contents(), key
    assert [(t.name, t.tensor_type, t.n_elements, t.n_bytes) for t in ours.tensors] == \
        [(t.name, t.tensor_type, int(t.n_elements), int(t.n_bytes)) for t in theirs.tensors]
    assert [t.shape for t in ours.tensors] == [tuple(int(d) for d in t.shape) for t in theirs.tensors]
    assert ours.data_offset == theirs.data_offset
    assert [ours.data_offset + t.offset for t in ours.tensors] == [int(t.data_offset) for t in theirs.tensors]


def test_a_header_cut_anywhere_is_refused(tiny_model_path, tmp_path):
    data = tiny_model_path.read_bytes()
    end = gguf_header.read_header(tiny_model_path).data_offset
    cut = tmp_path / "cut.gguf"
    for n in sorted({0, 3, 4, 8, 23, 24, 40, *range(41, end, max(1, end // 97)), end - 1, end + 100}):
        cut.write_bytes(data[:n])
        with pytest.raises(ValueError):
            gguf_header.read_header(cut)


@pytest.mark.parametrize("forge, message", [
    (lambda h: h[:4] + struct.pack("<I", 7) + h[8:], "version 7"),
    (lambda h: h[:8] + struct.pack("<Q", 2**62) + h[16:], "tensors and"),
    (lambda h: h[:16] + struct.pack("<Q", 2**62) + h[24:], "fields in a"),
    (lambda h: b"GGUX" + h[4:], "magic"),
])
def test_forged_counts_and_magic_are_refused_at_once(tiny_model_path, tmp_path, forge, message):
    forged = tmp_path / "forged.gguf"
    forged.write_bytes(forge(tiny_model_path.read_bytes()))
    with pytest.raises(ValueError, match=message):
        gguf_header.read_header(forged)


def _gguf(fields: list[tuple[str, int, bytes]], n_tensors: int = 0, tail: bytes = b"") -> bytes:
    """A hand-made header: (key, value type, value bytes) fields, then `tail` (tensor infos, data)."""
    def s(text: str) -> bytes:
        return struct.pack("<Q", len(text)) + text.encode()
    kv = b"".join(s(k) + struct.pack("<I", t) + v for k, t, v in fields)
    return b"GGUF" + struct.pack("<IQQ", 3, n_tensors, len(fields)) + kv + tail + bytes(64)


U32, STR, ARR, U64 = 4, 8, 9, 10
HOSTILE = {
    "an array of arrays": [("a", ARR, struct.pack("<IQ", ARR, 1) + struct.pack("<IQ", U32, 0))],
    "twice": [("k", U32, struct.pack("<I", 1)), ("k", U32, struct.pack("<I", 2))],
    "not uint32": [("general.alignment", U64, struct.pack("<Q", 32))],
    "past the end of the file": [("general.alignment", U32, struct.pack("<I", 1 << 31))],
    "invalid alignment": [("general.alignment", U32, struct.pack("<I", 24))],
    "unknown value type": [("k", 13, b"")],
    "truncated": [("k", STR, struct.pack("<Q", 2**63))],
}


@pytest.mark.parametrize("message", sorted(HOSTILE))
def test_hand_made_hostile_headers_are_refused(tmp_path, message):
    path = tmp_path / "h.gguf"
    path.write_bytes(_gguf(HOSTILE[message]))
    with pytest.raises(ValueError, match=message):
        gguf_header.read_header(path)


def test_a_tensor_named_twice_is_refused(tmp_path):
    info = struct.pack("<Q", 1) + b"w" + struct.pack("<IQIQ", 1, 4, 0, 0)  # 4 float32 at offset 0
    path = tmp_path / "t.gguf"
    path.write_bytes(_gguf([], n_tensors=2, tail=info + info))
    with pytest.raises(ValueError, match="twice"):
        gguf_header.read_header(path)
    path.write_bytes(_gguf([], n_tensors=1, tail=info))
    assert [(t.name, t.shape, t.n_bytes) for t in gguf_header.read_header(path).tensors] == [("w", (4,), 16)]
