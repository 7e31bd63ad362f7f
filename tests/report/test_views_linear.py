"""Views (one table, one plot panel per corpus × measured bytes) are found in one pass over the rows:
the work of a report grows with its rows, not with rows × views (benchmarks/test_report_speed.py times
20,000 rows)."""

from __future__ import annotations

from synthetic_rows import row

from bpcbench.bench import labels, results
from bpcbench.report.markdown import summary_markdown


def many_views(n_views: int):
    rows = []
    for k in range(n_views):
        rows += [row("gzip-9", size=7000 + k, corpus=f"c{k}"), row("llm:m", "coded", size=5000 + k, corpus=f"c{k}")]
    return results.to_frame(rows)


def counting_view_key(monkeypatch) -> list:
    calls = []
    real = labels.view_key

    def counted(r):
        calls.append(1)
        return real(r)

    monkeypatch.setattr(labels, "view_key", counted)
    return calls


def test_views_are_found_reading_each_row_once(monkeypatch):
    frame = many_views(40)
    frame = frame.iloc[list(range(0, 80, 2)) + list(range(1, 80, 2))]  # every gzip row, then every model row
    calls = counting_view_key(monkeypatch)
    positions = labels.view_positions(frame)
    assert len(calls) == len(frame) == 80
    assert positions == {(f"c{k}", 20_000): [k, 40 + k] for k in range(40)}
    assert list(positions) == [(f"c{k}", 20_000) for k in range(40)]  # first-appearance order
    groups = labels.group_rows(frame.to_dict("records"))
    assert len(calls) == 2 * len(frame)
    assert {v: [(r["corpus_name"], r["codec"]) for r in rows] for v, rows in groups.items()} == {
        v: [(v[0], "gzip-9"), (v[0], "llm:m")] for v in positions}


def test_the_summary_looks_at_each_row_a_fixed_number_of_times(monkeypatch):
    frame = many_views(40)
    calls = counting_view_key(monkeypatch)
    text = summary_markdown(frame)
    assert text.count("## c") == 40
    assert len(calls) <= 4 * len(frame)  # one pass per table; a pass per view would be 40 x 80


def test_plots_draw_a_capped_number_of_views_and_the_summary_says_so(tmp_path):
    from bpcbench.report import plots
    from bpcbench.report.render import render

    frame = many_views(40)
    fig = plots.draw_bpb_vs_speed(frame)
    assert len([ax for ax in fig.axes if ax.get_title()]) == plots.MAX_PANELS
    assert "the first 12 of 40 corpus views" in fig._suptitle.get_text()
    bars = plots.draw_bpb_by_codec(frame)
    assert len(bars.axes[0].get_xticklabels()) == plots.MAX_BAR_VIEWS
    results.write_csv(tmp_path / "results.csv", frame)
    render(tmp_path)
    assert "The plots draw the first corpus views of 40" in (tmp_path / "summary.md").read_text()
