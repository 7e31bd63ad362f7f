"""The match model mixed with the LLM (codec/mixing.py, #25): lossless round trips over lanes, slides and
chunks, both ends' mixer states equal after a file, the container's mix byte, refusals in one line."""

from __future__ import annotations

import dataclasses
import hashlib
import subprocess
import sys

import numpy as np
import pytest
from forged import patched

from bpcbench.codec import compress as codec
from bpcbench.codec import kernel, mixing
from bpcbench.codec.container import LANE_MODEL, LANE_ZSTD, Container, Header
from bpcbench.codec.cross_entropy import cross_entropy
from bpcbench.codec.decompress import decompress
from bpcbench.codec.session import Settings
from bpcbench.codec.steps import DecoderStep, EncoderStep
from bpcbench.corpora import resolve
from bpcbench.errors import BpcError, CorruptInput, Mismatch
from bpcbench.llama.lanes import make_plan

ALICE = resolve("alice29").read_bytes()
# the tiny model's weights are random: what a text repeats, only the match model can see
REPEATS = b"abcabcabc" * 60 + b"The quick brown fox jumps over the lazy dog. " * 12 + bytes(range(40, 90)) * 3
# context 16: every lane slides many times
LANES = {1: Settings(context=16, width=1, threads=2), 7: Settings(context=16, width=7, min_lane_tokens=40, threads=2)}


def mixed(settings: Settings) -> Settings:
    return dataclasses.replace(settings, mix="match")


@pytest.mark.parametrize("lanes", [1, 7])
def test_mixed_round_trip_is_byte_exact_and_both_mixers_end_equal(tiny_session, lanes):
    s = mixed(LANES[lanes])
    blob, enc = codec.compress(REPEATS, tiny_session, s, fallback=False)
    out, dec = decompress(blob, tiny_session, settings=s)
    assert out == REPEATS
    assert enc.lanes == lanes and enc.context_max == 16  # several lanes, each sliding
    assert enc.mix == dec.mix == "match"
    assert enc.mix_state and enc.mix_state == dec.mix_state


def test_the_mixer_state_depends_on_the_text(tiny_session):
    s = mixed(LANES[7])
    states = {codec.compress(text, tiny_session, s, fallback=False)[1].mix_state
              for text in (REPEATS, REPEATS[::-1], REPEATS[:-1])}
    assert len(states) == 3


def test_mixing_codes_a_repetitive_text_in_far_fewer_bits(tiny_session):
    plain = codec.compress(REPEATS, tiny_session, LANES[1], fallback=False)[1]
    match = codec.compress(REPEATS, tiny_session, mixed(LANES[1]), fallback=False)[1]
    assert match.coded_bytes < 0.5 * plain.coded_bytes


@pytest.mark.parametrize("data", [b"", b"x", bytes(np.random.default_rng(3).integers(0, 256, 600, dtype=np.uint8))])
def test_mixed_round_trips_of_odd_inputs_and_chunks(tiny_session, data):
    for s in (mixed(LANES[7]), Settings(policy="chunks", context=16, width=3, threads=2, mix="match")):
        blob, enc = codec.compress(data, tiny_session, s)
        out, dec = decompress(blob, tiny_session, settings=s)
        assert out == data
        assert enc.mix_state == dec.mix_state or enc.method != "model"


def test_chunks_in_several_waves_start_each_lanes_match_afresh(tiny_session):
    s = Settings(policy="chunks", context=16, width=2, threads=2, mix="match")
    blob, enc = codec.compress(REPEATS, tiny_session, s, fallback=False)
    out, dec = decompress(blob, tiny_session, settings=s)
    assert out == REPEATS and enc.lanes > 2 and enc.mix_state == dec.mix_state


def _lane_bits(lanes: list[np.ndarray], steps: int, vocab: int) -> np.ndarray:
    """-log2 p' of each lane's tokens, the lanes coded side by side one token a step, flat logits."""
    tables = mixing.step_tables("match", vocab, 0, len(lanes), max(map(len, lanes)))
    bits = np.zeros((len(lanes), steps))
    for step in range(steps):
        rows = np.arange(len(lanes))
        symbols = np.array([lane[step] for lane in lanes])
        bits[:, step] = tables.encoder(np.zeros((len(lanes), vocab), dtype=np.float32), symbols, rows)[2]
    return bits


def test_the_lanes_of_a_plan_learn_from_each_other():
    """mix/3: lane 1 codes a phrase that only lane 0 has seen (earlier steps). Lane 1's own match model
    cannot know it; the shared n-gram does."""
    rng = np.random.default_rng(5)
    vocab = 64
    phrase = rng.integers(0, vocab, 40)
    seen = np.concatenate([phrase, phrase, phrase])
    fresh = np.concatenate([rng.integers(0, vocab, 60), phrase])
    together = _lane_bits([seen, fresh], 100, vocab)[1, 60:].sum()
    alone = _lane_bits([fresh], 100, vocab)[0, 60:].sum()
    assert alone == pytest.approx(40 * 6, rel=0.02)  # flat logits: 6 bits a token, nothing to learn from
    assert together < 0.75 * alone


def test_the_ideal_path_mixes_as_the_one_lane_coder_does(tiny_session):
    s = mixed(LANES[1])
    ideal = cross_entropy(REPEATS, tiny_session, s)
    coded = codec.compress(REPEATS, tiny_session, s, fallback=False)[1]
    plain = cross_entropy(REPEATS, tiny_session, LANES[1])
    assert ideal.ideal_bits == pytest.approx(coded.ideal_bits, rel=1e-3)
    assert ideal.ideal_bits < 0.5 * plain.ideal_bits


def test_a_mixed_file_is_version_4_and_a_plain_one_stays_version_3(tiny_session):
    blob = codec.compress(REPEATS, tiny_session, mixed(LANES[1]), fallback=False)[0]
    plain = codec.compress(REPEATS, tiny_session, LANES[1], fallback=False)[0]
    assert blob[4] == 4 and plain[4] == 3
    assert Container.from_bytes(blob).header.mix == "match" and Container.from_bytes(plain).header.mix == "none"
    assert len(Container.from_bytes(blob).to_bytes()) == len(blob)


def _mix_byte_at(blob: bytes) -> int:
    """Where the mix byte is: the one byte a mixed header has beyond the same header unmixed."""
    c = Container.from_bytes(blob)
    unmixed = Container(dataclasses.replace(c.header, mix="none"), c.payload).to_bytes()
    return next(i for i in range(len(unmixed)) if blob[i] != unmixed[i] and i > 4)


@pytest.fixture(scope="module")
def mixed_blob(tiny_session):
    return codec.compress(REPEATS, tiny_session, mixed(LANES[1]), fallback=False)[0]


def test_an_unknown_mix_mode_is_refused_as_a_mismatch(tiny_session, mixed_blob):
    forged = patched(mixed_blob, _mix_byte_at(mixed_blob), bytes([len(mixing.MODES)]))
    with pytest.raises(Mismatch, match=f"mix mode id {len(mixing.MODES)}, which this bpcbench does not know"):
        decompress(forged, tiny_session, settings=LANES[1])


def test_a_version_4_file_that_mixes_nothing_is_refused(tiny_session, mixed_blob):
    forged = patched(mixed_blob, _mix_byte_at(mixed_blob), b"\x00")
    with pytest.raises(CorruptInput, match="version 4 has nothing mixed and no segment map"):
        decompress(forged, tiny_session, settings=LANES[1])


def test_version_4_is_for_the_model_method_only():
    stored = Container(Header("stored", 3, hashlib.sha256(b"abc").hexdigest()[:12]), b"abc").to_bytes()
    assert stored[4] == 3
    with pytest.raises(CorruptInput, match="version 4 has the stored method"):
        Container.from_bytes(patched(stored, 4, b"\x04"))


# text, 30,000 zero bytes (a zstd range), text: a file with a segment map (codec/split.py)
SPLICED = ALICE[:9000] + bytes(30000) + ALICE[9000:18000]
MAPPED = Settings(context=16, width=8, min_lane_tokens=40, threads=1)


def _after_fingerprint(blob: bytes) -> int:
    """Where version 4's mix byte is: right after the 4-byte codec fingerprint."""
    return blob.index(bytes.fromhex(Container.from_bytes(blob).header.codec)) + 4


@pytest.mark.parametrize("mix", ["none", "match"])
def test_a_segment_map_with_and_without_mixing_is_one_version_4(tiny_session, monkeypatch, mix):
    """Map without mix: version 4 with mix byte 0; map and mix: mix byte 1, both decode byte for byte."""
    monkeypatch.setattr(codec, "_fallbacks", lambda data, header: [])  # the tiny model loses to zstd
    s = dataclasses.replace(MAPPED, mix=mix)
    blob, enc = codec.compress(SPLICED, tiny_session, s)
    h = Container.from_bytes(blob).header
    assert blob[4] == 4 and [m for m, _, _ in h.ranges] == [LANE_MODEL, LANE_ZSTD, LANE_MODEL] and h.mix == mix
    assert blob[_after_fingerprint(blob)] == mixing.MODES.index(mix)
    out, dec = decompress(blob, tiny_session, settings=s)
    assert out == SPLICED and enc.mix_state == dec.mix_state and bool(dec.mix_state) == (mix == "match")
    other = patched(blob, _after_fingerprint(blob), bytes([1 - mixing.MODES.index(mix)]))
    assert Container.from_bytes(other).header == dataclasses.replace(h, mix=mixing.MODES[1 - mixing.MODES.index(mix)])
    with pytest.raises(Mismatch, match="fingerprint"):  # the mixer's build is in it: a flipped byte is refused
        decompress(other, tiny_session, settings=s)


def test_a_mix_without_a_segment_map_has_the_byte_after_the_fingerprint(mixed_blob):
    h = Container.from_bytes(mixed_blob).header
    assert mixed_blob[4] == 4 and not h.ranges and not mixed_blob[5] & 4  # flag bit 2: no segment map
    at = _after_fingerprint(mixed_blob)
    assert _mix_byte_at(mixed_blob) == at and mixed_blob[at] == 1


def test_unknown_modes_and_window_policies_are_refused(tiny_session):
    with pytest.raises(BpcError, match="unknown mix mode 'ppm'"):
        codec.compress(b"text", tiny_session, Settings(mix="ppm", threads=2))
    with pytest.raises(BpcError, match="needs the lanes or chunks policy"):
        cross_entropy(b"text", tiny_session, Settings(policy="llama-perplexity", mix="match", threads=2))


def test_the_cli_round_trips_and_refuses_an_unknown_mix_mode_with_exit_4(tmp_path, tiny_model_path, mixed_blob):
    src = tmp_path / "in.txt"
    src.write_bytes(REPEATS)
    args = ["--context", "16", "--width", "1", "--threads", "1", "-q"]
    run = [sys.executable, "-m", "bpcbench"]
    r = subprocess.run([*run, "compress", src, "-m", tiny_model_path, "--mix", "match", "--no-fallback", *args],
                       capture_output=True)
    assert r.returncode == 0, r.stderr
    packed = tmp_path / "in.txt.bpcz"
    r = subprocess.run([*run, "decompress", packed, "-o", tmp_path / "out", "-m", tiny_model_path, "--threads", "1",
                        "-q"], capture_output=True)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out").read_bytes() == REPEATS
    blob = packed.read_bytes()
    (tmp_path / "forged.bpcz").write_bytes(patched(blob, _mix_byte_at(blob), b"\x07"))
    r = subprocess.run([*run, "decompress", tmp_path / "forged.bpcz", "-o", tmp_path / "out2", "-m", tiny_model_path,
                        "--threads", "1", "-q"], capture_output=True)
    lines = r.stderr.decode().strip().splitlines()
    assert r.returncode == 4 and len(lines) == 1 and "mix mode id 7" in lines[0]
    assert not (tmp_path / "out2").exists()


@pytest.mark.real_model
@pytest.mark.parametrize("lanes", [1, 7])
def test_smollm2_mixed_round_trip_over_sliding_lanes(smollm2_session, lanes):
    """SmolLM2 with the match model: a text that repeats itself, in a 48-token window that slides."""
    text = resolve("iso3166-1").read_bytes()[:900] * 2
    s = Settings(context=48, discard=12, width=lanes, min_lane_tokens=60, threads=1, mix="match")
    blob, enc = codec.compress(text, smollm2_session, s, fallback=False)
    out, dec = decompress(blob, smollm2_session, settings=s)
    assert out == text and enc.lanes == lanes and enc.n_tokens / lanes > 48 + 12
    assert enc.mix_state and enc.mix_state == dec.mix_state


def _drive(step, plan, logits_of):
    """The evaluator's loop over a one-wave plan, on made-up logits: each lane still running gets a row."""
    lengths = np.array(plan.lengths)
    for t in range(int(lengths.max())):
        ids = np.nonzero(lengths > t)[0]
        step(ids, t, logits_of(ids, t))


@pytest.mark.parametrize("threads", [(1, 2), (2, 1)])
def test_both_ends_mix_the_same_on_different_kernel_threads(tiny_session, threads):
    """The steps of codec/steps.py with the match model, encoder and decoder on different kernel
    thread counts: the same payload decodes to the same tokens and both mixers end in one state."""
    vocab = tiny_session.vocab
    plan = make_plan("lanes", 3 * 400, width=3, min_lane_tokens=400, context=64, discard=16)
    rng = np.random.default_rng(7)
    tokens = np.tile(rng.integers(0, vocab.n_vocab, 37), 40)[: plan.n_tokens].astype(np.int32)
    table = rng.normal(0, 2, (plan.n_tokens, vocab.n_vocab)).astype(np.float32)
    offs = plan.offsets()

    def logits_of(ids, t):
        return table[offs[ids] + t]

    kernel.set_threads(threads[0])
    enc = EncoderStep(vocab, plan, tokens, "match")
    _drive(enc, plan, logits_of)
    plain = EncoderStep(vocab, plan, tokens)
    _drive(plain, plan, logits_of)
    kernel.set_threads(threads[1])
    dec = DecoderStep(vocab, plan, enc.payload(), "match")
    _drive(dec, plan, logits_of)
    assert np.array_equal(dec.tokens, tokens)
    assert enc.mix_state() == dec.mix_state() != ""
    assert enc.piece_bits.sum() < 0.5 * plain.piece_bits.sum()  # the repeats were mixed in, not ignored
