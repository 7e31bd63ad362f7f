"""The split that answers the seed (#25): per corpus view, the bits the model saves over zstd -19
(prediction from its weights) and the bits the match model saves on top (retrieval from the file
itself), for every model measured both alone (`llm:<model>`) and mixed (`llm+<mix>:<model>`) on
the same view with the same measure, policy and context.

Built from the rows as records, grouped by view in one pass (labels.group_rows), so a report of
20,000 rows stays linear. summary.md gets the table (`split_markdown`) and the run the plot
bpb_split.png (`plot_split`); both only when the run has such a pair.

>>> rows = [{"codec": c, "measure": m, "policy": p, "context_tokens": 2048 if p else None, "corpus_name": "a",
...          "corpus_bytes": 100, "max_bytes": 0, "bits_per_byte": b, "error": None, "roundtrip_ok": True}
...         for c, m, p, b in (("zstd-19", "baseline", None, 3.0), ("llm:x", "ideal", "lanes", 1.2),
...                            ("llm+match:x", "ideal", "lanes", 1.1))]
>>> [(e["model"], e["from_weights"], round(e["from_file"], 6)) for e in split_entries(rows)]
[('llm:x (ideal lanes ctx 2048)', 1.8, 0.1)]
"""

from __future__ import annotations

from pathlib import Path

from bpcbench.bench.labels import codec_label, group_rows, input_label, is_missing
from bpcbench.bench.matrix import codec_model
from bpcbench.bench.results import row_failed
from bpcbench.report.figure import MAX_BAR_VIEWS, capped_title, figure, write

# zstd -19: the classical compressor of the split, a codec that only retrieves (it finds the repeats of the
# file within its window and predicts nothing else), measured by every default matrix on every corpus
SPLIT_BASELINE = "zstd-19"
SPLIT_PLOT = "bpb_split.png"
SPLIT_CAPTION = (f"what the weights predict and what the file repeats: {SPLIT_BASELINE} → the model alone → "
                 "the model with the match model mixed in")


def _bpb(r) -> float | None:
    """A result's bits/byte; None for a failed row or one without bits."""
    return None if row_failed(r) or is_missing(r["bits_per_byte"]) else float(r["bits_per_byte"])


def _view_entries(rows: list[dict]) -> list[dict]:
    """The split of one view: a pair per model row measured alone and mixed (same measure, policy, context)."""
    ref = next((b for r in rows if r["codec"] == SPLIT_BASELINE and (b := _bpb(r)) is not None), None)
    alone, mixed = {}, []
    for r in rows:
        parts, bpb = codec_model(r["codec"]), _bpb(r)
        if parts is None or bpb is None:
            continue
        key = (parts[1], r["measure"], r.get("policy"), r.get("context_tokens"))
        if parts[0] == "none":
            alone.setdefault(key, (r, bpb))
        else:
            mixed.append((key, r, bpb))
    out = []
    for key, r, bpb in mixed:
        if key not in alone:
            continue
        llm_row, llm = alone[key]
        out.append({"view": input_label(r), "model": codec_label(llm_row), "mixed_model": codec_label(r),
                    "baseline": ref, "llm": llm, "mixed": bpb,
                    "from_weights": None if ref is None else ref - llm, "from_file": llm - bpb})
    return out


def split_views(rows: list[dict]) -> list[list[dict]]:
    """The split entries of each view that has any, views in first-appearance order (one pass over the rows)."""
    return [e for e in (_view_entries(v) for v in group_rows(rows).values()) if e]


def split_entries(rows: list[dict]) -> list[dict]:
    """Every view's split entries: view, model (the row alone), mixed_model, baseline (SPLIT_BASELINE's
    bits/byte, None without one), llm, mixed, from_weights (baseline − llm) and from_file (llm − mixed)."""
    return [e for view in split_views(rows) for e in view]


def _cell(v, fmt: str) -> str:
    return "" if v is None else format(v, fmt)


def split_markdown(rows: list[dict]) -> list[str]:
    """summary.md's section: one table row per pair; nothing when the run has no pair."""
    entries = split_entries(rows)
    if not entries:
        return []
    lines = ["## What the weights predict and what the file repeats (bits/byte)", "",
             f"Saved by the weights = {SPLIT_BASELINE} − the model alone (prediction); saved by the file's "
             "repetitions = the model alone − the model with the match model mixed in (retrieval from the file "
             "itself, codec/mixing.py), on the same bytes, measure, policy and context. Negative: the model (or "
             "the mixing) did worse.", "",
             f"| corpus | model | {SPLIT_BASELINE} | alone | mixed | saved by the weights "
             "| saved by the file's repetitions |",
             "|---|---|--:|--:|--:|--:|--:|"]
    for e in entries:
        lines.append(f"| {e['view']} | {e['model']} | {_cell(e['baseline'], '.4f')} | {e['llm']:.4f} "
                     f"| {e['mixed']:.4f} | {_cell(e['from_weights'], '+.4f')} | {e['from_file']:+.4f} |")
    return lines + [""]


def draw_split(frame):
    """Stacked bars, a group per corpus view (MAX_BAR_VIEWS at most), a bar per model pair: from the bottom,
    the mixed model's bits/byte, what the match model saved, what the weights saved, so a bar's top is
    SPLIT_BASELINE's bits/byte (a negative saving, where the model or the mixing did worse, is drawn down
    from the segment below it). None without a pair that has the baseline beside it."""
    all_views = [[e for e in v if e["baseline"] is not None] for v in split_views(frame.to_dict("records"))]
    all_views = [v for v in all_views if v]
    if not all_views:
        return None
    views = all_views[:MAX_BAR_VIEWS]
    bars = [e for v in views for e in v]
    several = len({e["model"] for e in bars}) > 1
    x, k = [], 0.0
    for v in views:  # the bars of a view side by side, a gap between views
        x += [k + j for j in range(len(v))]
        k += len(v) + 0.6
    fig = figure(min(22.0, max(7.0, 0.45 * len(bars) + 0.3 * len(views) + 2.5)), 5.5 + (1.5 if several else 0.0))
    ax = fig.add_subplot()
    remaining = [e["mixed"] for e in bars]
    ax.bar(x, remaining, color="0.55", label="left (the model + match)")
    ax.bar(x, [e["from_file"] for e in bars], bottom=remaining, color="C2",
           label="saved by the file (alone − mixed)")
    ax.bar(x, [e["from_weights"] for e in bars], bottom=[e["llm"] for e in bars], color="C0",
           label=f"saved by the weights ({SPLIT_BASELINE} − alone)")
    for xi, e in zip(x, bars):  # the file's saving is thin beside the weights': its number at the bar's top
        ax.annotate(f"file {e['from_file']:+.4f}", (xi, max(e["baseline"], e["llm"], e["mixed"])), xytext=(0, 3),
                    textcoords="offset points", ha="center", va="bottom", fontsize=7, color="C2")
    ax.set_xticks(x)
    ax.set_xticklabels([f"{e['view']} · {e['model']}" if several else e["view"] for e in bars],
                       rotation=30 if not several else 60, ha="right", fontsize=7 if several else 8)
    ax.set_ylim(bottom=0)
    ax.set_ylabel(f"bits/byte (bar top: {SPLIT_BASELINE})")
    ax.grid(True, axis="y", alpha=0.3)
    ax.margins(y=0.08)
    fig.legend(fontsize=7, ncols=3, loc="outside lower center")
    title = "what the weights predict and what the file repeats" + ("" if several else f"\n{bars[0]['model']}")
    fig.suptitle(capped_title(title, len(views), len(all_views)), fontsize=10)
    return fig


def plot_split(frame, path: Path) -> bool:
    """False (nothing written) when the run has no model measured alone and mixed beside SPLIT_BASELINE."""
    return write(draw_split(frame), path)
