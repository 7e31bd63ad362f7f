"""summary.md, plots and the regression gate, on synthetic results (no model needed)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from synthetic_rows import MODEL_BYTES, N, row

from bpcbench.bench import compare, results
from bpcbench.cli import main
from bpcbench.report import markdown
from bpcbench.report import render as report


def run_rows():
    return [
        row("gzip-9", size=7000),
        row("zstd-22-long", size=6000, encode_seconds=2.0),
        row("xz-9e", size=5800, encode_seconds=1.0),
        row("llm:smollm2-135m", "coded", size=3000),
        row("llm:gemma3-270m", "ideal", size=2600),
        row("gzip-9", size=2000, corpus="iso3166-1"),
    ]


def write_run(path: Path, rows) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    results.write_csv(path / "results.csv", rows)
    return path


def test_csv_round_trip_keeps_types_and_empties(tmp_path):
    write_run(tmp_path, run_rows())
    frame = results.read_csv(tmp_path)
    assert list(frame.columns) == results.COLUMN_NAMES and len(frame) == 6
    assert frame["roundtrip_ok"].tolist()[:4] == [True] * 4 and frame["roundtrip_ok"].isna().tolist()[4]
    coded = frame[frame["measure"] == "coded"].iloc[0]
    assert coded["bits_per_byte"] == pytest.approx(3000 * 8 / N)
    assert coded["bits_per_byte_ci95_low"] < coded["bits_per_byte"] < coded["bits_per_byte_ci95_high"]
    assert frame.loc[0, "context_tokens"] is frame.loc[0, "model_name"]  # both pandas.NA for a baseline


def test_schema_doc_is_generated_from_the_column_list():
    doc = Path(__file__).resolve().parents[2] / "docs" / "results-schema.md"
    assert doc.read_text() == results.schema_markdown()
    for c in results.COLUMNS:
        assert results.schema_markdown().count(f"| `{c.name}` |") == 1
        assert c.unit and c.doc


def test_failed_round_trip_empties_sizes():
    r = row("zstd-19", size=5000, roundtrip_ok=False, error="zstd-19: round trip mismatch")
    assert r["container_bytes"] is None and r["bits_per_byte"] is None and r["roundtrip_ok"] is False


def test_summary_table(tmp_path):
    rows_ = run_rows() + [row("brotli-11", size=10, roundtrip_ok=False, error="brotli-11: round trip mismatch: x")]
    write_run(tmp_path, rows_)
    (tmp_path / "matrix.toml").write_text('[run]\nname = "test"\n')
    written = report.render(tmp_path)
    text = (tmp_path / "summary.md").read_text()
    assert "# bpcbench results: 20260101T000000Z-test" in text and 'name = "test"' in text
    section = text.split("## alice29")[1].split("## ")[0]
    lines = [ln for ln in section.splitlines() if ln.startswith("|")]
    assert "| codec | size (bytes) | bits/byte |" in lines[0]
    body = lines[2:]
    order = [ln.split("|")[2].strip() for ln in body]
    # sorted by size; the failed cell is listed as FAILED, never with a size
    assert order == ["llm:gemma3-270m (ideal lanes ctx 512)", "llm:smollm2-135m (coded lanes ctx 512)", "xz-9e",
                     "zstd-22-long", "gzip-9", "**FAILED** brotli-11"]
    failed = body[-1]
    assert "round trip mismatch" in failed and "0.0040" not in failed
    cells = {ln.split("|")[2].strip(): [c.strip() for c in ln.split("|")] for ln in body}
    smol = cells["llm:smollm2-135m (coded lanes ctx 512)"]
    assert smol[3] == "3,000" and smol[4] == f"{3000 * 8 / N:.4f}"
    assert smol[11] == f"{3000 + MODEL_BYTES:,}"  # all-in: coded + model file
    # break-even against zstd-22-long: model bytes * 8 / (bpb_zstd - bpb_model)
    expected = MODEL_BYTES * 8 / (6000 * 8 / N - 3000 * 8 / N)
    assert smol[12] == markdown.human_bytes(expected) == "667 MB"
    assert smol[8].endswith("kB/s") and cells["gzip-9"][8].endswith("MB/s")
    # Pareto: gzip fastest, the coded model smallest; xz beats zstd-22-long on both counts
    assert cells["gzip-9"][1] == "*" and smol[1] == "*" and cells["xz-9e"][1] == "*"
    assert cells["zstd-22-long"][1] == "" and cells["llm:gemma3-270m (ideal lanes ctx 512)"][1] == ""
    assert "## FAILED cells" in text and "- FAILED brotli-11 on alice29" in text
    assert "## iso3166-1" in text
    for p in written[1:]:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_break_even_never_when_the_model_is_worse():
    assert markdown.break_even_bytes(MODEL_BYTES, 3.0, 2.0) == math.inf
    assert markdown.break_even_bytes(MODEL_BYTES, 1.0, 2.0) == MODEL_BYTES * 8
    assert markdown.break_even_bytes(MODEL_BYTES, 1.0, None) is None


def test_report_command_rerenders(tmp_path, capsys):
    write_run(tmp_path, run_rows())
    assert main(["report", str(tmp_path)]) == 0
    assert (tmp_path / "summary.md").exists() and (tmp_path / "bpb_by_codec.png").exists()
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_compare_identical_runs_pass(tmp_path, capsys):
    a = write_run(tmp_path / "a", run_rows())
    b = write_run(tmp_path / "b", run_rows())
    assert main(["compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "no regression (6 cells compared" in out and "1.00x faster" in out


def test_compare_flags_a_bits_regression(tmp_path, capsys):
    a = write_run(tmp_path / "a", run_rows())
    worse = run_rows()
    worse[1] = row("zstd-22-long", size=6100, encode_seconds=2.0)  # deterministic codec, +1.7%
    b = write_run(tmp_path / "b", worse)
    assert main(["compare", str(a), str(b)]) == 1
    out = capsys.readouterr().out
    assert "REGRESSION zstd-22-long · alice29[:20k]: bits/byte +1.67%" in out
    assert main(["compare", str(a), str(b), "--bpb-threshold", "2"]) == 0


def test_compare_bits_change_inside_the_bootstrap_interval_is_not_significant(tmp_path, capsys):
    """Different input bytes (a corpus changed): a change inside the interval is sampling noise."""
    a = write_run(tmp_path / "a", run_rows())
    noisy = run_rows()
    noisy[3] = row("llm:smollm2-135m", "coded", size=3060)  # +2%, inside the ±5% interval
    noisy[3]["input_sha256"] = "f" * 64
    b = write_run(tmp_path / "b", noisy)
    assert main(["compare", str(a), str(b)]) == 0
    assert "+2.00%  not significant" in capsys.readouterr().out
    far = run_rows()
    far[3] = row("llm:smollm2-135m", "coded", size=3600)  # +20%: outside both intervals
    c = write_run(tmp_path / "c", far)
    assert main(["compare", str(a), str(c)]) == 1


def test_compare_same_input_any_bits_change_beyond_threshold_is_a_regression(tmp_path, capsys):
    """Same bytes through a deterministic codec: the interval is not noise, the threshold decides."""
    a = write_run(tmp_path / "a", run_rows())
    worse = run_rows()
    worse[3] = row("llm:smollm2-135m", "coded", size=3060)  # +2%, same input_sha256
    b = write_run(tmp_path / "b", worse)
    assert main(["compare", str(a), str(b)]) == 1
    assert "bits/byte +2.00% (worse by more than 0.5%)" in capsys.readouterr().out


def test_compare_flags_speed_failures_and_missing_cells(tmp_path, capsys):
    a = write_run(tmp_path / "a", run_rows())
    new = run_rows()
    new[3] = row("llm:smollm2-135m", "coded", size=3000, encode_seconds=60.0)  # 2x slower
    new[0] = row("gzip-9", size=7000, roundtrip_ok=False, error="gzip-9: round trip mismatch")
    del new[5]
    b = write_run(tmp_path / "b", new)
    assert main(["compare", str(a), str(b), "--json", "--require-all"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is False
    regressions = "\n".join(doc["regressions"])
    assert "gzip-9 · alice29[:20k]: FAILED in the new run: gzip-9: round trip mismatch" in regressions
    assert "gzip-9 · iso3166-1[:20k]: missing from the new run" in regressions
    assert len(doc["regressions"]) == 2  # a single timing is not judged
    smol = [c for c in doc["cells"] if c["codec"] == "llm:smollm2-135m"][0]
    assert smol["encode_change"] == "2.00x slower (1 value: not judged)"
    assert smol["decode_change"] == "1.00x faster (1 value: not judged)"


def test_compare_a_cell_without_bits_per_byte_is_a_failure_not_no_change(tmp_path, capsys):
    """Empty bits/byte in a row that claims success: the cell is reported FAILED, never 'same'."""
    a = write_run(tmp_path / "a", run_rows())
    new = run_rows()
    new[1]["bits_per_byte"] = None  # zstd-22-long: no error, round trip ok, but no number
    b = write_run(tmp_path / "b", new)
    assert main(["compare", str(a), str(b)]) == 1
    out = capsys.readouterr().out
    assert "REGRESSION zstd-22-long · alice29[:20k]: FAILED in the new run: no bits/byte" in out
    assert main(["compare", str(b), str(a)]) == 0  # missing in the old run: a note, nothing to judge
    assert "note: zstd-22-long · alice29[:20k]: failed in the old run: no bits/byte" in capsys.readouterr().out


def test_compare_frames_with_a_nan_bits_per_byte():
    """A NaN in an in-memory frame (no reader in between) fails the cell too."""
    a = results.to_frame(run_rows())
    b = results.to_frame(run_rows())
    b.loc[3, "bits_per_byte"] = math.nan
    c = compare.compare_frames(a, b)
    assert c.regressions == ["llm:smollm2-135m (coded lanes ctx 512) · alice29[:20k]: FAILED in the new run: "
                             "no bits/byte"]
    assert "FAILED" in compare.format_text(c)


@pytest.mark.parametrize("flag", ["--bpb-threshold", "--speed-threshold"])
@pytest.mark.parametrize("value", ["nan", "-1", "-0.5", "inf", "x"])
def test_compare_refuses_a_nan_or_negative_threshold(tmp_path, capsys, flag, value):
    a = write_run(tmp_path / "a", run_rows())
    assert main(["compare", str(a), str(a), f"{flag}={value}"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and flag in err and repr(value) in err


def test_speed_of_very_short_cells_is_not_judged():
    a = results.to_frame([row("gzip-9", size=7000, encode_seconds=0.001)])
    b = results.to_frame([row("gzip-9", size=7000, encode_seconds=0.004)])
    c = compare.compare_frames(a, b)
    assert c.ok and c.cells[0].encode_change == "4.00x slower (too short to judge)"


def test_speed_change_wording():
    assert compare.speed_change(100, 123) == "1.23x faster"
    assert compare.speed_change(123, 100) == "1.23x slower"


def test_compare_by_default_judges_only_the_cells_both_runs_share(tmp_path, capsys):
    """A quick run against the reference run: the cells it lacks are listed, not regressions."""
    a = write_run(tmp_path / "a", run_rows())
    smaller = run_rows()[:3]
    b = write_run(tmp_path / "b", smaller)
    assert main(["compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "no regression (3 cells compared" in out and "old cell only (not compared" in out


@pytest.mark.parametrize("factor, code", [(1.05, 0), (0.95, 0), (2.0, 1)])
def test_timing_noise_of_five_percent_is_not_a_regression_but_twice_as_slow_is(tmp_path, capsys, factor, code):
    a = write_run(tmp_path / "a", run_rows())
    new = run_rows()
    new[3] = row("llm:smollm2-135m", "coded", size=3000, encode_seconds=30.0 * factor)
    b = write_run(tmp_path / "b", new)
    assert main(["compare", str(a), str(b)]) == 0  # one value each: not judged
    a = write_run(tmp_path / "a3", [timed("llm:smollm2-135m", 30.0, 1.5, n=3)])
    b = write_run(tmp_path / "b3", [timed("llm:smollm2-135m", 30.0 * factor, 1.5 * factor, n=3)])
    assert main(["compare", str(a), str(b)]) == code


def timed(codec: str, mean: float, std: float, n: int = 5, **kw) -> dict:
    """A row whose encode and decode timings are mean ± std over n values."""
    measure = "baseline" if not codec.startswith("llm:") else "coded"
    return row(codec, measure, size=3000 if measure == "coded" else 7000, encode_seconds=mean,
               encode_seconds_std=std, decode_seconds=mean, decode_seconds_std=std, timing_values=n,
               timing_loops=1, **kw)


@pytest.mark.parametrize("seed", range(5))
def test_repeated_timings_with_five_percent_noise_never_regress(seed):
    """Two runs of the same code: every mean moved by up to ±5% (and ~5% spread in each) is noise."""
    rng = np.random.default_rng(seed)
    codecs = ["gzip-9", "xz-9e", "zstd-19", "llm:smollm2-135m"]
    a = results.to_frame([timed(c, 1.0, 0.05, corpus=f"c{i}") for i, c in enumerate(codecs)])
    b = results.to_frame([timed(c, 1.0 * rng.uniform(0.95, 1.05), 0.05, corpus=f"c{i}")
                          for i, c in enumerate(codecs)])
    c = compare.compare_frames(a, b)
    assert c.ok, c.regressions


def test_repeated_timings_twice_as_slow_is_a_significant_regression():
    a = results.to_frame([timed("llm:smollm2-135m", 1.0, 0.05)])
    b = results.to_frame([timed("llm:smollm2-135m", 2.0, 0.1)])
    c = compare.compare_frames(a, b)
    assert c.cells[0].encode_significant is True
    assert c.regressions == ["llm:smollm2-135m (coded lanes ctx 512) · alice29[:20k]: encode speed 2.00x slower "
                             "(lower by more than 10.0%)",
                             "llm:smollm2-135m (coded lanes ctx 512) · alice29[:20k]: decode speed 2.00x slower "
                             "(lower by more than 10.0%)"]


def test_a_slowdown_within_the_noise_is_not_significant():
    """20% slower in the mean, but the values spread by 30%: Welch's t-test cannot tell (pyperf says so)."""
    a = results.to_frame([timed("gzip-9", 1.0, 0.3, n=3)])
    b = results.to_frame([timed("gzip-9", 1.25, 0.3, n=3)])
    c = compare.compare_frames(a, b)
    assert c.ok and c.cells[0].encode_significant is False
    assert c.cells[0].encode_change == "1.25x slower (not significant)"


def test_a_cached_timing_is_not_judged():
    a = results.to_frame([timed("gzip-9", 1.0, 0.01)])
    b = results.to_frame([timed("gzip-9", 3.0, 0.01, cached=True)])
    c = compare.compare_frames(a, b)
    assert c.ok and c.cells[0].encode_change == "3.00x slower (cached: not measured again)"


def test_summary_shows_spread_cached_timings_and_weak_intervals():
    frame = results.to_frame([timed("gzip-9", 0.5, 0.05), timed("xz-9e", 1.0, 0.01, cached=True),
                              row("llm:smollm2-135m", "ideal", size=2600)])
    text = markdown.summary_markdown(frame)
    assert "±10% |" in text and "(cached)" in text
    ideal = next(line for line in text.splitlines() if "smollm2" in line and "ideal" in line and "| 0." in line)
    assert "†" in ideal  # 10 pieces < 30


def test_bench_stdout_table_is_lzbench_style():
    rows = run_rows() + [row("zstd-19", size=None, roundtrip_ok=False, error="boom")]
    lines = markdown.text_tables(results.to_frame(rows))
    header = next(line for line in lines if "codec" in line)
    assert header.split() == ["codec", "compress", "decompress", "size", "(bytes)", "bits/byte", "ratio"]
    alice = lines[:lines.index("")]
    assert alice[0].startswith("alice29 (english")
    codecs = [line.lstrip("* ").split()[0] for line in alice[2:]]  # best first, the failure last
    assert codecs == ["llm:gemma3-270m", "llm:smollm2-135m", "xz-9e", "zstd-22-long", "gzip-9", "zstd-19"]
    assert alice[-1].split()[-1] == "FAILED" and "≈" in alice[2]
    assert alice[3].startswith("*")  # the coded model is Pareto-best: smallest real file


def test_speed_under_other_threads_is_not_judged():
    """A default thread count follows the free cores: 2 threads one night, 1 the next is a setup change."""
    a = results.to_frame([timed("llm:smollm2-135m", 1.0, 0.01, threads=2)])
    b = results.to_frame([timed("llm:smollm2-135m", 2.0, 0.01, threads=1)])
    c = compare.compare_frames(a, b)
    assert c.ok and c.cells[0].encode_change == "2.00x slower (threads 2 -> 1: not judged)"

