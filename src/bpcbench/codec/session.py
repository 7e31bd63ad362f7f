"""A loaded model with its vocabulary, and the settings every evaluation runs under.

The defaults live here and nowhere else: the CLI, the bench matrix and the ladder import them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace

import numpy as np

from bpcbench.codec import range_coder
from bpcbench.codec.tokenization import Tokenized, Vocabulary
from bpcbench.errors import BpcError
from bpcbench.llama.binding import Closeable, Model, build_info, default_threads
from bpcbench.llama.evaluation import LockstepEvaluator, Plan, plan_chunks
from bpcbench.llama.lanes import (
    MAX_LANES,
    LaneEvaluator,
    LanePlan,
    default_discard,
    plan_lanes,
)
from bpcbench.models import describe

POLICIES = ("lanes", "chunks")  # how the coder cuts the token stream (llama/lanes.py, llama/evaluation.py)
WINDOW_POLICIES = ("llama-perplexity", "lm-eval-rolling")  # ideal rows only: those tools' windows (codec/policies.py)
DEFAULT_POLICY = "lanes"
DEFAULT_CONTEXT_CAP = 2048  # lanes: the model's training context, capped here
DEFAULT_CHUNK_TOKENS = 512  # chunks: the window of the old disjoint-chunk policy
DEFAULT_WIDTH = 32  # lanes (or chunks) evaluated together
# A lane per this many tokens, up to the width. Each lane holds `context` KV cells (SmolLM2:
# 23 kB each), so this sets memory: whole alice29 (41,933 tokens) in 3 lanes peaks at 319 MiB
# (6 lanes at 8,192: 519 MiB) and codes smaller (1.1001 against 1.1103 bits/byte: fewer cold
# starts). A GPU wants many short lanes (matrices/gpu.toml sets 16).
DEFAULT_MIN_LANE_TOKENS = 16384


@dataclass
class Settings:
    """How a text is evaluated; `context` and `discard` None mean the model's defaults (resolved())."""

    policy: str = DEFAULT_POLICY
    context: int | None = None  # lanes: KV window per lane, BOS included; chunks: tokens per chunk
    width: int = DEFAULT_WIDTH
    min_lane_tokens: int = DEFAULT_MIN_LANE_TOKENS
    discard: int | None = None  # lanes: tokens dropped when a lane slides (default context // 4)
    threads: int = field(default_factory=default_threads)
    n_gpu_layers: int = 0

    def resolved(self, model: Model) -> Settings:
        if self.policy not in POLICIES + WINDOW_POLICIES:
            raise BpcError(f"unknown policy {self.policy!r} (known: {', '.join(POLICIES + WINDOW_POLICIES)})")
        context = self.context or (DEFAULT_CHUNK_TOKENS if self.policy == "chunks"
                                   else min(model.n_ctx_train or DEFAULT_CONTEXT_CAP, DEFAULT_CONTEXT_CAP))
        if self.width > MAX_LANES:
            raise BpcError(f"width {self.width} is more lanes than llama.cpp allows ({MAX_LANES})")
        if model.n_ctx_train and context > model.n_ctx_train:
            raise BpcError(f"context {context} is longer than the model's training context ({model.n_ctx_train})")
        discard = self.discard or default_discard(context) if self.policy == "lanes" else None
        return replace(self, context=context, discard=discard)


def environment(settings: Settings) -> dict:
    return {
        "build": build_info(settings.n_gpu_layers).as_dict(),
        "threads": settings.threads,
        "n_gpu_layers": settings.n_gpu_layers,
        "numpy": np.__version__,
        "coder": range_coder.VERSION,
    }


def codec_fingerprint(session: "Session", settings: Settings) -> str:
    """What else must match for bit-exact decoding (llama.cpp build and CPU features, numpy, the
    coder, the vocabulary as bpcbench builds it), hashed to 8 hex digits for the container."""
    env = environment(settings)
    parts = {k: env[k] for k in ("build", "numpy", "coder")}
    parts.update(vocab=session.vocab.fingerprint, start_token=session.model.start_token,
                 n_symbols=session.vocab.n_symbols)
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:8]


class Session(Closeable):
    """A loaded model plus its vocabulary, reusable across many files (the bench does that)."""

    def __init__(self, model_spec: str, n_gpu_layers: int = 0):
        self.info = describe(model_spec)
        self.model = Model(self.info.path, n_gpu_layers=n_gpu_layers)
        self.vocab = Vocabulary.from_model(self.model)
        self._evaluators: dict[tuple, LockstepEvaluator | LaneEvaluator] = {}

    def prepare(self, data: bytes, settings: Settings) -> tuple[Tokenized, Plan | LanePlan]:
        """Tokens and the coder's plan (chunks or lanes) for fully resolved settings."""
        tok = self.vocab.tokenize(data)
        n = len(tok.tokens)
        if settings.policy == "chunks":
            return tok, plan_chunks(n, settings.context, settings.width)
        return tok, plan_lanes(n, settings.width, settings.min_lane_tokens, settings.context, settings.discard)

    def evaluator(self, plan: Plan | LanePlan, threads: int, shift: bool | None = None):
        """The lockstep evaluator for a plan, reused across files of one session."""
        if isinstance(plan, LanePlan):
            key = ("lanes", plan.n_lanes, plan.context, threads)  # the slide mode is checked below
            make = lambda: LaneEvaluator(self.model, lanes=plan.n_lanes, context=plan.context,  # noqa: E731
                                         threads=threads, shift=shift)
        else:
            key = ("chunks", plan.width, plan.chunk_tokens, threads)
            make = lambda: LockstepEvaluator(self.model, width=plan.width, chunk_tokens=plan.chunk_tokens,  # noqa: E731
                                             threads=threads)
        ev = self._evaluators.get(key)
        if ev is not None and shift is not None and getattr(ev, "shift", shift) != shift:
            ev.close()  # a file coded the other way: one KV cache at a time, not two
            ev = None
        if ev is None:
            ev = self._evaluators[key] = make()
        return ev

    def close_evaluators(self) -> None:
        for ev in self._evaluators.values():
            ev.close()
        self._evaluators.clear()

    def close(self) -> None:
        self.close_evaluators()
        self.model.close()
