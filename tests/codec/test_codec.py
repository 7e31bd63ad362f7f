"""The codec on the tiny model: byte-exact round trips, determinism, and every corruption answered."""

from __future__ import annotations

import dataclasses
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bpcbench.codec import compress as codec
from bpcbench.codec import range_coder
from bpcbench.codec.container import Container, Header
from bpcbench.codec.payload import pack_words, unpack_words
from bpcbench.codec.decompress import decompress
from bpcbench.codec.session import Session, Settings
from bpcbench.errors import BpcError, CorruptInput, Mismatch

# a small window and short lanes, so short inputs still exercise several lanes and slides
SMALL = Settings(context=16, width=8, min_lane_tokens=40, threads=2)
# the chunks layout: disjoint lanes of at most 16 tokens that never slide, 8 at a time
CHUNKS = Settings(policy="chunks", context=16, width=8, threads=2)

INPUTS = {
    "empty": b"",
    "one-byte": b"x",
    "invalid-utf8": b"\xc3\x28\xa0\xa1\xe2\x28\xa1\xf0\x28\x8c\xbc",
    "nul-run": b"\x00" * 200,
    "binary": np.random.default_rng(7).integers(0, 256, 700, dtype=np.uint8).tobytes(),
    "repeats": b"abcabcabc" * 120,
    "crlf": b"first line\r\nsecond line\r\n\r\n",
    "text": "The quick brown fox jumps over the lazy dog. Ünïcödé ✓\n".encode() * 8,
}


def roundtrip(session, data, settings=SMALL, fallback=False):
    blob, stats = codec.compress(data, session, settings, fallback=fallback)
    out, _ = decompress(blob, session, settings=settings)
    return blob, stats, out


@pytest.mark.parametrize("fallback", [False, True], ids=["model", "smallest"])
@pytest.mark.parametrize("name", list(INPUTS))
def test_round_trip_is_byte_exact(tiny_session, name, fallback):
    data = INPUTS[name]
    _, stats, out = roundtrip(tiny_session, data, fallback=fallback)
    assert out == data
    assert stats.input_bytes == len(data)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300), st.integers(min_value=2, max_value=40), st.sampled_from(["lanes", "chunks"]))
def test_round_trip_any_bytes_any_window(tiny_session, data, context, policy):
    s = Settings(policy=policy, context=context, width=8, min_lane_tokens=30, threads=2)
    _, _, out = roundtrip(tiny_session, data, s)
    assert out == data


@pytest.mark.parametrize("width", [1, 2, 7, 8])
def test_chunks_in_several_waves(tiny_session, width):
    data = INPUTS["text"] * 3  # ~1.4k bytes, > 24 chunks of 16 tokens: several waves, the last one short
    s = dataclasses.replace(CHUNKS, width=width)
    blob, stats, out = roundtrip(tiny_session, data, s)
    assert out == data
    h = Container.from_bytes(blob).header
    plan = h.plan()
    assert plan.n_lanes == stats.n_pieces == stats.lanes > 2 * width and len(plan.waves()) > 2
    assert (h.policy, h.context, plan.width, plan.discard) == ("chunks", 16, width, 0)
    assert stats.context_max <= 16 and stats.context_min == 1  # no lane slides


def test_compressing_twice_gives_identical_bytes(tiny_session):
    a, _ = codec.compress(INPUTS["text"], tiny_session, SMALL, fallback=False)
    b, _ = codec.compress(INPUTS["text"], tiny_session, SMALL, fallback=False)
    assert a == b


def test_coded_size_close_to_ideal(tiny_session):
    _, stats = codec.compress(INPUTS["text"] * 4, tiny_session, SMALL)
    assert stats.coded_bytes <= stats.ideal_bits / 8 * 1.001 + 64
    assert stats.coded_bytes * 8 >= stats.ideal_bits * 0.99  # no free lunch either


@pytest.mark.parametrize("settings_", [SMALL, CHUNKS], ids=["lanes", "chunks"])
def test_ideal_bits_match_an_independent_softmax(tiny_session, settings_):
    """Recompute Σ −log2 p from the lockstep logits with a plain float64 log-softmax."""
    data = INPUTS["text"]
    job = tiny_session.prepare(data, settings_)
    tokens, plan = job.tokens, job.plan
    offs = plan.offsets()
    independent = []

    def step(ids, t, logits):
        symbols = tokens[offs[ids] + t]
        lp = logits.astype(np.float64)
        lp = lp - np.log(np.exp(lp - lp.max(1, keepdims=True)).sum(1, keepdims=True)) - lp.max(1, keepdims=True)
        independent.append(-lp[np.arange(len(ids)), symbols] / np.log(2))
        return symbols

    tiny_session.run(plan, step, settings_.threads)
    _, stats = codec.compress(data, tiny_session, settings_)
    assert stats.ideal_bits == pytest.approx(np.concatenate(independent).sum(), rel=1e-9)
    assert sum(stats.piece_bits) == pytest.approx(stats.ideal_bits, rel=1e-12)
    assert sum(stats.piece_bytes) == len(data)


def test_plan_fields_cost_nothing_when_the_plan_is_the_formats_default(tiny_session):
    """The header tells the decoder the plan, not the encoder's knobs: a width and lane length
    that give the default plan are written as the defaults (no EXPLICIT fields), others are kept."""
    data = INPUTS["text"] * 4
    plain = Settings(threads=2)
    same_plan = Settings(threads=2, width=5, min_lane_tokens=16384)  # one lane either way
    blob, st = codec.compress(data, tiny_session, plain, fallback=False)
    other, st2 = codec.compress(data, tiny_session, same_plan, fallback=False)
    assert st.lanes == st2.lanes == 1 and blob == other
    assert not Container.from_bytes(other).header.explicit()
    lanes3 = Settings(threads=2, width=3, min_lane_tokens=st.n_tokens // 3)
    blob3, st3 = codec.compress(data, tiny_session, lanes3, fallback=False)
    h = Container.from_bytes(blob3).header
    assert st3.lanes == 3 and h.explicit() and (h.width, h.min_lane_tokens) == (3, st.n_tokens // 3)
    assert decompress(blob3, tiny_session, settings=lanes3)[0] == data


# --- corruption: each class answered by its own error, before or after the model runs ---------


@pytest.fixture(scope="module")
def good_blob(tiny_session):
    blob, _ = codec.compress(INPUTS["text"], tiny_session, SMALL, fallback=False)
    return blob


def _reseal(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def _rewrite_header(blob: bytes, **changes) -> bytes:
    c = Container.from_bytes(blob)
    return Container(dataclasses.replace(c.header, **changes), c.payload).to_bytes()


def test_truncated_file(tiny_session, good_blob):
    for cut in (3, 10, len(good_blob) // 2, len(good_blob) - 1):
        with pytest.raises(CorruptInput, match="truncated|bad magic"):
            decompress(good_blob[:cut], tiny_session)


def test_bit_flip_anywhere_is_caught(tiny_session, good_blob):
    for pos in (8, len(good_blob) // 2, len(good_blob) - 6, len(good_blob) - 1):
        flipped = bytearray(good_blob)
        flipped[pos] ^= 0x10
        with pytest.raises(CorruptInput, match="CRC-32|truncated|header"):
            decompress(bytes(flipped), tiny_session)


def test_bad_magic(tiny_session):
    with pytest.raises(CorruptInput, match="not a bpcbench compressed file"):
        decompress(b"PK\x03\x04 some zip file", tiny_session)


def test_unknown_version(tiny_session, good_blob):
    body = bytearray(good_blob[:-4])
    body[4:6] = struct.pack("<H", 99)
    with pytest.raises(CorruptInput, match="unsupported format version 99"):
        decompress(_reseal(bytes(body)), tiny_session)


def test_payload_tampered_behind_a_valid_crc_fails_the_checksum(tiny_session, good_blob):
    c = Container.from_bytes(good_blob)
    words = unpack_words(c.payload)
    words[len(words) // 2] ^= 0x00FF00FF
    with pytest.raises(CorruptInput, match="fails its checksum|payload"):
        decompress(Container(c.header, pack_words(words)).to_bytes(), tiny_session, settings=SMALL)


def test_wrong_model_is_refused(good_blob, other_tiny_model_path):
    with Session(str(other_tiny_model_path)) as other:
        with pytest.raises(Mismatch, match="model mismatch: file was compressed with tiny"):
            decompress(good_blob, other, settings=SMALL)  # SMALL's threads: the model, not them, must differ


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"threads": 7}, "thread count differs"),
        ({"n_gpu_layers": 99}, r"GPU offload \(n_gpu_layers\) differs"),
        ({"codec": "0badc0de"}, "llama.cpp build, CPU features, numpy, kernel build, coder or vocabulary differ"),
    ],
)
def test_environment_mismatch_is_refused_unless_forced(tiny_session, good_blob, changes, message):
    blob = _rewrite_header(good_blob, **changes)
    with pytest.raises(Mismatch, match=message):
        decompress(blob, tiny_session, settings=SMALL)
    # forced: the decode runs, and here (same real environment) gives the right bytes
    out, _ = decompress(blob, tiny_session, settings=SMALL, force=True)
    assert out == INPUTS["text"]


def test_header_records_what_decoding_needs(tiny_session, good_blob):
    h = Container.from_bytes(good_blob).header
    assert (h.method, h.policy, h.context, h.width, h.threads) == ("model", "lanes", 16, 8, 2)
    assert h.model_name == "tiny" and tiny_session.info.sha256.startswith(h.model_sha) and len(h.model_sha) == 12
    assert 0 < h.n_tokens <= h.original_bytes == len(INPUTS["text"])


def test_a_chunks_file_records_its_plan(tiny_session):
    """Flag bit 7, never bit 2 (the padded chunks of bpcbench <= 0.3.0), and the plan comes back."""
    blob, _ = codec.compress(INPUTS["text"], tiny_session, CHUNKS, fallback=False)
    h = Container.from_bytes(blob).header
    assert (h.policy, h.context, h.width) == ("chunks", 16, 8)
    assert blob[5] & 0x80 and not blob[5] & 0x04
    assert h.plan() == tiny_session.prepare(INPUTS["text"], CHUNKS).plan


def test_a_padded_chunks_file_of_0_3_0_is_refused_before_any_model_loads(tmp_path, capsys):
    """Made by bpcbench 0.3.0's padded lockstep evaluator, which no longer exists (tests/data/codec-0.3.0)."""
    from bpcbench.cli import main

    src = Path(__file__).parents[1] / "data" / "codec-0.3.0" / "retired-chunks.bpcz"
    with pytest.raises(CorruptInput, match=r"retired padded-chunks layout of bpcbench <= 0\.3\.0"):
        Container.from_bytes(src.read_bytes())
    assert main(["decompress", str(src), "-o", str(tmp_path / "out"), "-m", "/nonexistent.gguf", "-q"]) == 3
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "retired padded-chunks" in err and not (tmp_path / "out").exists()


def test_header_is_small(tiny_session, good_blob):
    """Magic, version, flags, varints, three truncated hashes, CRC: a few dozen bytes."""
    c = Container.from_bytes(good_blob)
    # 40 for a registry model at the default plan; the tiny model's name is spelled out (1 + 4 bytes)
    # and its small window is explicit (4 one-byte varints)
    assert c.header_bytes <= 40 + 1 + len("tiny") + 4
    assert c.header_bytes == len(good_blob) - len(c.payload)
    assert Container.from_bytes(c.to_bytes()) == c


def test_the_default_models_header_is_at_most_40_bytes():
    """alice29.txt at the defaults: 152,089 bytes, ~40k tokens, SmolLM2 (a registry model), 8 threads."""
    h = Header("model", 152_089, "ab" * 6, n_tokens=40_000, threads=8, model_name="smollm2-135m",
               model_sha="cd" * 6, codec="ef" * 4)
    c = Container(h, b"\x5a" * 5000)  # 40k tokens need a payload of at least (40,000 - 1,024) / 8 bytes
    # 4 magic, 1 version, 1 flags, varints 3 (bytes) + 3 (tokens) + 1 (threads), 1 model id, 6+6+4 hashes, 4 CRC
    assert c.header_bytes == 34 <= 40
    assert Container.from_bytes(c.to_bytes()) == c


def test_threads_and_offload_are_never_taken_from_the_file(tiny_session, good_blob):
    """A forged thread count (10^5 crashes llama.cpp) is only compared, never used."""
    blob = _rewrite_header(good_blob, threads=100_000, n_gpu_layers=99)
    with pytest.raises(Mismatch, match=r"thread count differs: file has 100000, here 2 \(pass --threads 100000\)"):
        decompress(blob, tiny_session, threads=2)
    out, _ = decompress(blob, tiny_session, threads=2, force=True)  # runs on 2 threads, CPU only
    assert out == INPUTS["text"]


def test_output_size_is_bounded_before_decoding(tiny_session, good_blob):
    with pytest.raises(BpcError, match="more than the limit"):
        decompress(good_blob, tiny_session, max_output_bytes=10)


# --- never larger than stored ---------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 1000, 8192])  # 64 KB and 1 MB: fuzz/forged_containers.py
def test_random_bytes_cost_their_size_plus_the_header(tiny_session, size):
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    blob, stats = codec.compress(data, tiny_session, SMALL)
    c = Container.from_bytes(blob)
    assert len(blob) <= size + c.header_bytes + 1
    if size:  # bytes that are not text never reach the model (split.py): no tokens, no model payload
        assert (stats.n_tokens, stats.coded_bytes) == (0, 0)
        assert stats.segments == [(c.header.method, size, len(c.payload))]
    assert decompress(blob)[0] == data  # stored or zstd: no model needed


def test_bytes_that_are_not_text_never_reach_the_model():
    """No session at all: random bytes are stored without a token evaluated (4 KiB took the model
    135 s on two threads before the input was cut into ranges)."""
    data = np.random.default_rng(4).integers(0, 256, 64 << 10, dtype=np.uint8).tobytes()
    blob, stats = codec.compress(data, None, SMALL)
    assert Container.from_bytes(blob).header.method == "stored" and len(blob) <= len(data) + 64
    assert decompress(blob)[0] == data


def test_without_fallback_the_model_codes_even_random_bytes(tiny_session):
    data = np.random.default_rng(1).integers(0, 256, 500, dtype=np.uint8).tobytes()
    blob, _ = codec.compress(data, tiny_session, SMALL, fallback=False)
    assert Container.from_bytes(blob).header.method == "model"
    assert decompress(blob, tiny_session, settings=SMALL)[0] == data


# --- the payload as trimmed bytes -------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 60), st.integers(2, 300))
def test_trimming_trailing_zero_bytes_is_safe_with_constrictions_decoder(seed, n, k):
    """pack_words trims the final word's zero bytes (whole zero words too); constriction reads
    the missing words as zeros, so the same symbols come back."""
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.full(k, 0.05), size=n)
    symbols = np.array([rng.choice(k, p=row) for row in p], dtype=np.int32)
    enc = range_coder.Encoder()
    enc.encode(symbols, p)
    words = enc.finish()
    payload = pack_words(words)
    assert len(payload) <= 4 * len(words)
    assert np.array_equal(range_coder.Decoder(unpack_words(payload)).decode(p), symbols)


def test_trimming_removes_whole_zero_words_too():
    words = np.array([7, 0x01000000, 0, 0], dtype=np.uint32)
    assert pack_words(words) == bytes([0, 0, 0, 7, 1])
    assert np.array_equal(unpack_words(pack_words(words)), words[:2])
