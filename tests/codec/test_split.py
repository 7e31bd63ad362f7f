"""The cut before the model (codec/split.py): text stays whole, random and binary bytes never
reach the tokenizer, and a mixed file round-trips through a version-4 segment map whose text
codes exactly as the text alone does."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bpcbench import corpora
from bpcbench.codec import compress as codec
from bpcbench.codec import split
from bpcbench.codec.container import LANE_MODEL, LANE_STORED, LANE_ZSTD, MAX_RANGES, Container
from bpcbench.codec.decompress import decompress
from bpcbench.codec.session import Settings

SMALL = Settings(context=16, width=8, min_lane_tokens=40, threads=1)
ALICE = corpora.resolve("alice29").read_bytes()


def noise(n: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def check_ranges(data: bytes, ranges) -> None:
    assert sum(n for _, n in ranges) == len(data) and all(n > 0 for _, n in ranges)
    assert all(a[0] != b[0] for a, b in zip(ranges, ranges[1:])) and len(ranges) <= MAX_RANGES


@pytest.mark.parametrize("name", ["alice29", "asyoulik", "lcet10", "plrabn12", "typing-extensions",
                                  "pytest-changelog-2026", "constitution-ko", "pymorphy2-guide-ru"])
def test_a_text_is_one_text_range(name):
    data = corpora.resolve(name).read_bytes()
    assert split.text_ranges(data) == [(True, len(data))]


@pytest.mark.parametrize("data", [b"\xff", noise(4096), noise(1 << 20), bytes(70000), bytes(range(256)) * 40])
def test_random_and_binary_bytes_are_one_other_range(data):
    assert split.text_ranges(data) == [(False, len(data))]


def test_a_string_table_is_not_text():
    """NUL-separated names (a .so's .dynstr) are printable but not text worth the model's minutes."""
    table = b"\0".join(b"quantize_row_q%d_%d_ref" % (i % 9, i) for i in range(3000))
    assert split.text_ranges(table) == [(False, len(table))]


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("cut", [20000, 20300])
def test_a_splice_is_cut_to_within_a_few_bytes(seed, cut):
    data = ALICE[:cut] + noise(65536, seed) + ALICE[cut : cut + 20000]
    ranges = split.text_ranges(data)
    check_ranges(data, ranges)
    assert [t for t, _ in ranges] == [True, False, True]
    # random bytes beside the text may go with it when they look like text (42% of them do, alone)
    assert cut <= ranges[0][1] <= cut + 16 and 65536 - 32 <= ranges[1][1] <= 65536


def test_short_text_between_binary_goes_with_the_binary():
    data = noise(20000) + ALICE[:4000] + noise(20000, seed=1)
    assert split.text_ranges(data) == [(False, len(data))]


def test_the_map_never_exceeds_its_bound():
    """Text runs of 8 KiB between 512 random bytes, 600 times: the shortest runs join the rest."""
    data = b"".join(ALICE[i * 100 : i * 100 + 8192] + noise(512, seed=i) for i in range(600))
    ranges = split.text_ranges(data)
    check_ranges(data, ranges)
    assert len(ranges) > MAX_RANGES // 2


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(1, 30000)), min_size=1, max_size=8), st.integers(0, 1000))
def test_any_mix_is_cut_into_valid_ranges(parts, seed):
    data = b"".join(ALICE[seed : seed + n] if is_text else noise(n, seed) for is_text, n in parts)
    check_ranges(data, split.text_ranges(data))


def test_a_mixed_file_round_trips_and_its_text_codes_as_the_text_alone(tiny_session, monkeypatch):
    """Text, 64 KiB of random bytes, text: the random bytes are stored apart and the model codes
    the two texts joined, to the same payload as that text alone (the tiny model codes nothing
    better than zstd, so the whole-file fallbacks are left out to see the segment map)."""
    text = ALICE[:9000] + ALICE[50000:59000]
    blob_part = noise(65536, seed=3)
    data = ALICE[:9000] + blob_part + ALICE[50000:59000]
    monkeypatch.setattr(codec, "_fallbacks", lambda data, header: [])
    blob, stats = codec.compress(data, tiny_session, SMALL)
    c = Container.from_bytes(blob)
    assert blob[4] == 4 and [m for m, _, _ in c.header.ranges] == [LANE_MODEL, LANE_STORED, LANE_MODEL]
    assert [n for _, n, _ in c.header.ranges][1] >= 65530 and c.header.text_bytes == len(data) - c.header.ranges[1][1]
    assert stats.segments[1][0] == "stored" and stats.n_tokens > 0
    alone, _ = codec.compress(data[: c.header.ranges[0][1]] + data[len(data) - c.header.ranges[2][1]:], tiny_session,
                              SMALL, fallback=False)
    assert Container.from_bytes(alone).model_payload == c.model_payload
    assert c.header.text_bytes >= len(text)
    assert decompress(blob, tiny_session, settings=SMALL)[0] == data


def test_a_zstd_range_round_trips(tiny_session, monkeypatch):
    data = ALICE[:9000] + bytes(30000) + ALICE[9000:18000]
    monkeypatch.setattr(codec, "_fallbacks", lambda data, header: [])
    blob, _ = codec.compress(data, tiny_session, SMALL)
    h = Container.from_bytes(blob).header
    assert [m for m, _, _ in h.ranges] == [LANE_MODEL, LANE_ZSTD, LANE_MODEL]
    assert h.original_sha == hashlib.sha256(data).hexdigest()[:12]
    assert decompress(blob, tiny_session, settings=SMALL)[0] == data


def test_pure_text_is_written_as_before(tiny_session):
    """No segment map, so a version-3 file: what bpcbench 0.4.0 wrote and reads."""
    blob, stats = codec.compress(ALICE[:3000], tiny_session, SMALL, fallback=False)
    assert blob[4] == 3 and not Container.from_bytes(blob).header.ranges
    blob, stats = codec.compress(ALICE[:3000], tiny_session, SMALL)
    assert blob[4] == 3 and stats.segments == [(Container.from_bytes(blob).header.method, 3000,
                                                len(Container.from_bytes(blob).payload))]


@pytest.mark.parametrize("data, text", [(b"a", True), (b"hi", True), (b"\xc3\xa9", True), (b"\xe2\x82\xac", True),
                                        (b"\xc3", False), (b"\xe2\x82", False), (b"\0\1", False)])
def test_inputs_shorter_than_a_utf8_sequence(data, text):
    """1 to 3 bytes: shorter than the longest UTF-8 sequence (this once raised in the mask's shifts)."""
    assert split.text_ranges(data) == [(text, len(data))]
