"""Run plots on synthetic results: each is written only when it carries information, binary corpora
never set the text scale, the speed plot's Pareto front, and summary.md links exactly the plots there are."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from synthetic_rows import N
from synthetic_rows import row as synthetic_row

from bpcbench.bench import results
from bpcbench.report import plots
from bpcbench.report import render as report

SMALL, LARGE = 100_000_000, 250_000_000  # model file sizes


def row(codec: str, bpb: float, measure: str = "baseline", corpus: str = "alice29", kind: str = "english",
        encode_seconds: float = 0.5, model_bytes: int = SMALL, **kw) -> dict:
    """A synthetic row at a given bits/byte (ideal rows exactly, coded rows through their file size)."""
    model = {} if measure == "baseline" else {
        "model_file_bytes": model_bytes, "n_tokens": N // 4,
        "ideal_bits": bpb * N * (0.99 if measure == "coded" else 1.0), "_ci_ideal": (bpb * 0.95, bpb * 1.05)}
    return synthetic_row(codec, measure, round(bpb * N / 8), corpus, corpus_kind=kind, corpus_file_bytes=N,
                         max_bytes=0, encode_seconds=encode_seconds,
                         decode_seconds=None if measure == "ideal" else encode_seconds, **{**model, **kw})


def frame_of(rows):
    return results.to_frame(rows)


def text_rows(corpus: str = "alice29") -> list[dict]:
    return [
        row("gzip-9", 2.9, corpus=corpus, encode_seconds=0.01),  # fastest
        row("zstd-22-long", 2.5, corpus=corpus, encode_seconds=0.2),  # xz is smaller and faster
        row("xz-9e", 2.3, corpus=corpus, encode_seconds=0.1),
        row("llm:smollm2-135m", 1.6, "coded", corpus=corpus, encode_seconds=30.0),  # smallest real file
        row("llm:smollm2-135m", 1.5, "ideal", corpus=corpus, encode_seconds=20.0),  # smaller still, but no file
    ]


def binary_rows() -> list[dict]:
    return [row("gzip-9", 8.02, corpus="random", kind="binary", encode_seconds=0.01),
            row("llm:smollm2-135m", 14.5, "coded", corpus="random", kind="binary", encode_seconds=30.0),
            row("llm:smollm2-135m", 14.3, "ideal", corpus="random", kind="binary", encode_seconds=20.0)]


def axes_by_title(fig) -> dict:
    return {ax.get_title(): ax for ax in fig.axes if ax.get_title()}


def linked_plots(run_dir: Path) -> set[str]:
    return set(re.findall(r"\]\(([^)]+\.png)\)", (run_dir / "summary.md").read_text()))


def render_rows(run_dir: Path, rows) -> list[str]:
    run_dir.mkdir(parents=True, exist_ok=True)
    results.write_csv(run_dir / "results.csv", rows)
    return [p.name for p in report.render(run_dir)]


# --- bpb_by_codec --------------------------------------------------------------------------


def test_binary_corpora_get_a_panel_of_their_own_and_never_set_the_text_scale():
    text_only = axes_by_title(plots.draw_bpb_by_codec(frame_of(text_rows())))
    both = axes_by_title(plots.draw_bpb_by_codec(frame_of(text_rows() + binary_rows())))
    assert set(text_only) == {"text corpora"} and set(both) == {"text corpora", "binary corpora"}
    low, top = both["text corpora"].get_ylim()
    assert low == 0 and 2.9 < top < 3.5  # from the text rows (max 2.9), not the 8-bit line nor 14.5
    assert top == pytest.approx(text_only["text corpora"].get_ylim()[1])
    assert both["binary corpora"].get_ylim()[1] >= 14.5
    bars = [p for p in both["text corpora"].patches if p.get_height() > 0]
    assert len(bars) == 5 and max(p.get_height() for p in bars) == pytest.approx(2.9)


def test_a_text_value_above_the_raw_size_is_clipped_with_its_value_printed():
    rows = text_rows() + [row("llm:smollm2-135m", 11.0, "coded", corpus="weird", kind="structured"),
                          row("gzip-9", 3.0, corpus="weird", kind="structured")]
    ax = axes_by_title(plots.draw_bpb_by_codec(frame_of(rows)))["text corpora"]
    top = ax.get_ylim()[1]
    assert 3.0 < top < 4.0
    assert [t.get_text() for t in ax.texts] == ["11.00"]  # printed at the one clipped bar, no other


def test_ideal_rows_are_hatched_coded_and_baseline_rows_are_not():
    ax = axes_by_title(plots.draw_bpb_by_codec(frame_of(text_rows())))["text corpora"]
    bars = {round(p.get_height(), 3): p for p in ax.patches if p.get_height() > 0}
    assert bars[1.5].get_hatch() and bars[1.5].get_facecolor()[3] < 1  # ideal: hatched and pale
    for h in (2.9, 2.5, 2.3, 1.6):
        assert not bars[h].get_hatch() and bars[h].get_facecolor()[3] == 1


def test_bar_panels_need_two_bars():
    assert plots.draw_bpb_by_codec(frame_of([row("gzip-9", 2.9)])) is None
    one_binary = text_rows() + [row("gzip-9", 8.02, corpus="random", kind="binary")]
    assert set(axes_by_title(plots.draw_bpb_by_codec(frame_of(one_binary)))) == {"text corpora"}


def test_failed_rows_are_not_drawn():
    rows = text_rows() + [row("brotli-11", 0.5, roundtrip_ok=False, error="brotli-11: round trip mismatch")]
    ax = axes_by_title(plots.draw_bpb_by_codec(frame_of(rows)))["text corpora"]
    assert len([p for p in ax.patches if p.get_height() > 0]) == 5


# --- bpb_vs_speed ------------------------------------------------------------------------


def test_pareto_front_of_the_real_codecs():
    rows = text_rows() + [
        row("brotli-11", 1.0, encode_seconds=0.001, roundtrip_ok=False, error="brotli-11: round trip mismatch"),
        row("bzip2-9", 0.9, encode_seconds=0.001, error="bzip2-9: crashed"),
    ]
    (view, panel), = plots.speed_panels(frame_of(rows))
    assert view == ("alice29", N)
    # the ideal row (no file) and the failed rows (smaller and faster than all) are left out
    assert sorted(panel["codec"] + "/" + panel["measure"]) == [
        "gzip-9/baseline", "llm:smollm2-135m/coded", "xz-9e/baseline", "zstd-22-long/baseline"]
    front = set(panel.loc[panel["pareto"], "codec"])
    assert front == {"gzip-9", "xz-9e", "llm:smollm2-135m"}  # zstd-22-long: xz is smaller and faster


def test_speed_plot_draws_the_front_as_a_step_line_and_labels_its_points():
    fig = plots.draw_bpb_vs_speed(frame_of(text_rows()))
    ax = axes_by_title(fig)["alice29"]
    assert ax.get_xscale() == "log"
    step, = [ln for ln in ax.get_lines() if ln.get_drawstyle().startswith("steps")]
    xs = list(step.get_xdata())
    assert xs == sorted(xs) and list(step.get_ydata()) == pytest.approx([1.6, 2.3, 2.9])
    assert {t.get_text() for t in ax.texts} == {"gzip-9", "xz-9e", "llm:smollm2-135m (coded lanes ctx 512)"}
    assert len(ax.collections) == 4  # one marker per real codec


def test_speed_panels_need_two_real_codecs():
    lone = [row("gzip-9", 2.9), row("llm:smollm2-135m", 1.5, "ideal")]
    assert plots.speed_panels(frame_of(lone)) == [] and plots.draw_bpb_vs_speed(frame_of(lone)) is None
    panels = plots.speed_panels(frame_of(text_rows() + [row("gzip-9", 3.0, corpus="other")]))
    assert [v for v, _ in panels] == [("alice29", N)]


# --- bpb_vs_model_size and bpb_vs_context --------------------------------------------------


def test_model_size_panels_only_where_two_model_sizes_were_measured():
    one_size = text_rows() + text_rows("enwik")
    assert plots.model_size_views(frame_of(one_size)) == [] and plots.draw_bpb_vs_model_size(frame_of(one_size)) is None
    two = one_size + [row("llm:gemma3-270m", 1.3, "coded", corpus="enwik", model_bytes=LARGE)]
    assert plots.model_size_views(frame_of(two)) == [("enwik", N)]
    fig = plots.draw_bpb_vs_model_size(frame_of(two))
    assert set(axes_by_title(fig)) == {"enwik"}


def test_context_sweep_only_with_two_contexts():
    assert plots.draw_context_sweep(frame_of(text_rows())) is None
    swept = text_rows() + [row("llm:smollm2-135m", 1.4, "coded", context_tokens=2048)]
    assert plots.draw_context_sweep(frame_of(swept)) is not None


# --- render and summary.md ---------------------------------------------------------------


def test_summary_links_exactly_the_plots_written(tmp_path):
    written = render_rows(tmp_path, [row("gzip-9", 2.9)])
    assert written == ["summary.md"] and not list(tmp_path.glob("*.png")) and linked_plots(tmp_path) == set()
    assert "## Plots" not in (tmp_path / "summary.md").read_text()

    rich = text_rows() + binary_rows() + [
        row("llm:gemma3-270m", 1.3, "coded", model_bytes=LARGE, encode_seconds=60.0),
        row("llm:smollm2-135m", 1.4, "coded", context_tokens=2048, encode_seconds=40.0)]
    written = render_rows(tmp_path, rich)
    pngs = {p.name for p in tmp_path.glob("*.png")}
    assert pngs == {"bpb_by_codec.png", "bpb_vs_speed.png", "bpb_vs_model_size.png", "bpb_vs_context.png"}
    assert set(written[1:]) == pngs == linked_plots(tmp_path)
    for name in pngs:
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rerender_removes_plots_that_no_longer_carry_information(tmp_path):
    render_rows(tmp_path, text_rows() + [row("llm:gemma3-270m", 1.3, "coded", model_bytes=LARGE)])
    assert (tmp_path / "bpb_vs_model_size.png").exists() and "bpb_vs_model_size.png" in linked_plots(tmp_path)
    render_rows(tmp_path, text_rows())  # one model size left: that plot would be one point per model
    assert not (tmp_path / "bpb_vs_model_size.png").exists()
    assert (linked_plots(tmp_path) == {p.name for p in tmp_path.glob("*.png")}
            == {"bpb_by_codec.png", "bpb_vs_speed.png"})
