"""summary.md and PNG plots from a run's results.csv (lzbench / TurboBench style tables).

Everything here reads only the run directory (results.csv, env.json, matrix.toml), so
`bpcbench report RUN_DIR` re-renders an old run with today's formatting. A row that failed
(error, or round trip not ok) is never shown as a result; it is listed as FAILED.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from .atomic import atomic_open, write_text
from .errors import BpcError
from .results import read_csv

REFERENCE_CODEC = "zstd-22-long"
PLOT_FILES = ("bpb_vs_model_size.png", "bpb_by_codec.png")


# --- helpers ---------------------------------------------------------------------------


def _na(v) -> bool:
    import pandas as pd

    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):  # a list or array is a value
        return False


def _num(v, fmt: str, empty: str = "") -> str:
    return empty if _na(v) else format(v, fmt)


def human_bytes(n: float) -> str:
    """1234567 -> '1.23 MB' (powers of 1000, as compressors' sizes are usually quoted)."""
    if _na(n):
        return ""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.0f} B"


def speed(kb_per_s, is_llm: bool) -> str:
    if _na(kb_per_s):
        return ""
    if is_llm:
        return f"{kb_per_s:.3g} kB/s"
    return f"{kb_per_s / 1000:.4g} MB/s"


def failed_mask(frame):
    return (frame["error"].notna() | frame["roundtrip_ok"].eq(False).fillna(False)).astype(bool)


def view_key(row) -> tuple:
    return (row["corpus_name"], None if _na(row["corpus_bytes"]) else int(row["corpus_bytes"]))


def views(frame) -> list[tuple]:
    """(corpus name, measured bytes) in first-appearance order: each is one table."""
    seen: dict[tuple, None] = {}
    for _, row in frame.iterrows():
        seen.setdefault(view_key(row), None)
    return list(seen)


def view_title(frame_view) -> str:
    row = frame_view.iloc[0]
    name = row["corpus_name"]
    if _na(row["corpus_bytes"]):
        return str(name)
    parts = [str(row["corpus_kind"]) if not _na(row["corpus_kind"]) else ""]
    if not _na(row["corpus_file_bytes"]) and row["corpus_bytes"] < row["corpus_file_bytes"]:
        parts.append(f"first {int(row['corpus_bytes']):,} of {int(row['corpus_file_bytes']):,} bytes")
    else:
        parts.append(f"{int(row['corpus_bytes']):,} bytes")
    if not _na(row["corpus_characters"]):
        parts.append(f"{int(row['corpus_characters']):,} characters")
    return f"{name} ({', '.join(p for p in parts if p)})"


def view_label(frame_view) -> str:
    row = frame_view.iloc[0]
    if not _na(row["corpus_file_bytes"]) and not _na(row["corpus_bytes"]) and row["corpus_bytes"] < row["corpus_file_bytes"]:
        return f"{row['corpus_name']}[:{int(row['corpus_bytes']) // 1000}k]"
    return str(row["corpus_name"])


def codec_label(row) -> str:
    if row["measure"] == "baseline":
        return str(row["codec"])
    ctx = "" if _na(row["chunk_tokens"]) else f" ctx {int(row['chunk_tokens'])}"
    return f"{row['codec']} ({row['measure']}{ctx})"


def pareto_best(ok) -> set:
    """Indices of real codecs (coded or baseline) that no other is both smaller and faster than."""
    real = ok[(ok["measure"] != "ideal") & ok["bits_per_byte"].notna() & ok["encode_kB_per_s"].notna()]
    best = set()
    for i, r in real.iterrows():
        dominated = False
        for j, s in real.iterrows():
            if i == j:
                continue
            if (s["bits_per_byte"] <= r["bits_per_byte"] and s["encode_kB_per_s"] >= r["encode_kB_per_s"]
                    and (s["bits_per_byte"] < r["bits_per_byte"] or s["encode_kB_per_s"] > r["encode_kB_per_s"])):
                dominated = True
                break
        if not dominated:
            best.add(i)
    return best


def break_even_bytes(model_file_bytes, model_bpb, reference_bpb) -> float | None:
    """Input size above which the model's all-in size beats the reference codec; inf = never."""
    if _na(model_file_bytes) or _na(model_bpb) or _na(reference_bpb):
        return None
    gain = reference_bpb - model_bpb  # bits saved per input byte
    if gain <= 0:
        return math.inf
    return float(model_file_bytes) * 8 / gain


# --- summary.md ------------------------------------------------------------------------


def corpus_table(fv) -> list[str]:
    failed = failed_mask(fv)
    ok = fv[~failed].sort_values("bits_per_byte", kind="stable", na_position="last")
    best = pareto_best(ok)
    ref = ok[(ok["codec"] == REFERENCE_CODEC)]
    ref_bpb = ref["bits_per_byte"].iloc[0] if len(ref) else None
    lines = [
        "| | codec | size (bytes) | bits/byte | 95% CI | bits/char | ratio | compress | decompress "
        "| peak RSS (MiB) | all-in size (bytes) | break-even vs " + REFERENCE_CODEC + " |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for i, r in ok.iterrows():
        llm = r["measure"] != "baseline"
        ideal = r["measure"] == "ideal"
        size = f"≈{r['ideal_bits'] / 8:,.0f}" if ideal else _num(r["container_bytes"], ",")
        ci = ""
        if not _na(r["bits_per_byte_ci95_low"]):
            ci = f"{r['bits_per_byte_ci95_low']:.3f}–{r['bits_per_byte_ci95_high']:.3f}"
        size_bytes = r["ideal_bits"] / 8 if ideal else r["container_bytes"]
        all_in = ""
        if llm and not _na(r["model_file_bytes"]) and not _na(size_bytes):
            all_in = f"{math.ceil(size_bytes + r['model_file_bytes']):,}"
        elif not llm:
            all_in = _num(r["container_bytes"], ",")
        be = ""
        if llm:
            b = break_even_bytes(r["model_file_bytes"], r["bits_per_byte"], ref_bpb)
            be = "n/a" if b is None else ("never" if math.isinf(b) else human_bytes(b))
        lines.append(
            f"| {'*' if i in best else ''} | {codec_label(r)} | {size} | {r['bits_per_byte']:.4f} | {ci} "
            f"| {_num(r['bits_per_character'], '.4f')} | {_num(r['compression_ratio'], '.3f')} "
            f"| {speed(r['encode_kB_per_s'], llm)} | {speed(r['decode_kB_per_s'], llm)} "
            f"| {_num(r['peak_rss_mb'], '.0f')} | {all_in} | {be} |"
        )
    for _, r in fv[failed].iterrows():
        reason = r["error"] if not _na(r["error"]) else "round trip failed"
        lines.append(f"| | **FAILED** {codec_label(r)} | | | | | | | | | | {_md_cell(reason)} |")
    return lines


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def overview(frame) -> list[str]:
    """Corpus × codec bits/byte at a glance (failed cells: FAILED)."""
    cols: dict[str, None] = {}
    for _, r in frame.iterrows():
        cols.setdefault(codec_label(r), None)
    head = "| corpus | " + " | ".join(cols) + " |"
    lines = [head, "|---|" + "--:|" * len(cols)]
    failed = failed_mask(frame)
    for v in views(frame):
        fv = frame[[view_key(r) == v for _, r in frame.iterrows()]]
        cells = {}
        for i, r in fv.iterrows():
            cells[codec_label(r)] = "FAILED" if failed[i] else _num(r["bits_per_byte"], ".3f")
        lines.append(f"| {view_label(fv)} | " + " | ".join(cells.get(c, "") for c in cols) + " |")
    return lines


def _env_lines(env: dict) -> list[str]:
    if not env:
        return []
    cpu = env.get("cpu", {})
    mem = env.get("memory_bytes")
    gpus = ", ".join(g["name"] for g in env.get("gpus", [])) or "none"
    libs = env.get("libraries", {})
    git = env.get("git", {})
    commit = (git.get("commit") or "unknown")[:12] + (" (dirty)" if git.get("dirty") else "")
    return [
        f"- machine: {cpu.get('model', '?')}, {cpu.get('usable_cores') or cpu.get('logical_cores')} usable cores"
        f" (SIMD: {' '.join(cpu.get('simd_flags', [])) or '?'}), "
        f"{human_bytes(mem) if mem else '?'} RAM, GPU: {gpus}",
        f"- software: bpcbench {env.get('bpcbench')}, Python {env.get('python', {}).get('version')}, "
        f"llama-cpp-python {libs.get('llama_cpp_python')}, git {commit}",
    ]


def summary_markdown(frame, env: dict | None = None, matrix_text: str | None = None) -> str:
    env = env or {}
    failed = failed_mask(frame)
    run_ids = sorted(set(frame["run_id"].dropna())) or ["?"]
    hosts = sorted(set(frame["host"].dropna())) or [env.get("host", "?")]
    lines = [f"# bpcbench results: {run_ids[-1]}", ""]
    lines.append(f"- run: {', '.join(run_ids)} on {', '.join(hosts)}; "
                 f"{len(frame)} cells ({int(frame['cached'].fillna(False).sum())} from cache), "
                 f"{int(failed.sum())} FAILED")
    models = frame[frame["model_name"].notna()].drop_duplicates("model_name")
    for _, m in models.iterrows():
        size = human_bytes(m["model_file_bytes"]) if not _na(m["model_file_bytes"]) else "?"
        params = f"{m['model_n_params'] / 1e6:.0f}M params" if not _na(m["model_n_params"]) else "?"
        sha = m["model_sha256"][:12] if not _na(m["model_sha256"]) else "?"
        lines.append(f"- model {m['model_name']}: {m['model_quant_type']}, {size} file, {params}, sha256 {sha}…")
    lines += _env_lines(env)
    lines += [
        "",
        "bits/byte = 8 × size of the file that restores the input / input bytes (lower is better). "
        "`ideal` rows are the model's cross-entropy: no file backs them. "
        "`coded` rows were compressed, decompressed and compared byte for byte. "
        "95% CI: bootstrap over chunks. all-in size = compressed size + model file (the Large Text "
        "Compression Benchmark rule; baselines count their output only). break-even: input size above "
        f"which the model's all-in size beats {REFERENCE_CODEC}. * = Pareto-best (no other real codec "
        "on this input is both smaller and faster to compress). Speeds: kB/s = 1000 bytes of input per second.",
        "",
    ]
    if len(frame):
        lines += ["## Overview (bits/byte)", ""] + overview(frame) + [""]
    for v in views(frame):
        fv = frame[[view_key(r) == v for _, r in frame.iterrows()]]
        lines += [f"## {view_title(fv)}", ""] + corpus_table(fv) + [""]
    if failed.any():
        lines += ["## FAILED cells", ""]
        for _, r in frame[failed].iterrows():
            reason = r["error"] if not _na(r["error"]) else "round trip failed"
            lines.append(f"- FAILED {codec_label(r)} on {r['corpus_name']}: {reason}")
        lines.append("")
    if matrix_text:
        lines += ["## Matrix", "", "<details><summary>matrix.toml</summary>", "", "```toml",
                  matrix_text.rstrip("\n"), "```", "", "</details>", ""]
    return "\n".join(lines)


# --- plots -----------------------------------------------------------------------------


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> None:
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png")


def plot_bpb_vs_model_size(frame, path: Path) -> None:
    """One panel per corpus: model file size (log) against bits/byte, baselines as lines."""
    from matplotlib.ticker import FuncFormatter

    ok = frame[~failed_mask(frame) & frame["bits_per_byte"].notna()]
    vs = views(ok)
    n = max(len(vs), 1)
    ncols = min(4, n)
    nrows = math.ceil(n / ncols)
    fig = _figure(4.0 * ncols, 3.2 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    colors = {}
    palette = ["C0", "C1", "C2", "C3", "C4", "C5", "C6", "C7", "C8", "C9"]
    for k, v in enumerate(vs):
        ax = axes[k // ncols][k % ncols]
        fv = ok[[view_key(r) == v for _, r in ok.iterrows()]]
        llm = fv[fv["measure"] != "baseline"]
        labelled: dict[str, list] = {}
        for _, r in llm.iterrows():
            color = colors.setdefault(r["model_name"], palette[len(colors) % len(palette)])
            x = r["model_file_bytes"] / 1e6
            yerr = None
            if not _na(r["bits_per_byte_ci95_low"]):
                yerr = [[r["bits_per_byte"] - r["bits_per_byte_ci95_low"]],
                        [r["bits_per_byte_ci95_high"] - r["bits_per_byte"]]]
            ax.errorbar([x], [r["bits_per_byte"]], yerr=yerr, fmt="o" if r["measure"] == "coded" else "^",
                        color=color, capsize=3, mfc=color if r["measure"] == "coded" else "none")
            nth = labelled.setdefault(r["model_name"], [])
            sweep = llm[llm["model_name"] == r["model_name"]]["chunk_tokens"].nunique() > 1
            ctx = f", ctx {int(r['chunk_tokens'])}" if sweep else ""
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
        ax.set_title(view_label(fv), fontsize=9)
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
    _save(fig, path)


def plot_bpb_by_codec(frame, path: Path) -> None:
    """Grouped bars: corpus on x, one bar per codec, CI whiskers on model rows."""
    ok = frame[~failed_mask(frame) & frame["bits_per_byte"].notna()]
    vs = views(ok)
    codecs: dict[str, None] = {}
    for _, r in ok.iterrows():
        codecs.setdefault(codec_label(r), None)
    codecs_l = list(codecs)
    rows_of_legend = math.ceil(len(codecs_l) / 5)
    fig = _figure(min(22.0, max(7.0, 0.16 * len(vs) * max(len(codecs_l), 1) + 2.0)), 6.0 + 0.25 * rows_of_legend)
    ax = fig.add_subplot()
    width = 0.85 / max(len(codecs_l), 1)
    labels = []
    for k, v in enumerate(vs):
        fv = ok[[view_key(r) == v for _, r in ok.iterrows()]]
        labels.append(view_label(fv))
        for _, r in fv.iterrows():
            j = codecs_l.index(codec_label(r))
            x = k - 0.425 + width * (j + 0.5)
            yerr = None
            if not _na(r["bits_per_byte_ci95_low"]):
                yerr = [[r["bits_per_byte"] - r["bits_per_byte_ci95_low"]],
                        [r["bits_per_byte_ci95_high"] - r["bits_per_byte"]]]
            ax.bar([x], [r["bits_per_byte"]], width=width, color=f"C{j % 10}",
                   hatch="//" if r["measure"] == "ideal" else None, edgecolor="white" if r["measure"] != "ideal" else "0.2",
                   yerr=yerr, capsize=2)
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=f"C{j % 10}", hatch="//" if "(ideal" in c else None, label=c)
               for j, c in enumerate(codecs_l)]
    ax.set_xticks(range(len(vs)))
    ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("bits/byte (lower is better)")
    ax.axhline(8, color="0.5", lw=0.8, ls=":")
    ax.grid(True, axis="y", alpha=0.3)
    fig.legend(handles=handles, fontsize=7, ncols=min(5, max(1, len(handles))), loc="outside lower center")
    ax.set_title("bits per byte by codec (hatched: ideal, no file)", fontsize=10)
    _save(fig, path)


# --- entry point -----------------------------------------------------------------------


def render(run_dir: str | os.PathLike) -> list[Path]:
    """(Re)write summary.md and the plots of a run directory from its results.csv."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise BpcError(f"not a run directory: {run_dir}")
    frame = read_csv(run_dir / "results.csv")
    env = {}
    try:
        env = json.loads((run_dir / "env.json").read_text())
    except (OSError, ValueError):
        pass
    try:
        matrix_text = (run_dir / "matrix.toml").read_text()
    except OSError:
        matrix_text = None
    written = [run_dir / "summary.md"]
    write_text(written[0], summary_markdown(frame, env, matrix_text))
    plot_bpb_vs_model_size(frame, run_dir / PLOT_FILES[0])
    plot_bpb_by_codec(frame, run_dir / PLOT_FILES[1])
    written += [run_dir / p for p in PLOT_FILES]
    return written
