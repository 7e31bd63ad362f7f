"""Entropy model + range coder throughput per step of 32 positions, at SmolLM2's and Gemma 3's vocabulary sizes."""

from __future__ import annotations

import numpy as np
import pytest

from bpcbench.codec import entropy_model, range_coder

ROWS = 32


@pytest.fixture(params=[49_152, 262_144], ids=["vocab49k", "vocab262k"])
def step_inputs(request):
    rng = np.random.default_rng(0)
    logits = (rng.standard_normal((ROWS, request.param)) * 3).astype(np.float32)
    symbols = rng.integers(0, request.param, ROWS).astype(np.int32)
    return logits, symbols


def _encode_step(logits, symbols):
    factor = entropy_model.TwoLevel.for_alphabet(logits.shape[1])
    enc = range_coder.Encoder()
    w = entropy_model.unnormalised_probabilities(logits)
    entropy_model.ideal_bits(w, symbols)
    outer, inner = factor.tables(w)
    blocks, within = factor.split(symbols)
    enc.encode(blocks, outer)
    enc.encode(within, inner(blocks))
    return enc.finish()


def test_encode_step(benchmark, step_inputs):
    logits, symbols = step_inputs
    benchmark.extra_info["positions"] = ROWS
    benchmark(_encode_step, logits, symbols)


def test_decode_step(benchmark, step_inputs):
    logits, symbols = step_inputs
    words = _encode_step(logits, symbols)
    factor = entropy_model.TwoLevel.for_alphabet(logits.shape[1])

    def decode():
        dec = range_coder.Decoder(words)
        outer, inner = factor.tables(entropy_model.unnormalised_probabilities(logits))
        blocks = dec.decode(outer)
        return factor.join(blocks, dec.decode(inner(blocks)))

    out = benchmark(decode)
    assert (out == symbols).all()
