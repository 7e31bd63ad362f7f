"""Cross-entropy without coding: Σ −log2 p over tokens, per byte of input, on the fast path.

The number does not depend on any speed setting (width, lanes, threads): the text is
evaluated under the policy alone, as a plan of the coder's own kind (llama/lanes.py) with
the width taken out (`ideal_plan`), each lane prefilled on its own (StreamEvaluator):

* ``lanes``: one lane over the whole text, sliding exactly as a codec lane does, so each token
  has the history it would have in a one-lane codec run. Coded rows with W lanes pay W − 1
  extra cold starts on top.
* ``chunks``: the codec's own chunks, disjoint lanes of at most `context` tokens, each from
  BOS, the policy of papers that cut text so.
* ``llama-perplexity``, ``lm-eval-rolling``: those tools' windows (codec/policies.py), bits per
  byte of the tokens they score, and their perplexity.

Only the batch shapes differ from the codec (prefill blocks instead of one token per call),
and with them the last bits of the logits. The bootstrap's pieces are the plan's lanes cut
into blocks of `context` tokens (a chunk is one piece; the lanes stream is many).
"""

from __future__ import annotations

import time

import numpy as np

from bpcbench.codec import entropy_model, kernel, mixing, policies
from bpcbench.codec.compress import Stats
from bpcbench.codec.session import WINDOW_POLICIES, Session, Settings
from bpcbench.llama.lanes import Plan, StreamEvaluator, make_plan


def cross_entropy(data: bytes, session: Session, settings: Settings | None = None, progress=None) -> Stats:
    settings = (settings or Settings()).resolved(session.model)
    if settings.policy in WINDOW_POLICIES:
        return _windows(data, session, settings, progress)
    t0 = time.perf_counter()
    tok = session.vocab.tokenize(data)
    tokens = tok.tokens
    if progress is not None:
        progress.reset(total=len(tokens))
    plan = ideal_plan(len(tokens), settings)
    bits = _plan_bits(session, tokens, plan, settings.threads, progress, settings.mix)
    pieces = [b for n in plan.lengths for b in _blocks(n, plan.context)]
    offs = np.concatenate([[0], np.cumsum(pieces)]).astype(np.int64)
    piece_bits = np.add.reduceat(bits, offs[:-1]) if len(tokens) else np.zeros(0)
    return Stats.measured(data, tok, pieces, piece_bits, plan.context_lengths(), session.vocab, t0,
                          policy=settings.policy, context=settings.context, lanes=plan.n_lanes)


def ideal_plan(n_tokens: int, settings: Settings) -> Plan:
    """The plan `cross_entropy` evaluates for resolved settings: the coder's, but one lane
    wide with lanes as long as the policy allows (one lane over the whole stream, or as many
    chunks as the text needs).

    >>> ideal_plan(10, Settings(policy="lanes", context=4, discard=1)).lengths
    (10,)
    >>> ideal_plan(10, Settings(policy="chunks", context=4)).lengths
    (4, 3, 3)
    """
    return make_plan(settings.policy, n_tokens, width=1, min_lane_tokens=max(1, n_tokens), context=settings.context,
                     discard=settings.discard)


def _windows(data: bytes, session: Session, settings: Settings, progress) -> Stats:
    """A tool's own windows: bits per byte of the tokens it scores, and its perplexity."""
    t0 = time.perf_counter()
    if settings.policy == "llama-perplexity":
        data = policies.perplexity_text(data)  # as `llama-perplexity -f` reads a file
    tok = session.vocab.tokenize(data)
    windows = policies.windows_for(settings.policy, tok.tokens, session.model.start_token, session.model.add_bos,
                                   settings.context)
    scored = policies.score(session.model, session.vocab, windows, settings.threads, progress)
    return Stats(input_bytes=len(data), n_tokens=scored.n_tokens, n_pieces=len(windows),
                 fallback_bytes=tok.fallback_bytes, ideal_bits=scored.total_bits, policy=settings.policy,
                 context=settings.context, lanes=len(windows), context_mean=scored.context_mean,
                 context_min=scored.context_min, context_max=scored.context_max, scored_bytes=scored.n_bytes,
                 perplexity=scored.ppl, piece_bits=scored.window_bits.tolist(),
                 piece_bytes=scored.window_bytes.tolist(), seconds=time.perf_counter() - t0)


def _blocks(n: int, size: int) -> tuple[int, ...]:
    full, rest = divmod(n, size)
    return tuple([size] * full + ([rest] if rest else []))


def _score(session: Session, logits: np.ndarray, symbols: np.ndarray) -> np.ndarray:
    return entropy_model.ideal(logits, symbols, len(session.vocab.escape_bytes))[0]


def _plan_bits(session: Session, tokens: np.ndarray, plan: Plan, threads: int, progress,
               mix: str = "none") -> np.ndarray:
    """Ideal bits of every token, each lane of the plan evaluated alone (and mixed, with `mix`: one lane
    after another, so a plan of one lane mixes exactly as the coder does; over several lanes the coder
    learns them step by step, interleaved, and its mixed bits differ a little: codec/mixing.py)."""
    bits = np.zeros(len(tokens))
    if not len(tokens):
        return bits
    offs = plan.offsets()
    kernel.set_threads(threads)
    mixed = None if mix == "none" else mixing.step_tables(mix, session.vocab.n_symbols,
                                                          len(session.vocab.escape_bytes), 1, max(plan.lengths))
    with StreamEvaluator(session.model, context=plan.context, discard=plan.discard, threads=threads) as ev:
        for i in range(plan.n_lanes):
            lane = tokens[offs[i] : offs[i + 1]]
            for first, logits in ev.blocks(session.vocab.model_input(lane)):
                symbols = lane[first : first + len(logits)]
                bits[offs[i] + first : offs[i] + first + len(logits)] = (
                    _score(session, logits, symbols) if mixed is None else mixed.score(logits, symbols, i))
                if progress is not None:
                    progress.update(len(logits))
    return bits
