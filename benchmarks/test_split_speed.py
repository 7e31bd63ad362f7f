"""The cut before the model (codec/split.py) and what it saves (issue #23).

Targets: 64 KiB of random bytes compressed in <= 5 s and 1 MiB in <= 30 s, the CLI's start and
model load included (measured with the CLI, docs/measurements.md); here the part that is the
codec's own, with no model at all (a session of None: the model is never asked), and the cut's
cost on a text, which must stay far below 2% of the model's time on it (alice29: minutes).
"""

from __future__ import annotations

import numpy as np
import pytest

from bpcbench import corpora
from bpcbench.codec import compress as codec
from bpcbench.codec import split
from bpcbench.codec.decompress import decompress


@pytest.mark.parametrize("size", [64 << 10, 1 << 20])
def test_random_bytes_never_reach_the_model(benchmark, size):
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    blob, _ = benchmark.pedantic(lambda: codec.compress(data, None), rounds=3, iterations=1)
    assert len(blob) <= size + 64 and decompress(blob)[0] == data
    assert benchmark.stats.stats.max < (5.0 if size <= 64 << 10 else 30.0)


def test_the_cut_on_a_text(benchmark):
    data = corpora.resolve("alice29").read_bytes()
    ranges = benchmark.pedantic(lambda: split.text_ranges(data), rounds=5, iterations=1)
    assert ranges == [(True, len(data))]
    assert benchmark.stats.stats.max < 1.0  # the model takes minutes on these 152 kB
