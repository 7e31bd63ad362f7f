"""The encoder's and the decoder's step: what each end does with one position's logits.

The lane evaluator (llama/lanes.py) calls a step once per position of a wave with the logits
of every lane still running there; the step names those lanes' next tokens. `EncoderStep`
looks them up in the tokens it codes; `DecoderStep` decodes them from the payload. Both build
the same tables from the same logits in the same order (entropy_model.StepTables) and count
the bits spent the same way (entropy_model.min_code_bits summed per step), so the decoder's
count is the encoder's: it bounds the payload (a forged file stops as soon as its payload is
spent) and `payload_bytes` trims the encoder's output to what that bound allows. Keeping the
two side by side is what keeps them the same. Session.encode / Session.decode run them.

With a mix mode (codec/mixing.py) the tables are the mixer's: both steps tell it which lanes
the rows are (`piece_ids`), and it learns each step's tokens once they are known, the encoder's
inside `encoder`, the decoder's right after decoding them (`learn`), with the same calls in the
same order; `mix_state` hashes the state both ends must end with.
"""

from __future__ import annotations

import numpy as np

from bpcbench.codec import entropy_model, mixing, range_coder
from bpcbench.codec.payload import payload_bytes, unpack_words
from bpcbench.codec.tokenization import Vocabulary
from bpcbench.errors import CorruptInput
from bpcbench.llama.lanes import Plan


class EncoderStep:
    """Range-codes `tokens` under `plan`, lane by lane as the evaluator steps; counts each lane's ideal bits."""

    def __init__(self, vocab: Vocabulary, plan: Plan, tokens: np.ndarray, mix: str = "none"):
        self.vocab, self.tokens, self.offs = vocab, tokens, plan.offsets()
        self.n_tokens = plan.n_tokens
        self.coder = range_coder.Encoder()
        self.tables = _tables(vocab, plan, mix)
        self.piece_bits = np.zeros(plan.n_lanes)  # ideal bits per lane
        self.spent = 0.0  # summed exactly as DecoderStep sums it

    def __call__(self, piece_ids: np.ndarray, t: int, logits: np.ndarray) -> np.ndarray:
        symbols = self.tokens[self.offs[piece_ids] + t]
        outer, within_tables, bits = self.tables.encoder(logits, symbols, piece_ids)  # learns the symbols
        self.piece_bits[piece_ids] += bits
        blocks, within = self.tables.factor.split(symbols)
        self.coder.encode(blocks, outer)
        self.coder.encode(within, within_tables)
        self.spent += entropy_model.min_code_bits(outer, blocks) + entropy_model.min_code_bits(within_tables, within)
        return self.vocab.model_input(symbols)

    def payload(self) -> bytes:
        """The container's payload for what was coded (call once, after the last step)."""
        return payload_bytes(self.coder.finish(), self.spent, self.n_tokens)

    def mix_state(self) -> str:
        return self.tables.digest()


class DecoderStep:
    """Decodes `plan`'s tokens from a model payload, refusing one that is spent before its tokens are."""

    def __init__(self, vocab: Vocabulary, plan: Plan, model_payload: bytes, mix: str = "none"):
        self.vocab, self.offs = vocab, plan.offsets()
        self.tokens = np.zeros(plan.n_tokens, dtype=np.int32)
        self.coder = range_coder.Decoder(unpack_words(model_payload))
        self.tables = _tables(vocab, plan, mix)
        self.budget = 8 * len(model_payload) + entropy_model.PAYLOAD_SLACK_BITS
        self.spent = 0.0  # summed exactly as EncoderStep sums it

    def __call__(self, piece_ids: np.ndarray, t: int, logits: np.ndarray) -> np.ndarray:
        outer = self.tables.block_table(logits, piece_ids)
        blocks = self.coder.decode(outer)
        within_tables = self.tables.entries(blocks)
        within = self.coder.decode(within_tables)
        self.spent += entropy_model.min_code_bits(outer, blocks) + entropy_model.min_code_bits(within_tables, within)
        factor = self.tables.factor
        symbols = factor.join(blocks, within)
        check_decoded(self.spent, self.budget, symbols, factor.n_symbols)
        self.tokens[self.offs[piece_ids] + t] = symbols
        self.tables.learn(symbols)  # what EncoderStep's tables.encoder learnt, from the same symbols
        return self.vocab.model_input(symbols)

    def mix_state(self) -> str:
        return self.tables.digest()


def check_decoded(spent: float, budget: float, symbols: np.ndarray, n_symbols: int) -> None:
    """Refuse a step whose payload is spent before its tokens are, or that decoded a symbol outside
    the alphabet: a decoder's checks after each step (lossless here, lossy in codec/lossy.py)."""
    if spent > budget:
        raise CorruptInput("compressed file's payload is spent before its tokens are: the file is corrupt "
                           "or forged")
    if symbols.max() >= n_symbols:
        raise CorruptInput("decoded a symbol outside the alphabet: the file does not match this model/build")


def _tables(vocab: Vocabulary, plan: Plan, mix: str):
    """Both steps' tables: the LLM's (entropy_model.StepTables), with `mix` mixed in, sized by the plan."""
    return mixing.step_tables(mix, vocab.n_symbols, len(vocab.escape_bytes), plan.width, max(plan.lengths, default=1))
