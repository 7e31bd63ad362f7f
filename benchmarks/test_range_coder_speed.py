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
    scratch = entropy_model.StepTables(logits.shape[1], 0)
    enc = range_coder.Encoder()
    w = scratch.weights(logits)
    entropy_model.ideal_bits(w, symbols)
    outer, inner = scratch.tables(w)
    blocks, within = scratch.factor.split(symbols)
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
    scratch = entropy_model.StepTables(logits.shape[1], 0)

    def decode():
        dec = range_coder.Decoder(words)
        outer, inner = scratch.tables(scratch.weights(logits))
        blocks = dec.decode(outer)
        return scratch.factor.join(blocks, dec.decode(inner(blocks)))

    out = benchmark(decode)
    assert (out == symbols).all()


@pytest.mark.parametrize("rows", [1, 8])
@pytest.mark.parametrize("tables", ["plain", "step-tables"])
def test_step_tables(benchmark, rows, tables):
    """One step's tables at SmolLM2's vocabulary: fresh arrays per step (the plain functions)
    against StepTables' reused buffer, which is what compress and decompress use."""
    rng = np.random.default_rng(0)
    logits = (rng.standard_normal((rows, 49_152)) * 3).astype(np.float32)
    symbols = rng.integers(0, 49_152, rows)
    scratch = entropy_model.StepTables(49_152 + 3, 3)

    def plain():
        w = entropy_model.weights(logits, 3)
        entropy_model.ideal_bits(w, symbols)
        return scratch.factor.tables(w)[1](symbols // scratch.factor.block)

    def reused():
        w = scratch.weights(logits)
        entropy_model.ideal_bits(w, symbols)
        return scratch.tables(w)[1](symbols // scratch.factor.block)

    benchmark(plain if tables == "plain" else reused)
