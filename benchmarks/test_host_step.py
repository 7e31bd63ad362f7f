"""The host's ceiling: synthetic logits of 256 rows through the full step, no model.

Each case is one step of 256 token-rows (lanes) at SmolLM2's and Gemma 3's vocabularies: the
ideal path (bits and natural-log NLL), the coded encoder (tables, ideal bits, both range-coder
calls, the payload bound) and the coded decoder (block table, decode, the chosen blocks'
entries, decode, the bound), on one core and on all cores. `numpy` is the step as bpcbench
computed it before the compiled kernel (tests/entropy_reference.py, single-threaded whatever
the cores), `kernel` is codec/kernel.py's; both run in one invocation, back to back:

    PYTHONPATH=src:tests python -m pytest benchmarks/test_host_step.py -q -s

The summary prints µs per token-row and tokens/s of each case (the fastest of its rounds, then
the mean: on a shared machine the fastest is the one least disturbed), and for `all` cores the
speed-up over 1 core of the same case. "1" sets the kernel's threads to 1; pin the process too
for a one-core figure (the issue's targets are per core of the 2-core development machine), and
on a shared machine time it in CPU time, which with one thread is the step's own cost and not
the time it waited for a core:

    PYTHONPATH=src:tests taskset -c 0 python -m pytest benchmarks/test_host_step.py -q -k "kernel and 1" \
        --benchmark-timer time.process_time

Figures: docs/measurements.md.
"""

from __future__ import annotations

import os

import numba
import numpy as np
import pytest
from entropy_reference import StepTables as ReferenceTables
from entropy_reference import ideal_bits, weights

from bpcbench.codec import entropy_model, kernel, range_coder

ROWS = 256
N_ESCAPES = 3
VOCABS = {"smollm2": 49_152, "gemma3": 262_144}


def _rows(n_vocab: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    logits = (rng.standard_normal((ROWS, n_vocab), dtype=np.float32) * 3)
    return logits, rng.integers(0, n_vocab, ROWS).astype(np.int32)


class Numpy:
    """The pre-kernel step: float64 numpy over rows x vocabulary, one thread."""

    def __init__(self, n_symbols: int):
        self.t = ReferenceTables(n_symbols, N_ESCAPES)
        self.factor = self.t.factor

    def ideal(self, logits, symbols):
        """codec/policies.py's pricing before the kernel: 64 rows at a time, bits and plain NLL from one table."""
        bits, nats = np.empty(len(symbols)), np.empty(len(symbols))
        n_vocab = logits.shape[1]
        for lo in range(0, len(symbols), 64):
            w, s = weights(logits[lo : lo + 64], N_ESCAPES), symbols[lo : lo + 64]
            bits[lo : lo + 64] = ideal_bits(w, s)
            nats[lo : lo + 64] = np.log(w[:, :n_vocab].sum(axis=1)) - np.log(w[np.arange(len(s)), s])
        return bits, nats

    def encode(self, logits, symbols, enc):
        w = self.t.weights(logits)
        bits = ideal_bits(w, symbols)
        outer, inner = self.t.tables(len(logits))
        blocks, within = self.factor.split(symbols)
        chosen = inner(blocks)
        enc.encode(blocks, outer)
        enc.encode(within, chosen)
        return bits, entropy_model.min_code_bits(outer, blocks) + entropy_model.min_code_bits(chosen, within)

    def decode(self, logits, dec):
        self.t.weights(logits)
        outer, inner = self.t.tables(len(logits))
        blocks = dec.decode(outer)
        chosen = inner(blocks)
        within = dec.decode(chosen)
        entropy_model.min_code_bits(outer, blocks) + entropy_model.min_code_bits(chosen, within)
        return self.factor.join(blocks, within)


class Kernel:
    """The step as compress, decompress and the ideal paths run it (entropy_model over codec/kernel.py)."""

    def __init__(self, n_symbols: int):
        self.t = entropy_model.StepTables(n_symbols, N_ESCAPES)
        self.factor = self.t.factor

    def ideal(self, logits, symbols):
        return entropy_model.ideal(logits, symbols, N_ESCAPES)

    def encode(self, logits, symbols, enc):
        outer, chosen, bits = self.t.encoder(logits, symbols)
        blocks, within = self.factor.split(symbols)
        enc.encode(blocks, outer)
        enc.encode(within, chosen)
        return bits, entropy_model.min_code_bits(outer, blocks) + entropy_model.min_code_bits(chosen, within)

    def decode(self, logits, dec):
        outer = self.t.block_table(logits)
        blocks = dec.decode(outer)
        chosen = self.t.entries(blocks)
        within = dec.decode(chosen)
        entropy_model.min_code_bits(outer, blocks) + entropy_model.min_code_bits(chosen, within)
        return self.factor.join(blocks, within)


IMPLEMENTATIONS = {"numpy": Numpy, "kernel": Kernel}


def _cores(impl: str, cores: str) -> None:
    if impl == "numpy" and cores != "1":
        pytest.skip("numpy's step is one thread whatever the cores")
    kernel.set_threads(1 if cores == "1" else numba.config.NUMBA_NUM_THREADS)


ROUNDS = 5
_FASTEST: dict[tuple, float] = {}  # (impl, path, vocab) -> the 1-core case's fastest round, for the speed-up


def _report(benchmark, request, impl: str, path: str, vocab: str, cores: str) -> None:
    fastest, mean = benchmark.stats.stats.min, benchmark.stats.stats.mean
    n = 1 if cores == "1" else numba.get_num_threads()
    line = (f"{impl} {path} {vocab} {n} thread(s) on {len(os.sched_getaffinity(0))} core(s): "
            f"{fastest / ROWS * 1e6:,.1f} µs per token-row, {ROWS / fastest:,.0f} tokens/s "
            f"(mean {mean / ROWS * 1e6:,.1f} µs, {ROWS / mean:,.0f} tokens/s)")
    key = (impl, path, vocab)
    if cores == "1":
        _FASTEST[key] = fastest
    elif key in _FASTEST:
        line += f"; {_FASTEST[key] / fastest:.2f}x the 1-thread case"
    request.node.user_properties.append(("host_step", line))


@pytest.fixture(params=list(IMPLEMENTATIONS))
def impl(request):
    return request.param


@pytest.mark.parametrize("path", ["ideal", "encode", "decode"])
@pytest.mark.parametrize("vocab", list(VOCABS))
@pytest.mark.parametrize("cores", ["1", "all"])
def test_host_step(benchmark, request, impl, vocab, cores, path):
    _cores(impl, cores)
    logits, symbols = _rows(VOCABS[vocab])
    step = IMPLEMENTATIONS[impl](VOCABS[vocab] + N_ESCAPES)
    if path == "ideal":
        benchmark.pedantic(step.ideal, (logits, symbols), rounds=ROUNDS, warmup_rounds=1)
    elif path == "encode":
        benchmark.pedantic(lambda: step.encode(logits, symbols, range_coder.Encoder()), rounds=ROUNDS,
                           warmup_rounds=1)
    else:
        enc = range_coder.Encoder()
        step.encode(logits, symbols, enc)
        words = enc.finish()
        out = benchmark.pedantic(lambda: step.decode(logits, range_coder.Decoder(words)), rounds=ROUNDS,
                                 warmup_rounds=1)
        assert (out == symbols).all()  # the decoder's tables are the encoder's
    _report(benchmark, request, impl, path, vocab, cores)
