"""Named ideal context policies: which tokens the model sees when it scores each token.

A policy turns a token array into Windows; `score` evaluates every window as one sequence
from position 0 (nothing but the window's own tokens: no width, no batch of other
windows) and prices each target with the coder's distribution (entropy_model: tokens plus
escape symbols). Ideal rows only: nothing is coded, so a policy may score some tokens
twice or not at all (llama-perplexity scores only the second half of each window).

* ``llama-perplexity``: llama.cpp's `llama-perplexity -f FILE -c N` rule (PPL comparable).
* ``lm-eval-rolling``: lm-evaluation-harness `loglikelihood_rolling` (its bits_per_byte rule).

Disjoint chunks are not a policy here: they are a layout of the coder's plan (llama/lanes.py
plan_chunks), measured ideally on the coder's own plan by codec/cross_entropy.py, so the chunks
of an ideal row and of a coded row are one rule.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from bpcbench.codec import entropy_model, kernel
from bpcbench.llama.evaluation import PrefillEvaluator



@dataclass(frozen=True)
class Window:
    """`inputs` are fed as one sequence from position 0; rows first_row … first_row+len(targets)−1
    of its logits predict `targets` in order (row r has seen inputs[0..r]: r + 1 tokens)."""

    inputs: np.ndarray  # int32
    first_row: int
    targets: np.ndarray  # int32

    def __post_init__(self):
        if self.first_row < 0 or self.first_row + len(self.targets) > len(self.inputs):
            raise ValueError(f"rows {self.first_row}..+{len(self.targets)} outside {len(self.inputs)} inputs")

    @property
    def context_tokens(self) -> np.ndarray:
        """Tokens the model has seen (its first input included) when it predicts each target."""
        return np.arange(self.first_row + 1, self.first_row + len(self.targets) + 1)


def _window(inputs, first_row: int, targets) -> Window:
    return Window(np.asarray(inputs, dtype=np.int32), int(first_row), np.asarray(targets, dtype=np.int32))


def llama_perplexity(tokens: np.ndarray, start_token: int, add_bos: bool, n_ctx: int) -> list[Window]:
    """llama.cpp `llama-perplexity -f FILE -c n_ctx` (tools/perplexity/perplexity.cpp, `perplexity()`,
    read at commit 050fc7f of ggml-org/llama.cpp).

    * Text: `-f` reads the file and drops ONE trailing '\\n' (common/arg.cpp, "-f"; see
      `perplexity_text`); escapes are not processed (main() sets params.escape = false).
    * Tokens: `common_tokenize(ctx, params.prompt, true)`: add_special true, parse_special false
      (its default), so BOS is put before the WHOLE text when the vocabulary's add_bos is set
      (Gemma: yes; SmolLM2: no). `tokens` here is the text alone (no BOS); this adds it.
    * Windows: n_chunk = n_all // n_ctx of n_ctx tokens each, n_all counting that BOS; the tail
      is never scored. Token 0 of each window is replaced by BOS only when add_bos ("add BOS
      token for the first batch of each chunk"): without add_bos a window starts mid-text.
    * Scored: first = n_ctx/2; logits of positions first … n_ctx−2 predict window tokens
      first+1 … n_ctx−1 (`process_logits(…, n_ctx − 1 − first)`): 255 tokens for n_ctx 512, each
      with first+1 … n_ctx−1 tokens of context. The last token is fed but its logits unused;
      here it is not fed.
    * Fewer than 2·n_ctx tokens: the tool refuses ("you need at least 2*n_ctx tokens …") and
      prints no PPL; so does this (ValueError), even where one window would fit.
    * PPL = exp(Σ −ln p / count) with p the plain softmax over the vocabulary (`Scored.ppl`).
    """
    if n_ctx < 3:
        raise ValueError("llama-perplexity scores nothing with n_ctx < 3")
    text = np.asarray(tokens, dtype=np.int32)
    stream = np.concatenate([[start_token], text]).astype(np.int32) if add_bos else text
    if len(stream) < 2 * n_ctx:
        raise ValueError(f"llama-perplexity needs at least {2 * n_ctx} tokens for a context of {n_ctx}; "
                         f"the text has {len(stream)}")
    first = n_ctx // 2
    out = []
    for i in range(len(stream) // n_ctx):
        w = stream[i * n_ctx : (i + 1) * n_ctx].copy()
        if add_bos:
            w[0] = start_token
        out.append(_window(w[:-1], first, w[first + 1 :]))
    return out


def perplexity_text(data: bytes) -> bytes:
    """The bytes `llama-perplexity -f FILE` tokenizes: the file less one trailing b'\\n'."""
    return data[:-1] if data.endswith(b"\n") else data


def lm_eval_rolling(tokens: np.ndarray, prefix_token: int, max_length: int) -> list[Window]:
    """lm-evaluation-harness `loglikelihood_rolling` (EleutherAI/lm-evaluation-harness).

    lm_eval/utils.py `get_rolling_token_windows(token_list, prefix_token, max_seq_len,
    context_len=1)` then `make_disjoint_window`, as lm_eval/models/huggingface.py
    `HFLM.loglikelihood_rolling` calls them (max_seq_len = self.max_length), and
    `_loglikelihood_tokens`, which feeds (context + continuation)[-(max_length+1):][:-1] and
    scores its last len(continuation) logits. So:

    * window 1: inputs [prefix] + tokens[:L−1], every one of tokens[:L] scored, L = min(max_length, n);
    * then windows ending at e = predicted + k, k = min(n − predicted, max_length): inputs
      tokens[e−max_length−1 : e−1] (max_length tokens), the last k rows score tokens[e−k : e].
      A full window's first target sees 1 token (the previous one), not the prefix token.

    prefix_token: HFLM.prefix_token_id = custom prefix, else the tokenizer's BOS, else EOS (the
    same rule as Model.start_token). HFLM.tok_encode adds no BOS to the text (add_bos_token
    False) except for the Gemma family, where HFLM forces add_bos_token=True and the text's own
    BOS becomes the first scored target: pass np.concatenate([[bos], tokens]) to mimic that.
    bits_per_byte (lm_eval/api/metrics.py) = −Σ loglikelihood / Σ bytes / ln 2, bytes =
    len(doc.encode("utf-8")) (lm_eval/api/task.py count_bytes): Scored.total_bits over the
    document's UTF-8 bytes.
    """
    if max_length < 1:
        raise ValueError("max_length must be at least 1")
    tokens = np.asarray(tokens, dtype=np.int32)
    n = len(tokens)
    if not n:
        return []
    first = min(max_length, n)
    out = [_window(np.concatenate([[prefix_token], tokens[: first - 1]]), 0, tokens[:first])]
    predicted = first
    while predicted < n:
        k = min(n - predicted, max_length)
        end = predicted + k
        out.append(_window(tokens[end - max_length - 1 : end - 1], max_length - k, tokens[end - k : end]))
        predicted = end
    return out


@dataclass(frozen=True)
class Policy:
    name: str
    description: str
    build: Callable[[np.ndarray, int, bool, int], list[Window]]  # (tokens, start_token, add_bos, context)


POLICIES = {
    p.name: p
    for p in (
        Policy("llama-perplexity", "llama.cpp llama-perplexity: windows of `context` tokens (BOS first where "
               "the model adds one), only the second half of each window scored; PPL as the tool prints it",
               llama_perplexity),
        Policy("lm-eval-rolling", "lm-evaluation-harness loglikelihood_rolling: disjoint windows of `context` "
               "tokens, the first after the prefix token (BOS), each later one after the previous token",
               lambda t, s, bos, c: lm_eval_rolling(t, s, c)),
    )
}


def windows_for(policy: str, tokens: np.ndarray, start_token: int, add_bos: bool, context: int) -> list[Window]:
    """The windows of a named policy (POLICIES) over a text's tokens (no BOS in `tokens`)."""
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r} (known: {', '.join(POLICIES)})")
    return POLICIES[policy].build(tokens, start_token, add_bos, context)


@dataclass(frozen=True)
class Scored:
    """What a policy's windows cost: per window (for bootstrap intervals) and in all."""

    window_bits: np.ndarray  # Σ −log2 p per window, the coder's distribution (tokens + escape symbols)
    window_tokens: np.ndarray  # tokens scored per window
    window_bytes: np.ndarray  # bytes those tokens spell
    nll: float  # Σ −ln p over scored tokens, p the model's plain softmax over its vocabulary
    context_mean: float  # tokens seen (first input included) per scored token
    context_min: int
    context_max: int

    @property
    def total_bits(self) -> float:
        return float(self.window_bits.sum())

    @property
    def n_tokens(self) -> int:
        return int(self.window_tokens.sum())

    @property
    def n_bytes(self) -> int:
        return int(self.window_bytes.sum())

    @property
    def ppl(self) -> float:
        """exp(mean −ln p): llama-perplexity's "Final estimate: PPL" for its policy."""
        return float(np.exp(self.nll / self.n_tokens)) if self.n_tokens else float("nan")


def context_stats(windows: list[Window]) -> tuple[float, int, int]:
    """(mean, min, max) tokens seen per scored token."""
    seen = np.concatenate([w.context_tokens for w in windows] or [np.zeros(0, dtype=np.int64)])
    if not len(seen):
        return float("nan"), 0, 0
    return float(seen.mean()), int(seen.min()), int(seen.max())


def _price(logits: np.ndarray, symbols: np.ndarray, n_escapes: int) -> tuple[float, float]:
    """(coder bits, plain natural-log NLL) of symbols under logits rows (entropy_model.ideal).

    The plain NLL leaves out the escape symbols' share (entropy_model.ESCAPE_MASS), which
    would add −ln(1 − 2⁻¹⁶) ≈ 1.5e-5 nats a token and move a printed PPL in its 4th decimal.
    An escape symbol (never produced by llama.cpp's own tokenizer) is priced as the coder does.
    """
    bits, nats = entropy_model.ideal(logits, symbols, n_escapes)
    return float(bits.sum()), float(nats.sum())


def score(model, vocab, windows: list[Window], threads: int, progress=None) -> Scored:
    """Evaluate each window alone (one sequence from position 0) and price its targets."""
    bits = np.zeros(len(windows))
    nll = 0.0
    n_escapes = len(vocab.escape_bytes)
    if progress is not None:
        progress.reset(total=sum(len(w.targets) for w in windows))
    kernel.set_threads(threads)
    if windows:
        longest = max(w.first_row + len(w.targets) for w in windows)
        with PrefillEvaluator(model, context=longest, threads=threads) as ev:
            for i, w in enumerate(windows):
                for t, logits in ev.window(vocab.model_input(w.inputs), w.first_row, len(w.targets)):
                    b, e = _price(logits, w.targets[t : t + len(logits)], n_escapes)
                    bits[i] += b
                    nll += e
                    if progress is not None:
                        progress.update(len(logits))
    mean, lo, hi = context_stats(windows)
    return Scored(bits, np.array([len(w.targets) for w in windows], dtype=np.int64),
                  np.array([len(vocab.detokenize(w.targets)) for w in windows], dtype=np.int64),
                  nll, mean, lo, hi)
