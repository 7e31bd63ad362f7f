"""PNG plots, drawn on matplotlib's object-oriented Figure (no pyplot state) and written atomically."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter

from bpcbench.atomic import atomic_open
from bpcbench.bench.results import failed_mask, row_failed
from bpcbench.report.findings import pooled_rows, scored
from bpcbench.report.labels import (
    REFERENCE_CODEC,
    cell_label,
    codec_label,
    input_label,
    is_missing,
    view_rows,
    views,
)

BENCH_PLOTS = ("bpb_vs_model_size.png", "bpb_by_codec.png")
SWEEP_PLOT = "bpb_vs_context.png"  # only for runs with a context sweep


def figure(width: float, height: float):
    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save(fig, path: Path) -> None:
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png")


def plot_bpb_vs_model_size(frame, path: Path) -> None:
    """One panel per corpus: model file size (log) against bits/byte, baselines as lines."""
    ok = frame[~failed_mask(frame) & frame["bits_per_byte"].notna()]
    vs = views(ok)
    n = max(len(vs), 1)
    ncols = min(4, n)
    nrows = math.ceil(n / ncols)
    fig = figure(4.0 * ncols, 3.2 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    colors = {}
    palette = ["C0", "C1", "C2", "C3", "C4", "C5", "C6", "C7", "C8", "C9"]
    for k, v in enumerate(vs):
        ax = axes[k // ncols][k % ncols]
        fv = view_rows(ok, v)
        llm = fv[fv["measure"] != "baseline"]
        labelled: dict[str, list] = {}
        for _, r in llm.iterrows():
            color = colors.setdefault(r["model_name"], palette[len(colors) % len(palette)])
            x = r["model_file_bytes"] / 1e6
            yerr = None
            if not is_missing(r["bits_per_byte_ci95_low"]):
                yerr = [[r["bits_per_byte"] - r["bits_per_byte_ci95_low"]],
                        [r["bits_per_byte_ci95_high"] - r["bits_per_byte"]]]
            ax.errorbar([x], [r["bits_per_byte"]], yerr=yerr, fmt="o" if r["measure"] == "coded" else "^",
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
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
        ax.set_title(input_label(fv.iloc[0]), fontsize=9)
        ax.set_xlabel("model file (MB)", fontsize=8)
        ax.set_ylabel("bits/byte", fontsize=8)
        ax.tick_params(labelsize=7)
        if len(llm):
            lo, hi = llm["model_file_bytes"].min() / 1e6, llm["model_file_bytes"].max() / 1e6
            ax.set_xlim(lo / 2, hi * 6)
        ax.grid(True, which="both", alpha=0.3)
    for k in range(len(vs), nrows * ncols):
        axes[k // ncols][k % ncols].axis("off")
    fig.suptitle("bits per byte vs model size (o coded, △ ideal; dashed: best baseline, dotted: "
                 f"{REFERENCE_CODEC})", fontsize=10)
    save(fig, path)


def plot_bpb_by_codec(frame, path: Path) -> None:
    """Grouped bars: corpus on x, one bar per codec, CI whiskers on model rows."""
    ok = frame[~failed_mask(frame) & frame["bits_per_byte"].notna()]
    vs = views(ok)
    codecs: dict[str, None] = {}
    for _, r in ok.iterrows():
        codecs.setdefault(codec_label(r), None)
    codecs_l = list(codecs)
    rows_of_legend = math.ceil(len(codecs_l) / 5)
    fig = figure(min(22.0, max(7.0, 0.16 * len(vs) * max(len(codecs_l), 1) + 2.0)), 6.0 + 0.25 * rows_of_legend)
    ax = fig.add_subplot()
    width = 0.85 / max(len(codecs_l), 1)
    labels = []
    for k, v in enumerate(vs):
        fv = view_rows(ok, v)
        labels.append(input_label(fv.iloc[0]))
        for _, r in fv.iterrows():
            j = codecs_l.index(codec_label(r))
            x = k - 0.425 + width * (j + 0.5)
            yerr = None
            if not is_missing(r["bits_per_byte_ci95_low"]):
                yerr = [[r["bits_per_byte"] - r["bits_per_byte_ci95_low"]],
                        [r["bits_per_byte_ci95_high"] - r["bits_per_byte"]]]
            ax.bar([x], [r["bits_per_byte"]], width=width, color=f"C{j % 10}",
                   hatch="//" if r["measure"] == "ideal" else None, edgecolor="white" if r["measure"] != "ideal" else "0.2",
                   yerr=yerr, capsize=2)
    handles = [Patch(facecolor=f"C{j % 10}", hatch="//" if "(ideal" in c else None, label=c)
               for j, c in enumerate(codecs_l)]
    ax.set_xticks(range(len(vs)))
    ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("bits/byte (lower is better)")
    ax.axhline(8, color="0.5", lw=0.8, ls=":")
    ax.grid(True, axis="y", alpha=0.3)
    fig.legend(handles=handles, fontsize=7, ncols=min(5, max(1, len(handles))), loc="outside lower center")
    ax.set_title("bits per byte by codec (hatched: ideal, no file)", fontsize=10)
    save(fig, path)


def context_sweeps(frame):
    """Model rows grouped by (codec, measure, policy, corpus view) that were measured at more than one context."""
    ok = frame[~failed_mask(frame) & frame["bits_per_byte"].notna() & frame["context_tokens"].notna()]
    groups = ok.groupby(["codec", "measure", "policy", "corpus_name", "corpus_bytes"], sort=False, dropna=False)
    return [(key, g.sort_values("context_tokens")) for key, g in groups if g["context_tokens"].nunique() > 1]


def plot_context_sweep(frame, path: Path) -> bool:
    """bits/byte against context (log2 axis), one line per model × corpus; False (nothing written)
    when the run has no sweep."""
    sweeps = context_sweeps(frame)
    if not sweeps:
        return False
    fig = figure(7.5, 4.8)
    ax = fig.add_subplot()
    for j, (key, g) in enumerate(sweeps):
        label = f"{codec_label({'codec': key[0], 'measure': key[1], 'policy': key[2]})} · {input_label(g.iloc[0])}"
        ax.plot(g["context_tokens"], g["bits_per_byte"], marker="o", color=f"C{j % 10}", label=label)
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel("context (tokens)")
    ax.set_ylabel("bits/byte (lower is better)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("bits per byte against context", fontsize=10)
    save(fig, path)
    return True


def plot_history(history: Path, path: Path) -> None:
    """history.png: bits/byte (all codecs) and tokens/s (models) per night, one line per (codec, corpus)."""
    frame = pd.read_csv(history, dtype=str, keep_default_na=False)
    frame = frame[[not row_failed(e or None, {"True": True, "False": False}.get(r)) for e, r in
                   zip(frame["error"], frame["roundtrip_ok"])]].copy()
    frame["when"] = pd.to_datetime(frame["nightly_utc"], utc=True, errors="coerce")
    for col in ("bits_per_byte", "tokens_per_s"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce")
    frame["series"] = [cell_label(r) for _, r in frame.iterrows()]
    fig = figure(10.0, 7.5)
    ax_bpb, ax_tps = fig.subplots(2, 1, sharex=True)
    handles = {}
    for j, (label, s) in enumerate(frame.groupby("series", sort=True)):
        s = s.sort_values("when")
        color, marker = f"C{j % 10}", "os^Dv<>p*h"[(j // 10) % 10]
        line, = ax_bpb.plot(s["when"], s["bits_per_byte"], marker=marker, ms=4, color=color, label=label)
        handles[label] = line
        tps = s[s["tokens_per_s"].notna()]
        if len(tps):
            ax_tps.plot(tps["when"], tps["tokens_per_s"], marker=marker, ms=4, color=color)
    ax_bpb.set_ylabel("bits/byte (lower is better)")
    ax_tps.set_ylabel("tokens/s (models)")
    ax_tps.set_xlabel("nightly run (UTC)")
    for ax in (ax_bpb, ax_tps):
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=7)
    ax_bpb.set_title(f"bpcbench nightly history ({frame['nightly_dir'].nunique()} runs)", fontsize=10)
    if handles:
        fig.legend(handles=list(handles.values()), fontsize=7, ncols=min(3, len(handles)), loc="outside lower center")
    fig.autofmt_xdate()
    save(fig, path)


# --- the quantization ladder (ladder.png, from a ladder document: bpcbench.ladder.results) ---


def _ladder_size_panel(ax, levels: list[dict], base: dict) -> None:
    """bits/byte against file size; the Pareto front as a step line, ringed points on it."""
    labels: dict[tuple, list[str]] = {}  # levels with identical tensors share a point: one label
    for r in levels:
        x, y = r["file_mb"], r["bits_per_byte"]
        marker, color, size = {"base": ("*", "tab:red", 180), "source": ("s", "tab:green", 60)}.get(
            r["kind"], ("o", "tab:blue", 40))
        ax.scatter([x], [y], marker=marker, color=color, s=size, zorder=3,
                   edgecolors="black" if r.get("pareto") else "none")
        labels.setdefault((round(x, 3), round(y, 6), r["kind"] == "base"), []).append(
            r["level"] if r["kind"] != "base" else f"base: {base['label']}")
    for (x, y, is_base), names in labels.items():
        # the base is usually the largest file: label it leftwards
        ax.annotate(" = ".join(names), (x, y), textcoords="offset points", xytext=(-6, 6) if is_base else (4, 4),
                    ha="right" if is_base else "left", fontsize=8)
    front = sorted((r for r in levels if r.get("pareto")), key=lambda r: r["file_bytes"])
    if front:
        ax.step([r["file_mb"] for r in front], [r["bits_per_byte"] for r in front],
                where="post", color="tab:orange", lw=1.5, label="Pareto front", zorder=2)
        ax.legend(loc="upper right")
    ax.set_xlabel("file size (MB)")
    ax.set_ylabel("bits per byte (ideal, all corpora)")
    ax.set_title(f"{base['name']}: size against compression")
    ax.grid(alpha=0.3)


def _ladder_kld_panel(ax, levels: list[dict], base: dict) -> None:
    """KLD mean against real bits per weight, log scale (the base, at KLD 0, is left out)."""
    labels: dict[tuple, list[str]] = {}
    for r in levels:
        if r["kind"] == "base":
            continue
        k = max(r["kld_mean"], 1e-9)
        ax.scatter([r["bits_per_weight"]], [k], color="tab:green" if r["kind"] == "source" else "tab:blue")
        labels.setdefault((round(r["bits_per_weight"], 4), k), []).append(r["level"])
    for (x, k), names in labels.items():
        ax.annotate(" = ".join(names), (x, k), textcoords="offset points", xytext=(4, 4), fontsize=8)
    if labels:
        ax.set_yscale("log")
    ax.set_xlabel("real bits per weight")
    ax.set_ylabel("KLD mean vs base (nats/token)")
    ax.set_title(f"KL divergence against {base['label']}")
    ax.grid(alpha=0.3, which="both")


def plot_ladder(doc: dict, path: Path) -> None:
    """ladder.png: bits/byte against file size (Pareto front marked) and KLD against bits per weight."""
    levels = [r for r in pooled_rows(doc) if scored(r) and r.get("file_bytes") is not None]
    fig = figure(12.0, 5.0)
    size_ax, kld_ax = fig.subplots(1, 2)
    _ladder_size_panel(size_ax, levels, doc["meta"]["base"])
    _ladder_kld_panel(kld_ax, levels, doc["meta"]["base"])
    save(fig, path)


def plot_rate_distortion(rows: list[dict], path: Path) -> None:
    """One panel per distortion measure: rate (bits/byte, container included) on x, distortion on y,
    one line per model and text over tau, the lossless point as a dot at zero distortion."""
    from bpcbench.lossy.distortion import MEASURES

    frame = pd.DataFrame([r for r in rows if r.get("roundtrip_ok") and r.get("bits_per_byte") != ""])
    fig = figure(11, 7.5)
    axes = fig.subplots(2, 2).ravel()
    for ax, name in zip(axes, MEASURES):
        for (model, corpus), g in frame.groupby(["model", "corpus"], sort=False):
            lossy_rows = g[g["tau"] != ""].assign(tau=lambda d: d["tau"].astype(float)).sort_values("tau")
            line = ax.plot(lossy_rows["bits_per_byte"], lossy_rows[name], marker="o", ms=3, label=f"{model} · {corpus}")
            for _, r in lossy_rows.iterrows():  # the path runs in tau order: label each point
                ax.annotate(f"{r['tau']:g}", (r["bits_per_byte"], r[name]), fontsize=6, xytext=(3, 3),
                            textcoords="offset points", color=line[0].get_color())
            lossless = g[g["tau"] == ""]
            ax.plot(lossless["bits_per_byte"], [0.0] * len(lossless), "D", color=line[0].get_color(), ms=6)
        ax.set_xlabel("rate: bits per byte of the original (file, header included)")
        ax.set_ylabel(name.replace("_", " "))
        ax.set_ylim(bottom=-0.02)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, title="◆ lossless", title_fontsize=7)
    fig.suptitle("How much of a text the model holds: rate against distortion (labels: tau, the bits forgiven per token)")
    save(fig, path)
