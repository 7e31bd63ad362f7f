"""The split (#25): per corpus, what the weights save over zstd -19 and what the match model saves on
top, in summary.md and bpb_split.png, from synthetic rows (no model needed)."""

from __future__ import annotations

import pytest
from test_plots import frame_of, linked_plots, row

from bpcbench.bench import results
from bpcbench.report import split
from bpcbench.report.markdown import summary_markdown
from bpcbench.report.render import render

# (corpus, zstd-19, llm:m alone, llm+match:m) in bits/byte
NUMBERS = (("alice29", 3.25, 1.15, 1.12), ("iso3166-1", 1.10, 0.30, 0.27))


def split_rows(measure: str = "ideal") -> list[dict]:
    rows = []
    for corpus, zstd, llm, mixed in NUMBERS:
        rows += [row("gzip-9", zstd + 0.1, corpus=corpus), row("zstd-19", zstd, corpus=corpus),
                 row("llm:m", llm, measure, corpus=corpus), row("llm+match:m", mixed, measure, corpus=corpus)]
    return rows


def table_cells(text: str) -> list[list[str]]:
    section = text.split("## What the weights predict and what the file repeats (bits/byte)")[1]
    lines = section.split("\n\n")[2].splitlines()
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:]]


def test_the_table_gives_each_corpus_its_two_savings():
    frame = frame_of(split_rows())
    cells = table_cells(summary_markdown(frame))
    assert cells == [[corpus, "llm:m (ideal lanes ctx 512)", f"{zstd:.4f}",
                      f"{llm:.4f}", f"{mixed:.4f}", f"{zstd - llm:+.4f}", f"{llm - mixed:+.4f}"]
                     for corpus, zstd, llm, mixed in NUMBERS]
    entries = split.split_entries(frame.to_dict("records"))
    for e, (_, zstd, llm, mixed) in zip(entries, NUMBERS, strict=True):
        assert e["from_weights"] == pytest.approx(zstd - llm, abs=1e-3)  # zstd's size is whole bytes
        assert e["from_file"] == pytest.approx(llm - mixed, rel=1e-12)
        assert e["baseline"] == pytest.approx(zstd, abs=1e-3)


def test_only_a_pair_on_the_same_view_and_measure_makes_a_row():
    rows = split_rows()
    alone = [r for r in rows if r["codec"] != "llm+match:m"]
    assert "## What the weights predict" not in summary_markdown(frame_of(alone))
    assert split.draw_split(frame_of(alone)) is None
    # the mixed row coded, the plain one ideal: not the same measurement, no pair
    other = alone + [row("llm+match:m", 1.12, "coded", corpus="alice29")]
    assert split.split_entries(frame_of(other).to_dict("records")) == []
    # a failed mixed row is no result
    failed = alone + [row("llm+match:m", 1.12, "ideal", corpus="alice29", error="boom")]
    assert split.split_entries(frame_of(failed).to_dict("records")) == []
    # without zstd-19 the table keeps the match model's saving, the plot has no bar top to draw
    no_zstd = [r for r in rows if r["codec"] != "zstd-19"]
    (first, _) = table_cells(summary_markdown(frame_of(no_zstd)))
    assert first[2] == "" and first[5] == "" and first[6] == "+0.0300"
    assert split.draw_split(frame_of(no_zstd)) is None


def test_the_plot_is_written_and_linked(tmp_path):
    results.write_csv(tmp_path / "results.csv", split_rows())
    written = render(tmp_path)
    assert tmp_path / split.SPLIT_PLOT in written
    assert (tmp_path / split.SPLIT_PLOT).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert split.SPLIT_PLOT in linked_plots(tmp_path)
    fig = split.draw_split(frame_of(split_rows()))
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["alice29", "iso3166-1"]
    tops = sorted({round(p.get_y() + p.get_height(), 3) for p in ax.patches})
    assert tops == sorted({round(x, 3) for _, zstd, llm, mixed in NUMBERS for x in (zstd, llm, mixed)})
    # the run without the pair: the stale plot goes
    results.write_csv(tmp_path / "results.csv", [r for r in split_rows() if r["codec"] != "llm+match:m"])
    render(tmp_path)
    assert not (tmp_path / split.SPLIT_PLOT).exists() and split.SPLIT_PLOT not in linked_plots(tmp_path)


def test_the_plot_draws_at_most_max_bar_views_corpus_views():
    rows = []
    for k in range(split.MAX_BAR_VIEWS + 5):
        rows += [row("zstd-19", 3.0, corpus=f"c{k}"), row("llm:m", 1.2, "ideal", corpus=f"c{k}"),
                 row("llm+match:m", 1.1, "ideal", corpus=f"c{k}")]
    fig = split.draw_split(frame_of(rows))
    assert len(fig.axes[0].get_xticklabels()) == split.MAX_BAR_VIEWS
    assert f"the first {split.MAX_BAR_VIEWS} of {split.MAX_BAR_VIEWS + 5} corpus views" in fig._suptitle.get_text()
