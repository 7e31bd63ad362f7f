"""A loaded model with its vocabulary, and the settings every evaluation runs under.

The defaults live here and nowhere else: the CLI, the bench matrix and the ladder import them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bpcbench.codec import range_coder
from bpcbench.codec.tokenization import Tokenized, Vocabulary
from bpcbench.llama.binding import Closeable, Model, build_info, default_threads
from bpcbench.llama.evaluation import LockstepEvaluator, Plan, plan_chunks
from bpcbench.models import describe

DEFAULT_CHUNK_TOKENS = 512
DEFAULT_WIDTH = 32


@dataclass
class Settings:
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS
    width: int = DEFAULT_WIDTH
    threads: int = field(default_factory=default_threads)
    n_gpu_layers: int = 0


def environment(settings: Settings) -> dict:
    return {
        "build": build_info(settings.n_gpu_layers).as_dict(),
        "threads": settings.threads,
        "n_gpu_layers": settings.n_gpu_layers,
        "numpy": np.__version__,
        "coder": range_coder.VERSION,
    }


class Session(Closeable):
    """A loaded model plus its vocabulary, reusable across many files (the bench does that)."""

    def __init__(self, model_spec: str, n_gpu_layers: int = 0):
        self.info = describe(model_spec)
        self.model = Model(self.info.path, n_gpu_layers=n_gpu_layers)
        self.vocab = Vocabulary.from_model(self.model)
        self._evaluators: dict[tuple, LockstepEvaluator] = {}

    def prepare(self, data: bytes, settings: Settings) -> tuple[Tokenized, Plan]:
        """Tokens and chunk plan: the same for the coder and the ideal path, so both measure one thing."""
        tok = self.vocab.tokenize(data)
        return tok, plan_chunks(len(tok.tokens), settings.chunk_tokens, settings.width)

    def evaluator(self, width: int, chunk_tokens: int, threads: int) -> LockstepEvaluator:
        key = (width, chunk_tokens, threads)
        if key not in self._evaluators:
            self._evaluators[key] = LockstepEvaluator(
                self.model, width=width, chunk_tokens=chunk_tokens, threads=threads
            )
        return self._evaluators[key]

    def close(self) -> None:
        for ev in self._evaluators.values():
            ev.close()
        self._evaluators.clear()
        self.model.close()
