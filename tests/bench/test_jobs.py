"""`bpcbench bench -j N`: cells in spawned worker processes give the rows of a one-job run."""

from __future__ import annotations

import json

import pytest
from tiny_matrices import tiny_matrix

from bpcbench.bench import matrix, results, runner
from bpcbench.cli import build_parser, main
from bpcbench.corpora import load_manifest
from bpcbench.llama.binding import usable_cores

# what a cell measured, as opposed to when and how fast
SAME = ["codec", "measure", "corpus_name", "corpus_bytes", "input_sha256", "policy", "context_tokens", "threads",
        "n_tokens", "lanes", "ideal_bits", "bits_per_byte", "coded_bytes", "container_bytes", "roundtrip_ok",
        "perplexity", "error"]

MATRIX = tiny_matrix("jobs", ["text.txt", "random-org-10k", "gone.txt"], 1200, """
[[llm]]
corpora = ["text.txt"]
measure = "coded"
max_bytes = 1500
""")


@pytest.fixture(scope="module")
def runs(make_bench_dir):
    """The same tiny matrix with one job and with two; gone.txt vanishes after the matrix is read,
    so its cells fail inside the workers."""
    d = make_bench_dir("jobs", load_manifest()["alice29"].read_bytes()[:3000], m=MATRIX)
    (d / "gone.txt").write_bytes(b"x" * 100)
    m = matrix.load(d / "m.toml")
    (d / "gone.txt").unlink()
    out = {}
    for jobs in (1, 2):
        out[jobs] = runner.run_matrix(m, d / f"j{jobs}", cache_dir=d / f"cache{jobs}", progress=False, jobs=jobs,
                                      formats={"csv"})
    return d, out


def test_two_jobs_give_the_bits_and_the_row_order_of_one(runs):
    d, res = runs
    one, two = (results.read_csv(d / f"j{j}") for j in (1, 2))
    assert len(one) == 9 and set(one["measure"]) == {"baseline", "ideal", "coded"}
    assert one[SAME].equals(two[SAME])  # bit for bit, and rows in the same (matrix) order
    assert one["cell_key"].notna().sum() == two["cell_key"].notna().sum() == 6
    assert not (set(one["cell_key"].dropna()) & set(two["cell_key"].dropna()))  # timed side by side: other keys
    assert two[two["measure"] == "coded"]["roundtrip_ok"].all()
    assert json.loads((d / "j2" / "env.json").read_text())["bench_jobs"] == 2


def test_a_cell_failing_in_a_worker_is_a_failed_row(runs):
    d, res = runs
    assert res[1].failed == res[2].failed  # the same lines, in run order
    assert len(res[2].failed) == 3 and all("gone.txt" in line for line in res[2].failed)
    frame = results.read_csv(d / "j2")
    bad = frame[frame["corpus_name"] == "gone.txt"]
    assert len(bad) == 3 and bad["error"].str.contains("neither a corpus name").all()


def test_a_second_two_job_run_is_served_from_its_cache(runs):
    d, _ = runs
    m = matrix.loads(MATRIX.replace(', "gone.txt"', ""), d / "m.toml")
    again = runner.run_matrix(m, d / "j2b", cache_dir=d / "cache2", progress=False, jobs=2, formats={"csv"})
    assert again.ok and again.n_cached == 6


def test_threads_are_split_between_the_jobs(tmp_path, monkeypatch, tiny_model_path):
    monkeypatch.setattr(runner, "measurement_threads", lambda: 5)
    (tmp_path / "tiny.gguf").symlink_to(tiny_model_path)
    m = matrix.loads(tiny_matrix("t", ["random-org-10k"], 500).replace("threads = 1\n", ""), tmp_path / "m.toml")
    cells = runner.Runner(m, tmp_path / "out", jobs=2).matrix.cells
    assert {c.threads for c in cells if c.is_llm} == {2} and not any(c.threads for c in cells if not c.is_llm)
    assert not any(c.threads for c in runner.Runner(m, tmp_path / "out", jobs=1).matrix.cells)
    assert {c.threads for c in runner.Runner(m, tmp_path / "out", jobs=8).matrix.cells if c.is_llm} == {1}


@pytest.mark.parametrize("bad, why", [("0", "must be positive"), ("x", "must be an integer"),
                                      ("100000", "more than the")])
def test_jobs_flag_bounds(capsys, bad, why):
    parser = build_parser()
    assert parser.parse_args(["bench"]).jobs == 1 and parser.parse_args(["bench", "-j", "1"]).jobs == 1
    assert main(["bench", "-j", bad]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and why in err and "-j/--jobs" in err


def test_bench_passes_jobs_to_the_runner(tmp_path, monkeypatch, capsys):
    seen = {}

    def fake_run(m, out, **kw):
        seen.update(kw)
        return runner.RunResult(tmp_path, "r", [])

    monkeypatch.setattr(runner, "run_matrix", fake_run)
    assert main(["bench", "quick", "-j", "1", "--out", str(tmp_path / "o"), "--format", "csv", "-q"]) == 0
    assert seen["jobs"] == 1
    if usable_cores() >= 2:
        assert main(["bench", "quick", "--jobs", "2", "--out", str(tmp_path / "o"), "-q"]) == 0
        assert seen["jobs"] == 2
