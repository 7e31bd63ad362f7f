"""The model's payload as bytes, and what it must pay for: the range coder's words trimmed of
trailing zeros, padded where the decoder's checks need it (the bits spent, the tokens claimed,
entropy_model.max_tokens; the plan's KV cells, kv_cells_paid). The container reader applies the
same rules (container._check_payload); the lossy codec shares them.
"""

from __future__ import annotations

import numpy as np

from bpcbench.codec import entropy_model
from bpcbench.errors import BpcError

# KV cells a plan may take beyond KV_CELLS_FREE: this many per byte of the payload that codes its
# lanes (the model's payload and the lanes stored apart), so that a forged plan of 256 one-token
# lanes gets no gigabytes; the encoder pads a payload that would fall short (pay_for_cells), which
# no plan of the default settings ever needs (32 lanes x 2,048 cells come with > 500 k tokens).
KV_CELLS_FREE = 4 * 2048
KV_CELLS_PER_PAYLOAD_BYTE = 64


def kv_cells_paid(payload_bytes: int) -> int:
    """The most KV cells a plan may take with this many payload bytes coding its lanes."""
    return KV_CELLS_FREE + KV_CELLS_PER_PAYLOAD_BYTE * payload_bytes


def payload_bytes(words: np.ndarray, spent: float, n_tokens: int) -> bytes:
    """The coder's words as trimmed bytes, but never so short that the decoder's payload checks
    would refuse them (zeros added back, or appended: the decoder reads missing words as zeros)."""
    full = np.asarray(words, dtype=">u4").tobytes()
    if entropy_model.payload_bytes_needed(spent, 0) > len(full):  # fewer bytes than the information coded
        raise BpcError(f"internal error: the range coder wrote {len(full)} bytes for {spent:.0f} bits")
    payload = pack_words(words)
    need = entropy_model.payload_bytes_needed(spent, n_tokens)
    return payload if len(payload) >= need else (full + bytes(need))[:need]


def pay_for_cells(payload: bytes, kv_cells: int, beside: int = 0) -> bytes:
    """A model payload long enough that, with `beside` bytes of lanes stored apart, it pays for
    the plan's KV cells (kv_cells_paid). Zeros appended read as the zeros the trimming removed.
    No plan of the default settings needs it."""
    need = -(-(kv_cells - KV_CELLS_FREE) // KV_CELLS_PER_PAYLOAD_BYTE) - beside
    return payload + bytes(max(0, need - len(payload)))


def pack_words(words) -> bytes:
    """Range-coder words -> payload bytes: big-endian, so a final word's zero low bytes trim away."""
    return np.asarray(words, dtype=">u4").tobytes().rstrip(b"\0")


def unpack_words(payload: bytes):
    """Payload bytes -> words, the trimmed zeros put back (a whole trimmed word is read as zero anyway)."""
    padded = payload + b"\0" * (-len(payload) % 4)
    return np.frombuffer(padded, dtype=">u4").astype(np.uint32)
