"""--shard and merge (shards of one matrix join into the unsharded run), and the nightly loop
(dated directories, history.csv, comparison with the previous run, the regression exit)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from datetime import datetime, timezone

import pandas as pd
import pytest
from tiny_matrices import tiny_matrix

from bpcbench.bench import cache, nightly, results, runner
from bpcbench.bench.matrix import loads
from bpcbench.bench.merge import merge
from bpcbench.cli import main
from bpcbench.corpora import load_manifest

MATRIX = tiny_matrix("tinyshard", ["text.txt", "random-org-10k"], 1200)
N_CELLS = 6  # 2 corpora x (2 baselines + 1 ideal)
N = 3

NIGHTLY = tiny_matrix("tinynightly", ["text.txt"], 1000)


@pytest.fixture(scope="module")
def bench_dir(make_bench_dir):
    return make_bench_dir("shards", load_manifest()["alice29"].read_bytes()[:3000], m=MATRIX, nightly=NIGHTLY)


@pytest.fixture(scope="module")
def runs(bench_dir):
    """N shards through the CLI (each measures its own cells), then the unsharded run (from the cache)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("BPCBENCH_CACHE", str(bench_dir / "cache"))
    try:
        codes = [main(["bench", str(bench_dir / "m.toml"), "--shard", f"{k}/{N}", "--out",
                       str(bench_dir / f"s{k}"), "-q"]) for k in range(1, N + 1)]
        codes.append(main(["bench", str(bench_dir / "m.toml"), "--out", str(bench_dir / "full"), "-q"]))
    finally:
        mp.undo()
    assert codes == [0] * (N + 1)
    return bench_dir, [bench_dir / f"s{k}" for k in range(1, N + 1)], bench_dir / "full"


def shard_doc(d):
    return json.loads((d / "shard.json").read_text())


def test_shards_record_what_merge_checks(runs):
    bench_dir, shards, _ = runs
    docs = [shard_doc(d) for d in shards]
    sha = hashlib.sha256(MATRIX.encode()).hexdigest()
    for k, doc in enumerate(docs, start=1):
        assert doc["shard"] == k and doc["n"] == N and doc["matrix_sha256"] == sha
        assert doc["matrix_cells"] == N_CELLS and doc["schema_version"] == results.SCHEMA_VERSION
        assert doc["bpcbench_version"] and doc["llama_cpp_python_version"] == cache.llama_cpp_python_version()
        frame = results.read_csv(shards[k - 1])
        assert len(frame) == len(doc["cells"])
        # the cost split, the same in every shard's record
        assert doc["shard_costs"] == docs[0]["shard_costs"] and doc["estimated_cost"] == doc["shard_costs"][k - 1]
        assert doc["imbalance"] == pytest.approx(max(doc["shard_costs"]) * N / sum(doc["shard_costs"]), abs=1e-4)
    indices = sorted(c["index"] for doc in docs for c in doc["cells"])
    assert indices == list(range(N_CELLS))  # every cell in exactly one shard


def test_merged_shards_equal_the_unsharded_run(runs, capsys):
    bench_dir, shards, full = runs
    out = bench_dir / "merged"
    assert main(["merge", "--out", str(out), *map(str, reversed(shards))]) == 0
    assert f"{N_CELLS} cells" in capsys.readouterr().err
    merged, whole = results.read_csv(out), results.read_csv(full)
    keep = [c for c in results.COLUMN_NAMES if c not in ("run_id", "cached")]
    assert merged[keep].equals(whole[keep])  # same cells, same numbers, same (matrix) order
    for name in ("summary.md", "matrix.toml", "env.json", "bpb_by_codec.png", "bpb_vs_speed.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "matrix.toml").read_text() == MATRIX
    env = json.loads((out / "env.json").read_text())
    assert [s["shard"] for s in env["shards"]] == [1, 2, 3]
    assert all(s["env"]["cpu"] for s in env["shards"]) and env["cpu"]  # one machine: the CPU is shared
    assert f"{N_CELLS} cells" in (out / "summary.md").read_text()
    # merging again into the same directory needs -f
    assert main(["merge", "--out", str(out), *map(str, shards)]) == 2
    assert "output exists" in capsys.readouterr().err
    assert main(["merge", "--out", str(out), "-f", *map(str, shards)]) == 0


def edited(tmp_path, src, name, **changes):
    dst = tmp_path / name
    shutil.copytree(src, dst)
    doc = shard_doc(dst)
    doc.update(changes)
    (dst / "shard.json").write_text(json.dumps(doc))
    return dst


@pytest.mark.parametrize("change, message", [
    ({"matrix_sha256": "0" * 64}, "shards of different matrices"),
    ({"bpcbench_version": "9.9.9"}, "shards measured with different bpcbench versions"),
    ({"llama_cpp_python_version": "0.0.1"}, "shards measured with different llama-cpp-python versions"),
    ({"schema_version": 99}, "shards measured with different results schema versions"),
])
def test_merge_refuses_shards_that_do_not_belong_together(runs, tmp_path, capsys, change, message):
    _, shards, _ = runs
    odd = edited(tmp_path, shards[1], "odd", **change)
    assert main(["merge", "--out", str(tmp_path / "out"), str(shards[0]), str(odd), str(shards[2])]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_merge_refuses_duplicates_other_n_and_missing_shards(runs, tmp_path, capsys):
    bench_dir, shards, full = runs
    out = str(tmp_path / "out")
    assert main(["merge", "--out", out, str(shards[0]), str(shards[0]), str(shards[1])]) == 2
    assert f"shard 1/{N} given twice" in capsys.readouterr().err

    other_n = edited(tmp_path, shards[1], "n4", n=4)
    assert main(["merge", "--out", out, str(shards[0]), str(other_n)]) == 2
    assert "shards of different N" in capsys.readouterr().err

    full_shard = next(d for d in shards if shard_doc(d)["cells"])  # a shard with cells, relabelled
    k = shard_doc(full_shard)["shard"]
    twin = edited(tmp_path, full_shard, "twin", shard=k % N + 1)
    assert main(["merge", "--out", out, str(full_shard), str(twin)]) == 2
    assert "is in two shards" in capsys.readouterr().err

    assert main(["merge", "--out", out, str(full)]) == 2
    assert "no shard.json" in capsys.readouterr().err

    assert main(["merge", "--out", out, str(shards[0]), str(shards[1])]) == 2
    err = capsys.readouterr().err
    assert f"missing shard(s) 3 of {N}" in err and "--allow-incomplete" in err
    assert main(["merge", "--out", out, str(shards[0]), str(shards[1]), "--allow-incomplete"]) == 0
    assert f"warning: missing shard(s) 3 of {N}" in capsys.readouterr().err
    expected = len(shard_doc(shards[0])["cells"]) + len(shard_doc(shards[1])["cells"])
    assert len(results.read_csv(out)) == expected


def test_merge_refuses_an_interrupted_shard(runs, tmp_path):
    _, shards, _ = runs
    src = next(d for d in shards if shard_doc(d)["cells"])
    cut = tmp_path / "cut"
    shutil.copytree(src, cut)
    lines = (cut / "results.csv").read_text().splitlines(keepends=True)
    (cut / "results.csv").write_text("".join(lines[:-1]))
    from bpcbench.errors import BpcError

    with pytest.raises(BpcError, match="interrupted shard"):
        merge(tmp_path / "out", [cut], allow_incomplete=True)


def test_merge_writes_nothing_when_a_shard_results_csv_is_damaged(runs, tmp_path, capsys):
    """results.read_csv refuses the shard before anything is written: no new directory, no temp
    file, and a merged run already there (merging again with -f) is left as it was."""
    _, shards, _ = runs
    k = next(i for i, d in enumerate(shards) if shard_doc(d)["cells"])
    bad = tmp_path / "bad"
    shutil.copytree(shards[k], bad)
    frame = pd.read_csv(bad / "results.csv", dtype=str, keep_default_na=False)
    frame.loc[0, "cached"] = "yes"
    frame.to_csv(bad / "results.csv", index=False, lineterminator="\n")
    damaged = [str(bad) if i == k else str(d) for i, d in enumerate(shards)]
    assert main(["merge", "--out", str(tmp_path / "out"), *damaged]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{bad / 'results.csv'}: row 1 (line 2), column cached" in err
    assert not (tmp_path / "out").exists()

    assert main(["merge", "--out", str(tmp_path / "merged"), *map(str, shards)]) == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "merged").iterdir()}
    capsys.readouterr()
    assert main(["merge", "--out", str(tmp_path / "merged"), "-f", *damaged]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert {p.name: p.read_bytes() for p in (tmp_path / "merged").iterdir()} == before
    assert not [p for p in tmp_path.rglob("*.tmp")]


def test_empty_shard_and_default_shard_directory(tmp_path):
    """A shard can get no cells at all; it still writes a valid (empty) run that merges."""
    m = loads('[run]\nname = "one"\nmodels = []\ncorpora = ["random-org-10k"]\nbaselines = ["gzip-9"]\n'
              'max_bytes = 500\n', tmp_path / "m.toml")
    dirs = [runner.run_matrix(m, results_dir=tmp_path / "res", cache_dir=tmp_path / "cache", progress=False,
                              shard=(k, 2)).out_dir for k in (1, 2)]
    assert [d.name.split("-one-")[1] for d in dirs] == ["shard-1-of-2", "shard-2-of-2"]
    sizes = sorted(len(results.read_csv(d)) for d in dirs)
    assert sizes == [0, 1]
    r = merge(tmp_path / "merged", dirs)
    assert r.n_rows == 1 and results.read_csv(tmp_path / "merged")["codec"].tolist() == ["gzip-9"]


# --- nightly -------------------------------------------------------------------------------


def test_run_dirs_order_and_previous(tmp_path):
    root = tmp_path / "nightly"
    for name in ("2026-11-27.10", "2026-11-26", "2026-11-27", "2026-11-27.2", "2026-11-27-shard-1-of-2",
                 "junk", "2026-11-28"):
        (root / name).mkdir(parents=True)
    assert [p.name for p in nightly.run_dirs(root)] == ["2026-11-26", "2026-11-27", "2026-11-27.2",
                                                         "2026-11-27.10", "2026-11-28"]
    assert [p.name for p in nightly.run_dirs(root, "-shard-1-of-2")] == ["2026-11-27-shard-1-of-2"]
    assert nightly.new_run_dir(root, "2026-11-27").name == "2026-11-27.3"
    for name in ("2026-11-26", "2026-11-27.2"):  # finished runs
        (root / name / "nightly.json").write_text("{}")
        (root / name / "results.csv").write_text("")
    assert nightly.previous_run(root, root / "2026-11-28").name == "2026-11-27.2"
    assert nightly.previous_run(root, root / "2026-11-27.2").name == "2026-11-26"
    assert nightly.previous_run(root, root / "2026-11-26") is None


def test_history_keeps_old_columns(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.csv").write_text("schema_version,codec,bits_per_byte\n1,gzip-9,2.5\n")
    history = tmp_path / "history.csv"
    history.write_text("nightly_dir,nightly_utc,schema_version,codec,old_column\nd0,t0,0,gzip-9,x\n")
    assert nightly.append_history(history, run, "t1") == 1
    assert history.read_text().splitlines() == [
        "nightly_dir,nightly_utc,schema_version,codec,old_column,bits_per_byte",
        "d0,t0,0,gzip-9,x,", "run,t1,1,gzip-9,,2.5"]


class _Nov27(datetime):
    @classmethod
    def now(cls, tz=None):
        return datetime(2026, 11, 27, 2, 15, tzinfo=timezone.utc)


def test_nightly_twice_then_a_regression(bench_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BPCBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(nightly, "datetime", _Nov27)
    res = tmp_path / "results"
    argv = ["nightly", str(bench_dir / "nightly.toml"), "--out", str(res), "-q"]
    day = res / "nightly" / "2026-11-27"

    assert main(argv) == 0
    assert "first nightly run, nothing to compare" in capsys.readouterr().out
    assert (res / "nightly" / "latest").read_text() == "2026-11-27\n"
    for name in ("results.csv", "summary.md", "env.json", "nightly.json"):
        assert (day / name).is_file(), name

    assert main(argv) == 0
    out = capsys.readouterr().out
    second = res / "nightly" / "2026-11-27.2"
    assert "no regression (3 cells compared" in out and f"old: {day}" in out
    assert (res / "nightly" / "latest").read_text() == "2026-11-27.2\n"
    assert json.loads((second / "nightly.json").read_text())["previous"] == "2026-11-27"
    assert (second / "compare.txt").read_text().startswith(f"old: {day}")
    history = (res / "history.csv").read_text().splitlines()
    assert history[0].startswith("nightly_dir,nightly_utc,schema_version,run_id,")
    assert [line.split(",")[0] for line in history[1:]] == ["2026-11-27"] * 3 + ["2026-11-27.2"] * 3
    history_codecs = pd.read_csv(res / "history.csv", dtype=str)["codec"].tolist()
    assert history_codecs[:3] == results.read_csv(day)["codec"].tolist()  # history.csv is not a results.csv
    png = res / "nightly" / "history.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # make the previous run look better: the next run (same numbers, from the cache) is then worse
    frame = results.read_csv(second)
    gz = frame["codec"] == "gzip-9"
    frame.loc[gz, "bits_per_byte"] = frame.loc[gz, "bits_per_byte"] * 0.9
    results.write_csv(second / "results.csv", frame)
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "REGRESSION gzip-9 · text.txt[:1k]: bits/byte +11.11%" in out
    third = res / "nightly" / "2026-11-27.3"
    assert json.loads((third / "nightly.json").read_text())["exit_code"] == 1
    assert len((res / "history.csv").read_text().splitlines()) == 1 + 9

    # the next day compares against the last PASSING run, not the failed third: the regression
    # stays visible until it is fixed instead of becoming the new baseline
    r = nightly.run_nightly(bench_dir / "nightly.toml", res, progress=False,
                            now=datetime(2026, 11, 28, 2, 15, tzinfo=timezone.utc))
    assert r.run_dir.name == "2026-11-28" and r.previous == second and r.exit_code == 1
    # once the numbers are good again (here: the better baseline is undone), it passes and
    # becomes the run the next night compares with
    results.write_csv(second / "results.csv", results.read_csv(r.run_dir))
    r = nightly.run_nightly(bench_dir / "nightly.toml", res, progress=False,
                            now=datetime(2026, 11, 28, 3, 15, tzinfo=timezone.utc))
    assert r.previous == second and r.exit_code == 0
    r = nightly.run_nightly(bench_dir / "nightly.toml", res, progress=False,
                            now=datetime(2026, 11, 28, 4, 15, tzinfo=timezone.utc))
    assert r.previous.name == "2026-11-28.2" and r.exit_code == 0


def first_night(bench_dir, tmp_path, monkeypatch):
    """One finished nightly run on 2026-11-27: (the argv that ran it, its directory, its rows as text)."""
    monkeypatch.setenv("BPCBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(nightly, "datetime", _Nov27)
    argv = ["nightly", str(bench_dir / "nightly.toml"), "--out", str(tmp_path / "results"), "-q"]
    assert main(argv) == 0
    first = tmp_path / "results" / "nightly" / "2026-11-27"
    return argv, first, pd.read_csv(first / "results.csv", dtype=str, keep_default_na=False)


def test_nightly_does_not_compare_with_a_run_of_a_newer_schema(bench_dir, tmp_path, monkeypatch, capsys):
    """The previous night was written by a newer bpcbench (a downgrade): a note, not a refusal."""
    argv, first, frame = first_night(bench_dir, tmp_path, monkeypatch)
    frame["schema_version"] = str(results.SCHEMA_VERSION + 1)
    frame.to_csv(first / "results.csv", index=False, lineterminator="\n")
    capsys.readouterr()
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert f"not compared with 2026-11-27: {first / 'results.csv'}: row 1, column schema_version" in err
    assert "first nightly run, nothing to compare" in out


def test_nightly_compares_with_a_run_of_an_older_schema(bench_dir, tmp_path, monkeypatch, capsys):
    """After an upgrade the previous night's results.csv has schema 3 (n_chunks): migrated, compared."""
    argv, first, frame = first_night(bench_dir, tmp_path, monkeypatch)
    frame = frame.rename(columns={"n_pieces": "n_chunks"}).assign(schema_version="3")
    frame.to_csv(first / "results.csv", index=False, lineterminator="\n")
    capsys.readouterr()
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert "not compared" not in err and "first nightly run" not in out
    assert "no regression" in out


def test_nightly_refuses_a_damaged_previous_run_before_measuring(bench_dir, tmp_path, monkeypatch, capsys):
    """A NaN in the previous night's results.csv: one line, exit 2, and this night leaves nothing behind."""
    argv, first, frame = first_night(bench_dir, tmp_path, monkeypatch)
    res = tmp_path / "results"
    frame.loc[1, "bits_per_byte"] = "nan"
    frame.to_csv(first / "results.csv", index=False, lineterminator="\n")
    before = {p: p.read_bytes() for p in res.rglob("*") if p.is_file()}
    capsys.readouterr()

    monkeypatch.setattr(nightly, "run_matrix", lambda *a, **k: pytest.fail("measured before validating"))
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert f"{first / 'results.csv'}: row 2 (line 3), column bits_per_byte: 'nan' is not a finite number" in err
    assert {p: p.read_bytes() for p in res.rglob("*") if p.is_file()} == before
    assert [p.name for p in (res / "nightly").iterdir() if p.is_dir()] == ["2026-11-27"]


def _refused_before_measuring(argv, res, monkeypatch, capsys, *words):
    """The night is refused in one line, exit 2, before anything is measured: no new directory, no new file."""
    before = sorted(p for p in res.rglob("*"))
    capsys.readouterr()
    monkeypatch.setattr(nightly, "run_matrix", lambda *a, **k: pytest.fail("measured before validating"))
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1, err
    for text in words:
        assert text in err, err
    assert sorted(p for p in res.rglob("*")) == before


@pytest.mark.parametrize("doc, words", [('{"exit_code": "0"}', "exit_code must be an integer, got '0'"),
                                        ('{"exit_code": 1.0}', "exit_code must be an integer"),
                                        ("[" * 50 + "]" * 50, "nested 50 levels deep"),
                                        ("0", "not a JSON object"), ('{"exit_code": 0', "not JSON")])
def test_nightly_refuses_a_forged_nightly_json(bench_dir, tmp_path, monkeypatch, capsys, doc, words):
    argv, first, _ = first_night(bench_dir, tmp_path, monkeypatch)
    (first / "nightly.json").write_text(doc)
    _refused_before_measuring(argv, tmp_path / "results", monkeypatch, capsys, f"{first / 'nightly.json'}: ", words)


@pytest.mark.parametrize("kind", ["fifo", "/dev/zero", "header", "binary"])
def test_nightly_refuses_a_history_csv_it_cannot_append_to(bench_dir, tmp_path, monkeypatch, capsys, kind):
    argv, _, _ = first_night(bench_dir, tmp_path, monkeypatch)
    history = tmp_path / "results" / "history.csv"
    history.unlink()
    words = {"fifo": "not a regular file (a FIFO)", "/dev/zero": "not a regular file (a character device)",
             "header": "does not start with nightly_dir, nightly_utc", "binary": "cannot read"}[kind]
    if kind == "fifo":
        os.mkfifo(history)
    elif kind == "/dev/zero":
        history.symlink_to("/dev/zero")
    else:
        history.write_bytes(b"codec,bits_per_byte\ngzip-9,2.5\n" if kind == "header" else b"\xff\xfe,\x00\n\x80")
    _refused_before_measuring(argv, tmp_path / "results", monkeypatch, capsys, f"{history}: ", words)


def test_nightly_refuses_a_previous_results_csv_that_is_a_fifo(bench_dir, tmp_path, monkeypatch, capsys):
    argv, first, _ = first_night(bench_dir, tmp_path, monkeypatch)
    (first / "results.csv").unlink()
    os.mkfifo(first / "results.csv")
    _refused_before_measuring(argv, tmp_path / "results", monkeypatch, capsys,
                              f"{first / 'results.csv'}: not a regular file (a FIFO)")
