"""The coder's one plan and one evaluator: lanes, contiguous segments of the token stream.

A `Plan` is (lane lengths, context, discard, width). Every lane starts from the start token
(BOS) and keeps its KV cache across its whole segment; when a lane's cache holds `context`
tokens (BOS included) it slides: the `discard` oldest tokens after BOS are dropped and the rest
move back, so every token is predicted from between context − discard and context tokens of
history (fewer at the start of a lane, its cold start). Lanes run in waves of at most `width`
lanes; a wave starts from an empty cache.

Two policies are two layouts of this one plan (`make_plan`):

* ``lanes``: W = min(width, ⌈n / min_lane_tokens⌉) lanes, so one wave. Few long lanes, few cold
  starts: the codec's default.
* ``chunks``: ⌈n / context⌉ lanes of at most `context` tokens each (the ideal rows' chunks too:
  codec/cross_entropy.py measures this plan), so no lane ever slides, in as many waves of `width`
  as needed.

Why chunks became a layout rather than a second evaluator: the padded lockstep evaluator it
had (bpcbench <= 0.3.0) differed from lanes only in padding every call to `width` rows and in
rounding the chunk count to a multiple of the width. Neither is needed for bit-exactness
(a call without padding is as reproducible as one with it), and keeping both meant every
step of the codec asked which plan it held. One plan and one evaluator leave the codec, the
container and the decoder with one path; disjoint chunks stay available for coded rows that
are compared with papers that cut text so, and their pieces are now exactly the ideal chunks'
(0.3.0's rounding made more, shorter chunks). Files of the padded layout are refused by the
container reader (codec/container.py).

Lockstep: each llama_decode call holds one token of every lane of the wave still running,
never padding. The decoder learns a lane's next token only after decoding it, so it cannot
prefill; but it issues exactly the calls the encoder issued (same rows, positions, slides,
waves), which is all that bit-exactness needs. A plan of two lane groups (`--lane-groups 2`, for a
GPU, where llama_decode leaves the host idle) cuts each position's call in two, one group's call
overlapping the host's step of the other's logits; the file records it, since batch shapes differ.

Sliding uses llama.cpp's own KV shift (llama_memory_seq_rm + llama_memory_seq_add; llama.cpp
re-rotates the keys) where the model's memory can shift; elsewhere the kept tokens are
evaluated again from BOS. Both ends take the same branch (the container records which).

`StreamEvaluator` is the fast path for the ideal measurement of the same plans (measurement
only, never coding): each lane evaluated alone, in blocks that end exactly where the lane
slides, so each token has the same context as in the codec; only the batch shapes differ.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, replace

import numpy as np

from bpcbench.errors import BpcError
from bpcbench.llama.binding import Batch, Closeable, Context, Model, logits_rows

MAX_LANES = 256  # llama.cpp refuses a context with more sequences (LLAMA_MAX_SEQ in this build)
REEVAL_BLOCK = 256  # tokens per llama_decode call when kept tokens are evaluated again
PREFILL_BLOCK = 256
# The measuring evaluators' logits per llama_decode call are at most this many bytes: llama.cpp
# keeps a float32 output buffer of block x vocabulary and the graph's output tensor beside it, so
# 256 rows of Gemma 3's 262,144 cost 512 MiB; 64 MiB keeps SmolLM2's 256 rows (48 MiB) and gives
# Gemma 64 (issue 22 item 4: its ideal rows peak within model file + 300 MB).
PREFILL_LOGITS_BYTES = 64 << 20


def prefill_block(n_vocab: int, block: int = PREFILL_BLOCK) -> int:
    """Tokens per llama_decode call of a measuring evaluator: `block`, fewer for a large vocabulary."""
    return max(1, min(block, PREFILL_LOGITS_BYTES // (4 * max(1, n_vocab))))
PLAN_POLICIES = ("lanes", "chunks")  # the layouts make_plan knows
# Lane groups per wave (Plan.groups): 1, one llama_decode call per position; 2, the wave's lanes fed
# as two alternating calls, one group's running while the host steps the other's (LaneEvaluator)
MAX_LANE_GROUPS = 2
MAX_PLAN_LANES = 1 << 20  # lanes of one plan (chunks: ⌈n / context⌉); more is a forged file's plan


@dataclass(frozen=True)
class Plan:
    """Everything the decoder must reproduce: lane lengths (in stream order), the window, the waves.

    Build it with make_plan (or plan_lanes / plan_chunks), which keep `width` at most the number
    of lanes, so two plans that evaluate alike compare equal.
    """

    lengths: tuple[int, ...]
    context: int  # KV cells per lane, BOS included
    discard: int  # tokens dropped at each slide; 0 where no lane is longer than `context`
    width: int  # lanes per wave: the KV cache's sequences
    groups: int = 1  # alternating lane groups of a wave (wave_groups): how each position's calls are cut

    @property
    def n_tokens(self) -> int:
        return int(sum(self.lengths))

    @property
    def n_lanes(self) -> int:
        return len(self.lengths)

    @property
    def kv_cells(self) -> int:
        """KV cells the evaluator allocates for this plan."""
        return self.width * self.context

    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.lengths)]).astype(np.int64)

    def waves(self) -> list[np.ndarray]:
        """Lane ids of each wave, in order: `width` consecutive lanes at a time."""
        ids = np.arange(self.n_lanes)
        return [ids[first : first + self.width] for first in range(0, self.n_lanes, self.width)]

    def context_lengths(self) -> np.ndarray:
        """Tokens in the KV cache (BOS included) when each token of the stream is predicted."""
        return np.concatenate([window_context(n, self.context, self.discard) for n in self.lengths] or [[]])


def window_context(n: int, context: int, discard: int) -> np.ndarray:
    """Context of tokens 0 … n−1 of one lane: 1, 2, …, context, then context − discard + 1 … context again.

    >>> window_context(7, 4, 2).tolist()
    [1, 2, 3, 4, 3, 4, 3]
    >>> window_context(3, 4, 0).tolist()
    [1, 2, 3]
    """
    t = np.arange(n, dtype=np.int64)
    if n <= context:
        return t + 1
    slid = context - discard + 1 + (t - context) % discard
    return np.where(t < context, t + 1, slid)


def check_window(context: int, discard: int) -> None:
    if context < 2:
        raise BpcError(f"context must be at least 2 tokens (BOS and one more), got {context}")
    if not 1 <= discard <= context - 1:
        raise BpcError(f"discard must be between 1 and context − 1 = {context - 1}, got {discard}")


def default_discard(context: int) -> int:
    """A quarter of the window: every token keeps at least 3/4 of `context` once the lane is warm."""
    return max(1, context // 4)


def balanced(n: int, parts: int) -> tuple[int, ...]:
    """`parts` lengths summing to n, differing by at most one, the longer ones first.

    >>> balanced(10, 4)
    (3, 3, 2, 2)
    """
    base, extra = divmod(n, parts) if parts else (0, 0)
    return tuple([base + 1] * extra + [base] * (parts - extra))


def _plan(lengths: tuple[int, ...], context: int, discard: int, width: int) -> Plan:
    if width < 1:
        raise BpcError("width must be positive")
    if width > MAX_LANES:
        raise BpcError(f"width {width} is more lanes than llama.cpp allows ({MAX_LANES})")
    return Plan(lengths, context, discard, max(1, min(width, len(lengths))))


def plan_lanes(n_tokens: int, width: int, min_lane_tokens: int, context: int, discard: int) -> Plan:
    """W = min(width, ⌈n / min_lane_tokens⌉) contiguous lanes, longer ones first, lengths within one.

    >>> plan_lanes(10, 4, 3, 8, 2).lengths
    (3, 3, 2, 2)
    >>> plan_lanes(10, 32, 100, 8, 2).lengths
    (10,)
    """
    if width < 1 or min_lane_tokens < 1:
        raise BpcError("width and min_lane_tokens must be positive")
    check_window(context, discard)
    lanes = min(width, -(-n_tokens // min_lane_tokens)) if n_tokens else 0
    return _plan(balanced(n_tokens, lanes), context, discard, width)


def plan_chunks(n_tokens: int, context: int, width: int) -> Plan:
    """⌈n / context⌉ disjoint lanes of at most `context` tokens (none slides), in waves of `width`.

    >>> p = plan_chunks(10, 4, 2)
    >>> p.lengths, [w.tolist() for w in p.waves()]
    ((4, 3, 3), [[0, 1], [2]])
    """
    if context < 2:
        raise BpcError(f"context must be at least 2 tokens (BOS and one more), got {context}")
    parts = -(-n_tokens // context)
    if parts > MAX_PLAN_LANES:  # before any is allocated: a reader's bound
        raise BpcError(f"{parts:,} chunks of at most {context} tokens are more lanes than a plan may have "
                       f"({MAX_PLAN_LANES:,})")
    return _plan(balanced(n_tokens, parts), context, 0, width)


def make_plan(policy: str, n_tokens: int, *, width: int, min_lane_tokens: int, context: int,
              discard: int | None, groups: int = 1) -> Plan:
    """The plan of a policy (PLAN_POLICIES) in `groups` lane groups: the one rule the encoder and
    the container reader share."""
    if not 1 <= groups <= MAX_LANE_GROUPS:
        raise BpcError(f"lane groups must be between 1 and {MAX_LANE_GROUPS}, got {groups}")
    if policy == "chunks":
        plan = plan_chunks(n_tokens, context, width)
    elif policy == "lanes":  # at most `width` <= MAX_LANES lanes
        plan = plan_lanes(n_tokens, width, min_lane_tokens, context, discard or 0)
    else:
        raise BpcError(f"the coder's plans are {', '.join(PLAN_POLICIES)}, not {policy!r}")
    return replace(plan, groups=groups) if groups != 1 else plan


def wave_groups(lengths: np.ndarray, groups: int) -> list[np.ndarray]:
    """The wave positions of each lane group: the wave's lanes that hold tokens, in order, cut into
    `groups` consecutive parts, the larger first (⌈m/2⌉ + ⌊m/2⌋); one part when one lane holds tokens.

    >>> [g.tolist() for g in wave_groups(np.array([3, 3, 0, 2, 2]), 2)]
    [[0, 1], [3, 4]]
    >>> [g.tolist() for g in wave_groups(np.array([4, 3, 3]), 2)], [g.tolist() for g in wave_groups(np.array([5]), 2)]
    ([[0, 1], [2]], [[0]])
    """
    held = np.nonzero(np.asarray(lengths) > 0)[0]
    sizes = balanced(len(held), max(1, min(groups, len(held))))
    return np.split(held, np.cumsum(sizes)[:-1])


# step(lane ids, position in lane, logits rows) -> the tokens those lanes hold at that position
StepFn = Callable[[np.ndarray, int, np.ndarray], np.ndarray]


class _Window(Closeable):
    """A context whose sequences slide: by KV shift where possible, else by evaluating again.
    With `slides` false no sequence ever fills its window, and the slide mode is moot."""

    def __init__(self, model: Model, *, n_seq: int, context: int, n_batch: int, threads: int, shift: bool | None,
                 slides: bool = True):
        self.model = model
        self.ctx = Context(model, n_seq=n_seq, n_ctx_per_seq=context, n_batch=n_batch, threads=threads)
        self.shift = self.ctx.can_shift if shift is None else shift
        if self.shift and not self.ctx.can_shift:
            raise BpcError("this model's KV cache cannot shift, but the file was coded with KV shifts")
        if slides and not self.shift and n_batch < REEVAL_BLOCK:  # evaluating kept tokens again needs a larger batch
            self.ctx.close()
            self.ctx = Context(model, n_seq=n_seq, n_ctx_per_seq=context, n_batch=REEVAL_BLOCK, threads=threads)
        self._reeval = None if self.shift or not slides else Batch(REEVAL_BLOCK)

    def slide(self, seq: int, kv: int, discard: int, history: np.ndarray) -> int:
        """Drop `discard` tokens after BOS from a full sequence; -> its new length. `history`
        is every token the sequence was fed after BOS (used when the cache cannot shift)."""
        if not discard:
            raise BpcError("internal error: a lane of a plan that never slides is longer than its window")
        if self.shift:
            self.ctx.forget(seq, 1, 1 + discard)
            self.ctx.shift(seq, 1 + discard, -discard)
            return kv - discard
        kept = np.concatenate([[self.model.start_token], history[len(history) - (kv - 1 - discard):]])
        self.ctx.forget(seq, 0, -1)
        b = self._reeval
        b.set_seq_ids([seq] * b.capacity)
        b.logits[:] = 0
        for first in range(0, len(kept), b.capacity):
            n = min(b.capacity, len(kept) - first)
            b.token[:n] = kept[first : first + n]
            b.pos[:n] = np.arange(first, first + n)
            b.decode(self.ctx, n)
        return len(kept)

    def close(self) -> None:
        if self._reeval is not None:
            self._reeval.close()
        self.ctx.close()


class LaneEvaluator(_Window):
    """The coding evaluator: one KV sequence per lane of a wave (`lanes` = the plan's width)."""

    def __init__(self, model: Model, *, lanes: int, context: int, threads: int, shift: bool | None = None):
        super().__init__(model, n_seq=max(1, lanes), context=context, n_batch=max(1, lanes), threads=threads,
                         shift=shift)
        self.lanes = max(1, lanes)
        self.batch = Batch(self.lanes)
        self.batch.logits[:] = 1

    def run(self, plan: Plan, step: StepFn, on_step: Callable[[int], None] | None = None) -> None:
        """Drive every lane of `plan`, wave by wave; `step` consumes each position's logits
        (lanes named by their ids in the plan) and names those lanes' tokens."""
        assert plan.width <= self.lanes
        for ids in plan.waves():
            self._wave(ids, np.asarray(plan.lengths, dtype=np.int64)[ids], plan, step, on_step)

    def _wave(self, ids: np.ndarray, lengths: np.ndarray, plan: Plan, step: StepFn, on_step) -> None:
        """One wave from an empty cache: lane ids[j] runs in KV sequence j.

        Each position's active lanes are fed group by group (wave_groups), one llama_decode call a
        group, and each call is stepped before that group's next one. With two groups, the call of
        one group runs in a worker thread while this thread steps the other group's last logits
        (copied out first: the call overwrites llama.cpp's output buffer). llama-cpp-python's ctypes
        calls and the kernel's loops release the GIL, so the host's work hides behind the model's.
        The calls, slides and steps are the same and in the same order whatever the timing (the
        encoder's as the decoder's): only a group's own step feeds its next call.
        """
        wave = _Wave(len(lengths), int(lengths.max()), self.model.start_token)
        groups = wave_groups(lengths, plan.groups)
        ends = [int(lengths[g].max(initial=0)) for g in groups]
        apart = len(groups) > 1
        copies = [np.empty((len(g), self.model.n_vocab), dtype=np.float32) if apart else None for g in groups]
        self.ctx.clear()
        with ThreadPoolExecutor(1, thread_name_prefix="llama-decode") if apart else nullcontext() as worker:
            ready = None  # (group, position, wave positions, logits): fed, not yet stepped
            for t in range(wave.longest):
                for g in (g for g in range(len(groups)) if ends[g] > t):
                    lanes = groups[g][lengths[groups[g]] > t]
                    if ready is not None and ready[0] != g:
                        feeding = worker.submit(self._feed, lanes, t, plan, wave, copies[g])
                        self._step(ready, ids, step, wave, on_step)
                        logits = feeding.result()
                    else:  # one group, or this group's own last step comes first
                        if ready is not None:
                            self._step(ready, ids, step, wave, on_step)
                        logits = self._feed(lanes, t, plan, wave, copies[g])
                    ready = (g, t, lanes, logits)
            if ready is not None:
                self._step(ready, ids, step, wave, on_step)

    def _feed(self, lanes: np.ndarray, t: int, plan: Plan, wave: "_Wave", out: np.ndarray | None) -> np.ndarray:
        """Slide the full ones of `lanes` (wave positions), decode their inputs at position t; -> the
        logits rows (llama.cpp's buffer, or copied into `out`)."""
        for j in lanes[wave.kv[lanes] == plan.context]:
            wave.kv[j] = self.slide(int(j), int(wave.kv[j]), plan.discard, wave.fed[j, : t - 1])
        n = len(lanes)
        self.batch.set_seq_ids(lanes.tolist())
        self.batch.token[:n] = wave.inputs[lanes]
        self.batch.pos[:n] = wave.kv[lanes]
        self.batch.decode(self.ctx, n)
        wave.kv[lanes] += 1
        rows = logits_rows(self.ctx, n, self.model.n_vocab)
        if out is None:
            return rows
        np.copyto(out[:n], rows)
        return out[:n]

    @staticmethod
    def _step(ready, ids: np.ndarray, step: StepFn, wave: "_Wave", on_step) -> None:
        _, t, lanes, logits = ready
        tokens = step(ids[lanes], t, logits)
        wave.inputs[lanes] = tokens
        wave.fed[lanes, t] = tokens
        if on_step:
            on_step(len(lanes))

    def close(self) -> None:
        self.batch.close()
        super().close()


class _Wave:
    """A wave's lanes as the evaluator feeds them: inputs after BOS, KV lengths, next inputs."""

    def __init__(self, n_lanes: int, longest: int, start_token: int):
        self.longest = longest
        self.fed = np.zeros((n_lanes, longest), dtype=np.int32)
        self.kv = np.zeros(n_lanes, dtype=np.int64)
        self.inputs = np.full(n_lanes, start_token, dtype=np.int32)


class StreamEvaluator(_Window):
    """Measurement only: one lane of a plan at a time, prefilled in blocks that end where it slides.

    The same interface shape as the coder's loop: the plan's window, and per lane (first
    position, logits rows) blocks, whichever layout the plan has.
    """

    def __init__(self, model: Model, *, context: int, discard: int, threads: int, block: int = PREFILL_BLOCK):
        self.block = max(1, min(prefill_block(model.n_vocab, block), context))
        self.context, self.discard = context, discard
        super().__init__(model, n_seq=1, context=context, n_batch=self.block, threads=threads, shift=None,
                         slides=discard > 0)
        self.batch = Batch(self.block)
        self.batch.set_seq_ids([0] * self.block)
        self.batch.logits[:] = 1

    def blocks(self, lane: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        """The model inputs of one lane's tokens -> (first index, logits rows); row i predicts lane[first + i]."""
        inputs = np.concatenate([[self.model.start_token], lane[:-1]]).astype(np.int32)
        self.ctx.clear()
        kv, first = 0, 0
        while first < len(lane):
            if kv == self.context:
                kv = self.slide(0, kv, self.discard, inputs[1:first])
            n = min(self.block, len(lane) - first, self.context - kv)
            self.batch.token[:n] = inputs[first : first + n]
            self.batch.pos[:n] = np.arange(kv, kv + n)
            self.batch.decode(self.ctx, n)
            yield first, logits_rows(self.ctx, n, self.model.n_vocab)
            kv += n
            first += n

    def close(self) -> None:
        self.batch.close()
        super().close()
