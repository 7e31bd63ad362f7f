"""A matrix's [lossy] table: the rate-distortion curves drawn in the same run, validated up front."""

from __future__ import annotations

import csv

import pytest
from tiny_matrices import tiny_matrix

from bpcbench.bench import matrix, runner
from bpcbench.cli.bench import lossy_step
from bpcbench.report.render import render
from bpcbench.errors import BpcError

LOSSY = tiny_matrix("lossy", ["text.txt"], 600, """
[lossy]
taus = [0, 4, inf]
max_bytes = 200
context = 32
""")


@pytest.fixture(scope="module")
def bench_dir(make_bench_dir):
    return make_bench_dir("lossy", b"Once upon a time there was a tiny model that rebuilt texts. " * 12, m=LOSSY)


def test_the_run_writes_the_curves_beside_its_cells(bench_dir, tmp_path):
    m = matrix.load(bench_dir / "m.toml")
    assert m.lossy.taus == [0.0, 4.0, float("inf")] and m.lossy.models == [m.cells[-1].model]
    r = runner.run_matrix(m, tmp_path / "run", use_cache=False, cache_dir=tmp_path / "cache", progress=False,
                          lossy=lossy_step, finish=render)
    assert r.ok
    rows = list(csv.DictReader((tmp_path / "run" / "lossy.csv").open()))
    assert [row["tau"] for row in rows] == ["", "0", "4", "inf"] and all(row["roundtrip_ok"] == "True" for row in rows)
    assert rows[0]["corpus_bytes"] == "200" and rows[0]["context"] == "32"
    assert (tmp_path / "run" / "lossy.png").stat().st_size > 0
    assert list((tmp_path / "run").glob("reconstruction-*-tau4.txt"))
    assert "lossy.png" in (tmp_path / "run" / "summary.md").read_text()


@pytest.mark.parametrize("table, message", [
    ("taus = []", "taus must be"),
    ("taus = [-1]", "taus must be"),
    ('taus = ["x"]', "taus must be"),
    ("max_bytes = -1", "max_bytes must be >= 0"),
    ("context = 0", "context must be >= 1"),
    ('quant = ["Q9_X"]', "unknown quantization level"),
    ("tau = [1]", "unknown key 'tau'"),
    ('models = ["no-such-model"]', "no-such-model"),
])
def test_a_bad_lossy_table_is_one_line_before_anything_runs(bench_dir, table, message):
    text = tiny_matrix("bad", ["text.txt"], 600, f"\n[lossy]\n{table}\n")
    with pytest.raises(BpcError, match=message):
        matrix.loads(text, bench_dir / "bad.toml")


def test_a_matrix_of_curves_only_is_a_matrix(bench_dir, tmp_path):
    text = tiny_matrix("only", ["text.txt"], 600, "\n[lossy]\ntaus = [inf]\nmax_bytes = 60\n")
    text = text.replace('measure = "ideal"', 'measure = "none"').replace('["gzip-9", "zstd-22-long"]', "[]")
    m = matrix.loads(text, bench_dir / "only.toml")
    assert m.cells == [] and m.lossy is not None
    r = runner.run_matrix(m, tmp_path / "run", use_cache=False, cache_dir=tmp_path / "cache", progress=False,
                          lossy=lossy_step)
    assert r.ok and len(list(csv.DictReader((tmp_path / "run" / "lossy.csv").open()))) == 2


def test_shard_one_draws_the_curves_and_merge_keeps_them(bench_dir, tmp_path):
    from bpcbench.bench import merge

    m = matrix.load(bench_dir / "m.toml")
    dirs = []
    for k in (1, 2):
        r = runner.run_matrix(m, tmp_path / f"s{k}", use_cache=False, cache_dir=tmp_path / "cache", progress=False,
                              lossy=lossy_step, shard=(k, 2))
        assert r.ok
        dirs.append(tmp_path / f"s{k}")
    assert (dirs[0] / "lossy.csv").exists() and not (dirs[1] / "lossy.csv").exists()
    merge.merge(tmp_path / "merged", dirs, finish=render)
    assert (tmp_path / "merged" / "lossy.csv").read_bytes() == (dirs[0] / "lossy.csv").read_bytes()
    assert "lossy.png" in (tmp_path / "merged" / "summary.md").read_text()
