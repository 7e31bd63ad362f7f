"""Base and level side by side: bits under both, KL divergence and top-token agreement, per token.

Both models are fed the same token stream under the same plan as the codec's ideal path
(`codec.cross_entropy` ideal_plan), each through its own `Evaluator` (llama/lanes.py
StreamEvaluator), lane by lane:

* ``lanes`` (the default): one lane over the whole text, a KV window of `context` tokens (BOS
  included) that drops the `discard` oldest tokens after BOS when full.
* ``chunks``: disjoint lanes of at most `context` tokens, each from BOS, as many as the text
  needs; none slides.

Both windows slide at the same token positions, so the two models' blocks have the same
lengths and are scored pair by pair.

Their logits are scored block by block as they come out of llama.cpp, so no store of base
logits is needed: memory does not grow with corpus × vocabulary, only by a few numbers per
token for the median and percentiles.

The bits are the coder's (entropy_model: tokens, then escapes), exactly what `cross_entropy`
sums. The other statistics use the
names and definitions of llama.cpp's `perplexity --kl-divergence`:

* KLD per token: Σ_i p_base(i) · (ln p_base(i) − ln p_level(i)), in nats, over the whole
  vocabulary. (llama.cpp stores base log-probabilities in 16 bits and skips terms with
  p_base < e^-16; we skip nothing: weights within ~1e-7 relative, sums in float64, the KLD
  within 1e-7 nats of float64 numpy, see codec/kernel.py.)
* KLD mean ± uncertainty (`stats.mean_and_uncertainty`); median (the mean of the two middle
  values for an even count); p99 by linear interpolation at 0.99·(n − 1).
* "Same top p": the share of tokens where both models' most likely token is the same.
* Δp RMS: root mean square of p_level(token) − p_base(token) for the actual next token.

Unlike llama-perplexity, which scores only the second half of each context window, every
token is scored, exactly as the bits-per-byte figure counts them; `history` says how many
tokens of context (BOS included) each had.

>>> logits = np.array([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=np.float32)
>>> bits_b, bits_q, kld, same = block_scores(logits, logits.copy(), np.array([0, 1]), n_escapes=0)
>>> bits_b.round(3).tolist(), bool(np.all(bits_q == bits_b)), kld.tolist(), same.tolist()
([0.346, 0.796], True, [0.0, 0.0], [True, True])
>>> s = summarise([Scores(2, bits_b, bits_b + 1, np.array([0.0, 0.2]), np.array([True, False]))])
>>> round(s["delta_bits_per_byte"], 9), s["kld_median"], s["top1_agreement_percent"], s["delta_significant"]
(1.0, 0.1, 50.0, True)
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from bpcbench import corpora, stats
from bpcbench.codec import entropy_model, mixing
from bpcbench.codec.session import Settings
from bpcbench.codec.tokenization import Tokenized, Vocabulary
from bpcbench.llama.binding import Closeable, Model
from bpcbench.llama.lanes import Plan, StreamEvaluator

# the name of all texts pooled, beside each text's own: the corpora's implicit group of every corpus
POOLED = corpora.ALL_GROUP


class Evaluator(Closeable):
    """One model evaluated under resolved settings: `blocks(inputs)` of one lane of the plan
    yields (first position, logits rows), row i predicting lane token first + i."""

    def __init__(self, model: Model, settings: Settings):
        self.model, self.settings = model, settings
        self._ev = StreamEvaluator(model, context=settings.context, discard=settings.discard or 0,
                                   threads=settings.threads)

    def blocks(self, inputs: np.ndarray):
        return self._ev.blocks(inputs)

    def close(self) -> None:
        self._ev.close()


@dataclass
class Text:
    """One corpus (prefix) as both models see it: the codec's tokens and the ideal path's plan."""

    name: str
    sha256: str
    data: bytes
    tokenized: Tokenized
    plan: Plan

    @property
    def tokens(self) -> np.ndarray:
        return self.tokenized.tokens


def history(texts: list[Text]) -> dict:
    """Cold starts (segments that start from BOS) and the tokens of history, BOS included, that
    each scored token had, pooled over `texts`."""
    ctx = np.concatenate([t.plan.context_lengths() for t in texts] or [np.zeros(0, dtype=np.int64)])
    return {"lanes": sum(t.plan.n_lanes for t in texts),
            "context_mean": float(ctx.mean()) if len(ctx) else math.nan,
            "context_min": int(ctx.min()) if len(ctx) else None,
            "context_max": int(ctx.max()) if len(ctx) else None}


@dataclass
class Scores:
    """Per token: ideal bits under both models, KLD(base || level) in nats, same top token."""

    input_bytes: int
    bits_base: np.ndarray
    bits: np.ndarray
    kld: np.ndarray
    same_top: np.ndarray
    seconds_base: float = 0.0  # llama_decode time of each model
    seconds: float = 0.0
    # with a mix mode (LadderConfig.mix): ideal bits of each model with it mixed in, on the same logits
    mixed_base: np.ndarray | None = None
    mixed: np.ndarray | None = None

    @property
    def n_tokens(self) -> int:
        return len(self.bits_base)

    def base_alone(self) -> "Scores":
        """The base scored against itself: its own bits, no divergence."""
        return Scores(self.input_bytes, self.bits_base, self.bits_base, np.zeros_like(self.kld),
                      np.ones_like(self.same_top), self.seconds_base, self.seconds_base, self.mixed_base,
                      self.mixed_base)


def block_scores(lb: np.ndarray, lq: np.ndarray | None, symbols: np.ndarray, n_escapes: int):
    """Bits (base, level), KLD and same-top for one block of logit rows (entropy_model.pair_scores:
    one compiled pass per row, nothing the size of the block in float64).

    Without a level (lq None) the level's numbers are the base's: its bits, no divergence.
    """
    if lq is not None:
        return entropy_model.pair_scores(lb, lq, symbols, n_escapes)
    bits_b = entropy_model.ideal(lb, symbols, n_escapes)[0]
    return bits_b, bits_b.copy(), np.zeros(len(lb)), np.ones(len(lb), dtype=bool)


def _timed_next(gen):
    t0 = time.perf_counter()
    item = next(gen, None)
    return item, time.perf_counter() - t0


def _aligned(item, item_q) -> None:
    """Both models' blocks start and end at the same positions (they slide at the same tokens)."""
    if (item is None) != (item_q is None) or (
            item is not None and (item[0] != item_q[0] or len(item[1]) != len(item_q[1]))):
        raise RuntimeError("base and level produced different blocks")


def _paired_blocks(base_ev: Evaluator, level_ev: Evaluator | None, inputs: np.ndarray,
                   pool: ThreadPoolExecutor | None, out: Scores):
    """Yield (first position, base logits, level logits or None) for one segment, timing each model."""
    gen_b = base_ev.blocks(inputs)
    gen_q = level_ev.blocks(inputs) if level_ev is not None else None
    while True:
        fut = pool.submit(_timed_next, gen_q) if (pool is not None and gen_q is not None) else None
        item, dt = _timed_next(gen_b)
        out.seconds_base += dt
        lq = None
        if gen_q is not None:
            item_q, dt_q = fut.result() if fut is not None else _timed_next(gen_q)
            out.seconds += dt_q
            _aligned(item, item_q)
            lq = item_q[1] if item_q is not None else None
        if item is None:
            return
        yield item[0], item[1], lq


class _Mixed:
    """Ideal bits of one model's logits with a mix mode mixed in, lane by lane of one text's plan, as
    cross_entropy's ideal path mixes them (codec/mixing.py: the match model starts afresh with each lane,
    what is learned carries on from lane to lane)."""

    def __init__(self, mix: str, vocab: Vocabulary, plan: Plan, out: np.ndarray):
        self.tables = mixing.step_tables(mix, vocab.n_symbols, len(vocab.escape_bytes), 1, max(plan.lengths))
        self.out = out

    def score(self, logits: np.ndarray, symbols: np.ndarray, lane: int, sl: slice) -> None:
        self.out[sl] = self.tables.score(logits, symbols, lane)


def score_side_by_side(base_ev: Evaluator, level_ev: Evaluator | None, text: Text,
                       vocab: Vocabulary, progress=None, pool: ThreadPoolExecutor | None = None,
                       mix: str = "none", mix_base: bool = True) -> Scores:
    """Run both models over the lanes of the text's plan side by side and score every token.

    With a pool, the level decodes in a worker thread while the base decodes in this one
    (llama_decode releases the GIL), so two single-threaded models use two cores without
    OpenMP barriers between them; each decode is timed on its own. Without a level, the
    base is scored alone. With a mix mode, each model's logits are also scored with it mixed in
    (`mixed`, and `mixed_base` unless mix_base is False: the base's are the same for every level).
    """
    n = text.plan.n_tokens
    out = Scores(len(text.data), np.empty(n), np.empty(n), np.zeros(n), np.ones(n, dtype=bool))
    mixers = []  # (mixer, which logits: 0 the base's, 1 the level's)
    if mix != "none":
        if mix_base:
            out.mixed_base = np.empty(n)
        out.mixed = out.mixed_base if level_ev is None else np.empty(n)
        for side, bits in enumerate((out.mixed_base, None if level_ev is None else out.mixed)):
            if bits is not None and n:
                mixers.append((_Mixed(mix, vocab, text.plan, bits), side))
    offs = text.plan.offsets()
    n_escapes = len(vocab.escape_bytes)
    for i in range(len(text.plan.lengths)):
        segment = text.tokens[offs[i] : offs[i + 1]]
        for first, lb, lq in _paired_blocks(base_ev, level_ev, vocab.model_input(segment), pool, out):
            sl = slice(offs[i] + first, offs[i] + first + len(lb))
            symbols = segment[first : first + len(lb)]
            out.bits_base[sl], out.bits[sl], out.kld[sl], out.same_top[sl] = block_scores(lb, lq, symbols, n_escapes)
            for mixer, side in mixers:
                mixer.score(lq if side else lb, symbols, i, sl)
            if progress is not None:
                progress(len(lb))
    return out


def _rate(count: int, seconds: float) -> float:
    return count / seconds if seconds else math.nan


def summarise(parts: list[Scores]) -> dict:
    """Pooled statistics over several texts (or one)."""
    nbytes = sum(p.input_bytes for p in parts)
    bits_b = np.concatenate([p.bits_base for p in parts])
    bits = np.concatenate([p.bits for p in parts])
    kld = np.concatenate([p.kld for p in parts])
    same = np.concatenate([p.same_top for p in parts])
    n = len(bits)
    delta = stats.bits_per_byte(bits.sum() - bits_b.sum(), nbytes)
    _, d_unc = stats.mean_and_uncertainty(bits - bits_b)
    delta_unc = stats.bits_per_byte(d_unc * n, nbytes)  # per token -> per byte of the same text
    kld_mean, kld_unc = stats.mean_and_uncertainty(kld)
    top = float(same.mean()) if n else math.nan
    dp = np.exp2(-bits) - np.exp2(-bits_b)
    return {
        "input_bytes": nbytes,
        "n_tokens": n,
        "bits_per_byte": stats.bits_per_byte(bits.sum(), nbytes),
        "base_bits_per_byte": stats.bits_per_byte(bits_b.sum(), nbytes),
        "delta_bits_per_byte": delta,
        "delta_bits_per_byte_uncertainty": delta_unc,
        # tokens treated as independent, as llama-perplexity does, so the interval is optimistic
        "delta_significant": stats.significant(delta, stats.Z_95 * delta_unc),
        "kld_mean": kld_mean,
        "kld_mean_uncertainty": kld_unc,
        "kld_median": float(np.median(kld)) if n else math.nan,
        "kld_p99": float(np.percentile(kld, 99)) if n else math.nan,
        "kld_max": float(kld.max()) if n else math.nan,
        "top1_agreement_percent": 100 * top,
        "top1_agreement_uncertainty_percent": 100 * math.sqrt(top * (1 - top) / (n - 1)) if n > 1 else 0.0,
        "delta_p_rms_percent": 100 * math.sqrt(float((dp * dp).mean())) if n else math.nan,
        "tokens_per_second": _rate(n, sum(p.seconds for p in parts)),
        "base_tokens_per_second": _rate(n, sum(p.seconds_base for p in parts)),
        **_mix_delta(parts, bits, nbytes),
    }


def _mix_delta(parts: list[Scores], bits: np.ndarray, nbytes: int) -> dict:
    """The gain from mixing: mixed minus plain ideal bits of the level, per byte; nothing when not mixed."""
    if not parts or any(p.mixed is None for p in parts):
        return {}
    mixed = np.concatenate([p.mixed for p in parts])
    return {"mix_delta_bits_per_byte": stats.bits_per_byte(mixed.sum() - bits.sum(), nbytes)}
