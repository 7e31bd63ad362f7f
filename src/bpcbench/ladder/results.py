"""ladder.csv and ladder.json: one row per level and corpus, every column defined once here.

The column list is the schema (the bench's `Column`: name, type, unit, meaning). A level has
one row per corpus plus one for all corpora pooled (`corpus` = "all"); a level that could not
be made or evaluated has only the pooled row, with its reason in `error`. ladder.json holds
the run's metadata and the same rows; ladder.md and ladder.png are rendered from that
document alone (`bpcbench.report.findings`, `bpcbench.report.plots`).

>>> [c.name for c in COLUMNS[:4]]
['level', 'kind', 'corpus', 'base_label']
>>> line = to_csv([{"level": "Q8_0", "kld_mean": 0.01234567890123, "pareto": True, "error": None}]).splitlines()[1]
>>> {k: v for k, v in zip(COLUMN_NAMES, line.split(",")) if v}
{'level': 'Q8_0', 'kld_mean': '0.0123456789012', 'pareto': 'True'}
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path

import numpy as np

from bpcbench.atomic import atomic_open, write_text
from bpcbench.schema import Column
from bpcbench.stats import CI_PERCENT
from bpcbench.errors import BpcError
from bpcbench.ladder.run import LadderResult, LevelResult
from bpcbench.ladder.scoring import POOLED

C = Column
COLUMNS: list[Column] = [
    C("level", "str", "-", "Quantization level (`Q4_K_M`), `base`, or `<type> (source)`: the quantized file a re-expanded base was widened from."),
    C("kind", "str", "-", "`base`, `source` or `level`."),
    C("corpus", "str", "-", "Corpus name, or `all` for every corpus of the ladder pooled."),
    C("base_label", "str", "-", "The base every level is scored against: `F16`, `BF16`, `F32` or `F16 re-expanded from <type>`."),
    C("file_bytes", "int", "bytes", "Size of the level's GGUF file."),
    C("file_mb", "float", "MB", "file_bytes / 10^6, to 3 decimals."),
    C("bits_per_weight", "float", "bits/weight", "Real bits per weight, read back from the file: 8 × Σ tensor bytes / Σ tensor elements."),
    C("tensors_requested_type", "int", "tensors", "Tensors stored in the type llama.cpp's mix for the level asked for (from the quantizer's log; empty for a file not made here)."),
    C("tensors_fallback", "int", "tensors", "Tensors llama.cpp stored in another type than the mix asked for (their rows do not fit the type's block)."),
    C("tensors_total", "int", "tensors", "Tensors in the file."),
    C("tensor_types", "str", "-", "`type:count` for each ggml type in the file, most common first."),
    C("tensor_fallbacks", "str", "-", "`N× asked→given` for each pair of types the quantizer fell back between."),
    C("input_bytes", "int", "bytes", "Bytes measured: each corpus's prefix (cut back to a UTF-8 character boundary), summed for `all`."),
    C("n_tokens", "int", "tokens", "Tokens scored (every token of the text)."),
    C("policy", "str", "-", "How both models saw the text, as the codec's ideal path (codec.cross_entropy) does: `lanes` (one lane over the whole text, a sliding KV window) or `chunks` (disjoint chunks, each from BOS)."),
    C("context_tokens", "int", "tokens", "The policy's window, resolved for the base: KV cells of the lane (BOS included), or tokens per chunk."),
    C("discard_tokens", "int", "tokens", "lanes: tokens dropped after BOS each time the window slides; empty for chunks."),
    C("lanes", "int", "lanes", "Cold starts: segments that start from BOS with no history (one per text for lanes, one per chunk for chunks), summed for `all`."),
    C("context_mean", "float", "tokens", "Mean history per scored token (BOS included): below context_tokens by the cold starts and slides."),
    C("context_min", "int", "tokens", "Smallest history of a scored token."),
    C("context_max", "int", "tokens", "Largest history of a scored token."),
    C("bits_per_byte", "float", "bits/byte", "HEADLINE. Σ −log2 p(token) under the level, with the coder's distribution, per input byte (the ideal size; no file)."),
    C("delta_bits_per_byte", "float", "bits/byte", "bits_per_byte − the base's, on the same tokens."),
    C("delta_bits_per_byte_uncertainty", "float", "bits/byte", "Standard error of delta_bits_per_byte from the per-token paired differences (tokens treated as independent, as llama-perplexity does)."),
    C("delta_significant", "bool", "-", f"True if delta_bits_per_byte lies outside its {CI_PERCENT} interval, Z_95 × the uncertainty (bpcbench.stats.significant)."),
    C("mix_delta_bits_per_byte", "float", "bits/byte", "Only with the ladder's `mix` (e.g. `match`; empty otherwise): bits_per_byte of the level with that mixed in (codec/mixing.py, ideal, the level's own logits, as `--mix` codes them) − the level's alone, on the same tokens: the gain from mixing at this level."),
    C("kld_mean", "float", "nats/token", "Mean KL(base ‖ level) over tokens, whole vocabulary (llama-perplexity's KLD)."),
    C("kld_mean_uncertainty", "float", "nats/token", "sqrt(var / (n − 1)) of the per-token KLD (0 for 10 tokens or fewer)."),
    C("kld_median", "float", "nats/token", "Median per-token KLD."),
    C("kld_p99", "float", "nats/token", "99th percentile of the per-token KLD (linear interpolation)."),
    C("kld_max", "float", "nats/token", "Largest per-token KLD."),
    C("top1_agreement_percent", "float", "%", "Tokens where base and level rank the same token first (llama-perplexity's \"Same top p\")."),
    C("top1_agreement_uncertainty_percent", "float", "%", "Binomial standard error of top1_agreement_percent."),
    C("delta_p_rms_percent", "float", "%", "Root mean square of p_level(token) − p_base(token) for the actual next token."),
    C("tokens_per_second", "float", "tokens/s", "The level's own llama_decode rate; for the base, its rate averaged over the levels it ran beside."),
    C("peak_rss_mb", "float", "MiB", "Peak resident memory of the ladder process while the level ran (base and level loaded; environment.PeakMemory). Empty for the base."),
    C("pareto", "bool", "-", "On the Pareto front of file_bytes against pooled bits_per_byte (bpcbench.stats.pareto_front)."),
    C("quantize_seconds", "float", "s", "Time llama.cpp took to make the level (0 when it came from the cache)."),
    C("coded_check", "str", "-", "`ok` or `FAIL` for a real compress + decompress of a prefix of the first corpus; empty if not run."),
    C("coded_bits_per_byte", "float", "bits/byte", "Payload bits per byte of that coded check."),
    C("tensor_data_sha256", "str", "hex", "sha256 of the file's tensor data alone: equal for two levels that store the same tensors."),
    C("error", "str", "-", "Why the level could not be made, evaluated or checked (one line); empty otherwise."),
]
del C

COLUMN_NAMES = [c.name for c in COLUMNS]


def _common(r: LevelResult, result: LadderResult) -> dict:
    """The columns a level's rows share, from its report, its run and the ladder's evaluation."""
    rep, ev = r.report, result.meta["evaluation"]
    row = {"level": r.level, "kind": r.kind, "base_label": result.base.label, "error": r.error,
           "policy": ev["policy"], "context_tokens": ev["context"], "discard_tokens": ev["discard"],
           "peak_rss_mb": r.peak_rss_mb if r.kind != "base" else None, "coded_check": r.coded_check,
           "coded_bits_per_byte": r.coded_bits_per_byte if r.coded_check else None}
    if rep is not None:
        row.update(file_bytes=rep.file_bytes, file_mb=round(rep.file_mb, 3), bits_per_weight=rep.bits_per_weight,
                   tensors_requested_type=rep.tensors_requested_type, tensors_fallback=rep.tensors_fallback,
                   tensors_total=rep.tensors_total, tensor_types=rep.types_text(),
                   tensor_fallbacks=rep.fallbacks_text(), tensor_data_sha256=rep.tensor_data_sha256,
                   quantize_seconds=rep.seconds if r.kind == "level" else None)
    return row


def rows(result: LadderResult) -> list[dict]:
    """One row per level and corpus, plus one per level for all corpora pooled ("all")."""
    out = []
    for r in result.levels:
        common = _common(r, result)
        if not r.summary:
            out.append(_plain({**common, "corpus": POOLED}))
            continue
        pareto = r.summary[POOLED].get("pareto")
        for corpus, s in r.summary.items():
            row = {**common, "corpus": corpus, **{k: v for k, v in s.items() if k in COLUMN_NAMES},
                   "pareto": pareto}
            if r.kind == "base":
                row["tokens_per_second"] = s["base_tokens_per_second"]
            out.append(_plain(row))
    return out


def _plain(o):
    """JSON-ready: NaN becomes None (missing), numpy scalars and paths plain Python."""
    if isinstance(o, dict):
        return {k: _plain(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_plain(v) for v in o]
    if isinstance(o, np.generic):
        o = o.item()
    if isinstance(o, float) and math.isnan(o):
        return None
    return str(o) if isinstance(o, Path) else o


def document(result: LadderResult) -> dict:
    """What ladder.json holds, and all that ladder.md and ladder.png are rendered from."""
    return {"meta": _plain(result.meta), "rows": rows(result)}


def _cell(v) -> str:
    if v is None:
        return ""
    return format(v, ".12g") if isinstance(v, float) else str(v)


def to_csv(table: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMN_NAMES, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    for row in table:
        w.writerow({k: _cell(row.get(k)) for k in COLUMN_NAMES})
    return buf.getvalue()


def write_outputs(result: LadderResult, out_dir: str | os.PathLike,
                  formats=("csv", "json", "md")) -> dict[str, Path]:
    """ladder.csv always, ladder.json (metadata + rows) as `formats` asks (`--format`); each written
    atomically. ladder.md and ladder.png are the report's (report/ladder.py), drawn from the same document."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BpcError(f"cannot create output directory {out_dir}: {e.strerror}") from None
    doc = document(result)
    paths = {"csv": out_dir / "ladder.csv"}
    write_text(paths["csv"], to_csv(doc["rows"]))
    if "json" in formats:
        paths["json"] = out_dir / "ladder.json"
        with atomic_open(paths["json"], "w") as fh:
            json.dump(doc, fh, indent=1)
    return paths
