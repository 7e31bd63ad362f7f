"""The codec on the tiny model: byte-exact round trips, determinism, and every corruption answered."""

from __future__ import annotations

import json
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bpcbench.codec import compress as codec
from bpcbench.codec import entropy_model
from bpcbench.codec.container import Container
from bpcbench.codec.session import Session, Settings
from bpcbench.errors import BpcError, CorruptInput, Mismatch

# a small window and short lanes, so short inputs still exercise several lanes and slides
SMALL = Settings(context=16, width=8, min_lane_tokens=40, threads=2)
# the old disjoint-chunk policy (format version 1)
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


def roundtrip(session, data, settings=SMALL):
    blob, stats = codec.compress(data, session, settings)
    out, _ = codec.decompress(blob, session, settings=settings)
    return blob, stats, out


@pytest.mark.parametrize("name", list(INPUTS))
def test_round_trip_is_byte_exact(tiny_session, name):
    data = INPUTS[name]
    _, stats, out = roundtrip(tiny_session, data)
    assert out == data
    assert stats.input_bytes == len(data)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300), st.integers(min_value=2, max_value=40), st.sampled_from(["lanes", "chunks"]))
def test_round_trip_any_bytes_any_window(tiny_session, data, context, policy):
    s = Settings(policy=policy, context=context, width=8, min_lane_tokens=30, threads=2)
    _, _, out = roundtrip(tiny_session, data, s)
    assert out == data


def test_many_rounds_of_chunk_lockstep(tiny_session):
    data = INPUTS["text"] * 3  # ~1.4k bytes, ~>24 chunks of 16 tokens: several rounds of width 8
    blob, stats, out = roundtrip(tiny_session, data, CHUNKS)
    assert out == data
    assert stats.n_chunks > 2 * CHUNKS.width
    assert Container.from_bytes(blob).version == 1


def test_compressing_twice_gives_identical_bytes(tiny_session):
    a, _ = codec.compress(INPUTS["text"], tiny_session, SMALL)
    b, _ = codec.compress(INPUTS["text"], tiny_session, SMALL)
    assert a == b


def test_coded_size_close_to_ideal(tiny_session):
    _, stats = codec.compress(INPUTS["text"] * 4, tiny_session, SMALL)
    assert stats.coded_bytes <= stats.ideal_bits / 8 * 1.001 + 64
    assert stats.coded_bytes * 8 >= stats.ideal_bits * 0.99  # no free lunch either


@pytest.mark.parametrize("settings_", [SMALL, CHUNKS], ids=["lanes", "chunks"])
def test_ideal_bits_match_an_independent_softmax(tiny_session, settings_):
    """Recompute Σ −log2 p from the lockstep logits with a plain float64 log-softmax."""
    data = INPUTS["text"]
    tok, plan = tiny_session.prepare(data, settings_.resolved(tiny_session.model))
    tokens = tok.tokens
    offs = plan.offsets()
    independent = []

    def step(ids, t, logits):
        symbols = tokens[offs[ids] + t]
        lp = logits.astype(np.float64)
        lp = lp - np.log(np.exp(lp - lp.max(1, keepdims=True)).sum(1, keepdims=True)) - lp.max(1, keepdims=True)
        independent.append(-lp[np.arange(len(ids)), symbols] / np.log(2))
        return symbols

    tiny_session.evaluator(plan, settings_.threads).run(plan, step)
    _, stats = codec.compress(data, tiny_session, settings_)
    assert stats.ideal_bits == pytest.approx(np.concatenate(independent).sum(), rel=1e-9)
    assert sum(stats.chunk_ideal_bits) == pytest.approx(stats.ideal_bits, rel=1e-12)
    assert sum(stats.chunk_input_bytes) == len(data)


def test_escape_mass_is_honest():
    w = np.array([[1.0, 3.0]])
    ext = entropy_model.with_escapes(w, 2)
    assert ext.shape == (1, 4)
    assert ext[0, 2:].sum() / ext.sum() == pytest.approx(entropy_model.ESCAPE_MASS)


# --- corruption: each class answered by its own error, before or after the model runs ---------


@pytest.fixture(scope="module")
def good_blob(tiny_session):
    blob, _ = codec.compress(INPUTS["text"], tiny_session, SMALL)
    return blob


def _reseal(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def _rewrite_header(blob: bytes, **changes) -> bytes:
    c = Container.from_bytes(blob)
    c.header.update(changes)
    return c.to_bytes()


def test_truncated_file(tiny_session, good_blob):
    for cut in (3, 10, len(good_blob) // 2, len(good_blob) - 1):
        with pytest.raises(CorruptInput, match="truncated|bad magic"):
            codec.decompress(good_blob[:cut], tiny_session)


def test_bit_flip_anywhere_is_caught(tiny_session, good_blob):
    for pos in (8, len(good_blob) // 2, len(good_blob) - 6, len(good_blob) - 1):
        flipped = bytearray(good_blob)
        flipped[pos] ^= 0x10
        with pytest.raises(CorruptInput, match="CRC-32|truncated|header"):
            codec.decompress(bytes(flipped), tiny_session)


def test_bad_magic(tiny_session):
    with pytest.raises(CorruptInput, match="not a bpcbench compressed file"):
        codec.decompress(b"PK\x03\x04 some zip file", tiny_session)


def test_unknown_version(tiny_session, good_blob):
    body = bytearray(good_blob[:-4])
    body[4:6] = struct.pack("<H", 99)
    with pytest.raises(CorruptInput, match="unsupported format version 99"):
        codec.decompress(_reseal(bytes(body)), tiny_session)


def test_payload_tampered_behind_a_valid_crc_fails_the_checksum(tiny_session, good_blob):
    c = Container.from_bytes(good_blob)
    c.payload = c.payload.copy()
    c.payload[len(c.payload) // 2] ^= 0x00FF00FF
    with pytest.raises(CorruptInput, match="fails its checksum"):
        codec.decompress(c.to_bytes(), tiny_session, settings=SMALL)


def test_wrong_model_is_refused(good_blob, other_tiny_model_path):
    with Session(str(other_tiny_model_path)) as other:
        with pytest.raises(Mismatch, match="model mismatch: file was compressed with tiny"):
            codec.decompress(good_blob, other)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"threads": 7}, "thread count differs"),
        ({"n_gpu_layers": 99}, r"GPU offload \(n_gpu_layers\) differs"),
        ({"build": {"llama_cpp_python": "0.0.1", "system_sha": "x", "backend": "cuda"}}, "llama.cpp build"),
    ],
)
def test_environment_mismatch_is_refused_unless_forced(tiny_session, good_blob, changes, message):
    blob = _rewrite_header(good_blob, **changes)
    with pytest.raises(Mismatch, match=message):
        codec.decompress(blob, tiny_session, settings=SMALL)
    # forced: the decode runs, and here (same real environment) gives the right bytes
    out, _ = codec.decompress(blob, tiny_session, settings=SMALL, force=True)
    assert out == INPUTS["text"]


def test_header_records_what_decoding_needs(good_blob):
    h = Container.from_bytes(good_blob).header
    for key in ("model", "build", "threads", "n_gpu_layers", "policy", "context", "discard", "lanes", "slide",
                "min_lane_tokens", "max_width", "n_tokens", "original_bytes", "original_sha256", "start_token", "vocab",
                "coder"):
        assert key in h, key
    assert len(h["model"]["sha256"]) == 16
    assert h["n_tokens"] > 0
    json.dumps(h)


def test_inconsistent_chunk_plan_is_refused(tiny_session):
    v1, _ = codec.compress(INPUTS["text"], tiny_session, CHUNKS)
    blob = _rewrite_header(v1, width=Container.from_bytes(v1).header["width"] + 1)
    with pytest.raises(CorruptInput, match="chunk plan is inconsistent"):
        codec.decompress(blob, tiny_session, settings=CHUNKS)


def test_header_is_small(good_blob):
    """A tiny input must not pay hundreds of bytes of metadata (the preset dictionary works)."""
    c = Container.from_bytes(good_blob)
    body = Container(c.header, np.zeros(0, dtype=np.uint32), c.version)
    body.header["payload_words"] = 0
    assert len(body.to_bytes()) < 160  # 146 bytes measured: three 64-bit hashes do not compress; ~300 without the dictionary
    assert Container.from_bytes(body.to_bytes()).header == body.header


def test_threads_and_offload_are_never_taken_from_the_file(tiny_session, good_blob):
    """A forged thread count (10^5 crashes llama.cpp) is only compared, never used."""
    blob = _rewrite_header(good_blob, threads=100_000, n_gpu_layers=99)
    with pytest.raises(Mismatch, match=r"thread count differs: file has 100000, here 2 \(pass --threads 100000\)"):
        codec.decompress(blob, tiny_session, threads=2)
    out, _ = codec.decompress(blob, tiny_session, threads=2, force=True)  # runs on 2 threads, CPU only
    assert out == INPUTS["text"]


@pytest.mark.parametrize("changes, message", [
    ({"n_tokens": 10**12}, "out of range|more tokens than bytes"),
    ({"threads": "2"}, "'threads' is missing or not int"),
    ({"context": True}, "'context' is missing or not int"),
    ({"model": ["tiny"]}, "model or build"),
    ({"model": {"name": "tiny", "sha256": ""}}, "model sha256"),
    ({"original_bytes": 2**50}, "out of range"),
])
def test_forged_header_fields_are_one_line_errors(tiny_session, good_blob, changes, message):
    with pytest.raises(CorruptInput, match=message):
        codec.decompress(_rewrite_header(good_blob, **changes), tiny_session)


def test_a_header_bomb_is_refused_before_it_inflates():
    bomb = zlib.compressobj(9, zlib.DEFLATED, -15)
    raw = bomb.compress(b'{"a":"' + b"x" * (1 << 24) + b'"}') + bomb.flush()
    body = struct.pack("<4sHI", b"BPCZ", 2, len(raw)) + raw
    with pytest.raises(CorruptInput, match="inflates past"):
        Container.from_bytes(_reseal(body))


def test_a_model_path_in_the_header_is_never_opened(good_blob):
    blob = _rewrite_header(good_blob, model={"name": "/etc/shadow", "sha256": "0123456789abcdef"})
    with pytest.raises(BpcError, match="not a registry model: pass --model PATH"):
        codec.decompress(blob)


def test_output_size_is_bounded_before_decoding(tiny_session, good_blob):
    with pytest.raises(BpcError, match="more than the limit"):
        codec.decompress(good_blob, tiny_session, max_output_bytes=10)
