"""A run directory's plots (report/figure.py draws and writes them; report/curves.py has the
plots across nights, quantization levels and lossy thresholds).

A run directory's plots (RUN_PLOTS, in the order summary.md shows them) are each written only
when they carry information: no plot, and no panel, with a single point in it. ``draw_*`` returns
the Figure or None (nothing worth drawing); ``plot_*`` writes it and says whether it did.
"""

from __future__ import annotations

import math
from pathlib import Path

from bpcbench.bench.results import failed_mask
from bpcbench.report import split
from bpcbench.report.figure import (
    MARKERS,
    MAX_BAR_VIEWS,
    MAX_PANELS,
    capped_title,
    figure,
    plain_log_ticks,
    write,
)
from bpcbench.bench.labels import (
    REFERENCE_CODEC,
    codec_label,
    input_label,
    is_missing,
    view_positions,
)
from bpcbench.stats import pareto_front

BPB_BY_CODEC = "bpb_by_codec.png"
BPB_VS_SPEED = "bpb_vs_speed.png"
BPB_VS_MODEL_SIZE = "bpb_vs_model_size.png"
SWEEP_PLOT = "bpb_vs_context.png"  # only for runs with a context sweep
RAW_BPB = 8.0  # the input stored as it is: a codec above this line expanded it
def _records(frame) -> list[dict]:
    """Rows as dicts: codec_label and the like read them ~100x faster than iterrows' Series."""
    return frame.to_dict("records")


def _scored_rows(frame):
    """Rows that are results (results.row_failed says not failed) and have a bits/byte."""
    return frame[~failed_mask(frame) & frame["bits_per_byte"].notna()]


def _is_binary(frame):
    return frame["corpus_kind"].eq("binary").fillna(False).astype(bool)


def _yerr(r):
    if is_missing(r["bits_per_byte_ci95_low"]) or is_missing(r["bits_per_byte_ci95_high"]):
        return None
    return [[max(0.0, r["bits_per_byte"] - r["bits_per_byte_ci95_low"])],
            [max(0.0, r["bits_per_byte_ci95_high"] - r["bits_per_byte"])]]


# --- bpb_vs_model_size.png -------------------------------------------------------------------


def model_size_views(frame) -> list[tuple]:
    """Corpus views where model rows come from at least two model file sizes: the only panels
    with a size axis to read (one size per panel is one point, and no plot)."""
    ok = _scored_rows(frame)
    llm = ok[(ok["measure"] != "baseline") & ok["model_file_bytes"].notna()]
    sizes = llm["model_file_bytes"].tolist()
    return [v for v, pos in view_positions(llm).items() if len({sizes[k] for k in pos}) >= 2]


def draw_bpb_vs_model_size(frame):
    """One panel per corpus with ≥2 model sizes: model file size (log) against bits/byte, baselines as lines."""
    all_views = model_size_views(frame)
    if not all_views:
        return None
    vs = all_views[:MAX_PANELS]
    ok = _scored_rows(frame)
    n = len(vs)
    ncols = min(4, n)
    nrows = math.ceil(n / ncols)
    fig = figure(4.0 * ncols, 3.2 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    colors = {}
    palette = ["C0", "C1", "C2", "C3", "C4", "C5", "C6", "C7", "C8", "C9"]
    groups = view_positions(ok)
    for k, v in enumerate(vs):
        ax = axes[k // ncols][k % ncols]
        fv = ok.iloc[groups[v]]  # the rows of the views drawn only, never a frame per view
        llm = fv[(fv["measure"] != "baseline") & fv["model_file_bytes"].notna()]
        labelled: dict[str, list] = {}
        for _, r in llm.iterrows():
            color = colors.setdefault(r["model_name"], palette[len(colors) % len(palette)])
            x = r["model_file_bytes"] / 1e6
            ax.errorbar([x], [r["bits_per_byte"]], yerr=_yerr(r), fmt="o" if r["measure"] == "coded" else "^",
                        color=color, capsize=3, mfc=color if r["measure"] == "coded" else "none")
            nth = labelled.setdefault(r["model_name"], [])
            sweep = llm[llm["model_name"] == r["model_name"]]["context_tokens"].nunique() > 1
            ctx = f", ctx {int(r['context_tokens'])}" if sweep else ""
            ax.annotate(f"{r['model_name']} ({r['measure']}{ctx})", (x, r["bits_per_byte"]), fontsize=7,
                        xytext=(6, -3 + 9 * len(nth)), textcoords="offset points")
            nth.append(r)
        base = fv[fv["measure"] == "baseline"].sort_values("bits_per_byte")
        shown = [b for j, (_, b) in enumerate(base.iterrows()) if j == 0 or b["codec"] == REFERENCE_CODEC]
        for j, b in enumerate(shown):
            ax.axhline(b["bits_per_byte"], color="0.4", ls="--" if j == 0 else ":", lw=1)
            ax.annotate(b["codec"], (0.01, b["bits_per_byte"]), xycoords=("axes fraction", "data"),
                        fontsize=7, color="0.3", xytext=(0, 2), textcoords="offset points")
        ax.set_xscale("log")
        plain_log_ticks(ax.xaxis)
        ax.set_title(input_label(fv.iloc[0]), fontsize=9)
        ax.set_xlabel("model file (MB)", fontsize=8)
        ax.set_ylabel("bits/byte", fontsize=8)
        ax.tick_params(labelsize=7)
        lo, hi = llm["model_file_bytes"].min() / 1e6, llm["model_file_bytes"].max() / 1e6
        ax.set_xlim(lo / 2, hi * 6)
        ax.grid(True, which="both", alpha=0.3)
    for k in range(len(vs), nrows * ncols):
        axes[k // ncols][k % ncols].axis("off")
    fig.suptitle(capped_title("bits per byte vs model size (o coded, △ ideal; dashed: best baseline, dotted: "
                              f"{REFERENCE_CODEC})", n, len(all_views)), fontsize=10)
    return fig


def plot_bpb_vs_model_size(frame, path: Path) -> bool:
    return write(draw_bpb_vs_model_size(frame), path)


# --- bpb_by_codec.png ------------------------------------------------------------------------


def bar_top(bpb, binary: bool) -> float:
    """The upper y-limit of a bpb_by_codec panel.

    A linear axis from 0, not a log one: bars are read by their length, and a log axis would
    squeeze the 1.5–3.5 bits/byte span where the text codecs differ. Binary corpora get a panel
    and scale of their own (models reach 13–15 bits/byte on random data), so they never set the
    text panel's limit. The text panel's limit comes from its values up to 8 bits/byte; a text
    value above 8 (the codec expanded the input: a pathology, not a comparison) would flatten
    the rest again, so it is clipped at the top and its value printed at the bar.
    """
    values = [float(v) for v in bpb]
    if binary:
        return 1.08 * max(values + [RAW_BPB])
    return 1.12 * max([v for v in values if v <= RAW_BPB] or [RAW_BPB])


def bar_panels(frame) -> list[tuple[str, object, float]]:
    """(title, rows, y top) for the text corpora and the binary corpora (corpus_kind "binary"),
    each only when it has at least two bars."""
    ok = _scored_rows(frame)
    binary = _is_binary(ok)
    return [(title, rows, bar_top(rows["bits_per_byte"], is_bin))
            for title, rows, is_bin in (("text corpora", ok[~binary], False), ("binary corpora", ok[binary], True))
            if len(rows) >= 2]


def _bar_shapes(panels):
    """(views shown, their rows as records with a 'label', codec slots) of each panel, MAX_BAR_VIEWS at most."""
    shapes = []
    for _, rows, _ in panels:
        views = list(view_positions(rows).values())
        shown = []
        for pos in views[:MAX_BAR_VIEWS]:
            recs = _records(rows.iloc[pos])
            for r in recs:
                r["label"] = codec_label(r)
            shown.append((input_label(recs[0]), recs))
        shapes.append((shown, len(views)))
    return shapes


def _bars(ax, recs, x, width, color, ideal, top):
    """One codec's bars of a panel in one call (two: with and without an interval), clipped values printed."""
    from matplotlib.colors import to_rgba

    style = dict(width=width, facecolor=to_rgba(color, 0.4 if ideal else 1.0), hatch="///" if ideal else None,
                 edgecolor=color if ideal else "white", linewidth=0.8)
    ys = [float(r["bits_per_byte"]) for r in recs]
    errs = [_yerr(r) for r in recs]
    with_ci = [i for i, e in enumerate(errs) if e is not None]
    without = [i for i, e in enumerate(errs) if e is None]
    if with_ci:
        ax.bar([x[i] for i in with_ci], [ys[i] for i in with_ci], capsize=2, ecolor="0.2",
               yerr=[[errs[i][0][0] for i in with_ci], [errs[i][1][0] for i in with_ci]], **style)
    if without:
        ax.bar([x[i] for i in without], [ys[i] for i in without], **style)
    for xi, y in zip(x, ys):
        if y > top:  # clipped: the value at the top of the bar
            ax.annotate(f"{y:.2f}", (xi, top), xytext=(0, -3), textcoords="offset points", ha="center",
                        va="top", rotation=90, fontsize=7, fontweight="bold", color="white",
                        bbox={"boxstyle": "round,pad=0.15", "facecolor": "0.2", "lw": 0})


def draw_bpb_by_codec(frame):
    """Grouped bars, text and binary corpora in panels of their own: corpus on x, one bar per codec,
    CI whiskers on model rows; ideal rows hatched and pale (a bound, no file behind it). At most
    MAX_BAR_VIEWS corpus views per panel, one bar call per codec (not per bar)."""
    panels = bar_panels(frame)
    if not panels:
        return None
    from matplotlib.colors import to_rgba
    from matplotlib.patches import Patch

    shapes = _bar_shapes(panels)
    measure_of: dict[str, str] = {}
    for shown, _ in shapes:
        for _, recs in shown:
            for r in recs:
                measure_of.setdefault(r["label"], r["measure"])
    codecs = list(measure_of)
    slots = [[c for c in codecs if c in {r["label"] for _, recs in shown for r in recs}] for shown, _ in shapes]
    ratios = [max(3.0, len(shown) * (0.6 + 0.16 * len(sl))) for (shown, _), sl in zip(shapes, slots)]
    fig = figure(min(22.0, max(7.0, sum(ratios) + 2.0)), 6.0 + 0.25 * math.ceil(len(codecs) / 5))
    axes = fig.subplots(1, len(panels), squeeze=False, width_ratios=ratios)[0]
    for ax, (title, _, top), (shown, n_views), sl in zip(axes, panels, shapes, slots):
        width = 0.85 / len(sl)
        for label in sl:
            at = [(k - 0.425 + width * (sl.index(label) + 0.5), r) for k, (_, recs) in enumerate(shown)
                  for r in recs if r["label"] == label]
            _bars(ax, [r for _, r in at], [x for x, _ in at], width, f"C{codecs.index(label) % 10}",
                  measure_of[label] == "ideal", top)
        if top >= RAW_BPB:
            ax.axhline(RAW_BPB, color="0.5", lw=0.8, ls=":")
            ax.annotate("8: stored raw", (0.99, RAW_BPB), xycoords=("axes fraction", "data"), ha="right",
                        fontsize=7, color="0.35", xytext=(0, 2), textcoords="offset points",
                        bbox={"boxstyle": "square,pad=0.1", "facecolor": "white", "alpha": 0.8, "lw": 0})
        ax.set_ylim(0, top)
        ax.set_xticks(range(len(shown)))
        ax.set_xticklabels([name for name, _ in shown], rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("bits/byte (lower is better)")
        ax.set_title(title, fontsize=9)
        if n_views > len(shown):
            ax.set_xlabel(f"the first {len(shown)} of {n_views:,} corpus views", fontsize=8)
        ax.grid(True, axis="y", alpha=0.3)
    handles = [Patch(facecolor=to_rgba(f"C{j % 10}", 0.4 if measure_of[c] == "ideal" else 1.0),
                     edgecolor=f"C{j % 10}" if measure_of[c] == "ideal" else "white",
                     hatch="///" if measure_of[c] == "ideal" else None, label=c)
               for j, c in enumerate(codecs)]
    fig.legend(handles=handles, fontsize=7, ncols=min(5, len(handles)), loc="outside lower center")
    fig.suptitle("bits per byte by codec (hatched, pale: ideal, a bound with no file behind it; "
                 "a printed value marks a bar cut at the top)", fontsize=10)
    return fig


def plot_bpb_by_codec(frame, path: Path) -> bool:
    return write(draw_bpb_by_codec(frame), path)


# --- bpb_vs_speed.png ------------------------------------------------------------------------


def _speed_views(frame):
    """(the real rows, {view: positions of its real rows} of the views with at least two of them)."""
    ok = frame[~failed_mask(frame)]
    real = ok[ok["measure"].isin(["coded", "baseline"]).fillna(False).astype(bool)
              & ok["roundtrip_ok"].eq(True).fillna(False).astype(bool)
              & ok["bits_per_byte"].notna()
              & ok["encode_kB_per_s"].gt(0).fillna(False).astype(bool)]
    return real, {v: pos for v, pos in view_positions(real).items() if len(pos) >= 2}


def _speed_panel(rows):
    points = zip(rows["bits_per_byte"].astype(float), -rows["encode_kB_per_s"].astype(float))
    return rows.assign(pareto=pareto_front([(float(b), float(s)) for b, s in points]))


def speed_panels(frame) -> list[tuple[tuple, object]]:
    """Per corpus view with at least two of them: the real codecs (coded and baseline rows, not
    failed, round trip checked, with a speed), and a ``pareto`` column: True where no other codec
    on the view is both smaller and faster to compress (stats.pareto_front). draw_bpb_vs_speed
    builds only the panels it draws."""
    real, views = _speed_views(frame)
    return [(v, _speed_panel(real.iloc[pos])) for v, pos in views.items()]


def draw_bpb_vs_speed(frame):
    """One panel per corpus: compress speed (log) against bits/byte, a marker per codec, the Pareto
    front as a step line with its points ringed and labelled."""
    real, views = _speed_views(frame)
    if not views:
        return None
    from matplotlib.lines import Line2D

    panels = [(v, _speed_panel(real.iloc[pos])) for v, pos in list(views.items())[:MAX_PANELS]]
    codecs = list(dict.fromkeys(codec_label(r) for _, rows in panels for r in _records(rows)))
    style = {c: (f"C{j % 10}", MARKERS[j % len(MARKERS)]) for j, c in enumerate(codecs)}
    n = len(panels)
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    fig = figure(4.8 * ncols, 3.8 * nrows + 0.25 * math.ceil(len(codecs) / 4) + 0.4)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for k, (_, rows) in enumerate(panels):
        ax = axes[k // ncols][k % ncols]
        for _, r in rows.iterrows():
            color, marker = style[codec_label(r)]
            ax.scatter([r["encode_kB_per_s"]], [r["bits_per_byte"]], marker=marker, color=color, s=40, zorder=3,
                       edgecolors="black" if r["pareto"] else "none", linewidths=1.2)
        front = rows[rows["pareto"]].sort_values("encode_kB_per_s")
        # faster to the right, larger up: between two front points, the best size at least this fast
        # is the faster point's, so the line steps up before each point ("pre")
        ax.step(front["encode_kB_per_s"].astype(float), front["bits_per_byte"].astype(float), where="pre",
                color="0.3", lw=1.2, zorder=2)
        for _, r in front.iterrows():
            ax.annotate(codec_label(r), (r["encode_kB_per_s"], r["bits_per_byte"]), fontsize=7,
                        xytext=(5, 3), textcoords="offset points")
        ax.set_xscale("log")
        plain_log_ticks(ax.xaxis)
        lo, hi = float(rows["encode_kB_per_s"].min()), float(rows["encode_kB_per_s"].max())
        ax.set_xlim(lo / 2, hi * 8)
        ax.set_title(input_label(rows.iloc[0]), fontsize=9)
        ax.set_xlabel("compress speed (kB/s, log)", fontsize=8)
        ax.set_ylabel("bits/byte of the file (lower is better)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, which="both", alpha=0.3)
    for k in range(n, nrows * ncols):
        axes[k // ncols][k % ncols].axis("off")
    handles = [Line2D([], [], ls="none", marker=style[c][1], color=style[c][0], label=c) for c in codecs]
    handles.append(Line2D([], [], color="0.3", lw=1.2, marker="o", mfc="none", mec="black", label="Pareto front"))
    fig.legend(handles=handles, fontsize=7, ncols=min(4, len(handles)), loc="outside lower center")
    fig.suptitle(capped_title("bits per byte against compress speed (coded and baseline rows whose round trip was "
                              "checked)", n, len(views)), fontsize=10)
    return fig


def plot_bpb_vs_speed(frame, path: Path) -> bool:
    return write(draw_bpb_vs_speed(frame), path)


# --- bpb_vs_context.png ----------------------------------------------------------------------


def context_sweeps(frame):
    """Model rows grouped by (codec, measure, policy, corpus view) that were measured at more than one context."""
    ok = frame[~failed_mask(frame) & frame["bits_per_byte"].notna() & frame["context_tokens"].notna()]
    keys = ["codec", "measure", "policy", "corpus_name", "corpus_bytes"]
    # one vectorized count over all groups first: a frame per group (one per model and view) took 1.8 s of
    # a report of 4,000 rows (cProfile), now only the swept groups become frames
    swept = ok[ok.groupby(keys, sort=False, dropna=False)["context_tokens"].transform("nunique").gt(1).to_numpy()]
    groups = swept.groupby(keys, sort=False, dropna=False)
    return [(key, g.sort_values("context_tokens")) for key, g in groups]


def draw_context_sweep(frame):
    """bits/byte against context (log2 axis), one line per model × corpus; None when the run has no sweep."""
    sweeps = context_sweeps(frame)
    if not sweeps:
        return None
    fig = figure(7.5, 4.8)
    ax = fig.add_subplot()
    for j, (key, g) in enumerate(sweeps):
        label = f"{codec_label({'codec': key[0], 'measure': key[1], 'policy': key[2]})} · {input_label(g.iloc[0])}"
        ax.plot(g["context_tokens"], g["bits_per_byte"], marker="o", color=f"C{j % 10}", label=label)
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(lambda v, _: f"{v:g}")
    ax.set_xlabel("context (tokens)")
    ax.set_ylabel("bits/byte (lower is better)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("bits per byte against context", fontsize=10)
    return fig


def plot_context_sweep(frame, path: Path) -> bool:
    """False (nothing written) when the run has no sweep."""
    return write(draw_context_sweep(frame), path)


# (file name, caption in summary.md, writer) in the order summary.md lists them; a writer returns
# False and writes nothing when its plot would carry no information
RUN_PLOTS = (
    (BPB_BY_CODEC, "bits per byte by codec and corpus (text and binary corpora apart)", plot_bpb_by_codec),
    (BPB_VS_SPEED, "bits per byte against compress speed, Pareto front marked", plot_bpb_vs_speed),
    (BPB_VS_MODEL_SIZE, "bits per byte against model file size", plot_bpb_vs_model_size),
    (SWEEP_PLOT, "bits per byte against context", plot_context_sweep),
    (split.SPLIT_PLOT, split.SPLIT_CAPTION, split.plot_split),
)
