"""The lossy codec against the lossless one at the same context: the greedy choice reuses the
logits the lossless path computes, so a token should cost within 10% of lossless coding
(issue "Lossy text mode"). `make bench-micro` prints both; compare the pair (same run, same core).
"""

from __future__ import annotations

import pytest

from bpcbench.codec import lossy
from bpcbench.codec.compress import compress
from bpcbench.codec.session import Settings
from bpcbench.corpora import load_manifest

SETTINGS = Settings(context=512, threads=1)  # one spinning thread on the shared machine


@pytest.fixture(scope="module")
def text():
    return load_manifest()["alice29"].path.read_bytes()[:1500]


def test_lossless_encode(benchmark, session, text):
    benchmark.pedantic(lambda: compress(text, session, SETTINGS, fallback=False), rounds=2, iterations=1)


@pytest.mark.parametrize("tau", [2.0])
def test_lossy_encode(benchmark, session, text, tau):
    benchmark.pedantic(lambda: lossy.encode(text, session, SETTINGS, tau), rounds=2, iterations=1)
