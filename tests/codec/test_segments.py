"""Lane by lane, never larger than stored: a lane the model codes worse than zstd or storing is
kept that way, the other lanes are coded again without it, and a forged lane map is one line.

The tiny test model codes nothing better than zstd (its weights are random), so here the
choice itself is replaced (`lane_choice`: noisy lanes zstd or stored, text lanes by the model)
and the machinery is tested: the second pass, the container and the decoder. The real choice
on SmolLM2 is in test_real_model.py."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import zstandard
from forged import forged

from bpcbench import corpora
from bpcbench.codec import compress as codec
from bpcbench.codec import split
from bpcbench.codec.container import LANE_MODEL, LANE_STORED, LANE_ZSTD, Container
from bpcbench.codec.decompress import decompress
from bpcbench.codec.session import Settings
from bpcbench.errors import CorruptInput

SMALL = Settings(context=16, width=8, min_lane_tokens=40, threads=2)
NOISE = np.random.default_rng(3).integers(0, 256, 1500, dtype=np.uint8).tobytes()


def noisy_lanes_apart(raw: bytes, model_bits: float) -> tuple[int, bytes]:
    if sum(b > 127 for b in raw) < len(raw) // 4:
        return LANE_MODEL, b""
    return (LANE_ZSTD, zstandard.ZstdCompressor().compress(raw)) if raw[0] % 2 else (LANE_STORED, raw)


def compress_mixed(session, data, settings=SMALL):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(codec, "lane_choice", noisy_lanes_apart)
        mp.setattr(codec, "_fallbacks", lambda data, header: [])  # else zstd of the whole file wins here
        # and the byte ranges would take the noise (and this short text) away from the model first
        mp.setattr(split, "text_ranges", lambda data: [(True, len(data))] if data else [])
        return codec.compress(data, session, settings)


@pytest.fixture(scope="module")
def mixed(tiny_session):
    """Text, then random bytes."""
    data = corpora.resolve("alice29").read_bytes()[:1500] + NOISE
    blob, stats = compress_mixed(tiny_session, data, dataclasses.replace(SMALL, threads=1))
    return data, blob, stats


def test_lanes_kept_apart_decode_with_the_others_coded_again(tiny_session, mixed):
    data, blob, stats = mixed
    h = Container.from_bytes(blob).header
    assert h.method == "model" and h.lane_methods[0] == LANE_MODEL and h.lane_methods[-1] != LANE_MODEL
    assert {LANE_ZSTD, LANE_STORED} <= set(h.lane_methods)
    assert stats.segment_lanes == sum(m != LANE_MODEL for m in h.lane_methods) >= 2
    assert decompress(blob, tiny_session, settings=dataclasses.replace(SMALL, threads=1))[0] == data


def test_the_second_pass_codes_only_the_model_lanes(tiny_session, mixed):
    """The model's payload is the one a plan without the other lanes gives, so the decoder,
    which evaluates exactly that plan, gets the same distributions."""
    data, blob, _ = mixed
    c = Container.from_bytes(blob)
    full, _ = codec.compress(data, tiny_session, dataclasses.replace(SMALL, threads=1), fallback=False)
    assert len(c.model_payload) < len(Container.from_bytes(full).payload)
    assert b"".join(c.segments) + c.model_payload == c.payload


def test_chunks_are_kept_apart_like_lanes(tiny_session):
    """One plan type: a chunks plan's lanes are stored apart by the same rule, in the same waves."""
    data = corpora.resolve("alice29").read_bytes()[:600] + NOISE[:600]
    chunks = Settings(policy="chunks", context=48, width=3, threads=1)
    blob, stats = compress_mixed(tiny_session, data, chunks)
    h = Container.from_bytes(blob).header
    assert h.policy == "chunks" and h.plan().n_lanes > 2 * chunks.width
    assert LANE_MODEL in h.lane_methods and stats.segment_lanes >= 2
    assert decompress(blob, tiny_session, settings=chunks)[0] == data


def test_no_lane_apart_without_a_cheaper_way(tiny_session):
    data = corpora.resolve("alice29").read_bytes()[:2000]
    blob, stats = codec.compress(data, tiny_session, SMALL)  # the tiny model: zstd of the whole file wins
    assert Container.from_bytes(blob).header.lane_methods == () and stats.segment_lanes == 0


@pytest.mark.parametrize("changes, message", [
    (lambda h: {"lane_methods": (3,) + h.lane_methods[1:]}, "lane methods are invalid"),
    (lambda h: {"lane_methods": (LANE_MODEL,) * len(h.lane_methods), "segment_bytes": ()}, "lane methods are invalid"),
    (lambda h: {"segment_bytes": (h.original_bytes,) + h.segment_bytes[1:]}, "longer than its payload"),
    (lambda h: {"segment_bytes": (h.original_bytes + 1,) + h.segment_bytes[1:]}, "out of range"),
    (lambda h: {"method": "lossy"}, "outside the model method"),
])
def test_a_forged_lane_map_is_one_line(tiny_session, mixed, changes, message):
    blob = mixed[1]
    bad = forged(blob, **changes(Container.from_bytes(blob).header))
    with pytest.raises(CorruptInput, match=message):
        decompress(bad, tiny_session, settings=dataclasses.replace(SMALL, threads=1))


def test_a_segment_that_decodes_too_long_is_refused(tiny_session, mixed):
    """A stored lane rewritten as a zstd frame of more bytes than the whole original."""
    blob = mixed[1]
    c = Container.from_bytes(blob)
    h = c.header
    bomb = zstandard.ZstdCompressor().compress(b"x" * (h.original_bytes * 2))
    k = h.lane_methods.index(LANE_STORED)
    methods = h.lane_methods[:k] + (1,) + h.lane_methods[k + 1:]
    segs = c.segments
    j = sum(m != LANE_MODEL for m in h.lane_methods[:k])
    segs[j] = bomb
    h2 = dataclasses.replace(h, lane_methods=methods, segment_bytes=tuple(map(len, segs)))
    bad = Container(h2, b"".join(segs) + c.model_payload).to_bytes()
    with pytest.raises(CorruptInput, match="more bytes than its header says|checksum"):
        decompress(bad, tiny_session, settings=dataclasses.replace(SMALL, threads=1))


@pytest.mark.parametrize("policy", ["lanes", "chunks"])
def test_two_lane_groups_with_lanes_kept_apart(tiny_session, policy):
    """Lanes stored apart hold no tokens, so they are in neither group (llama/lanes.py wave_groups),
    the chunks' several waves alike; the decoder's groups are the file's."""
    data = corpora.resolve("alice29").read_bytes()[:900] + NOISE[:600]
    s = dataclasses.replace(SMALL, threads=1, lane_groups=2) if policy == "lanes" else Settings(
        policy="chunks", context=48, width=3, threads=1, lane_groups=2)
    blob, stats = compress_mixed(tiny_session, data, s)
    h = Container.from_bytes(blob).header
    assert h.lane_groups == 2 and LANE_MODEL in h.lane_methods and stats.segment_lanes >= 1
    assert decompress(blob, tiny_session, settings=Settings(threads=1))[0] == data
