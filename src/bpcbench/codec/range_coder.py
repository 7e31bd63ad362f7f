"""Range coding with constriction: symbols + per-position probability tables <-> 32-bit words,
and those words <-> the container's payload bytes (`payload_bytes`, `unpack_words`).

The coder knows nothing about models: it takes blocks of positions (a 2-D table per
block) so Python never loops per symbol. Encoder and decoder must see the same tables
in the same order; the lockstep evaluator guarantees that.
"""

from __future__ import annotations

from importlib.metadata import version

import constriction
import numpy as np

from bpcbench.codec import entropy_model
from bpcbench.errors import BpcError, CorruptInput

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


def payload_bytes(words: np.ndarray, spent: float, n_tokens: int) -> bytes:
    """The coder's words as trimmed bytes, but never so short that the decoder's payload checks
    would refuse them (zeros added back, or appended: the decoder reads missing words as zeros)."""
    full = np.asarray(words, dtype=">u4").tobytes()
    if entropy_model.payload_bytes_needed(spent, 0) > len(full):  # fewer bytes than the information coded
        raise BpcError(f"internal error: the range coder wrote {len(full)} bytes for {spent:.0f} bits")
    payload = pack_words(words)
    need = entropy_model.payload_bytes_needed(spent, n_tokens)
    return payload if len(payload) >= need else (full + bytes(need))[:need]


def pack_words(words) -> bytes:
    """Range-coder words -> payload bytes: big-endian, so a final word's zero low bytes trim away."""
    return np.asarray(words, dtype=">u4").tobytes().rstrip(b"\0")


def unpack_words(payload: bytes):
    """Payload bytes -> words, the trimmed zeros put back (a whole trimmed word is read as zero anyway)."""
    padded = payload + b"\0" * (-len(payload) % 4)
    return np.frombuffer(padded, dtype=">u4").astype(np.uint32)
