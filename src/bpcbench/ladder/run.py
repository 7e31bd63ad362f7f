"""The ladder: quantize every level (cached), evaluate each beside the base, summarise.

Each level is loaded next to the base and both are fed the same texts: each corpus cut with
`corpora.take_prefix` (a UTF-8 boundary), tokenized by the codec's vocabulary and evaluated
under `LadderConfig.settings()` resolved for the base (policy, context, discard), exactly as
`cross_entropy` evaluates it: one sliding lane over the whole text (lanes) or disjoint chunks
(chunks). So the base's bits are what `cross_entropy` reports for the same bytes and settings,
and the coded check runs the codec under the same settings. Scoring is in `scoring`,
statistics in `stats`, peak memory from `environment.PeakMemory`, files from `results`.

Threads: `threads` is per model, and base and level decode at the same time in two Python
threads (llama_decode releases the GIL). The default, half the usable cores, gives each model one
core on a 2-core machine. One model with 2 OpenMP threads would be faster on an idle
machine, but its threads spin at every barrier when another process takes a core, and then it
is many times slower (docs/measurements.md).

In a program (the `bpcbench ladder` command does the same)::

    cfg = LadderConfig(base="base-f16.gguf", levels=["Q8_0", "Q4_K_M"], corpora=["alice29"], max_bytes=4000)
    result = run_ladder(cfg.check())
    results.write_outputs(result, "results/ladder-demo")
"""

from __future__ import annotations

import hashlib
import os
import platform
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np

from bpcbench import __version__, corpora, stats
from bpcbench.codec.compress import compress
from bpcbench.codec.cross_entropy import ideal_plan
from bpcbench.codec.decompress import decompress
from bpcbench.codec.session import Session, Settings
from bpcbench.codec.tokenization import Vocabulary
from bpcbench.environment import PeakMemory
from bpcbench.errors import BpcError
from bpcbench import quantize
from bpcbench.ladder.config import LadderConfig
from bpcbench.levels import Base, prepare_base
from bpcbench.ladder.scoring import (
    POOLED,
    Evaluator,
    Scores,
    Text,
    history,
    score_side_by_side,
    summarise,
)
from bpcbench.llama.binding import Model, build_info

BASE_LEVEL = "base"
# -- one level ----------------------------------------------------------------------------


@dataclass
class LevelResult:
    level: str
    kind: str  # "base", "source" or "level"
    report: quantize.QuantReport | None
    scores: list = field(default_factory=list)  # Scores per text (arrays dropped after summarising)
    summary: dict = field(default_factory=dict)  # text name (and POOLED) -> statistics
    peak_rss_mb: float = float("nan")
    seconds: float = 0.0  # wall time of the level's evaluation
    coded_check: str = ""  # "ok", "FAIL" or "" (not run)
    coded_bits_per_byte: float = float("nan")
    error: str = ""

    def summarise(self, texts: list[Text]) -> None:
        """Statistics per text and pooled, with the history the tokens had; the per-token arrays are dropped."""
        self.summary = {t.name: {**summarise([s]), **history([t])} for t, s in zip(texts, self.scores)}
        self.summary[POOLED] = {**summarise(self.scores), **history(texts)}
        self.scores = []


def coded_check(path: str, data: bytes, settings: Settings) -> tuple[str, float, str]:
    """A real lockstep compress + decompress of `data` under the ladder's settings;
    ('ok'|'FAIL', coded bits/byte, message)."""
    try:
        with Session(path) as session:
            blob, result = compress(data, session, settings, fallback=False)
            out, _ = decompress(blob, session, settings=settings)
    except BpcError as e:
        return "FAIL", float("nan"), f"coded check: {e}"
    if out != data:
        return "FAIL", result.coded_bits_per_byte, "coded check: decompressed bytes differ from the input"
    return "ok", result.coded_bits_per_byte, ""


def _evaluate(res: LevelResult, base_ev: Evaluator, texts: list[Text], vocab: Vocabulary, progress,
              mix: str = "none", mix_base: bool = True) -> None:
    """Score the level of `res` beside the base, under the base's settings, on every text (and mixed with
    `mix`, the base too unless mix_base is False: score_side_by_side); its peak memory and wall time."""
    t0 = time.perf_counter()
    with PeakMemory() as peak, Model(res.report.path) as model:
        if model.n_vocab != base_ev.model.n_vocab:
            raise BpcError(f"{Path(res.report.path).name}: vocabulary of {model.n_vocab} tokens, "
                           f"the base has {base_ev.model.n_vocab}")
        with Evaluator(model, base_ev.settings) as ev, \
                ThreadPoolExecutor(max_workers=1, thread_name_prefix="ladder-level") as pool:
            res.scores = [score_side_by_side(base_ev, ev, t, vocab, progress, pool, mix, mix_base) for t in texts]
    res.peak_rss_mb = peak.mb
    res.seconds = time.perf_counter() - t0


def _log_level(log, res: LevelResult) -> None:
    a = res.summary[POOLED]
    log(f"{res.level}: {a['bits_per_byte']:.4f} bits/byte ({a['delta_bits_per_byte']:+.4f}), "
        f"KLD {a['kld_mean']:.5f}, same top {a['top1_agreement_percent']:.2f}%, "
        f"{a['tokens_per_second']:.0f} tok/s, {res.seconds:.1f} s")


# -- the run ------------------------------------------------------------------------------


@dataclass
class LadderResult:
    config: LadderConfig
    base: Base
    texts: list  # of dicts: name, sha256, input_sha256, bytes, tokens, fallback_bytes, and the history
    # of the scored tokens: lanes, context_mean, context_min, context_max (scoring.history)
    levels: list  # of LevelResult, base first
    meta: dict


def _quantize_levels(base: Base, cfg: LadderConfig, log) -> list[LevelResult]:
    """The rows to evaluate: the source of a re-expanded base, then each level (an error row
    where llama.cpp cannot make it)."""
    out = []
    if base.source is not None and cfg.include_source:
        out.append(LevelResult(f"{base.source_type} (source)", "source", base.source))
    for level in cfg.levels:
        try:
            rep = quantize.quantize(base.path, level, imatrix=cfg.imatrix, nthread=cfg.threads,
                                    cache_dir=cfg.cache_dir)
        except BpcError as e:
            log(f"{level}: {e}")
            out.append(LevelResult(level, "level", None, error=str(e)))
            continue
        note = "cached" if rep.cached else f"quantized in {rep.seconds:.1f} s"
        log(f"{level}: {rep.file_mb:.1f} MB, {rep.bits_per_weight:.2f} bits/weight, {note}")
        out.append(LevelResult(level, "level", rep))
    return out


def _prepare_texts(session: Session, cfg: LadderConfig, settings: Settings) -> list[Text]:
    """Each corpus prefix, tokenized, with the plan `cross_entropy` evaluates under `settings`."""
    manifest = corpora.load_manifest()
    texts = []
    for name in corpora.expand(cfg.corpora, manifest):
        corpus = corpora.resolve(name, manifest)
        data = corpora.take_prefix(corpus.read_bytes(), cfg.max_bytes)
        tok = session.vocab.tokenize(data)
        texts.append(Text(corpus.name, corpus.sha256, data, tok, ideal_plan(len(tok.tokens), settings)))
    return texts


def _run_levels(levels: list[LevelResult], base_ev: Evaluator, texts: list[Text], vocab: Vocabulary,
                cfg: LadderConfig, log, progress) -> list[Scores]:
    """Evaluate and summarise every level in place; return the base's own scores."""
    base_scores, base_seconds = None, []
    for res in levels:
        if res.report is None:
            continue
        try:
            # the base's mixed bits are the same beside every level: scored with the first level that runs
            _evaluate(res, base_ev, texts, vocab, progress, cfg.mix, mix_base=base_scores is None)
        except BpcError as e:
            log(f"{res.level}: {e}")
            res.error = str(e)
            continue
        if cfg.coded_bytes and texts:
            res.coded_check, res.coded_bits_per_byte, res.error = coded_check(
                res.report.path, corpora.take_prefix(texts[0].data, cfg.coded_bytes), base_ev.settings)
            if res.error:
                log(f"{res.level}: {res.error}")
        if base_scores is None:
            base_scores = [s.base_alone() for s in res.scores]
        base_seconds.append([s.seconds_base for s in res.scores])
        res.summarise(texts)
        _log_level(log, res)
    if base_scores is None:  # no level ran: measure the base alone
        base_scores = [score_side_by_side(base_ev, None, t, vocab, progress, mix=cfg.mix) for t in texts]
        base_seconds.append([s.seconds_base for s in base_scores])
    # the base ran alongside every level: its speed is the mean over those passes
    for s, seconds in zip(base_scores, np.mean(base_seconds, axis=0).tolist()):
        s.seconds = s.seconds_base = seconds
    return base_scores


def _mark_pareto(levels: list[LevelResult]) -> None:
    """The Pareto front of file size against bits/byte, in each level's pooled summary."""
    pts = [r for r in levels if r.summary and r.report is not None]
    front = stats.pareto_front([(r.report.file_bytes, r.summary[POOLED]["bits_per_byte"]) for r in pts])
    for r, on_front in zip(pts, front):
        r.summary[POOLED]["pareto"] = on_front


def run_ladder(cfg: LadderConfig, log: Callable[[str], None] | None = None, progress=None) -> LadderResult:
    """Quantize every level (cached), evaluate each against the base, return the statistics."""
    log = log or (lambda msg: None)
    cfg.check()
    t_start = time.perf_counter()
    base = prepare_base(cfg.base, cfg.reexpand, cfg.cache_dir, cfg.threads)
    log(f"base: {base.label} ({base.report.file_mb:.1f} MB, {base.report.bits_per_weight:.2f} bits/weight)")
    levels = _quantize_levels(base, cfg, log)
    with Session(base.path) as session:
        settings = cfg.settings().resolved(session.model)
        texts = _prepare_texts(session, cfg, settings)
        with Evaluator(session.model, settings) as base_ev:
            base_scores = _run_levels(levels, base_ev, texts, session.vocab, cfg, log, progress)
    base_res = LevelResult(BASE_LEVEL, "base", base.report, base_scores)
    base_res.summarise(texts)
    levels.insert(0, base_res)
    _mark_pareto(levels)
    meta = _meta(cfg, base, settings, texts, time.perf_counter() - t_start)
    return LadderResult(cfg, base, meta["texts"], levels, meta)


def _meta(cfg: LadderConfig, base: Base, settings: Settings, texts: list[Text], wall_seconds: float) -> dict:
    """The run's metadata; `evaluation` is how every text was evaluated: the resolved policy and
    window, and the history of the scored tokens (per text in `texts`)."""
    text_meta = [{"name": t.name, "sha256": t.sha256, "input_sha256": hashlib.sha256(t.data).hexdigest(),
                  "bytes": len(t.data), "tokens": int(len(t.tokens)), "fallback_bytes": t.tokenized.fallback_bytes,
                  **history([t])} for t in texts]
    bi = build_info()
    return {
        "bpcbench": __version__,
        "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "wall_seconds": wall_seconds,
        "base": {"spec": cfg.base, "label": base.label, "name": base.name, "path": base.path,
                 "sha256": base.report.source_sha256 if not base.reexpanded else None,
                 "source_type": base.source_type,
                 "source": base.source.as_dict() if base.source else None, "report": base.report.as_dict()},
        "config": asdict(cfg),
        "settings": asdict(settings),
        "evaluation": {"policy": settings.policy, "context": settings.context, "discard": settings.discard,
                       **history(texts)},
        "texts": text_meta,
        "llama_cpp_python": bi.llama_cpp_python,
        "build": bi.as_dict(),
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
    }
