"""Lossy coding: store only the tokens the model would not have guessed, rebuild the rest greedily.

For a threshold tau (bits), the encoder walks the tokens with the lossless codec's lanes and
window. At each position it asks the model, fed the *reconstruction* so far (all the decoder
will have), for its greedy token. If the true token is that token, or costs at most tau bits,
nothing but a "keep" flag is stored and the reconstruction takes the greedy token; otherwise
the flag and the true token are coded, the token under the model's distribution with the
greedy token excluded (it cannot be the answer). Flags are coded with an adaptive binary model
(counts shared by both ends). tau = 0 stores every token the model would not have guessed:
the reconstruction is the original. tau = inf stores flags only: the reconstruction is what
the model writes from BOS by itself.

The container is format 3 with method "lossy"; its "original" is the reconstruction, which
`bpcbench decompress` rebuilds and checks against the recorded hash like any other file.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from bpcbench.codec import entropy_model, range_coder
from bpcbench.codec.container import Container, coded_header
from bpcbench.codec.payload import payload_bytes, unpack_words
from bpcbench.codec.session import Session, Settings
from bpcbench.errors import BpcError, CorruptInput
from bpcbench.llama.lanes import Plan


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


class _Step:
    """What both ends compute at each step, in the same order: greedy tokens, flag table, costs."""

    def __init__(self, session: Session):
        self.vocab = session.vocab
        self.n_escapes = len(session.vocab.escape_bytes)
        self.factor = entropy_model.TwoLevel.for_alphabet(session.vocab.n_symbols)
        # a greedy token must spell at least one byte (control tokens spell none), so that
        # the reconstruction has at least as many bytes as tokens, like any decoded file
        self.spells_nothing = np.array([len(p) == 0 for p in session.vocab.pieces])
        self.counts = np.array([1.0, 1.0])  # keep, store: the adaptive flag model
        self.spent = 0.0  # entropy_model.min_code_bits summed, as the lossless codec does

    def weights_and_greedy(self, logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        w = entropy_model.weights(logits, self.n_escapes)
        return w, np.where(self.spells_nothing, -1.0, w).argmax(axis=1).astype(np.int32)

    def flag_table(self, rows: int) -> np.ndarray:
        return np.tile(self.counts, (rows, 1))

    def token_tables(self, w: np.ndarray, greedy: np.ndarray):
        """The block table and inner-table function with each row's greedy token removed."""
        w = w.copy()
        w[np.arange(len(greedy)), greedy] = 0.0
        return self.factor.tables(w)

    def account(self, flag_table: np.ndarray, stored: np.ndarray, outer=None, blocks=None, inner=None,
                within=None) -> None:
        cost = entropy_model.min_code_bits(flag_table, stored.astype(np.int64))
        if outer is not None:
            cost += entropy_model.min_code_bits(outer, blocks) + entropy_model.min_code_bits(inner, within)
        self.spent += cost
        self.counts += (len(stored) - int(stored.sum()), int(stored.sum()))


def encode(data: bytes, session: Session, settings: Settings | None, tau: float, progress=None) -> LossyResult:
    """A lossy container of `data` at threshold `tau` bits, and the reconstruction it decodes to."""
    if not tau >= 0:
        raise BpcError(f"tau must be a number of bits >= 0 (or inf), got {tau}")
    t0 = time.perf_counter()
    job = session.prepare(data, settings)
    plan = job.plan
    original, offs = job.tokens, plan.offsets()
    out = np.zeros_like(original)
    enc, s = range_coder.Encoder(), _Step(session)

    def step(ids: np.ndarray, t: int, logits: np.ndarray) -> np.ndarray:
        truth = original[offs[ids] + t]
        w, greedy = s.weights_and_greedy(logits)
        stored = (truth != greedy) & (entropy_model.ideal_bits(w, truth) > tau)
        ft = s.flag_table(len(ids))
        enc.encode(stored.astype(np.int32), ft)
        recon = np.where(stored, truth, greedy).astype(np.int32)
        if stored.any():
            outer, inner = s.token_tables(w[stored], greedy[stored])
            blocks, within = s.factor.split(truth[stored])
            inner_tables = inner(blocks)
            enc.encode(blocks, outer)
            enc.encode(within, inner_tables)
            s.account(ft, stored, outer, blocks, inner_tables, within)
        else:
            s.account(ft, stored)
        out[offs[ids] + t] = recon
        return s.vocab.model_input(recon)

    shift = session.run(plan, step, job.settings.threads, progress)
    reconstruction = s.vocab.detokenize(out)
    header = coded_header("lossy", reconstruction, job, shift)
    blob = Container(header, payload_bytes(enc.finish(), s.spent, plan.n_tokens)).to_bytes()
    return LossyResult(tau, blob, reconstruction, original, out, int(s.counts[1] - 1), time.perf_counter() - t0)


def decode_tokens(container: Container, session: Session, plan: Plan, threads: int, progress) -> np.ndarray:
    """The reconstruction's tokens (decompress calls this for method "lossy")."""
    tokens = np.zeros(plan.n_tokens, dtype=np.int32)
    offs = plan.offsets()
    dec, s = range_coder.Decoder(unpack_words(container.payload)), _Step(session)
    budget = 8 * len(container.payload) + entropy_model.PAYLOAD_SLACK_BITS

    def step(ids: np.ndarray, t: int, logits: np.ndarray) -> np.ndarray:
        w, greedy = s.weights_and_greedy(logits)
        ft = s.flag_table(len(ids))
        stored = dec.decode(ft).astype(bool)
        recon = greedy.copy()
        if stored.any():
            outer, inner = s.token_tables(w[stored], greedy[stored])
            blocks = dec.decode(outer)
            inner_tables = inner(blocks)
            within = dec.decode(inner_tables)
            s.account(ft, stored, outer, blocks, inner_tables, within)
            recon[stored] = s.factor.join(blocks, within)
        else:
            s.account(ft, stored)
        if s.spent > budget:
            raise CorruptInput("compressed file's payload is spent before its tokens are: the file is corrupt "
                               "or forged")
        if recon.max() >= s.factor.n_symbols:
            raise CorruptInput("decoded a symbol outside the alphabet: the file does not match this model/build")
        tokens[offs[ids] + t] = recon
        return s.vocab.model_input(recon)

    session.run(plan, step, threads, progress, shift=container.header.shift)
    return tokens
