"""Lanes with a sliding KV window: the plan, byte-exact round trips at the edges, both slide modes."""

from __future__ import annotations

import dataclasses
import threading
import time

import numpy as np
import pytest

from bpcbench.codec import compress as codec
from bpcbench.codec import container
from bpcbench.codec.container import Container
from bpcbench.codec.cross_entropy import cross_entropy
from bpcbench.codec.decompress import decompress
from bpcbench.codec.session import Settings
from bpcbench.errors import BpcError, CorruptInput
from bpcbench.llama import binding
from bpcbench.llama.lanes import Plan, plan_lanes, window_context

TEXT = ("Alice was beginning to get very tired of sitting by her sister on the bank, and of having nothing "
        "to do: once or twice she had peeped into the book her sister was reading. ").encode() * 6


def tokens_of(session, data: bytes) -> int:
    return len(session.vocab.tokenize(data).tokens)


def roundtrip(session, data: bytes, settings: Settings):
    blob, stats = codec.compress(data, session, settings, fallback=False)
    out, _ = decompress(blob, session, settings=settings)
    assert out == data
    return blob, stats


def test_plan_is_contiguous_balanced_and_capped_by_width():
    plan = plan_lanes(1000, 7, 100, 64, 16)
    assert plan.n_lanes == 7 and plan.n_tokens == 1000 and max(plan.lengths) - min(plan.lengths) <= 1
    assert list(plan.lengths) == sorted(plan.lengths, reverse=True)
    assert plan_lanes(1000, 32, 100, 64, 16).n_lanes == 10  # ⌈1000 / 100⌉ lanes, below the width
    assert plan_lanes(0, 8, 10, 64, 16).lengths == ()
    assert plan_lanes(1, 8, 10, 64, 16).lengths == (1,)


@pytest.mark.parametrize("context, discard", [(1, 1), (8, 0), (8, 8)])
def test_impossible_windows_are_refused(context, discard):
    with pytest.raises(BpcError):
        plan_lanes(100, 4, 10, context, discard)


def test_context_lengths_follow_the_slides():
    ctx = window_context(20, 8, 3)
    assert ctx[:8].tolist() == list(range(1, 9))
    assert ctx.max() == 8 and ctx[8:].min() == 8 - 3 + 1
    plan = Plan((5, 4), 8, 3, 2)
    assert plan.context_lengths().tolist() == [1, 2, 3, 4, 5, 1, 2, 3, 4]


@pytest.mark.parametrize("lanes", [1, 2, 7, 32])
def test_round_trip_at_every_lane_count(tiny_session, lanes):
    data = TEXT * 2
    n = tokens_of(tiny_session, data)
    s = Settings(context=24, discard=6, width=lanes, min_lane_tokens=max(1, n // lanes), threads=1)
    blob, stats = roundtrip(tiny_session, data, s)
    assert stats.lanes == lanes
    assert decompress(blob, tiny_session, settings=s)[1].lanes == lanes
    assert stats.context_max == 24 and stats.context_min == 1


@pytest.mark.parametrize("delta", [-1, 0, 1])
def test_lanes_of_exactly_context_and_one_either_side(tiny_session, delta):
    context = 20
    data = TEXT[: 400]
    n = tokens_of(tiny_session, data)
    lanes = max(1, n // (context + delta))
    s = Settings(context=context, discard=5, width=lanes, min_lane_tokens=context + delta, threads=1)
    _, stats = roundtrip(tiny_session, data[: 0] + data, s)
    assert stats.lanes == lanes


def test_several_slides_per_lane_in_both_slide_modes(tiny_session, monkeypatch):
    s = Settings(context=12, discard=4, width=2, min_lane_tokens=10, threads=1)
    shift_blob, shift_stats = roundtrip(tiny_session, TEXT, s)
    assert Container.from_bytes(shift_blob).header.shift
    assert shift_stats.n_tokens / 2 > 3 * 12  # each of the two lanes slides several times
    monkeypatch.setattr(binding.Context, "can_shift", property(lambda self: False))
    tiny_session.close_evaluators()
    reeval_blob, reeval_stats = roundtrip(tiny_session, TEXT, s)
    assert not Container.from_bytes(reeval_blob).header.shift
    # Two different evaluations, each exact with itself: after a shift the kept tokens' KV still holds
    # what they saw of the dropped tokens; evaluated again, it does not.
    assert reeval_stats.context_mean == shift_stats.context_mean
    assert reeval_stats.ideal_bits != shift_stats.ideal_bits
    tiny_session.close_evaluators()


def test_a_shift_file_is_refused_where_the_cache_cannot_shift(tiny_session, monkeypatch):
    s = Settings(context=12, discard=4, width=2, min_lane_tokens=10, threads=1)
    blob, _ = codec.compress(TEXT, tiny_session, s, fallback=False)
    monkeypatch.setattr(binding.Context, "can_shift", property(lambda self: False))
    tiny_session.close_evaluators()
    with pytest.raises(BpcError, match="cannot shift"):
        decompress(blob, tiny_session, settings=s)
    tiny_session.close_evaluators()


@pytest.mark.parametrize("data", [b"", b"a"])
def test_empty_and_one_token_inputs(tiny_session, data):
    _, stats = roundtrip(tiny_session, data, Settings(context=8, threads=1))
    assert stats.lanes == len(data)


@pytest.mark.parametrize("changes", [{"context": 1}, {"discard": 0}, {"discard": 16}, {"min_lane_tokens": 0},
                                     {"width": 0}, {"width": 1 << 17}])
def test_a_tampered_lane_plan_fails_before_decoding(tiny_session, changes, monkeypatch):
    s = Settings(context=16, discard=4, width=4, min_lane_tokens=20, threads=1)
    blob, _ = codec.compress(TEXT, tiny_session, s, fallback=False)
    c = Container.from_bytes(blob)
    forged = Container(dataclasses.replace(c.header, **changes), c.payload).to_bytes()
    monkeypatch.setattr(tiny_session.__class__, "evaluator", lambda *a, **k: pytest.fail("decoding started"))
    with pytest.raises(CorruptInput, match="plan is invalid|header field"):
        decompress(forged, tiny_session, settings=s)


def test_ideal_bits_do_not_depend_on_speed_settings(tiny_session):
    data = TEXT * 2
    runs = [cross_entropy(data, tiny_session, Settings(context=24, discard=6, width=w, min_lane_tokens=m, threads=t))
            for w, m, t in ((1, 10, 1), (3, 40, 2), (8, 5, 1), (32, 1, 2))]
    assert len({r.ideal_bits for r in runs}) == 1  # identical, not merely close: no setting reaches the ideal path
    assert runs[0].lanes == 1


def test_one_lane_codes_exactly_the_ideal_policy(tiny_session):
    """A one-lane codec run sees each token with the history the ideal stream gives it."""
    s = Settings(context=24, discard=6, width=1, threads=1)
    _, stats = codec.compress(TEXT, tiny_session, s)
    ideal = cross_entropy(TEXT, tiny_session, s)
    assert stats.context_mean == ideal.context_mean
    assert stats.ideal_bits == pytest.approx(ideal.ideal_bits, rel=1e-3)  # batch shapes differ, contexts do not
    assert np.isfinite(stats.ideal_bits)


def test_compress_and_decompress_share_one_kv_cache(tiny_session):
    tiny_session.close_evaluators()
    roundtrip(tiny_session, TEXT, Settings(context=16, discard=4, width=3, min_lane_tokens=50, threads=1))
    assert len(tiny_session._evaluators) == 1  # the decoder's shift=True reuses the encoder's evaluator


class DecodeLog:
    """Every llama_decode call (rows, their sequences and positions) and the thread that made it."""

    def __init__(self, monkeypatch, pause: float = 0.0):
        self.calls, self.threads, self.pause = [], set(), pause
        self._rng = np.random.default_rng(0)
        decode = binding.Batch.decode

        def logged(batch, ctx, n):
            self.calls.append((n, tuple(int(r[0]) for r in batch._seq_rows[:n]), tuple(batch.pos[:n].tolist())))
            self.threads.add(threading.current_thread().name.split("_")[0])
            if self.pause:  # a slower model: the host's steps now finish first, in any order of the two
                time.sleep(self._rng.uniform(0, self.pause))
            decode(batch, ctx, n)

        monkeypatch.setattr(binding.Batch, "decode", logged)

    def take(self) -> list:
        calls, self.calls = self.calls, []
        return calls


@pytest.mark.parametrize("lanes", [1, 2, 7, 32])
def test_two_lane_groups_round_trip_at_every_lane_count(tiny_session, lanes, monkeypatch):
    """The file records its groups and the decoder follows it (its own settings say one group),
    issuing the encoder's calls: each position's lanes in two calls, ⌈W/2⌉ then ⌊W/2⌋ rows."""
    data = TEXT * 2
    n = tokens_of(tiny_session, data)
    s = Settings(context=24, discard=6, width=lanes, min_lane_tokens=max(1, n // lanes), threads=1, lane_groups=2)
    log = DecodeLog(monkeypatch)
    blob, stats = codec.compress(data, tiny_session, s, fallback=False)
    encoder = log.take()
    header = Container.from_bytes(blob).header
    assert (header.lane_groups, header.version, stats.lanes) == (2, 5, lanes)
    out, _ = decompress(blob, tiny_session, settings=Settings(threads=1))
    assert out == data and log.take() == encoder
    first = [rows for rows, _, _ in encoder[:2]]
    assert first == ([1, 1] if lanes == 1 else [-(-lanes // 2), lanes // 2])
    assert max(rows for rows, _, _ in encoder) == -(-lanes // 2)
    assert ("llama-decode" in log.threads) == (lanes > 1)  # two groups: the worker thread makes calls


def test_two_lane_groups_code_the_same_bytes_whatever_the_timing(tiny_session, monkeypatch):
    s = Settings(context=24, discard=6, width=7, min_lane_tokens=20, threads=1, lane_groups=2, mix="match")
    blob, _ = codec.compress(TEXT, tiny_session, s, fallback=False)
    DecodeLog(monkeypatch, pause=0.003)
    again, _ = codec.compress(TEXT, tiny_session, s, fallback=False)
    assert again == blob
    assert decompress(blob, tiny_session, settings=Settings(threads=1))[0] == TEXT


def test_a_file_of_two_lane_groups_is_refused_by_a_reader_of_versions_3_and_4(tiny_session, monkeypatch):
    s = Settings(context=24, discard=6, width=4, min_lane_tokens=20, threads=1, lane_groups=2)
    blob, _ = codec.compress(TEXT, tiny_session, s, fallback=False)
    plain, _ = codec.compress(TEXT, tiny_session, dataclasses.replace(s, lane_groups=1), fallback=False)
    assert blob[4] == 5 and plain[4] == 3  # one group: the file bpcbench always wrote
    monkeypatch.setattr(container, "READS", (3, 4))
    with pytest.raises(CorruptInput, match="unsupported format version 5"):
        decompress(blob, tiny_session, settings=Settings(threads=1))
