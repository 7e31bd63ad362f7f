"""summary.md from a run's results.csv: lzbench / TurboBench style tables.

A row that failed (results.row_failed) is never shown as a result; it is listed as FAILED.
The tables are built from the rows as records (one DataFrame.to_dict for the whole frame), grouped
by view in one pass: pandas operations on a frame per view made summary.md of 20,000 rows take minutes.
"""

from __future__ import annotations

import math

from bpcbench.bench.results import row_failed
from bpcbench.bench.labels import (
    REFERENCE_CODEC,
    codec_label,
    group_rows,
    input_label,
    is_missing,
    view_key,
    view_title,
)
from bpcbench.report.plots import MAX_BAR_VIEWS, MAX_PANELS
from bpcbench.report.split import split_markdown
from bpcbench.stats import CI_PERCENT, MIN_CI_PIECES, pareto_front


def _num(v, fmt: str, empty: str = "") -> str:
    return empty if is_missing(v) else format(v, fmt)


def human_bytes(n: float) -> str:
    """1234567 -> '1.23 MB' (powers of 1000, as compressors' sizes are usually quoted)."""
    if is_missing(n):
        return ""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.0f} B"


def speed(kb_per_s, is_llm: bool) -> str:
    if is_missing(kb_per_s):
        return ""
    if is_llm:
        return f"{kb_per_s:.3g} kB/s"
    return f"{kb_per_s / 1000:.4g} MB/s"


def timed_speed(r, phase: str) -> str:
    """A row's speed of one phase with its spread (± relative standard deviation of the
    timing values) and a mark for a timing replayed from the cell cache."""
    text = speed(r[f"{phase}_kB_per_s"], r["measure"] != "baseline")
    if not text:
        return text
    std, mean = r[f"{phase}_seconds_std"], r[f"{phase}_seconds"]
    if not is_missing(std) and not is_missing(mean) and mean > 0:
        text += f" ±{100 * std / mean:.0f}%"
    return text + (" (cached)" if r["cached"] is True else "")


def records(frame) -> list[dict]:
    """The rows as dicts (NA read as None): labels and cells read them ~100x faster than iterrows' Series."""
    return frame.to_dict("records")


def by_bits_per_byte(rows: list[dict]) -> list[dict]:
    """Lowest bits/byte first, rows without one last, ties in their order (a stable sort)."""
    return sorted(rows, key=lambda r: (True, 0.0) if is_missing(r["bits_per_byte"]) else (False, r["bits_per_byte"]))


def pareto_best(ok: list[dict]) -> set:
    """Positions in `ok` of real codecs (coded or baseline) that no other is both smaller and faster than."""
    real = [k for k, r in enumerate(ok) if r["measure"] != "ideal" and not is_missing(r["bits_per_byte"])
            and not is_missing(r["encode_kB_per_s"])]
    front = pareto_front([(ok[k]["bits_per_byte"], -ok[k]["encode_kB_per_s"]) for k in real])
    return {k for k, best in zip(real, front) if best}


def break_even_bytes(model_file_bytes, model_bpb, reference_bpb) -> float | None:
    """Input size above which the model's all-in size beats the reference codec; inf = never."""
    if is_missing(model_file_bytes) or is_missing(model_bpb) or is_missing(reference_bpb):
        return None
    gain = reference_bpb - model_bpb  # bits saved per input byte
    if gain <= 0:
        return math.inf
    return float(model_file_bytes) * 8 / gain


def corpus_table(rows: list[dict]) -> list[str]:
    """The table of one view from its rows (records): results best first, then its FAILED rows."""
    ok = by_bits_per_byte([r for r in rows if not row_failed(r)])
    best = pareto_best(ok)
    ref_bpb = next((r["bits_per_byte"] for r in ok if r["codec"] == REFERENCE_CODEC), None)
    lines = [
        f"| | codec | size (bytes) | bits/byte | {CI_PERCENT} CI | bits/char | ratio | compress | decompress "
        "| peak RSS (MiB) | all-in size (bytes) | break-even vs " + REFERENCE_CODEC + " |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for i, r in enumerate(ok):
        llm = r["measure"] != "baseline"
        ideal = r["measure"] == "ideal"
        size = f"≈{r['ideal_bits'] / 8:,.0f}" if ideal else _num(r["container_bytes"], ",")
        ci = ""
        if not is_missing(r["bits_per_byte_ci95_low"]):
            ci = f"{r['bits_per_byte_ci95_low']:.3f}–{r['bits_per_byte_ci95_high']:.3f}"
            ci += "†" if not is_missing(r["ci_warning"]) else ""
        size_bytes = r["ideal_bits"] / 8 if ideal else r["container_bytes"]
        all_in = ""
        if llm and not is_missing(r["model_file_bytes"]) and not is_missing(size_bytes):
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
            f"| {timed_speed(r, 'encode')} | {timed_speed(r, 'decode')} "
            f"| {_num(r['peak_rss_mb'], '.0f')} | {all_in} | {be} |"
        )
    for r in rows:
        if row_failed(r):
            lines.append(f"| | **FAILED** {codec_label(r)} | | | | | | | | | | {_md_cell(_reason(r))} |")
    return lines


def _reason(r: dict) -> str:
    return r["error"] if not is_missing(r["error"]) else "round trip failed"


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def overview(rows: list[dict]) -> list[str]:
    """Corpus × codec bits/byte at a glance (failed cells: FAILED), from the rows as records."""
    labels = [codec_label(r) for r in rows]
    cols = dict.fromkeys(labels)  # codecs in the order of their first row
    cells: dict[tuple, dict[str, str]] = {}  # view -> its cells, views in first-appearance order
    names = {}
    for r, label in zip(rows, labels):
        v = view_key(r)
        names.setdefault(v, input_label(r))
        cells.setdefault(v, {})[label] = "FAILED" if row_failed(r) else _num(r["bits_per_byte"], ".3f")
    head = "| corpus | " + " | ".join(cols) + " |"
    lines = [head, "|---|" + "--:|" * len(cols)]
    for v, row_cells in cells.items():
        lines.append(f"| {names[v]} | " + " | ".join(row_cells.get(c, "") for c in cols) + " |")
    return lines


def text_tables(frame) -> list[str]:
    """lzbench's layout as plain text, one table per corpus view (what `bench` prints on stdout):
    codec, compress and decompress speed, size, bits/byte, ratio; best first, failures last."""
    lines = []
    for rows in group_rows(records(frame)).values():
        ok = by_bits_per_byte([r for r in rows if not row_failed(r)])
        best = pareto_best(ok)
        table = [("", "codec", "compress", "decompress", "size (bytes)", "bits/byte", "ratio")]
        for i, r in enumerate(ok):
            ideal = r["measure"] == "ideal"
            table.append(("*" if i in best else "", codec_label(r), timed_speed(r, "encode"),
                          timed_speed(r, "decode"),
                          f"≈{r['ideal_bits'] / 8:,.0f}" if ideal else _num(r["container_bytes"], ","),
                          _num(r["bits_per_byte"], ".4f"), _num(r["compression_ratio"], ".3f")))
        for r in rows:
            if row_failed(r):
                table.append(("", codec_label(r), "FAILED", "", "", "", ""))
        widths = [max(len(t[k]) for t in table) for k in range(len(table[0]))]
        right = (False, False, True, True, True, True, True)
        lines += [view_title(rows[0])] + ["  ".join(c.rjust(w) if right_aligned else c.ljust(w)
                                                    for c, w, right_aligned in zip(t, widths, right)).rstrip()
                                          for t in table] + [""]
    return lines + ["* = Pareto-best (no other real codec is both smaller and faster to compress); "
                    "≈ = ideal size (cross-entropy, no file)"] if lines else lines


def _env_lines(env: dict) -> list[str]:
    if not env:
        return []

    def table(d, key: str) -> dict:  # env.json is read as any JSON object: a field of another type shows as unknown
        return d.get(key) if isinstance(d.get(key), dict) else {}

    cpu, libs, git = table(env, "cpu"), table(env, "libraries"), table(env, "git")
    mem = env.get("memory_bytes") if isinstance(env.get("memory_bytes"), (int, float)) else None
    gpu_list = env.get("gpus") if isinstance(env.get("gpus"), list) else []
    gpus = ", ".join(str(g.get("name")) for g in gpu_list if isinstance(g, dict)) or "none"
    commit = str(git.get("commit") or "unknown")[:12] + (" (dirty)" if git.get("dirty") else "")
    flags = cpu.get("simd_flags") if isinstance(cpu.get("simd_flags"), list) else []
    return [
        f"- machine: {cpu.get('model', '?')}, {cpu.get('usable_cores') or cpu.get('logical_cores')} usable cores"
        f" (SIMD: {' '.join(map(str, flags)) or '?'}), "
        f"{human_bytes(mem) if mem else '?'} RAM, GPU: {gpus}",
        f"- software: bpcbench {env.get('bpcbench')}, Python {table(env, 'python').get('version')}, "
        f"llama-cpp-python {libs.get('llama_cpp_python')}, git {commit}",
    ]


def plots_section(plot_links, n_views: int = 0) -> list[str]:
    """'## Plots' with one image per (file name, caption), relative to summary.md; nothing without plots.
    With more corpus views than a figure draws (plots.MAX_PANELS, MAX_BAR_VIEWS), a line says so."""
    if not plot_links:
        return []
    lines = ["## Plots", ""]
    if n_views > min(MAX_PANELS, MAX_BAR_VIEWS):
        lines += [f"The plots draw the first corpus views of {n_views:,} (in results.csv order): at most "
                  f"{MAX_PANELS} panels per figure and {MAX_BAR_VIEWS} bar groups per panel. The tables above "
                  "have every view.", ""]
    for name, caption in plot_links:
        lines += [f"![{_md_cell(caption)}]({name})", ""]
    return lines


def summary_markdown(frame, env: dict | None = None, matrix_text: str | None = None, plot_links=()) -> str:
    """plot_links: (file name, caption) of the plots written beside summary.md; only these are linked."""
    env = env or {}
    rows = records(frame)
    failed = [r for r in rows if row_failed(r)]
    run_ids = sorted(set(frame["run_id"].dropna())) or ["?"]
    hosts = sorted(set(frame["host"].dropna())) or [env.get("host", "?")]
    lines = [f"# bpcbench results: {run_ids[-1]}", ""]
    lines.append(f"- run: {', '.join(run_ids)} on {', '.join(hosts)}; "
                 f"{len(frame)} cells ({int(frame['cached'].fillna(False).sum())} from cache), "
                 f"{len(failed)} FAILED")
    models = frame[frame["model_name"].notna()].drop_duplicates("model_name")
    for _, m in models.iterrows():
        size = human_bytes(m["model_file_bytes"]) if not is_missing(m["model_file_bytes"]) else "?"
        params = f"{m['model_n_params'] / 1e6:.0f}M params" if not is_missing(m["model_n_params"]) else "?"
        sha = m["model_sha256"][:12] if not is_missing(m["model_sha256"]) else "?"
        lines.append(f"- model {m['model_name']}: {m['model_quant_type']}, {size} file, {params}, sha256 {sha}…")
    lines += _env_lines(env)
    lines += [
        "",
        "bits/byte = 8 × size of the file that restores the input / input bytes (lower is better). "
        "`ideal` rows are the model's cross-entropy: no file backs them. "
        "`coded` rows were compressed, decompressed and compared byte for byte. "
        f"{CI_PERCENT} CI: BCa bootstrap over the row's pieces (lanes, chunks or windows); † = fewer than "
        f"{MIN_CI_PIECES} pieces, the interval understates the spread. all-in size = compressed size + model file "
        "(the Large Text Compression Benchmark rule; baselines count their output only). break-even: input size above "
        f"which the model's all-in size beats {REFERENCE_CODEC}. * = Pareto-best (no other real codec "
        "on this input is both smaller and faster to compress). Speeds: kB/s = 1000 bytes of input per second, "
        "mean of `timing_values` timed values ± their relative standard deviation; (cached) = a timing "
        "replayed from the cell cache, not measured in this run.",
        "",
    ]
    if rows:
        lines += ["## Overview (bits/byte)", ""] + overview(rows) + [""] + split_markdown(rows)
    views = group_rows(rows)
    for view_rows in views.values():
        lines += [f"## {view_title(view_rows[0])}", ""] + corpus_table(view_rows) + [""]
    if failed:
        lines += ["## FAILED cells", ""]
        for r in failed:
            lines.append(f"- FAILED {codec_label(r)} on {r['corpus_name']}: {_reason(r)}")
        lines.append("")
    lines += plots_section(plot_links, len(views))
    if matrix_text:
        lines += ["## Matrix", "", "<details><summary>matrix.toml</summary>", "", "```toml",
                  matrix_text.rstrip("\n"), "```", "", "</details>", ""]
    return "\n".join(lines)
