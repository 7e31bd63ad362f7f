"""Quantization ladder: one base GGUF, many levels, each in bits per byte, KL divergence and speed.

For every level the base and the quantized model are loaded side by side and fed the same
chunks (the codec's tokenization and chunk plan, evaluated on the prefill path as in
`ideal.cross_entropy`). Their logits are compared block by block as they come out of
llama.cpp, so no store of base logits is needed: memory does not grow with corpus ×
vocabulary, only by one float per token for the median and percentiles.

Statistics use the names and definitions of llama.cpp's `perplexity --kl-divergence`:

* KLD per token: Σ_i p_base(i) · (ln p_base(i) − ln p_quant(i)), in nats, over the whole
  vocabulary. (llama.cpp stores base log-probabilities in 16 bits and skips terms with
  p_base < e^-16; we have both distributions in float64 and skip nothing.)
* KLD mean ± uncertainty sqrt((E[x²] − E[x]²)/(n − 1)); median (the mean of the two middle
  values for an even count); p99 by linear interpolation at 0.99·(n − 1).
* "Same top p": the share of tokens where both models' most likely token is the same.
* Δp RMS: root mean square of p_quant(token) − p_base(token) for the actual next token.

Unlike llama-perplexity, which scores only the second half of each context window, every
token is scored, exactly as the bits-per-byte figure counts them.

Threads: `threads` is per model, and base and level decode at the same time in two Python
threads (llama_decode releases the GIL). The default, half the cores, gives each model one
core on a 2-core machine. One model with 2 OpenMP threads would be faster on an idle
machine, but its threads spin at every barrier when another process takes a core: on a
shared 2-core machine that was measured 10x slower (30 s instead of 2-3 s per 512 tokens).

    >>> cfg = LadderConfig(base="base-f16.gguf", levels=["Q8_0", "Q4_K_M"], corpora=["alice29"],
    ...                    max_bytes=4000)                          # doctest: +SKIP
    >>> result = run_ladder(cfg)                                    # doctest: +SKIP
    >>> write_outputs(result, "results/ladder-demo")                # doctest: +SKIP
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import re
import resource
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np

from . import __version__, corpora as corpora_mod, entropy_model, models, quantize
from .atomic import atomic_open, write_bytes, write_text
from .errors import BpcError
from .evaluation import PrefillEvaluator, Plan, plan_chunks
from .llamacpp import Model, build_info, default_threads
from .tokenization import Vocabulary

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

DEFAULT_CHUNK_TOKENS = 512  # the codec's default
DEFAULT_CORPORA = ("alice29",)
LN2 = math.log(2.0)
BASE_LEVEL = "base"


# -- configuration ------------------------------------------------------------------------


@dataclass
class LadderConfig:
    base: str = ""
    levels: list = field(default_factory=lambda: list(quantize.DEFAULT_LEVELS))
    corpora: list = field(default_factory=lambda: list(DEFAULT_CORPORA))
    max_bytes: int | None = None  # measure a prefix of each corpus
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS
    threads: int = field(default_factory=lambda: max(1, default_threads() // 2))  # per model; two run at once
    reexpand: bool = False  # widen a quantized base to F16 first
    imatrix: str | None = None
    coded_bytes: int = 0  # real compress + decompress round trip on this prefix, per level
    include_source: bool = True  # with reexpand: also measure the file the base came from
    cache_dir: str | None = None

    def check(self) -> "LadderConfig":
        if not self.base:
            raise BpcError("no base model: give BASE.gguf (or a registry name), or --config FILE")
        self.levels = quantize.parse_levels(self.levels)
        if not self.corpora:
            raise BpcError("no corpora given")
        for name in ("chunk_tokens", "threads"):
            if int(getattr(self, name)) < 1:
                raise BpcError(f"{name.replace('_', '-')} must be positive")
        if self.max_bytes is not None and int(self.max_bytes) < 1:
            raise BpcError("max-bytes must be positive")
        if int(self.coded_bytes) < 0:
            raise BpcError("coded-bytes must be zero or positive")
        if self.imatrix and not Path(self.imatrix).is_file():
            raise BpcError(f"importance matrix not found: {self.imatrix}")
        return self


CONFIG_KEYS = ("base", "levels", "corpora", "max_bytes", "chunk_tokens", "threads", "reexpand",
               "imatrix", "coded_bytes", "include_source", "out")


def load_config(path: str | os.PathLike) -> dict:
    """The [ladder] table of a TOML file, keys checked; `out` is returned too (not a LadderConfig field)."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BpcError(f"config not found: {path}") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise BpcError(f"{path}: cannot read config: {e}") from None
    table = doc.get("ladder")
    if not isinstance(table, dict):
        raise BpcError(f"{path}: no [ladder] table")
    unknown = sorted(set(table) - set(CONFIG_KEYS))
    if unknown:
        raise BpcError(f"{path}: unknown key(s) {', '.join(unknown)}; expected {', '.join(CONFIG_KEYS)}")
    return dict(table)


def default_out_dir(root: str | os.PathLike = "results") -> Path:
    return Path(root) / f"ladder-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%SZ')}"


# -- the base -----------------------------------------------------------------------------


@dataclass
class Base:
    path: str
    label: str  # e.g. "F16" or "F16 re-expanded from Q4_1"
    name: str
    report: quantize.QuantReport
    source: quantize.QuantReport | None = None  # the quantized file a re-expanded base came from
    source_type: str | None = None

    @property
    def reexpanded(self) -> bool:
        return self.source is not None


def _precision_name(quant_type: str) -> str | None:
    t = quant_type.upper().replace("MOSTLY_", "")
    return {"ALL_F32": "F32", "F32": "F32", "F16": "F16", "BF16": "BF16"}.get(t)


def prepare_base(spec: str, reexpand: bool = False, cache_dir=None, threads: int | None = None) -> Base:
    """Check the base is high precision, or (with reexpand) widen a quantized one to F16."""
    info = models.describe(spec)
    hp = _precision_name(info.quant_type)
    if hp:
        return Base(info.path, hp, info.name, quantize.report_for_file(info.path, hp))
    if not reexpand:
        raise BpcError(
            f"base {spec} is {info.quant_type}, not F16/BF16/F32: quantizing it again measures "
            f"requantization damage; pass --reexpand to widen it to F16 first"
        )
    report = quantize.reexpand(info.path, nthread=threads, cache_dir=cache_dir)
    source = quantize.report_for_file(info.path, info.quant_type)
    return Base(report.path, f"F16 re-expanded from {info.quant_type}", info.name, report, source, info.quant_type)


# -- corpora ------------------------------------------------------------------------------


def resolve_corpora(items) -> list[corpora_mod.Corpus]:
    """Manifest names, groups, or files, in order, without repeats."""
    if isinstance(items, str):
        items = [s for s in items.split(",") if s.strip()]
    try:
        manifest = corpora_mod.load_manifest()
    except BpcError:
        manifest = {}
    groups = corpora_mod.groups_of(manifest) if manifest else {}
    out: dict[str, corpora_mod.Corpus] = {}
    for item in items:
        item = str(item).strip()
        if item in manifest or item in groups:
            chosen = corpora_mod.select([item], manifest)
        else:
            chosen = [corpora_mod.resolve(item, manifest)]
        for c in chosen:
            out.setdefault(c.name, c)
    return list(out.values())


@dataclass
class Text:
    name: str
    sha256: str
    data: bytes
    tokens: np.ndarray
    plan: Plan
    fallback_bytes: int


# -- comparing two models -----------------------------------------------------------------


@dataclass
class Scores:
    """Per token: ideal bits under both models, KLD(base || quant) in nats, same top token."""

    input_bytes: int
    bits_base: np.ndarray
    bits: np.ndarray
    kld: np.ndarray
    same_top: np.ndarray
    seconds_base: float = 0.0  # llama_decode time of each model
    seconds: float = 0.0

    @property
    def n_tokens(self) -> int:
        return len(self.bits_base)


def _partition(logits: np.ndarray):
    """exp(logits − rowmax) in float64, the row max, and ln Σ exp."""
    w = logits.astype(np.float64)
    m = w.max(axis=1)
    w -= m[:, None]
    np.exp(w, out=w)
    return w, m, np.log(w.sum(axis=1))


def _ideal_bits(logits, m, log_z, symbols, n_escapes):
    """−log2 p(symbol) under the coder's distribution (entropy_model.with_escapes + ideal_bits)."""
    n_vocab = logits.shape[1]
    esc = entropy_model.ESCAPE_MASS
    log_total = log_z - math.log1p(-esc) if n_escapes else log_z
    ordinary = symbols < n_vocab
    log_w = np.empty(len(symbols))
    rows = np.nonzero(ordinary)[0]
    log_w[rows] = logits[rows, symbols[rows]].astype(np.float64) - m[rows]
    if not ordinary.all():
        log_w[~ordinary] = log_z[~ordinary] + math.log(esc / (1 - esc) / max(1, n_escapes))
    return (log_total - log_w) / LN2


def block_scores(lb: np.ndarray, lq: np.ndarray | None, symbols: np.ndarray, n_escapes: int):
    """Bits (base, quant), KLD and same-top for one block of logit rows, in bounded memory."""
    rows, n_vocab = lb.shape
    bits_b = np.empty(rows)
    bits_q = np.empty(rows)
    kld = np.zeros(rows)
    same = np.ones(rows, dtype=bool)
    step = max(1, (1 << 21) // n_vocab)  # ~16 MB of float64 per temporary
    for a in range(0, rows, step):
        b = min(rows, a + step)
        Lb, s = lb[a:b], symbols[a:b]
        wb, mb, lzb = _partition(Lb)
        bits_b[a:b] = _ideal_bits(Lb, mb, lzb, s, n_escapes)
        if lq is None:
            continue
        Lq = lq[a:b]
        _, mq, lzq = _partition(Lq)
        bits_q[a:b] = _ideal_bits(Lq, mq, lzq, s, n_escapes)
        # ln p_b − ln p_q = (l_b − l_q) + (m_q − m_b) + (ln Z_q − ln Z_b); weighted by p_b = w_b / Z_b.
        # Identical logits give exactly 0.
        d = np.subtract(Lb, Lq, dtype=np.float64)
        kld[a:b] = np.einsum("ij,ij->i", wb, d) / np.exp(lzb) + ((mq - mb) + (lzq - lzb))
        same[a:b] = Lb.argmax(axis=1) == Lq.argmax(axis=1)
    if lq is None:
        bits_q[:] = bits_b
    return bits_b, bits_q, kld, same


def _timed_next(gen):
    t0 = time.perf_counter()
    item = next(gen, None)
    return item, time.perf_counter() - t0


def compare(base_ev: PrefillEvaluator, quant_ev: PrefillEvaluator | None, text: Text, vocab: Vocabulary,
            progress=None, pool: ThreadPoolExecutor | None = None) -> Scores:
    """Run both models over the text's chunks side by side and score every token.

    With a pool, the level decodes in a worker thread while the base decodes in this one
    (llama_decode releases the GIL), so two single-threaded models use two cores without
    OpenMP barriers between them; each decode is timed on its own.
    """
    n = text.plan.n_tokens
    out = Scores(len(text.data), np.empty(n), np.empty(n), np.zeros(n), np.ones(n, dtype=bool))
    offs = text.plan.offsets()
    n_escapes = len(vocab.escape_bytes)
    for i in range(len(text.plan.chunk_lengths)):
        chunk = text.tokens[offs[i] : offs[i + 1]]
        inputs = vocab.model_input(chunk)
        gen_b = base_ev.blocks(inputs)
        gen_q = quant_ev.blocks(inputs) if quant_ev is not None else None
        while True:
            fut = pool.submit(_timed_next, gen_q) if (pool is not None and gen_q is not None) else None
            item, dt = _timed_next(gen_b)
            out.seconds_base += dt
            lq = None
            if gen_q is not None:
                item_q, dt_q = fut.result() if fut is not None else _timed_next(gen_q)
                out.seconds += dt_q
                if item_q is not None:
                    lq = item_q[1]
            if item is None:
                break
            first, lb = item
            if gen_q is not None and lq is None:
                raise RuntimeError("base and level produced different numbers of blocks")
            sl = slice(offs[i] + first, offs[i] + first + len(lb))
            out.bits_base[sl], out.bits[sl], out.kld[sl], out.same_top[sl] = block_scores(
                lb, lq, chunk[first : first + len(lb)], n_escapes)
            if progress is not None:
                progress(len(lb))
    return out


# -- memory -------------------------------------------------------------------------------


def _reset_peak_rss() -> bool:
    """Linux: writing 5 to clear_refs resets VmHWM, so each level gets its own peak."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float:
    try:
        m = re.search(r"VmHWM:\s+(\d+)\s+kB", Path("/proc/self/status").read_text())
        if m:
            return int(m.group(1)) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- statistics ---------------------------------------------------------------------------


def _mean_and_uncertainty(x: np.ndarray) -> tuple[float, float]:
    """llama.cpp's mean_and_uncertainty: the mean and sqrt(var / (n − 1)), 0 for n ≤ 10."""
    n = len(x)
    if n < 1:
        return float("nan"), float("nan")
    f = float(x.mean())
    var = float((x * x).mean()) - f * f
    return f, (math.sqrt(var / (n - 1)) if var > 0 and n > 10 else 0.0)


def summarise(parts: list[Scores]) -> dict:
    """Pooled statistics over several texts (or one)."""
    nbytes = sum(p.input_bytes for p in parts)
    bits_b = np.concatenate([p.bits_base for p in parts])
    bits = np.concatenate([p.bits for p in parts])
    kld = np.concatenate([p.kld for p in parts])
    same = np.concatenate([p.same_top for p in parts])
    n = len(bits)
    seconds = sum(p.seconds for p in parts)
    seconds_base = sum(p.seconds_base for p in parts)
    d_mean, d_unc = _mean_and_uncertainty(bits - bits_b)
    kld_mean, kld_unc = _mean_and_uncertainty(kld)
    top = float(same.mean()) if n else float("nan")
    dp = np.exp2(-bits) - np.exp2(-bits_b)
    return {
        "input_bytes": nbytes,
        "n_tokens": n,
        "bits_per_byte": float(bits.sum() / nbytes) if nbytes else float("nan"),
        "base_bits_per_byte": float(bits_b.sum() / nbytes) if nbytes else float("nan"),
        "delta_bits_per_byte": float((bits.sum() - bits_b.sum()) / nbytes) if nbytes else float("nan"),
        "delta_bits_per_byte_uncertainty": d_unc * n / nbytes if nbytes else float("nan"),
        "kld_mean": kld_mean,
        "kld_mean_uncertainty": kld_unc,
        "kld_median": float(np.median(kld)) if n else float("nan"),
        "kld_p99": float(np.percentile(kld, 99)) if n else float("nan"),
        "kld_max": float(kld.max()) if n else float("nan"),
        "top1_agreement_percent": 100 * top,
        "top1_agreement_uncertainty_percent": 100 * math.sqrt(top * (1 - top) / (n - 1)) if n > 1 else 0.0,
        "delta_p_rms_percent": 100 * math.sqrt(float((dp * dp).mean())) if n else float("nan"),
        "tokens_per_second": n / seconds if seconds else float("nan"),
        "base_tokens_per_second": n / seconds_base if seconds_base else float("nan"),
    }


# -- one level ----------------------------------------------------------------------------


@dataclass
class LevelResult:
    level: str
    kind: str  # "base", "source" or "level"
    report: quantize.QuantReport | None
    scores: list = field(default_factory=list)  # Scores per text (arrays dropped after summarising)
    summary: dict = field(default_factory=dict)  # corpus name (and "all") -> statistics
    peak_rss_mb: float = float("nan")
    seconds: float = 0.0  # wall time of the level's evaluation
    coded_check: str = ""  # "ok", "FAIL" or "" (not run)
    coded_bits_per_byte: float = float("nan")
    error: str = ""


def coded_check(path: str, data: bytes, threads: int) -> tuple[str, float, str]:
    """A real lockstep compress + decompress of `data`; ('ok'|'FAIL', coded bits/byte, message)."""
    from .codec import Session, Settings, compress, decompress

    settings = Settings(threads=threads)
    try:
        with Session(path) as session:
            blob, stats = compress(data, session, settings)
            out, _ = decompress(blob, session, settings=settings)
    except BpcError as e:
        return "FAIL", float("nan"), f"coded check: {e}"
    if out != data:
        return "FAIL", stats.coded_bits_per_byte, "coded check: decompressed bytes differ from the input"
    return "ok", stats.coded_bits_per_byte, ""


def _evaluate(base_ev, path: str, texts: list[Text], vocab: Vocabulary, cfg: LadderConfig, progress) -> LevelResult:
    res = LevelResult("", "level", None)
    _reset_peak_rss()
    t0 = time.perf_counter()
    with Model(path) as model:
        if model.n_vocab != base_ev.model.n_vocab:
            raise BpcError(f"{Path(path).name}: vocabulary of {model.n_vocab} tokens, "
                           f"the base has {base_ev.model.n_vocab}")
        with PrefillEvaluator(model, chunk_tokens=int(cfg.chunk_tokens), threads=int(cfg.threads)) as ev, \
                ThreadPoolExecutor(max_workers=1, thread_name_prefix="ladder-level") as pool:
            res.scores = [compare(base_ev, ev, t, vocab, progress, pool) for t in texts]
    res.peak_rss_mb = _peak_rss_mb()
    res.seconds = time.perf_counter() - t0
    return res


# -- the run ------------------------------------------------------------------------------


@dataclass
class LadderResult:
    config: LadderConfig
    base: Base
    texts: list  # of dicts: name, sha256, bytes, tokens
    levels: list  # of LevelResult, base first
    meta: dict


def run_ladder(cfg: LadderConfig, log: Callable[[str], None] | None = None, progress=None) -> LadderResult:
    """Quantize every level (cached), evaluate each against the base, return the statistics."""
    log = log or (lambda msg: None)
    cfg.check()
    t_start = time.perf_counter()
    chosen = resolve_corpora(cfg.corpora)
    base = prepare_base(cfg.base, cfg.reexpand, cfg.cache_dir, cfg.threads)
    log(f"base: {base.label} ({base.report.file_mb:.1f} MB, {base.report.bits_per_weight:.2f} bits/weight)")

    entries: list[tuple[str, str, quantize.QuantReport | None, str]] = []
    if base.source is not None and cfg.include_source:
        entries.append((f"{base.source_type} (source)", "source", base.source, ""))
    for level in cfg.levels:
        try:
            rep = quantize.quantize(base.path, level, imatrix=cfg.imatrix, nthread=cfg.threads,
                                    cache_dir=cfg.cache_dir)
            note = "cached" if rep.cached else f"quantized in {rep.seconds:.1f} s"
            log(f"{level}: {rep.file_mb:.1f} MB, {rep.bits_per_weight:.2f} bits/weight, {note}")
            entries.append((level, "level", rep, ""))
        except BpcError as e:
            log(f"{level}: {e}")
            entries.append((level, "level", None, str(e)))

    results: list[LevelResult] = []
    with Model(base.path) as base_model:
        vocab = Vocabulary.from_model(base_model)
        texts = []
        for c in chosen:
            data = c.read_bytes()
            if cfg.max_bytes:
                data = data[: int(cfg.max_bytes)]
            tok = vocab.tokenize(data)
            plan = plan_chunks(len(tok.tokens), int(cfg.chunk_tokens), 32)
            texts.append(Text(c.name, c.sha256, data, tok.tokens, plan, tok.fallback_bytes))
        with PrefillEvaluator(base_model, chunk_tokens=int(cfg.chunk_tokens), threads=int(cfg.threads)) as base_ev:
            base_scores = None
            base_passes, base_seconds = 0, [0.0] * len(texts)
            for label, kind, rep, err in entries:
                if rep is None:
                    results.append(LevelResult(label, kind, None, error=err))
                    continue
                try:
                    res = _evaluate(base_ev, rep.path, texts, vocab, cfg, progress)
                except BpcError as e:
                    log(f"{label}: {e}")
                    results.append(LevelResult(label, kind, rep, error=str(e)))
                    continue
                res.level, res.kind, res.report = label, kind, rep
                if cfg.coded_bytes and texts:
                    res.coded_check, res.coded_bits_per_byte, msg = coded_check(
                        rep.path, texts[0].data[: int(cfg.coded_bytes)], int(cfg.threads))
                    if msg:
                        res.error = msg
                        log(f"{label}: {msg}")
                if base_scores is None:
                    base_scores = [Scores(s.input_bytes, s.bits_base, s.bits_base, np.zeros_like(s.kld),
                                          np.ones_like(s.same_top)) for s in res.scores]
                # the base ran alongside every level: its speed is the mean over those passes
                base_passes += 1
                for i, s in enumerate(res.scores):
                    base_seconds[i] += s.seconds_base
                _summarise(res, texts)
                all_ = res.summary["all"]
                log(f"{label}: {all_['bits_per_byte']:.4f} bits/byte ({all_['delta_bits_per_byte']:+.4f}), "
                    f"KLD {all_['kld_mean']:.5f}, same top {all_['top1_agreement_percent']:.2f}%, "
                    f"{all_['tokens_per_second']:.0f} tok/s, {res.seconds:.1f} s")
                results.append(res)
            if base_scores is None:  # no level ran: measure the base alone
                _reset_peak_rss()
                base_scores = [compare(base_ev, None, t, vocab, progress) for t in texts]
                base_passes, base_seconds = 1, [s.seconds_base for s in base_scores]
            for s, sec in zip(base_scores, base_seconds):
                s.seconds = s.seconds_base = sec / base_passes
        base_res = LevelResult(BASE_LEVEL, "base", base.report, base_scores)
        _summarise(base_res, texts)
    results.insert(0, base_res)
    _mark_pareto(results)

    text_meta = [{"name": t.name, "sha256": t.sha256, "bytes": len(t.data), "tokens": int(len(t.tokens)),
                  "chunks": len(t.plan.chunk_lengths), "fallback_bytes": t.fallback_bytes} for t in texts]
    bi = build_info()
    meta = {
        "bpcbench": __version__,
        "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "wall_seconds": time.perf_counter() - t_start,
        "base": {"spec": cfg.base, "label": base.label, "name": base.name, "path": base.path,
                 "sha256": base.report.source_sha256 if not base.reexpanded else None,
                 "source": base.source.as_dict() if base.source else None, "report": base.report.as_dict()},
        "config": {k: v for k, v in asdict(cfg).items()},
        "texts": text_meta,
        "llama_cpp_python": bi.llama_cpp_python,
        "build": bi.as_dict(),
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
    }
    return LadderResult(cfg, base, text_meta, results, meta)


def _summarise(res: LevelResult, texts: list[Text]) -> None:
    res.summary = {t.name: summarise([s]) for t, s in zip(texts, res.scores)}
    res.summary["all"] = summarise(res.scores)
    res.scores = []  # the per-token arrays are no longer needed


def _mark_pareto(results: list[LevelResult]) -> None:
    pts = [(r, r.report.file_bytes, r.summary["all"]["bits_per_byte"]) for r in results
           if r.summary and r.report is not None]
    for r, size, bpb in pts:
        dominated = any((s2 <= size and b2 <= bpb) and (s2 < size or b2 < bpb) for _, s2, b2 in pts)
        r.summary["all"]["pareto"] = not dominated


# -- outputs ------------------------------------------------------------------------------

CSV_COLUMNS = [
    "level", "corpus", "base_label", "file_bytes", "file_mb", "bits_per_weight",
    "tensors_requested_type", "tensors_fallback", "tensors_total", "tensor_types",
    "input_bytes", "n_tokens", "bits_per_byte", "delta_bits_per_byte", "delta_bits_per_byte_uncertainty",
    "kld_mean", "kld_mean_uncertainty", "kld_median", "kld_p99", "kld_max",
    "top1_agreement_percent", "top1_agreement_uncertainty_percent", "delta_p_rms_percent",
    "tokens_per_second", "peak_rss_mb", "pareto", "quantize_seconds", "coded_check", "coded_bits_per_byte",
    "tensor_data_sha256", "error",
]


def rows(result: LadderResult) -> list[dict]:
    """One row per level and corpus, plus one per level for all corpora pooled ("all")."""
    out = []
    for r in result.levels:
        rep = r.report
        common = {
            "level": r.level, "base_label": result.base.label,
            "file_bytes": rep.file_bytes if rep else None,
            "file_mb": round(rep.file_mb, 3) if rep else None,
            "bits_per_weight": rep.bits_per_weight if rep else None,
            "tensors_requested_type": rep.tensors_requested_type if rep else None,
            "tensors_fallback": rep.tensors_fallback if rep else None,
            "tensors_total": rep.tensors_total if rep else None,
            "tensor_types": rep.types_text() if rep else "",
            "tensor_data_sha256": rep.tensor_data_sha256 if rep else "",
            "quantize_seconds": rep.seconds if rep and r.kind == "level" else None,
            "peak_rss_mb": r.peak_rss_mb if r.kind != "base" else None,
            "coded_check": r.coded_check, "coded_bits_per_byte": r.coded_bits_per_byte if r.coded_check else None,
            "error": r.error,
        }
        if not r.summary:
            out.append({**common, "corpus": "all"})
            continue
        pareto = r.summary["all"].get("pareto")
        for corpus, s in r.summary.items():
            row = {**common, "corpus": corpus, **{k: v for k, v in s.items() if k in CSV_COLUMNS}, "pareto": pareto}
            if r.kind == "base":
                row["tokens_per_second"] = s["base_tokens_per_second"]
            out.append(row)
    return out


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        if math.isnan(v):
            return ""
        return repr(round(v, 9))
    return str(v)


def to_csv(result: LadderResult) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    for row in rows(result):
        w.writerow({k: _fmt(row.get(k)) for k in CSV_COLUMNS})
    return buf.getvalue()


def _significant(s: dict) -> bool:
    return abs(s["delta_bits_per_byte"]) > 2 * s["delta_bits_per_byte_uncertainty"]


def to_markdown(result: LadderResult) -> str:
    base = result.base
    names = [t["name"] for t in result.texts]
    lines = [f"# Quantization ladder: {base.name}", ""]
    total = sum(t["bytes"] for t in result.texts)
    texts_desc = ", ".join(f"{t['name']} ({t['bytes']:,} bytes, {t['tokens']:,} tokens)" for t in result.texts)
    lines.append(
        f"Base: **{base.label}** ({base.report.file_mb:.1f} MB, {base.report.bits_per_weight:.2f} bits/weight). "
        f"Text: {texts_desc}; "
        f"{total:,} bytes in all. Chunks of ≤{result.config.chunk_tokens} tokens, prefill evaluation, "
        f"{result.config.threads} llama.cpp thread(s) per model with base and level decoding concurrently, "
        f"llama-cpp-python {result.meta['llama_cpp_python']}, "
        f"{result.meta['date_utc']}."
    )
    lines.append("")
    head = (["level", "file MB", "bits/weight", "tensors as asked / fell back / total"]
            + [f"bits/byte {n}" for n in names]
            + (["bits/byte all"] if len(names) > 1 else [])
            + ["Δ bits/byte", "KLD mean", "KLD median", "KLD p99", "same top %", "tok/s", "peak RSS MB", "Pareto"])
    if result.config.coded_bytes:
        head.insert(-1, f"coded check ({result.config.coded_bytes} B)")
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(head))) + "|")
    for r in result.levels:
        rep = r.report
        label = f"{r.level} ({base.label})" if r.kind == "base" else r.level
        if not r.summary:
            cells = [f"{label} ⚠ error: {r.error}", f"{rep.file_mb:.1f}" if rep else "",
                     f"{rep.bits_per_weight:.2f}" if rep else ""]
            lines.append("| " + " | ".join(cells + [""] * (len(head) - len(cells))) + " |")
            continue
        a = r.summary["all"]
        tens = ""
        if rep.tensors_requested_type is not None:
            tens = f"{rep.tensors_requested_type} / {rep.tensors_fallback} / {rep.tensors_total}"
        elif rep:
            tens = f"– / – / {rep.tensors_total}"
        delta = ""
        if r.kind != "base":
            delta = f"{a['delta_bits_per_byte']:+.4f}" + ("" if _significant(a) else " (n.s.)")
        cells = [label, f"{rep.file_mb:.1f}", f"{rep.bits_per_weight:.2f}", tens]
        cells += [f"{r.summary[n]['bits_per_byte']:.4f}" for n in names]
        if len(names) > 1:
            cells.append(f"{a['bits_per_byte']:.4f}")
        tps = a["base_tokens_per_second"] if r.kind == "base" else a["tokens_per_second"]
        cells += [delta,
                  "0" if r.kind == "base" else f"{a['kld_mean']:.5f}",
                  "0" if r.kind == "base" else f"{a['kld_median']:.5f}",
                  "0" if r.kind == "base" else f"{a['kld_p99']:.4f}",
                  "100" if r.kind == "base" else f"{a['top1_agreement_percent']:.2f}",
                  f"{tps:.0f}",
                  "" if r.kind == "base" else f"{r.peak_rss_mb:.0f}"]
        if result.config.coded_bytes:
            cells.append(r.coded_check + (f" {r.coded_bits_per_byte:.3f}" if r.coded_check == "ok" else ""))
        cells.append("◆" if a.get("pareto") else "")
        if r.error:
            cells[0] += f" ⚠ {r.error}"
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Δ bits/byte is against the base on the same tokens; (n.s.) marks a difference within two "
                 "standard errors of the per-token paired differences (tokens treated as independent, as "
                 "llama-perplexity does, so the error is optimistic). KLD is KL(base ‖ level) in nats per token "
                 "(llama-perplexity's definition, every token scored); same top % is its \"Same top p\". "
                 "tok/s is the level's own llama_decode time; peak RSS is the ladder process while that level "
                 "ran (base and level loaded). ◆ marks the Pareto front of file size against bits/byte.")
    lines.append("")
    lines += ["## What the numbers say", ""] + [f"- {p}" for p in findings(result)] + [""]
    lines += ["## Tensor types", "",
              "What each file really stores (from its GGUF header), and the tensors llama.cpp's quantizer gave "
              "another type than the level's mix asked for (from its log).", "",
              "| level | bits/weight | tensor types | fell back (asked→given) |", "|---|---:|---|---|"]
    for r in result.levels:
        if r.report is None:
            continue
        fb = _fallback_text(r.report) if r.report.fallbacks else ("0" if r.report.tensors_fallback == 0 else "")
        lines.append(f"| {r.level} | {r.report.bits_per_weight:.2f} | {r.report.types_text()} | {fb} |")
    lines.append("")
    return "\n".join(lines)


def _fallback_text(rep: quantize.QuantReport) -> str:
    """'180: Q6_K→Q8_0' style summary of a level's fallbacks."""
    counts: dict[tuple[str, str], int] = {}
    for _, asked, given in rep.fallbacks:
        counts[(asked, given)] = counts.get((asked, given), 0) + 1
    return ", ".join(f"{n}× {a}→{g}" for (a, g), n in sorted(counts.items(), key=lambda kv: -kv[1]))


def findings(result: LadderResult) -> list[str]:
    """Short statements generated from the numbers, for the report."""
    base = result.base
    ok = [r for r in result.levels if r.summary and r.kind == "level"]
    out = []
    if base.reexpanded:
        src = next((r for r in result.levels if r.kind == "source" and r.summary), None)
        text = (f"The base is {base.label}: the {base.source_type} file widened to F16 by llama.cpp's quantizer "
                f"(allow_requantize). Its weights hold only {base.source_type} precision, so this ladder measures "
                f"requantization damage relative to a {base.source_type}-precision model, not quantization damage "
                f"relative to the model's original weights. Levels above {base.source_type} cannot be better than "
                f"the base, and a level whose grid does not contain the {base.source_type} values adds error even "
                f"at more bits per weight.")
        if src:
            s = src.summary["all"]
            text += (f" The {base.source_type} file itself against the re-expanded base (the same weight values up "
                     f"to F16 rounding, computed through different kernels): KLD {s['kld_mean']:.5f}, same top "
                     f"{s['top1_agreement_percent']:.2f}%, Δ {s['delta_bits_per_byte']:+.4f} bits/byte; KLDs of "
                     f"that size are the floor of this comparison, not weight damage.")
        out.append(text)
    if not ok:
        out.append("No level could be evaluated.")
        return out
    by_bpw = sorted(ok, key=lambda r: -r.report.bits_per_weight)
    kl = {r.level: r.summary["all"]["kld_mean"] for r in ok}
    order = ", ".join(f"{r.level} {r.report.bits_per_weight:.2f}→{kl[r.level]:.4f}" for r in by_bpw)
    # a level is beaten when another one stores fewer bits per weight and still has lower KLD
    beaten = []
    for r in by_bpw:
        better = [o for o in ok if o.report.bits_per_weight < r.report.bits_per_weight and kl[o.level] < kl[r.level]]
        if better:
            b = min(better, key=lambda o: o.report.bits_per_weight)
            beaten.append(f"{r.level} ({r.report.bits_per_weight:.2f} bits/weight, KLD {kl[r.level]:.4f}) by "
                          f"{b.level} ({b.report.bits_per_weight:.2f}, {kl[b.level]:.4f})")
    if beaten:
        out.append(f"KLD against real bits per weight (bits/weight→KLD mean): {order}. Not monotonic; beaten on "
                   f"both counts: {'; '.join(beaten)}.")
    else:
        out.append(f"KLD mean rises as the real bits per weight fall (bits/weight→KLD mean): {order}.")
    pts = [r for r in result.levels if r.summary and r.summary["all"].get("pareto")]
    if pts:
        pts.sort(key=lambda r: r.report.file_bytes)
        out.append("Pareto front, smallest file first (file MB, bits/byte): " + ", ".join(
            f"{r.level} ({r.report.file_mb:.1f}, {r.summary['all']['bits_per_byte']:.4f})"
            for r in pts) + ".")
    best = min(ok, key=lambda r: r.summary["all"]["bits_per_byte"])
    out.append(f"Lowest bits/byte among the levels: {best.level}, {best.summary['all']['bits_per_byte']:.4f} "
               f"({best.summary['all']['delta_bits_per_byte']:+.4f} vs the base).")
    ns = [r for r in ok if not _significant(r.summary["all"])]
    if ns:
        smallest = min(ns, key=lambda r: r.report.file_bytes)
        out.append(f"Smallest level whose Δ bits/byte is within noise of the base: {smallest.level} "
                   f"({smallest.report.file_mb:.1f} MB, "
                   f"{100 * smallest.report.file_bytes / base.report.file_bytes:.0f}% of the base file).")
    fell = [r for r in ok if r.report.tensors_fallback]
    if fell:
        worst = max(r.report.tensors_fallback for r in fell)
        out.append(f"Levels are not what their names say: in {len(fell)} of {len(ok)} levels llama.cpp stored some "
                   f"tensors in another type than its mix asked for, because their rows are not a multiple of the "
                   f"type's block (256 for K-quants); up to {worst} of {fell[0].report.tensors_total} tensors. "
                   + "; ".join(f"{r.level}: {_fallback_text(r.report)} ({r.report.bits_per_weight:.2f} bits/weight)"
                               for r in fell if r.report.fallbacks) + ".")
    seen: dict[str, str] = {}
    for r in ok:
        h = r.report.tensor_data_sha256
        if h and h in seen:
            out.append(f"{r.level} stores exactly the same tensors as {seen[h]} (only the header differs).")
        elif h:
            seen[h] = r.level
    for r in result.levels:
        if r.error:
            out.append(f"{r.level}: {r.error}")
    return out


def plot(result: LadderResult, path: str | os.PathLike) -> None:
    """bits/byte against file size (Pareto front marked) and KLD against bits per weight."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [r for r in result.levels if r.summary and r.report is not None]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 5))
    labels: dict[tuple, list[str]] = {}  # levels with identical tensors share a point: one label
    for r in pts:
        a = r.summary["all"]
        x, y = r.report.file_mb, a["bits_per_byte"]
        style = {"base": ("*", "tab:red", 180), "source": ("s", "tab:green", 60)}.get(r.kind, ("o", "tab:blue", 40))
        ax1.scatter([x], [y], marker=style[0], color=style[1], s=style[2], zorder=3,
                    edgecolors="black" if a.get("pareto") else "none")
        labels.setdefault((round(x, 3), round(y, 6), r.kind == "base"), []).append(
            r.level if r.kind != "base" else f"base: {result.base.label}")
    for (x, y, is_base), names in labels.items():
        # the base is usually the largest file: label it leftwards
        ax1.annotate(" = ".join(names), (x, y), textcoords="offset points", xytext=(-6, 6) if is_base else (4, 4),
                     ha="right" if is_base else "left", fontsize=8)
    front = sorted((r for r in pts if r.summary["all"].get("pareto")), key=lambda r: r.report.file_bytes)
    if front:
        ax1.step([r.report.file_mb for r in front], [r.summary["all"]["bits_per_byte"] for r in front],
                 where="post", color="tab:orange", lw=1.5, label="Pareto front", zorder=2)
        ax1.legend(loc="upper right")
    ax1.set_xlabel("file size (MB)")
    ax1.set_ylabel("bits per byte (ideal, all corpora)")
    ax1.set_title(f"{result.base.name}: size against compression")
    ax1.grid(alpha=0.3)
    lv = [r for r in pts if r.kind != "base"]
    labels = {}
    for r in lv:
        k = max(r.summary["all"]["kld_mean"], 1e-9)
        ax2.scatter([r.report.bits_per_weight], [k], color="tab:green" if r.kind == "source" else "tab:blue")
        labels.setdefault((round(r.report.bits_per_weight, 4), k), []).append(r.level)
    for (x, k), names in labels.items():
        ax2.annotate(" = ".join(names), (x, k), textcoords="offset points", xytext=(4, 4), fontsize=8)
    if lv:
        ax2.set_yscale("log")
    ax2.set_xlabel("real bits per weight")
    ax2.set_ylabel("KLD mean vs base (nats/token)")
    ax2.set_title(f"KL divergence against {result.base.label}")
    ax2.grid(alpha=0.3, which="both")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    write_bytes(path, buf.getvalue())


def write_outputs(result: LadderResult, out_dir: str | os.PathLike) -> dict[str, Path]:
    """ladder.csv, ladder.md, ladder.png and ladder.json (metadata + rows), each written atomically."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BpcError(f"cannot create output directory {out_dir}: {e.strerror}") from None
    paths = {k: out_dir / f"ladder.{k}" for k in ("csv", "md", "png", "json")}
    write_text(paths["csv"], to_csv(result))
    write_text(paths["md"], to_markdown(result))
    plot(result, paths["png"])
    with atomic_open(paths["json"], "w") as fh:
        json.dump(_no_nan({"meta": result.meta, "rows": rows(result)}), fh, indent=1, default=_json_default)
    return paths


def _no_nan(o):
    """JSON has no NaN: missing numbers become null."""
    if isinstance(o, float) and math.isnan(o):
        return None
    if isinstance(o, dict):
        return {k: _no_nan(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_no_nan(v) for v in o]
    return o


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o).__name__)
