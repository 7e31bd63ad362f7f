"""A tiny-model bench end to end: the CSV it writes, its numbers against independent ones, the cache."""

from __future__ import annotations

import gzip
import json
import math
import re

import numpy as np
import pytest
import zstandard
from tiny_matrices import tiny_matrix

from bpcbench import stats
from bpcbench.bench import cache, matrix, results, runner, workers
from bpcbench.cli import main
from bpcbench.codec import compress as codec
from bpcbench.codec import cross_entropy as ideal
from bpcbench.codec import decompress as decoding
from bpcbench.codec.session import Settings
from bpcbench.corpora import load_manifest, take_prefix
from bpcbench.report.render import render

TEXT_PREFIX = 2000
MATRIX = tiny_matrix("tiny", ["text.txt", "random-org-10k"], 1500, f"""
[[llm]]
corpora = ["text.txt"]
measure = "coded"
max_bytes = {TEXT_PREFIX}
""")


@pytest.fixture(scope="module")
def bench_dir(make_bench_dir):
    alice = load_manifest()["alice29"].read_bytes()
    return make_bench_dir("bench", alice[:4000] + "— naïve café\n".encode(), m=MATRIX)


@pytest.fixture(scope="module")
def first_run(bench_dir):
    """The bench through the CLI, cache in the test directory."""
    mp = pytest.MonkeyPatch()
    mp.setenv("BPCBENCH_CACHE", str(bench_dir / "cache"))
    try:
        rc = main(["bench", str(bench_dir / "m.toml"), "--out", str(bench_dir / "run1"), "-q"])
    finally:
        mp.undo()
    return rc, bench_dir / "run1", results.read_csv(bench_dir / "run1")


def rows(frame, **match):
    sel = frame
    for k, v in match.items():
        sel = sel[sel[k] == v]
    return sel


def test_run_writes_every_output(first_run):
    rc, out, frame = first_run
    assert rc == 0
    for name in ("results.csv", "summary.md", "env.json", "matrix.toml", "bpb_vs_speed.png", "bpb_by_codec.png"):
        assert (out / name).stat().st_size > 0, name
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left
    assert list(frame.columns) == results.COLUMN_NAMES
    header = (out / "results.csv").read_text().splitlines()[0]
    assert header.split(",") == results.COLUMN_NAMES
    env = json.loads((out / "env.json").read_text())
    assert env["cpu"]["logical_cores"] >= 1 and "llama_cpp" in env and "git" in env


def test_cells_and_their_numbers(first_run, bench_dir):
    _, _, frame = first_run
    # the baselines run on exactly the bytes each model cell measured
    assert sorted(zip(frame["corpus_name"], frame["codec"], frame["measure"], frame["corpus_bytes"])) == sorted([
        ("text.txt", "gzip-9", "baseline", TEXT_PREFIX), ("text.txt", "zstd-22-long", "baseline", TEXT_PREFIX),
        ("random-org-10k", "gzip-9", "baseline", 1500), ("random-org-10k", "zstd-22-long", "baseline", 1500),
        ("text.txt", "llm:tiny", "coded", TEXT_PREFIX), ("random-org-10k", "llm:tiny", "ideal", 1500),
    ])
    assert frame["error"].isna().all()
    assert (frame["run_id"].str.endswith("-tiny")).all() and not frame["cached"].any()
    real = frame[frame["measure"] != "ideal"]
    assert real["roundtrip_ok"].all()
    assert rows(frame, measure="ideal")["roundtrip_ok"].isna().all()
    coded = rows(frame, measure="coded").iloc[0]
    assert coded["bits_per_byte"] == pytest.approx(coded["container_bytes"] * 8 / TEXT_PREFIX)
    assert coded["coded_bytes"] < coded["container_bytes"]
    size = (bench_dir / "text.txt").stat().st_size
    assert coded["note"] == f"prefix: first {TEXT_PREFIX} of {size} bytes" and coded["corpus_file_bytes"] == size
    assert coded["corpus_characters"] == TEXT_PREFIX  # the prefix is plain ASCII
    assert coded["bits_per_character"] == pytest.approx(coded["bits_per_byte"])
    assert coded["overhead_percent"] == pytest.approx((coded["coded_bytes"] * 8 / coded["ideal_bits"] - 1) * 100)
    assert coded["model_sha256"] and coded["model_file_bytes"] > 0 and coded["threads"] == 1
    random_row = rows(frame, measure="ideal").iloc[0]
    assert random_row["corpus_characters"] is pd_na() and random_row["bits_per_character"] is pd_na()
    for _, r in frame[frame["measure"] != "baseline"].iterrows():
        assert r["bits_per_byte_ci95_low"] <= r["bits_per_byte"] <= r["bits_per_byte_ci95_high"]


def pd_na():
    import pandas as pd

    return pd.NA


def test_ideal_bits_match_an_independent_computation(first_run, bench_dir, tiny_session):
    """Ideal cells (prefill path) against a one-lane lockstep encoder, which gives every token the
    same history; coded cells against the encoder run with the matrix's own settings."""
    _, _, frame = first_run
    settings = Settings(context=64, width=8, min_lane_tokens=256, threads=1)
    text = (bench_dir / "text.txt").read_bytes()[:TEXT_PREFIX]
    rnd = load_manifest()["random-org-10k"].read_bytes()[:1500]
    # fallback off: random bytes never reach the model otherwise (split.py), and this wants its bits
    _, one_lane = codec.compress(rnd, tiny_session, Settings(context=64, width=1, threads=1), fallback=False)
    ideal_row = rows(frame, measure="ideal").iloc[0]
    assert ideal_row["ideal_bits"] == pytest.approx(one_lane.ideal_bits, rel=1e-5)
    assert ideal_row["n_tokens"] == one_lane.n_tokens
    assert ideal_row["context_mean"] == pytest.approx(one_lane.context_mean, rel=1e-9) and ideal_row["lanes"] == 1
    _, enc_stats = codec.compress(text, tiny_session, settings)
    coded_row = rows(frame, measure="coded").iloc[0]
    assert coded_row["ideal_bits"] == pytest.approx(enc_stats.ideal_bits, rel=1e-11)  # the CSV keeps 12 digits
    assert coded_row["lanes"] == enc_stats.lanes > 1
    assert coded_row["context_mean"] < ideal.cross_entropy(text, tiny_session, settings).context_mean  # cold starts


def test_baseline_sizes_are_the_libraries_own(first_run, bench_dir):
    _, _, frame = first_run
    text = (bench_dir / "text.txt").read_bytes()[:TEXT_PREFIX]
    gz = rows(frame, codec="gzip-9", corpus_name="text.txt").iloc[0]
    assert gz["coded_bytes"] == gz["container_bytes"] == len(gzip.compress(text, compresslevel=9, mtime=0))
    params = zstandard.ZstdCompressionParameters.from_level(22, window_log=27, enable_ldm=True, write_content_size=True)
    zs = rows(frame, codec="zstd-22-long", corpus_name="text.txt").iloc[0]
    assert zs["container_bytes"] == len(zstandard.ZstdCompressor(compression_params=params).compress(text))
    assert zs["bits_per_byte"] == pytest.approx(zs["container_bytes"] * 8 / TEXT_PREFIX)


def test_second_run_is_served_from_the_cache(first_run, bench_dir, monkeypatch):
    _, _, before = first_run

    def boom(*a, **k):
        raise AssertionError("measured again instead of using the cache")

    for module, name in ((codec, "compress"), (decoding, "decompress"), (ideal, "cross_entropy"),
                         (cache.CellCache, "put")):
        monkeypatch.setattr(module, name, boom)
    from bpcbench import baselines

    monkeypatch.setattr(baselines, "run_baseline", boom)
    m = matrix.load(bench_dir / "m.toml")
    res = runner.run_matrix(m, bench_dir / "run2", cache_dir=bench_dir / "cache", progress=False)
    assert res.ok and res.n_cached == len(m.cells) == len(res.rows)
    after = results.read_csv(bench_dir / "run2")
    assert after["cached"].all()
    keep = [c for c in results.COLUMN_NAMES if c not in ("run_id", "cached")]
    assert after[keep].equals(before[keep])


def test_no_cache_remeasures_and_a_failing_cell_does_not_stop_the_run(bench_dir, monkeypatch, capsys):
    def broken_compress(*a, **k):
        raise RuntimeError("simulated codec bug\nsecond line")

    monkeypatch.setattr(codec, "compress", broken_compress)
    monkeypatch.setenv("BPCBENCH_CACHE", str(bench_dir / "cache"))
    rc = main(["bench", str(bench_dir / "m.toml"), "--out", str(bench_dir / "run3"), "--no-cache", "-q"])
    assert rc == 1
    printed = capsys.readouterr()
    assert "FAILED" in printed.err
    assert printed.out.startswith("text.txt (file, first 2,000 of")  # the lzbench-style tables
    assert re.search(r"^\s+llm:tiny \(coded lanes ctx 64\)\s+FAILED$", printed.out, re.M)
    frame = results.read_csv(bench_dir / "run3")
    assert len(frame) == 6 and not frame["cached"].any()
    bad = rows(frame, measure="coded").iloc[0]
    assert bad["error"] == "RuntimeError: simulated codec bug"
    assert bad["bits_per_byte"] is pd_na() and bad["container_bytes"] is pd_na()
    assert frame[frame["measure"] != "coded"]["error"].isna().all()  # the others were measured
    summary = (bench_dir / "run3" / "summary.md").read_text()
    assert "**FAILED** llm:tiny (coded lanes ctx 64)" in summary


def test_interrupted_run_resumes_from_the_cache(tmp_path, bench_dir, monkeypatch, capsys):
    m = matrix.loads(MATRIX.split("[[llm]]")[0], bench_dir / "m.toml")  # ideal cells only: faster
    calls = []

    class InterruptOnTheModel(runner.Measurement):
        def first(self):
            if self.cell.is_llm:
                raise KeyboardInterrupt
            calls.append(self.cell)
            return super().first()

    class Counted(runner.Measurement):
        def first(self):
            calls.append(self.cell)
            return super().first()

    monkeypatch.setattr(workers, "Measurement", InterruptOnTheModel)
    with pytest.raises(KeyboardInterrupt):
        runner.run_matrix(m, tmp_path / "a", cache_dir=tmp_path / "cache", progress=False)
    assert len(results.read_csv(tmp_path / "a")) == len(calls) == 4  # the baselines, saved as they finished
    assert main(["report", str(tmp_path / "a")]) == 0  # the interrupted run renders, and says what it lacks
    assert "INCOMPLETE run: 4 of 6 cells measured" in capsys.readouterr().err
    assert "INCOMPLETE run: 4 of 6 cells measured" in (tmp_path / "a" / "summary.md").read_text()
    calls.clear()
    monkeypatch.setattr(workers, "Measurement", Counted)
    res = runner.run_matrix(m, tmp_path / "b", cache_dir=tmp_path / "cache", progress=False)
    assert res.ok and res.n_cached == 4
    assert sorted(c.measure for c in calls) == ["ideal", "ideal"]
    assert not (tmp_path / "b" / "INCOMPLETE.json").exists()


def test_bench_out_refuses_an_existing_run_without_force(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "results.csv").write_text("keep me")
    assert main(["bench", "quick", "--out", str(tmp_path / "run")]) == 2
    assert "run directory exists" in capsys.readouterr().err
    assert (tmp_path / "run" / "results.csv").read_text() == "keep me"


def test_unknown_corpus_file_removed_after_loading_is_a_failed_cell(tmp_path, tiny_model_path):
    (tmp_path / "gone.txt").write_text("x" * 100)
    m = matrix.loads('[run]\nname = "g"\nmodels = []\ncorpora = ["gone.txt"]\nbaselines = ["gzip-9"]\n',
                     tmp_path / "m.toml")
    (tmp_path / "gone.txt").unlink()
    res = runner.run_matrix(m, tmp_path / "out", cache_dir=tmp_path / "cache", progress=False, finish=render)
    assert not res.ok and "neither a corpus name" in res.failed[0]
    assert "FAILED" in (tmp_path / "out" / "summary.md").read_text()


def test_off_a_terminal_each_finished_cell_is_one_line(tmp_path, capsys):
    """cron and CI see no progress bar: one plain line per cell on stderr (capsys is not a TTY)."""
    (tmp_path / "gone.txt").write_text("x" * 100)
    m = matrix.loads('[run]\nname = "lines"\nmodels = []\ncorpora = ["random-org-10k", "gone.txt"]\n'
                     'baselines = ["gzip-9"]\nmax_bytes = 500\n', tmp_path / "m.toml")
    (tmp_path / "gone.txt").unlink()
    res = runner.run_matrix(m, tmp_path / "a", cache_dir=tmp_path / "cache", progress=None)
    err = [ln for ln in capsys.readouterr().err.splitlines() if "warning:" not in ln]  # e.g. a busy machine
    bpb = res.rows[0]["bits_per_byte"]
    assert re.fullmatch(rf"\[1/2\] gzip-9 · random-org-10k\[:500\]: {bpb:.3f} bits/byte, \d+\.\d s", err[0]), err
    assert re.fullmatch(r"\[2/2\] gzip-9 · gone\.txt\[:500\]: FAILED: .*neither a corpus name.*", err[1]), err
    assert len(err) == 2

    runner.run_matrix(m, tmp_path / "b", cache_dir=tmp_path / "cache", progress=None)
    assert [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("[1/2]")][0].endswith(" s (cached)")
    runner.run_matrix(m, tmp_path / "c", cache_dir=tmp_path / "cache", progress=False)
    err = [ln for ln in capsys.readouterr().err.splitlines() if "warning:" not in ln]  # quiet: the failure alone
    assert len(err) == 1 and err[0].startswith("bpcbench: FAILED gzip-9 · gone.txt[:500]: ")


@pytest.mark.parametrize("formats, written, absent", [
    ("json", {"results.csv", "results.json"}, {"summary.md"}),
    ("md,csv", {"results.csv", "summary.md"}, {"results.json"}),
    ("csv", {"results.csv", "env.json", "matrix.toml"}, {"results.json", "summary.md"}),
])
def test_format_picks_the_files_besides_results_csv(tmp_path, monkeypatch, capsys, formats, written, absent):
    monkeypatch.setenv("BPCBENCH_CACHE", str(tmp_path / "cache"))
    (tmp_path / "m.toml").write_text('[run]\nname = "fmt"\nmodels = []\ncorpora = ["random-org-10k", "alice29"]\n'
                                     'baselines = ["gzip-9"]\nmax_bytes = 500\n')
    out = tmp_path / "run"
    assert main(["bench", str(tmp_path / "m.toml"), "--out", str(out), "--format", formats, "-q"]) == 0
    names = {p.name for p in out.iterdir()}
    assert written <= names and not absent & names
    assert ("md" in formats) or not [n for n in names if n.endswith(".png")]  # the plots go with summary.md
    if "json" in formats:
        records = json.loads((out / "results.json").read_text())
        frame = results.read_csv(out)
        assert [list(r) for r in records] == [results.COLUMN_NAMES] * len(frame) == [results.COLUMN_NAMES] * 2
        assert [r["bits_per_byte"] for r in records] == frame["bits_per_byte"].tolist()
        assert records[0]["coded_bytes"] == int(frame["coded_bytes"][0]) and records[0]["ideal_bits"] is None


def test_an_unknown_format_is_one_line(capsys):
    assert main(["bench", "quick", "--format", "csv,xml"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown format 'xml' (choose from csv, json, md" in err


@pytest.mark.parametrize(
    "data, limit, expected",
    [
        (b"abcdef", 0, b"abcdef"),
        (b"abcdef", 10, b"abcdef"),
        (b"abcdef", 3, b"abc"),
        ("ab€cd".encode(), 3, b"ab"),  # € is 3 bytes: never cut inside it
        ("ab€cd".encode(), 5, "ab€".encode()),
        (b"\xff\xfe\x00\x80", 3, b"\xff\xfe\x00"),  # not UTF-8: a plain byte prefix
    ],
)
def test_take_prefix(data, limit, expected):
    assert take_prefix(data, limit) == expected


def test_bootstrap_interval_contains_the_estimate_and_narrows_with_more_chunks():
    rng = np.random.default_rng(1)

    def sample(n):
        nbytes = rng.integers(1500, 2500, size=n)
        bits = nbytes * rng.normal(1.3, 0.2, size=n)
        return bits, nbytes

    widths = []
    for n in (8, 80, 800):
        bits, nbytes = sample(n)
        lo, hi = stats.bootstrap_interval(bits, nbytes)
        assert lo <= bits.sum() / nbytes.sum() <= hi
        widths.append(hi - lo)
        assert stats.bootstrap_interval(bits, nbytes) == (lo, hi)  # fixed seed: reproducible
    assert widths[0] > widths[1] > widths[2] and widths[0] > 3 * widths[2]
    assert stats.bootstrap_interval([5.0], [4]) == (1.25, 1.25)
    assert all(math.isnan(x) for x in stats.bootstrap_interval([], []))
