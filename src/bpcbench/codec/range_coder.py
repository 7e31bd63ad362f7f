"""Range coding with constriction: symbols + per-position probability tables <-> 32-bit words.

The coder knows nothing about models: it takes blocks of positions (a 2-D table per
block) so Python never loops per symbol. Encoder and decoder must see the same tables
in the same order; the lockstep evaluator guarantees that.
"""

from __future__ import annotations

from importlib.metadata import version

import constriction
import numpy as np

from bpcbench.errors import CorruptInput

_FAMILY = constriction.stream.model.Categorical(perfect=False)
VERSION = f"constriction-{version('constriction')}/range/two-level"


class Encoder:
    def __init__(self):
        self._enc = constriction.stream.queue.RangeEncoder()

    def encode(self, symbols: np.ndarray, probabilities: np.ndarray) -> None:
        if len(symbols):
            self._enc.encode(np.ascontiguousarray(symbols, dtype=np.int32), _FAMILY, probabilities)

    def finish(self) -> np.ndarray:
        return np.asarray(self._enc.get_compressed(), dtype=np.uint32)


class Decoder:
    def __init__(self, words: np.ndarray):
        self._dec = constriction.stream.queue.RangeDecoder(np.ascontiguousarray(words, dtype=np.uint32))

    def decode(self, probabilities: np.ndarray) -> np.ndarray:
        if len(probabilities) == 0:
            return np.zeros(0, dtype=np.int32)
        try:
            return np.asarray(self._dec.decode(_FAMILY, probabilities), dtype=np.int32)
        except (AssertionError, ValueError, RuntimeError) as exc:  # constriction on a payload it cannot read
            raise CorruptInput(f"compressed file's payload cannot be decoded ({type(exc).__name__})") from None
