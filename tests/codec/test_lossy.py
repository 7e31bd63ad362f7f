"""The lossy codec on the tiny model: the file decodes to exactly the reconstruction the encoder
reported, tau = 0 is lossless and costs the lossless bits, the compiled tables are the rule's
(tests/entropy_reference.py's distribution minus the forgiven set), and every flag pays the floor."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import host_threads
from entropy_reference import weights as reference_weights

from bpcbench.codec import entropy_model, lossy, lossy_kernel
from bpcbench.codec.compress import compress
from bpcbench.codec.container import Container
from bpcbench.codec.decompress import decompress
from bpcbench.codec.payload import payload_bytes
from bpcbench.codec.session import Settings
from bpcbench.errors import BpcError

RTOL, ATOL = 1e-6, 1e-12  # test_kernel.py's: kernel/2's weights against float64

SMALL = Settings(context=16, width=8, min_lane_tokens=40, threads=1)
TEXT = b"The quick brown fox jumps over the lazy dog. " * 6


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200), st.sampled_from([0.0, 0.5, 2.0, 5.0, 9.0, math.inf]),
       st.sampled_from(["lanes", "chunks"]))
def test_the_file_decodes_to_the_reported_reconstruction(tiny_session, data, tau, policy):
    s = Settings(policy=policy, context=16, width=8, min_lane_tokens=40, threads=1)
    r = lossy.encode(data, tiny_session, s, tau)
    back, _ = decompress(r.blob, tiny_session, settings=s)
    assert back == r.reconstruction
    assert Container.from_bytes(r.blob).header.original_sha == hashlib.sha256(back).hexdigest()[:12]
    assert len(r.tokens) == len(r.original_tokens)


def test_tau_zero_gives_the_original_bytes_at_the_lossless_cost(tiny_session):
    """P(keep) = p(greedy), P(store) = 1 - p(greedy), the stored token renormalised outside it: the
    lossless code, plus the one byte that records tau and at most a coder word of rounding."""
    r = lossy.encode(TEXT, tiny_session, SMALL, 0.0)
    assert r.reconstruction == TEXT and decompress(r.blob, tiny_session, settings=SMALL)[0] == TEXT
    lossless, _ = compress(TEXT, tiny_session, SMALL, fallback=False)
    assert len(lossless) - 4 <= len(r.blob) <= len(lossless) + 1 + 4, (len(r.blob), len(lossless))


def test_infinite_tau_is_the_cheapest_point(tiny_session):
    """Not "rate never rises with tau": once the reconstruction leaves the original, the model,
    fed the reconstruction, predicts the original's later tokens worse, so a middle tau can cost
    more than tau = 0 (SmolLM2 on alice29: 1.38 bits/byte at tau 0, 1.89 at tau 8; docs/lossy.md). What
    holds by construction: tau = inf stores flags only, and costs least."""
    sizes = {tau: len(lossy.encode(TEXT, tiny_session, SMALL, tau).blob) for tau in (0, 2, 8, math.inf)}
    assert sizes[math.inf] == min(sizes.values()) and sizes[math.inf] < sizes[0] / 4, sizes


def test_infinite_tau_stores_no_token(tiny_session):
    r = lossy.encode(TEXT, tiny_session, SMALL, math.inf)
    assert r.stored_tokens == 0 and r.reconstruction != TEXT


@pytest.mark.parametrize("tau", [-1.0, math.nan, 0.3, 64.0])
def test_bad_tau_is_refused(tiny_session, tau):
    with pytest.raises(BpcError, match="tau must be"):
        lossy.encode(TEXT, tiny_session, SMALL, tau)


def test_a_lossy_file_is_guarded_like_any_other(tiny_session):
    """Its payload bounded, its hash checked: a token count it cannot hold is refused."""
    import dataclasses

    r = lossy.encode(TEXT, tiny_session, SMALL, 2.0)
    c = Container.from_bytes(r.blob)
    forged = Container(dataclasses.replace(c.header, n_tokens=10**5, original_bytes=10**5), c.payload).to_bytes()
    with pytest.raises(BpcError, match="payload is spent|payload can hold|checksum"):
        decompress(forged, tiny_session, settings=SMALL)


def _reference_tables(logits, allowed, tau, n_escapes):
    """The rule in float64 numpy: F = {greedy} ∪ {x : p(x) >= 2**-tau}; the weights outside F;
    P(store) clamped to the floor."""
    w = reference_weights(logits, n_escapes)
    greedy = np.where(allowed, logits, -np.inf).argmax(axis=1)
    p = w / w.sum(axis=1, keepdims=True)
    in_f = p >= 2.0**-tau
    in_f[np.arange(len(w)), greedy] = True
    rest = np.where(in_f, 0.0, w)
    p_store = np.clip(rest.sum(axis=1) / w.sum(axis=1), lossy.FLAG_FLOOR, 1 - lossy.FLAG_FLOOR)
    return greedy, in_f, rest, p_store


@pytest.mark.parametrize("tau", [0.0, 1.0, 4.0, 7.25, math.inf])
def test_the_compiled_tables_are_the_rule(tau):
    rng = np.random.default_rng(int(7 * tau) if tau < 99 else 99)
    rows, n_vocab, n_escapes = 5, 300, 3
    logits = (rng.normal(size=(rows, n_vocab)) * 3).astype(np.float32)
    logits[0, 17] = 30.0  # a row the model is sure of: P(keep) at 1 - floor
    allowed = np.ones(n_vocab, dtype=np.bool_)
    allowed[[5, 17]] = False  # spells nothing: never the greedy token, whatever its logit
    f = entropy_model.TwoLevel.for_alphabet(n_vocab + n_escapes)
    esc = entropy_model.escape_factor(n_escapes)
    truth = rng.integers(0, n_vocab + n_escapes, rows).astype(np.int64)
    flags, outer, inner = np.empty((rows, 2)), np.empty((rows, f.n_blocks)), np.empty((rows, f.block))
    greedy, stored = np.empty(rows, np.int64), np.empty(rows, np.bool_)
    lossy_kernel.encoder_tables(logits, allowed, truth, n_escapes, esc, f.block, tau, lossy.FLAG_FLOOR, flags,
                                outer, inner, greedy, stored)
    g, in_f, rest, p_store = _reference_tables(logits.astype(np.float64), allowed, tau, n_escapes)
    assert (greedy == g).all() and g[0] != 17
    assert (stored == ~in_f[np.arange(rows), truth]).all()
    # kernel/2's tolerance against float64 numpy (tests/codec/test_kernel.py: exp32 weights, ~1e-7 relative)
    np.testing.assert_allclose(flags[:, 1], p_store, rtol=RTOL)
    np.testing.assert_allclose(flags.sum(axis=1), 1.0, rtol=1e-15)
    blocked = np.zeros((rows, f.n_blocks * f.block))
    blocked[:, :rest.shape[1]] = rest
    # a block F does not touch keeps the lossless sum (zero where every entry is forgiven: tau = inf)
    np.testing.assert_allclose(outer, blocked.reshape(rows, f.n_blocks, f.block).sum(axis=2), rtol=RTOL, atol=0)
    for r in np.flatnonzero(stored):
        b = truth[r] // f.block
        np.testing.assert_allclose(inner[r], blocked[r, b * f.block:(b + 1) * f.block], rtol=RTOL, atol=ATOL)
    # the decoder's two calls give the same bits as the encoder's one
    d_flags, d_outer = np.empty((rows, 2)), np.empty((rows, f.n_blocks))
    keep = [np.empty((rows, f.n_blocks), np.float32), np.empty(rows), np.empty(rows)]
    d_greedy, d_rest = np.empty(rows, np.int64), np.empty(rows)
    lossy_kernel.decoder_tables(logits, allowed, n_escapes, esc, f.block, tau, lossy.FLAG_FLOOR, d_flags, d_outer,
                                *keep, d_greedy, d_rest)
    assert (d_flags == flags).all() and (d_greedy == greedy).all()
    which = np.flatnonzero(stored)
    assert (d_outer[which] == outer[which]).all()
    d_inner = np.empty((len(which), f.block))
    lossy_kernel.chosen_entries(logits, which, *keep, d_greedy, n_escapes, truth[which] // f.block, f.block, d_inner)
    assert (d_inner == inner[which]).all()


def test_every_flag_costs_the_floor_but_the_container_bounds_the_tokens():
    """At tau = inf every token is forgiven and the flag is at its floor (MIN_FLAG_BITS, as the
    decoder charges it): cheaper than the bit a token the container allows beyond SLACK_TOKENS, so
    the container's rule is what bounds a lossy file, and the encoder pads a payload that codes
    cheaper than it (payload_bytes, which lossy.encode uses)."""
    flags = np.array([[1 - lossy.FLAG_FLOOR, lossy.FLAG_FLOOR]])
    assert lossy.MIN_FLAG_BITS == entropy_model.min_code_bits(flags, np.array([0]))
    assert 0 < lossy.MIN_FLAG_BITS < 8 / entropy_model.TOKENS_PER_PAYLOAD_BYTE
    n = entropy_model.SLACK_TOKENS + 800
    padded = payload_bytes(np.zeros(1, dtype=np.uint32), n * lossy.MIN_FLAG_BITS, n)
    assert len(padded) == 800 // entropy_model.TOKENS_PER_PAYLOAD_BYTE
    assert entropy_model.max_tokens(len(padded)) >= n


def test_a_forged_flag_stream_claims_no_more_tokens_than_its_payload_pays_for(tiny_session):
    """Flags only (tau = inf) over 100 zero bytes ("keep" all the way): one token more than the
    container allows is refused before any model runs; the most it allows decodes that many tokens
    at most and ends in one line (a checksum or a spent payload), never hours later."""
    import dataclasses

    r = lossy.encode(TEXT, tiny_session, SMALL, math.inf)
    c = Container.from_bytes(r.blob)
    payload = bytes([c.payload[0]]) + bytes(100)
    n = entropy_model.max_tokens(len(payload))
    too_many = Container(dataclasses.replace(c.header, n_tokens=n + 1, original_bytes=n + 1), payload).to_bytes()
    with pytest.raises(BpcError, match="payload can hold"):
        Container.from_bytes(too_many)
    forged = Container(dataclasses.replace(c.header, n_tokens=n, original_bytes=n), payload).to_bytes()
    with pytest.raises(BpcError, match="checksum|payload is spent"):
        decompress(forged, tiny_session, settings=SMALL)


def test_a_first_version_lossy_file_is_refused_in_one_line(tiny_session):
    """A lossy file whose fingerprint is the lossless one's was made by the first lossy coding."""
    import dataclasses

    from bpcbench.errors import Mismatch

    r = lossy.encode(TEXT, tiny_session, SMALL, 2.0)
    c = Container.from_bytes(r.blob)
    old = Container(dataclasses.replace(c.header, codec=tiny_session.fingerprint(0)), c.payload).to_bytes()
    with pytest.raises(Mismatch, match="first lossy coding") as e:
        decompress(old, tiny_session, settings=SMALL)
    assert "\n" not in str(e.value)


_THREADS_SCRIPT = """
import hashlib, json, sys
import numba, numpy as np
from bpcbench.codec import entropy_model, lossy, lossy_kernel
rng = np.random.default_rng(5)
n_vocab, n_escapes, rows = 49152, 3, 37
logits = (rng.standard_normal((rows, n_vocab)) * 4).astype(np.float32)
truth = rng.integers(0, n_vocab + n_escapes, rows).astype(np.int64)
allowed = np.ones(n_vocab + n_escapes, dtype=np.bool_)
f = entropy_model.TwoLevel.for_alphabet(n_vocab + n_escapes)
esc = entropy_model.escape_factor(n_escapes)
out = {}
for tau in (0.0, 4.0, 20.0):
    for threads in (1, 2, 8):
        numba.set_num_threads(threads)
        flags, outer, inner = np.empty((rows, 2)), np.empty((rows, f.n_blocks)), np.zeros((rows, f.block))
        greedy, stored = np.empty(rows, np.int64), np.empty(rows, np.bool_)
        lossy_kernel.encoder_tables(logits, allowed, truth, n_escapes, esc, f.block, tau, lossy.FLAG_FLOOR, flags,
                                    outer, inner, greedy, stored)
        which = np.flatnonzero(stored)
        d_flags, d_outer = np.empty((rows, 2)), np.empty((rows, f.n_blocks))
        keep = [np.empty((rows, f.n_blocks), np.float32), np.empty(rows), np.empty(rows)]
        d_greedy, rest = np.empty(rows, np.int64), np.empty(rows)
        lossy_kernel.decoder_tables(logits, allowed, n_escapes, esc, f.block, tau, lossy.FLAG_FLOOR, d_flags,
                                    d_outer, *keep, d_greedy, rest)
        d_inner = np.empty((len(which), f.block))
        lossy_kernel.chosen_entries(logits, which, *keep, d_greedy, n_escapes, truth[which] // f.block, f.block,
                                    d_inner)
        out[f"{tau}/{threads}"] = [int(stored.sum())] + [hashlib.sha256(a.tobytes()).hexdigest() for a in
                                   (flags, outer[which], inner[which], greedy, d_flags, d_outer[which], d_inner,
                                    d_greedy)]
json.dump(out, sys.stdout)
"""


def test_the_lossy_tables_are_identical_for_1_2_and_8_threads():
    """Encoder and decoder tables, bit for bit, whatever the threads (rows split between them, never a sum)."""
    got = host_threads.run_json(_THREADS_SCRIPT)
    for tau in (0.0, 4.0, 20.0):
        runs = [got[f"{tau}/{t}"] for t in (1, 2, 8)]
        assert runs[0] == runs[1] == runs[2]
        n_stored, flags, outer, inner, greedy, d_flags, d_outer, d_inner, d_greedy = runs[0]
        assert n_stored > 0 and (d_flags, d_outer, d_inner, d_greedy) == (flags, outer, inner, greedy)
