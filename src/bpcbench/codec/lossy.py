"""Lossy coding: store only the tokens the model would not have guessed, rebuild the rest greedily.

For a threshold tau (bits), the encoder walks the tokens with the lossless codec's lanes and
window. At each position it asks the model, fed the *reconstruction* so far (all the decoder
will have), for its distribution p and its greedy token g. The forgiven set is
F = {g} ∪ {x : -log2 p(x) <= tau}. A flag says whether the true token is in F, coded with
P(keep) = p(F) (clamped to [FLAG_FLOOR, 1 - FLAG_FLOOR]): a token in F is not stored and the
reconstruction takes g; a token outside F is coded under p restricted to the complement of F,
renormalised. So a stored token costs -log2 p(x), what the lossless codec pays, and a kept one
-log2 p(F) <= -log2 p(x): tau = 0 (F = {g}) is the lossless code plus the floor's cost, and its
reconstruction is the original; tau = inf stores flags only (each at the floor), and the
reconstruction is what the model writes from BOS by itself. codec/lossy_kernel.py computes F
and the tables, compiled, from the logits alone, so both ends have the same bits.

The two ends are steps like the lossless coder's (codec/steps.py), driven by Session.run:
`LossyEncoderStep` and `LossyDecoderStep` side by side here, with the state they share
(`_Forgiving`: F's inputs, the bits spent, summed the same way at both ends). They live here, not
in steps.py, because they need this module's tau and flag floor, and steps.py is below
session.py, which this module imports.

Why the floor: a flag always costs at least -log2(1 - FLAG_FLOOR) bits (MIN_FLAG_BITS by the
decoder's own accounting, entropy_model.min_code_bits), so the decoder's payload budget grows
with every token whatever the flags claim, and a token the model is sure of costs ~0.02 bits
instead of -log2 p(g). The bound that keeps a forged lossy file short is the container's, the
same for every coded method: at most TOKENS_PER_PAYLOAD_BYTE (8) tokens a payload byte beyond
the first SLACK_TOKENS (1,024), one bit a token. The flags alone would allow ~375 a byte, hours
of decoding for a forged 4 KiB file. The price: the encoder pads a lossy payload that codes
cheaper than that (payload.payload_bytes), so beyond its first 1,024 tokens a lossy file costs at
least one bit a token, a floor the curves of long texts at large tau meet.

The container is format 3 with method "lossy"; its "original" is the reconstruction, which
`bpcbench decompress` rebuilds and checks against the recorded hash like any other file. The
payload is one byte for tau (TAU_STEPS: tau in quarter bits, 255 = inf), then the range coder's
words. The lossy coding's version (METHOD_VERSION) is part of the file's codec fingerprint:
files of the first lossy coding (one adaptive flag counter, bpcbench <= 0.4.0) are refused in
one line (exit 4).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import numpy as np

from bpcbench.codec import entropy_model, lossy_kernel, range_coder
from bpcbench.codec.container import Container, coded_header
from bpcbench.codec.payload import payload_bytes, unpack_words
from bpcbench.codec.session import Session, Settings
from bpcbench.codec.steps import check_decoded
from bpcbench.codec.tokenization import Vocabulary
from bpcbench.errors import BpcError, CorruptInput, Mismatch
from bpcbench.llama.lanes import Plan

METHOD_VERSION = "lossy/2"  # 1: one adaptive keep/store counter (bpcbench <= 0.4.0); 2: flags priced by p(F)
FLAG_FLOOR = 2.0**-6  # the least P(keep) and P(store) of any flag
# what the decoder's accounting charges a flag at the floor, the least any flag costs (~0.021 bits)
MIN_FLAG_BITS = entropy_model.min_code_bits(np.array([[1 - FLAG_FLOOR, FLAG_FLOOR]]), np.array([0]))
TAU_STEPS = 4  # tau is coded in quarter bits, in one byte: 0 .. 254 (tau <= 63.5), 255 = inf
_TAU_INF = 255


def tau_byte(tau: float) -> int:
    """The payload's first byte for `tau`; a tau the format cannot hold is one line."""
    if math.isinf(tau) and tau > 0:
        return _TAU_INF
    k = tau * TAU_STEPS if tau >= 0 else -1.0
    if not (0 <= k < _TAU_INF and k == int(k)):
        raise BpcError(f"tau must be a number of bits >= 0 in steps of {1 / TAU_STEPS:g}, at most "
                       f"{(_TAU_INF - 1) / TAU_STEPS:g}, or inf; got {tau}")
    return int(k)


def tau_of_byte(byte: int) -> float:
    return math.inf if byte == _TAU_INF else byte / TAU_STEPS


def fingerprint(session: Session, n_gpu_layers: int) -> str:
    """The codec fingerprint of a lossy file: the lossless one's parts and this coding's version."""
    return session.fingerprint(n_gpu_layers, method={"lossy": METHOD_VERSION, "lossy_kernel": lossy_kernel.VERSION})


def check_version(codec: str, session: Session, n_gpu_layers: int) -> None:
    """Refuse a lossy file of the first lossy coding (its fingerprint is the lossless one's) in one line."""
    if codec == session.fingerprint(n_gpu_layers):
        raise Mismatch("compressed file is a lossy file of the first lossy coding (bpcbench <= 0.4.0, flags by "
                       f"one adaptive counter), which this version ({METHOD_VERSION}) does not decode: decompress "
                       "it with bpcbench 0.4.0")


@dataclass
class LossyResult:
    tau: float
    blob: bytes
    reconstruction: bytes
    original_tokens: np.ndarray
    tokens: np.ndarray  # the reconstruction's
    stored_tokens: int  # positions whose true token was coded
    seconds: float

    @property
    def header_bytes(self) -> int:
        return Container.from_bytes(self.blob).header_bytes


class _Forgiving:
    """What both ends compute at each step, in the same order: F, the flag table, the tables outside F, costs."""

    def __init__(self, vocab: Vocabulary, plan: Plan, tau: float):
        self.vocab, self.offs = vocab, plan.offsets()
        self.n_escapes = len(vocab.escape_bytes)
        self.esc = entropy_model.escape_factor(self.n_escapes)
        self.factor = entropy_model.TwoLevel.for_alphabet(vocab.n_symbols)
        self.tau = tau
        # a greedy token must spell at least one byte (control tokens spell none), so that
        # the reconstruction has at least as many bytes as tokens, like any decoded file
        self.allowed = np.array([len(p) > 0 for p in vocab.pieces], dtype=np.bool_)
        if not self.allowed.any():
            raise BpcError("this model's vocabulary has no token that spells a byte: nothing to guess")
        self.spent = 0.0  # entropy_model.min_code_bits summed, as the lossless codec does
        self.stored = 0

    def buffers(self, rows: int):
        f = self.factor
        return np.empty((rows, 2)), np.empty((rows, f.n_blocks)), np.empty((rows, f.block)), np.empty(rows, np.int64)

    def account(self, flags: np.ndarray, stored: np.ndarray, outer=None, blocks=None, inner=None,
                within=None) -> None:
        cost = entropy_model.min_code_bits(flags, stored.astype(np.int64))
        if outer is not None:
            cost += entropy_model.min_code_bits(outer, blocks) + entropy_model.min_code_bits(inner, within)
        self.spent += cost
        self.stored += int(stored.sum())


def _rows(logits: np.ndarray) -> np.ndarray:
    """The kernel reads C-contiguous float32 rows, as llama.cpp writes them (then no copy is made)."""
    return np.ascontiguousarray(logits, dtype=np.float32)


class LossyEncoderStep(_Forgiving):
    """Codes each position's flag (and the true token where it is outside F); `out` is the reconstruction."""

    def __init__(self, vocab: Vocabulary, plan: Plan, tokens: np.ndarray, tau: float):
        super().__init__(vocab, plan, tau)
        self.tokens, self.n_tokens = tokens, plan.n_tokens
        self.out = np.zeros_like(tokens)
        self.coder = range_coder.Encoder()

    def __call__(self, piece_ids: np.ndarray, t: int, logits: np.ndarray) -> np.ndarray:
        at = self.offs[piece_ids] + t
        truth = self.tokens[at]
        flags, outer, inner, greedy = self.buffers(len(piece_ids))
        stored = np.empty(len(piece_ids), dtype=np.bool_)
        lossy_kernel.encoder_tables(_rows(logits), self.allowed, truth.astype(np.int64), self.n_escapes, self.esc,
                                    self.factor.block, self.tau, FLAG_FLOOR, flags, outer, inner, greedy, stored)
        self.coder.encode(stored.astype(np.int32), flags)
        recon = np.where(stored, truth, greedy).astype(np.int32)
        if stored.any():
            blocks, within = self.factor.split(truth[stored])
            self.coder.encode(blocks, outer[stored])
            self.coder.encode(within, inner[stored])
            self.account(flags, stored, outer[stored], blocks, inner[stored], within)
        else:
            self.account(flags, stored)
        self.out[at] = recon
        return self.vocab.model_input(recon)

    def payload(self, code: int) -> bytes:
        """The container's payload (call once, after the last step): tau's byte, then the coder's words."""
        return bytes([code]) + payload_bytes(self.coder.finish(), self.spent, self.n_tokens)


class LossyDecoderStep(_Forgiving):
    """Decodes each position's flag, and the stored token where there is one; `tokens` is the reconstruction.
    A payload spent before its tokens are, or a table entry no encoder could have coded, is refused."""

    def __init__(self, vocab: Vocabulary, plan: Plan, words: bytes, tau: float):
        super().__init__(vocab, plan, tau)
        self.tokens = np.zeros(plan.n_tokens, dtype=np.int32)
        self.coder = range_coder.Decoder(unpack_words(words))
        self.budget = 8 * len(words) + entropy_model.PAYLOAD_SLACK_BITS

    def __call__(self, piece_ids: np.ndarray, t: int, logits: np.ndarray) -> np.ndarray:
        logits, rows, f = _rows(logits), len(piece_ids), self.factor
        flags, outer, _, greedy = self.buffers(rows)
        bmax, row_esc, row_cut, rest = np.empty((rows, f.n_blocks), np.float32), np.empty(rows), np.empty(rows), \
            np.empty(rows)
        lossy_kernel.decoder_tables(logits, self.allowed, self.n_escapes, self.esc, f.block, self.tau, FLAG_FLOOR,
                                    flags, outer, bmax, row_esc, row_cut, greedy, rest)
        stored = self.coder.decode(flags).astype(bool)
        recon = greedy.astype(np.int32)
        if stored.any():
            which = np.flatnonzero(stored)
            if not (rest[which] > 0).all():
                raise CorruptInput("compressed file stores a token where every token is forgiven: it is corrupt "
                                   "or forged")
            blocks = self.coder.decode(outer[which])
            if not (outer[which, blocks] > 0).all():
                raise CorruptInput("compressed file's stored token is in an empty block: it is corrupt or forged")
            inner = np.empty((len(which), f.block))
            lossy_kernel.chosen_entries(logits, which, bmax, row_esc, row_cut, greedy, self.n_escapes,
                                        blocks.astype(np.int64), f.block, inner)
            within = self.coder.decode(inner)
            if not (inner[np.arange(len(which)), within] > 0).all():
                raise CorruptInput("compressed file stores a forgiven token: it is corrupt or forged")
            self.account(flags, stored, outer[which], blocks, inner, within)
            recon[which] = f.join(blocks, within)
        else:
            self.account(flags, stored)
        check_decoded(self.spent, self.budget, recon, f.n_symbols)
        self.tokens[self.offs[piece_ids] + t] = recon
        return self.vocab.model_input(recon)


def encode(data: bytes, session: Session, settings: Settings | None, tau: float, progress=None) -> LossyResult:
    """A lossy container of `data` at threshold `tau` bits, and the reconstruction it decodes to."""
    if not tau >= 0:
        raise BpcError(f"tau must be a number of bits >= 0 (or inf), got {tau}")
    code = tau_byte(tau)
    t0 = time.perf_counter()
    job = session.prepare(data, settings)
    job = replace(job, codec=fingerprint(session, job.settings.n_gpu_layers))
    step = LossyEncoderStep(session.vocab, job.plan, job.tokens, tau_of_byte(code))
    shift = session.run(job.plan, step, job.settings.threads, progress)
    reconstruction = session.vocab.detokenize(step.out)
    header = coded_header("lossy", reconstruction, job, shift)
    blob = Container(header, step.payload(code)).to_bytes()
    return LossyResult(tau, blob, reconstruction, job.tokens, step.out, step.stored, time.perf_counter() - t0)


def decode_tokens(container: Container, session: Session, plan: Plan, threads: int, progress) -> np.ndarray:
    """The reconstruction's tokens (decompress calls this for method "lossy", after check_version)."""
    if not container.payload:
        raise CorruptInput("compressed file's lossy payload is empty (no tau)")
    step = LossyDecoderStep(session.vocab, plan, container.payload[1:], tau_of_byte(container.payload[0]))
    session.run(plan, step, threads, progress, shift=container.header.shift)
    return step.tokens
