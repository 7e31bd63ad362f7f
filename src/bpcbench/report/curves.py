"""Plots across runs: nightly history, the quantization ladder, lossy rate-distortion curves."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bpcbench.bench.results import row_failed
from bpcbench.report.figure import figure, save
from bpcbench.report.findings import pooled_rows, scored
from bpcbench.bench.labels import cell_label
from bpcbench.lossy.distortion import MEASURES


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
    one line per model and text over tau (colour: the model or quantization level; line style:
    the text), the lossless point as a dot at zero distortion."""
    frame = pd.DataFrame([r for r in rows if r.get("roundtrip_ok") and r.get("bits_per_byte") != ""])
    colour = {m: f"C{i % 10}" for i, m in enumerate(dict.fromkeys(frame["model"]))}
    style = {c: ("-", "--", ":", "-.")[i % 4] for i, c in enumerate(dict.fromkeys(frame["corpus"]))}
    fig = figure(11, 7.5)
    axes = fig.subplots(2, 2).ravel()
    for ax, name in zip(axes, MEASURES):
        for (model, corpus), g in frame.groupby(["model", "corpus"], sort=False):
            lossy_rows = g[g["tau"] != ""].assign(tau=lambda d: d["tau"].astype(float)).sort_values("tau")
            line = ax.plot(lossy_rows["bits_per_byte"], lossy_rows[name], marker="o", ms=3, color=colour[model],
                           linestyle=style[corpus], label=f"{model} · {corpus}")
            for _, r in lossy_rows.iterrows():  # the path runs in tau order: label each point
                ax.annotate(f"{r['tau']:g}", (r["bits_per_byte"], r[name]), fontsize=6, xytext=(3, 3),
                            textcoords="offset points", color=line[0].get_color())
            dominated = lossy_rows[lossy_rows.get("dominated", pd.Series("", index=lossy_rows.index)) != ""]
            ax.scatter(dominated["bits_per_byte"], dominated[name], marker="o", s=60, facecolors="none",
                       edgecolors="red", linewidths=1.0, zorder=4)
            lossless = g[g["tau"] == ""]
            ax.plot(lossless["bits_per_byte"], [0.0] * len(lossless), "D", color=line[0].get_color(), ms=6)
        ax.set_xlabel("rate: bits per byte of the original (file, header included)")
        ax.set_ylabel(name.replace("_", " "))
        ax.set_ylim(bottom=-0.02)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, title="◆ lossless   red ring: dominated", title_fontsize=7)
    fig.suptitle("How much of a text the model holds: rate against distortion\n(labels: tau, the bits "
                 "forgiven per token; a red ring: a smaller tau or lossless costs less)", fontsize=10)
    save(fig, path)
