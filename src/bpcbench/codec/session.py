"""A loaded model with its vocabulary, the settings every evaluation runs under, and the plan.

The defaults live here and nowhere else: the CLI, the bench matrix and the ladder import them.
`Session.prepare` is the one place where settings become something to code: it resolves them
against the model, tokenizes, makes the plan (llama/lanes.py make_plan) and computes the codec
fingerprint, and returns them together (`Prepared`), all that the coding loop and the container
header need. `Session.encode` and `Session.decode` drive the plan's evaluator (llama/lanes.py)
with the encoder's or the decoder's step (codec/steps.py): one loop for both ends, which is what
makes decoding bit-exact. `Session.run` drives it with any other step (lossy coding, tests).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace

import numpy as np

from bpcbench.codec import kernel, mixing, range_coder
from bpcbench.codec.steps import DecoderStep, EncoderStep
from bpcbench.codec.tokenization import Tokenized, Vocabulary
from bpcbench.errors import BpcError
from bpcbench.llama.binding import Closeable, Model, build_info, default_threads
from bpcbench.llama.lanes import LaneEvaluator, Plan, StepFn, default_discard, make_plan
from bpcbench.models import ModelInfo, describe

POLICIES = ("lanes", "chunks")  # how the coder cuts the token stream: two layouts of one plan (llama/lanes.py)
WINDOW_POLICIES = ("llama-perplexity", "lm-eval-rolling")  # ideal rows only: those tools' windows (codec/policies.py)
DEFAULT_POLICY = "lanes"
DEFAULT_CONTEXT_CAP = 2048  # lanes: the model's training context, capped here
DEFAULT_CHUNK_TOKENS = 512  # chunks: the most tokens per chunk
DEFAULT_WIDTH = 32  # lanes evaluated together
# A lane per this many tokens, up to the width. Each lane holds `context` KV cells, so this sets
# memory; fewer, longer lanes also mean fewer cold starts, so smaller files. A GPU wants many
# short lanes (data/matrices/gpu.toml sets its own).
DEFAULT_MIN_LANE_TOKENS = 16384


@dataclass
class Settings:
    """How a text is evaluated; `context` and `discard` None mean the model's defaults (resolved())."""

    policy: str = DEFAULT_POLICY
    context: int | None = None  # lanes: KV window per lane, BOS included; chunks: most tokens per chunk
    width: int = DEFAULT_WIDTH
    min_lane_tokens: int = DEFAULT_MIN_LANE_TOKENS
    discard: int | None = None  # lanes: tokens dropped when a lane slides (default context // 4)
    threads: int = field(default_factory=default_threads)
    n_gpu_layers: int = 0
    mix: str = "none"  # what is mixed with the model's distribution (codec/mixing.py MODES)
    lane_groups: int = 1  # alternating lane groups per wave (llama/lanes.py wave_groups): 2 overlaps model and host

    def resolved(self, model: Model) -> Settings:
        if self.policy not in POLICIES + WINDOW_POLICIES:
            raise BpcError(f"unknown policy {self.policy!r} (known: {', '.join(POLICIES + WINDOW_POLICIES)})")
        context = self.context or (DEFAULT_CHUNK_TOKENS if self.policy == "chunks"
                                   else min(model.n_ctx_train or DEFAULT_CONTEXT_CAP, DEFAULT_CONTEXT_CAP))
        if model.n_ctx_train and context > model.n_ctx_train:
            raise BpcError(f"context {context} is longer than the model's training context ({model.n_ctx_train})")
        discard = self.discard or default_discard(context) if self.policy == "lanes" else None
        if self.mix not in mixing.MODES:
            raise BpcError(f"unknown mix mode {self.mix!r} (known: {', '.join(mixing.MODES)})")
        if self.mix != "none" and self.policy in WINDOW_POLICIES:
            raise BpcError(f"--mix {self.mix} needs the lanes or chunks policy, not {self.policy}")
        return replace(self, context=context, discard=discard)

    def plan(self, n_tokens: int) -> Plan:
        """The coder's plan for `n_tokens` under these (resolved) settings."""
        if self.policy not in POLICIES:
            raise BpcError(f"the coder runs under {' or '.join(POLICIES)}, not {self.policy!r} (an ideal policy)")
        return make_plan(self.policy, n_tokens, width=self.width, min_lane_tokens=self.min_lane_tokens,
                         context=self.context, discard=self.discard, groups=self.lane_groups)


@dataclass(frozen=True)
class Encoded:
    """What the encoder's pass gives the container: the payload, each lane's ideal bits, the slide mode."""

    payload: bytes
    piece_bits: np.ndarray
    shift: bool  # lanes slid by KV shift (else by evaluating again)
    mix_state: str = ""  # a hash of the mixer's state after the last step ("" when nothing is mixed)


@dataclass(frozen=True)
class Decoded:
    """What the decoder's pass gives back: the tokens, and the mixer's state as Encoded has it."""

    tokens: np.ndarray
    mix_state: str = ""


@dataclass(frozen=True)
class Prepared:
    """One input made ready to code: everything the coding loop and the container header need."""

    settings: Settings  # resolved
    tokenized: Tokenized
    plan: Plan
    model: ModelInfo
    codec: str  # Session.fingerprint under these settings

    @property
    def tokens(self) -> np.ndarray:
        return self.tokenized.tokens


def on_step(progress, plan: Plan):
    """Adapt a tqdm-like bar (reset(total=), update(n)) to the evaluator's per-step callback."""
    if progress is None:
        return None
    progress.reset(total=plan.n_tokens)
    return progress.update


class Session(Closeable):
    """A loaded model plus its vocabulary, reusable across many files (the bench does that)."""

    def __init__(self, model_spec: str, n_gpu_layers: int = 0):
        self.info = describe(model_spec)
        self.model = Model(self.info.path, n_gpu_layers=n_gpu_layers)
        self.vocab = Vocabulary.from_model(self.model)
        self._evaluators: dict[tuple, LaneEvaluator] = {}

    def prepare(self, data: bytes, settings: Settings | None = None) -> Prepared:
        """Settings resolved, tokens, the coder's plan and the fingerprint, for one input."""
        settings = (settings or Settings()).resolved(self.model)
        tok = self.vocab.tokenize(data)
        return Prepared(settings, tok, settings.plan(len(tok.tokens)), self.info,
                        self.fingerprint(settings.n_gpu_layers, settings.mix))

    def fingerprint(self, n_gpu_layers: int, mix: str = "none", method: dict | None = None) -> str:
        """What else must match for bit-exact decoding (llama.cpp build and CPU features, numpy, the
        compiled kernel that makes the tables and its build, the coder, the vocabulary as bpcbench
        builds it, the mixer's build when one is mixed in, and `method`: a coding's own versions,
        which the lossy codec adds), hashed to 8 hex digits for the container."""
        parts = {**(method or {}), "build": build_info(n_gpu_layers).as_dict(), "numpy": np.__version__,
                 "kernel": kernel.build(), "coder": range_coder.VERSION,
                 "vocab": self.vocab.fingerprint, "start_token": self.model.start_token,
                 "n_symbols": self.vocab.n_symbols}
        if mix != "none":  # only then: files without mixing keep the fingerprint they always had
            parts["mix"] = mixing.build()
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:8]

    def encode(self, plan: Plan, tokens: np.ndarray, threads: int, progress=None, mix: str = "none") -> Encoded:
        """Range-code `tokens` under `plan`, in the model's own slide mode, with `mix` mixed in (mixing.MODES)."""
        step = EncoderStep(self.vocab, plan, tokens, mix)
        shift = self.run(plan, step, threads, progress)
        return Encoded(step.payload(), step.piece_bits, shift, step.mix_state())

    def decode(self, plan: Plan, payload: bytes, threads: int, shift: bool, progress=None,
               mix: str = "none") -> Decoded:
        """The tokens of a model payload coded under `plan` in slide mode `shift` with `mix` (the file's)."""
        step = DecoderStep(self.vocab, plan, payload, mix)
        self.run(plan, step, threads, progress, shift=shift)
        return Decoded(step.tokens, step.mix_state())

    def run(self, plan: Plan, step: StepFn, threads: int, progress=None, shift: bool | None = None) -> bool:
        """Drive `plan` through its evaluator with `step`; -> whether lanes slid by KV shift (True for an
        empty plan). `shift` None: the model's own mode (the encoder); else the file's (the decoder)."""
        if not plan.lengths:
            return True
        kernel.set_threads(threads)  # every step's tables (encoder, decoder, lossy) split rows this way
        ev = self.evaluator(plan, threads, shift)
        ev.run(plan, step, on_step(progress, plan))
        return ev.shift

    def evaluator(self, plan: Plan, threads: int, shift: bool | None = None) -> LaneEvaluator:
        """The evaluator for a plan's shape, reused across files of one session."""
        key = (plan.width, plan.context, threads)  # the slide mode is checked below
        ev = self._evaluators.get(key)
        if ev is not None and shift is not None and ev.shift != shift:
            ev.close()  # a file coded the other way: one KV cache at a time, not two
            ev = None
        if ev is None:
            ev = self._evaluators[key] = LaneEvaluator(self.model, lanes=plan.width, context=plan.context,
                                                       threads=threads, shift=shift)
        return ev

    def close_evaluators(self) -> None:
        for ev in self._evaluators.values():
            ev.close()
        self._evaluators.clear()

    def close(self) -> None:
        self.close_evaluators()
        self.model.close()
