"""Cross-entropy without coding: Σ −log2 p over tokens, per byte of input, on the fast path.

The number does not depend on any speed setting (width, lanes, threads): the text is
evaluated under the policy alone.

* ``lanes``: one lane over the whole text, sliding exactly as a codec lane does
  (llama/lanes.py StreamEvaluator), so each token has the history it would have in a
  one-lane codec run. Coded rows with W lanes pay W − 1 extra cold starts on top.
* ``chunks``: disjoint chunks of at most `context` tokens, each from BOS (balanced lengths,
  never rounded to a width), the policy of papers that cut text so.
* ``llama-perplexity``, ``lm-eval-rolling``: those tools' windows (codec/policies.py), bits per
  byte of the tokens they score, and their perplexity.

Only the batch shapes differ from the codec (prefill blocks instead of one token per call),
and with them the last bits of the logits.
"""

from __future__ import annotations

import time

import numpy as np

from bpcbench.codec import entropy_model, policies
from bpcbench.codec.compress import Stats, contexts_of
from bpcbench.codec.session import WINDOW_POLICIES, Session, Settings
from bpcbench.llama.evaluation import Plan, PrefillEvaluator, plan_chunks
from bpcbench.llama.lanes import LanePlan, StreamEvaluator, plan_lanes


def cross_entropy(data: bytes, session: Session, settings: Settings | None = None, progress=None) -> Stats:
    settings = (settings or Settings()).resolved(session.model)
    if settings.policy in WINDOW_POLICIES:
        return _windows(data, session, settings, progress)
    t0 = time.perf_counter()
    tok = session.vocab.tokenize(data)
    tokens = tok.tokens
    n = len(tokens)
    if progress is not None:
        progress.reset(total=n)
    plan = ideal_plan(n, settings)
    if settings.policy == "chunks":
        bits = _chunk_bits(session, tokens, plan, settings, progress)
        pieces = plan.lengths
    else:
        bits = _stream_bits(session, tokens, settings, progress)
        pieces = _blocks(n, settings.context)  # bootstrap pieces: consecutive windows of the stream
    offs = np.concatenate([[0], np.cumsum(pieces)]).astype(np.int64)
    piece_bits = np.add.reduceat(bits, offs[:-1]) if n else np.zeros(0)
    return Stats.measured(data, tok, pieces, piece_bits, contexts_of(plan), session.vocab, t0,
                          policy=settings.policy, context=settings.context, lanes=len(plan.lengths))


def ideal_plan(n_tokens: int, settings: Settings) -> Plan | LanePlan:
    """The segments `codec.cross_entropy` evaluates for resolved settings: one lane over the
    whole stream, or as many chunks as the text needs (never rounded to a width).

    >>> ideal_plan(10, Settings(policy="lanes", context=4, discard=1)).lengths
    (10,)
    >>> ideal_plan(10, Settings(policy="chunks", context=4)).lengths
    (4, 3, 3)
    """
    if settings.policy == "chunks":
        return plan_chunks(n_tokens, settings.context, n_tokens + 1)
    return plan_lanes(n_tokens, 1, max(1, n_tokens), settings.context, settings.discard)


def _windows(data: bytes, session: Session, settings: Settings, progress) -> Stats:
    """A tool's own windows: bits per byte of the tokens it scores, and its perplexity."""
    t0 = time.perf_counter()
    if settings.policy == "llama-perplexity":
        data = policies.perplexity_text(data)  # as `llama-perplexity -f` reads a file
    tok = session.vocab.tokenize(data)
    windows = policies.windows_for(settings.policy, tok.tokens, session.model.start_token, session.model.add_bos,
                                   settings.context)
    scored = policies.score(session.model, session.vocab, windows, settings.threads, progress)
    return Stats(input_bytes=len(data), n_tokens=scored.n_tokens, n_chunks=len(windows),
                 fallback_bytes=tok.fallback_bytes, ideal_bits=scored.total_bits, policy=settings.policy,
                 context=settings.context, lanes=len(windows), context_mean=scored.context_mean,
                 context_min=scored.context_min, context_max=scored.context_max, scored_bytes=scored.n_bytes,
                 perplexity=scored.ppl, chunk_ideal_bits=scored.window_bits.tolist(),
                 chunk_input_bytes=scored.window_bytes.tolist(), seconds=time.perf_counter() - t0)


def _blocks(n: int, size: int) -> tuple[int, ...]:
    full, rest = divmod(n, size)
    return tuple([size] * full + ([rest] if rest else []))


def _score(session: Session, logits: np.ndarray, symbols: np.ndarray) -> np.ndarray:
    weights = entropy_model.weights(logits, len(session.vocab.escape_bytes))
    return entropy_model.ideal_bits(weights, symbols)


def _stream_bits(session: Session, tokens: np.ndarray, settings: Settings, progress) -> np.ndarray:
    bits = np.zeros(len(tokens))
    if not len(tokens):
        return bits
    with StreamEvaluator(session.model, context=settings.context, threads=settings.threads) as ev:
        for first, logits in ev.blocks(session.vocab.model_input(tokens), settings.context, settings.discard):
            bits[first : first + len(logits)] = _score(session, logits, tokens[first : first + len(logits)])
            if progress is not None:
                progress.update(len(logits))
    return bits


def _chunk_bits(session: Session, tokens: np.ndarray, plan, settings: Settings, progress) -> np.ndarray:
    bits = np.zeros(len(tokens))
    offs = plan.offsets()
    if not len(tokens):
        return bits
    with PrefillEvaluator(session.model, chunk_tokens=settings.context, threads=settings.threads) as ev:
        for i in range(len(plan.lengths)):
            chunk = tokens[offs[i] : offs[i + 1]]
            for first, logits in ev.blocks(session.vocab.model_input(chunk)):
                bits[offs[i] + first : offs[i] + first + len(logits)] = _score(session, logits,
                                                                              chunk[first : first + len(logits)])
                if progress is not None:
                    progress.update(len(logits))
    return bits
