"""Forged inputs of merge, compare and report (issue #23 items 6 and 8): every kind is one line naming
the file and the field, exit 2, and nothing written; FIFOs and devices named as inputs are refused
without blocking; a forged shard.json is refused in bounded memory. Made-up rows, no model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from synthetic_rows import row

from bpcbench.bench import compare, inputs, results
from bpcbench.cli import main

SHA = "a" * 64


def shard_dir(root: Path, k: int, n: int, rows: list[dict], first_index: int, matrix_cells: int) -> Path:
    """A shard's run directory as the runner leaves it: results.csv, shard.json, matrix.toml, env.json."""
    d = root / f"s{k}"
    d.mkdir()
    results.write_csv(d / "results.csv", rows)
    record = {"shard": k, "n": n, "run_id": "r", "host": "h", "created_utc": "2026-01-01T00:00:00+00:00",
              "matrix_name": "m", "matrix_sha256": SHA, "matrix_cells": matrix_cells, "bpcbench_version": "0.4.0",
              "llama_cpp_python_version": "0.3.36", "schema_version": results.SCHEMA_VERSION,
              "estimated_cost": 1, "shard_costs": [1] * n, "imbalance": 1.0,
              "cells": [{"index": first_index + i, "key": "k" * 64, "label": r["codec"]} for i, r in enumerate(rows)]}
    (d / "shard.json").write_text(json.dumps(record, indent=1))
    (d / "matrix.toml").write_text('[run]\nname = "m"\n')
    (d / "env.json").write_text(json.dumps({"host": "h", "cpu": {"model": "x"}}))
    return d


@pytest.fixture
def shards(tmp_path):
    """Two shards of a matrix of two cells, one each."""
    return [shard_dir(tmp_path, 1, 2, [row("gzip-9", size=7000)], 0, 2),
            shard_dir(tmp_path, 2, 2, [row("zstd-19", size=6800)], 1, 2)]


def refused(capsys, argv, *expected: str) -> str:
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and err.startswith("bpcbench: error: "), err
    assert len(err) < 400, err  # a forged megabyte value is not printed whole
    for text in expected:
        assert text in err, err
    return err


def test_the_synthetic_shards_merge(shards, tmp_path):
    assert main(["merge", "--out", str(tmp_path / "out"), *map(str, shards)]) == 0
    assert results.read_csv(tmp_path / "out")["codec"].tolist() == ["gzip-9", "zstd-19"]


def _set(key, value):
    return lambda doc: doc.__setitem__(key, value)


def _set_cell(key, value):
    return lambda doc: doc["cells"][0].__setitem__(key, value)


FORGED = {  # name: (edit of shard 2's record, words the message holds beside the file's name)
    "cells an int": (_set("cells", 5), "cells must be a list"),
    "cells null": (_set("cells", None), "cells must be a list"),
    "cells a string": (_set("cells", "0,1"), "cells must be a list"),
    "a cell an int": (_set("cells", [1]), "cells[0]: must be a table"),
    "a cell a string": (_set("cells", ["x"]), "cells[0]: must be a table"),
    "a cell index a string": (_set_cell("index", "1"), "cells[0]: index must be a cell index"),
    "a cell index null": (_set_cell("index", None), "cells[0]: index must be a cell index"),
    "a cell index huge": (_set_cell("index", 10**400), "cells[0]: index must be <="),
    "a cell index past the matrix": (_set_cell("index", 7), "cells[0]: index 7 past matrix_cells 2"),
    "a cell label an int": (_set_cell("label", 3), "cells[0]: label must be a string"),
    "a cell without index": (lambda doc: doc["cells"][0].pop("index"), "cells[0]: missing key 'index'"),
    "n a string": (_set("n", "2"), "n must be a number of shards"),
    "n a float": (_set("n", 2.0), "n must be a number of shards"),
    "n true": (_set("n", True), "n must be a number of shards"),
    "n huge": (_set("n", 10**12), "n must be <= 100000"),
    "n zero": (_set("n", 0), "n must be >= 1"),
    "shard past n": (_set("shard", 3), "shard 3 of n 2"),
    "matrix_cells negative": (_set("matrix_cells", -1), "matrix_cells must be >= 0"),
    "matrix_sha256 a list": (_set("matrix_sha256", [1, 2]), "matrix_sha256 must be a string"),
    "schema_version a string": (_set("schema_version", "4"), "schema_version must be an integer"),
    "bpcbench_version an int": (_set("bpcbench_version", 12), "bpcbench_version must be a string"),
    "a megabyte n": (_set("n", "9" * 1_000_000), "n must be a number of shards"),
    "an unknown key": (_set("extra", 1), "unknown key 'extra'"),
    "no n": (lambda doc: doc.pop("n"), "missing key 'n'"),
    "more cells than the matrix": (_set("cells", [{"index": i, "key": "", "label": ""} for i in range(3)]),
                                   "cells lists 3 cells, but matrix_cells is 2"),
    "one cell twice": (_set("cells", [{"index": 1, "key": "", "label": ""}] * 2), "cells[1]: index 1 twice"),
}


@pytest.mark.parametrize("name", FORGED)
def test_a_forged_shard_json_field(shards, tmp_path, capsys, name):
    edit, words = FORGED[name]
    doc = json.loads((shards[1] / "shard.json").read_text())
    edit(doc)
    (shards[1] / "shard.json").write_text(json.dumps(doc))
    refused(capsys, ["merge", "--out", str(tmp_path / "out"), *map(str, shards)],
            f"{shards[1] / 'shard.json'}: ", words)
    assert not (tmp_path / "out").exists()


FORGED_FILES = {  # name: (the shard.json bytes, words of the message)
    "nested 100,000 deep": (b"[" * 100_000 + b"]" * 100_000, "nested 100000 levels deep, more than 32"),
    "nested 40 deep": (b'{"cells": ' + b"[" * 40 + b"]" * 40 + b"}", "nested 41 levels deep, more than 32"),
    "brackets in strings": (b'{"cells": "' + b"[" * 100 + b'"}', "missing key 'shard'"),  # parsed: no nesting
    "not JSON": (b'{"shard": 1,', "not JSON"),
    "not UTF-8": (b'{"shard": "\xff"}', "not UTF-8"),
    "a list": (b"[1, 2]", "not a JSON object (got list)"),
    "larger than the limit": (b" " * (inputs.MAX_JSON_BYTES + 1) + b"{}", "more than the 2,097,152"),
}


@pytest.mark.parametrize("name", FORGED_FILES)
def test_a_forged_shard_json_file(shards, tmp_path, capsys, name):
    data, words = FORGED_FILES[name]
    (shards[1] / "shard.json").write_bytes(data)
    refused(capsys, ["merge", "--out", str(tmp_path / "out"), *map(str, shards)], str(shards[1] / "shard.json"),
            words)
    assert not (tmp_path / "out").exists()


def _peak_rss_mb(argv: list[str]) -> tuple[int, str, float, float]:
    """A bpcbench command in a fresh interpreter after a merge refused at once (every module imported):
    exit code, stderr, the peak RSS in MiB before the command and after it."""
    code = ("import resource, sys\nfrom bpcbench.cli import main\n"
            "def peak():\n    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\n"
            "main(['merge', '--out', 'never', 'not-a-directory'])\nbase = peak()\n"
            "rc = main(sys.argv[1:])\nprint(base, peak())\nsys.exit(rc)\n")
    p = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)
    base, peak = map(float, p.stdout.split())
    return p.returncode, p.stderr.splitlines()[-1], base, peak


@pytest.mark.parametrize("cells, words", [("{}", "lists and objects, more than 100,000"),
                                          ("[]", "lists and objects, more than 100,000"),
                                          ("0", "cells lists"), ('"x"', "cells lists"), ("1e300", "cells lists")])
def test_a_shard_json_filled_with_small_values_is_refused_in_bounded_memory(shards, tmp_path, cells, words):
    """The densest forgeries within the size limit: ~1 M tiny values in `cells`. What they may add to the
    process is bounded (64 MiB over what every bpcbench command imports; the 23.7 GB of #23 was a claimed n)."""
    n = (inputs.MAX_JSON_BYTES - 1000) // (len(cells) + 1)
    doc = json.loads((shards[1] / "shard.json").read_text())
    doc["cells"] = "@"
    text = json.dumps(doc).replace('"@"', "[" + ",".join([cells] * n) + "]")
    assert len(text) <= inputs.MAX_JSON_BYTES
    (shards[1] / "shard.json").write_text(text)
    rc, err, base, peak = _peak_rss_mb(["merge", "--out", str(tmp_path / "out"), *map(str, shards)])
    assert rc == 2 and f"{shards[1] / 'shard.json'}: " in err and words in err, err
    assert peak - base <= 64, f"peak RSS {base:.0f} -> {peak:.0f} MiB"
    assert not (tmp_path / "out").exists()


def test_a_cell_in_two_shards_writes_nothing(tmp_path, capsys):
    """Two shards with the same cell under two matrix indices: today's reader would refuse the merged
    results.csv, so merge refuses before writing it (it used to leave env.json, matrix.toml and results.csv)."""
    a = shard_dir(tmp_path, 1, 2, [row("gzip-9", size=7000)], 0, 2)
    b = shard_dir(tmp_path, 2, 2, [row("gzip-9", size=7000)], 1, 2)
    refused(capsys, ["merge", "--out", str(tmp_path / "out"), str(a), str(b)], "the merged rows, not written",
            "is already in row 1: one cell, one row")
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.rglob("*.tmp"))


@pytest.mark.parametrize("content, words", [("[1]", "not a JSON object"), ('{"a": 1,', "not JSON"),
                                            ('{"a":' * 40 + "1" + "}" * 40, "nested 40 levels deep")])
def test_a_forged_env_json_writes_nothing(shards, tmp_path, capsys, content, words):
    (shards[0] / "env.json").write_text(content)
    refused(capsys, ["merge", "--out", str(tmp_path / "out"), *map(str, shards)], str(shards[0] / "env.json"), words)
    assert not (tmp_path / "out").exists()


def test_an_env_json_of_other_field_types_still_renders(shards, capsys):
    (shards[0] / "env.json").write_text(json.dumps({"cpu": "fast", "gpus": [1, {"name": 2}], "git": [],
                                                    "memory_bytes": "lots", "python": None, "libraries": 3}))
    assert main(["report", str(shards[0])]) == 0
    assert "- machine: ?" in (shards[0] / "summary.md").read_text()


def _special(kind: str, path: Path) -> None:
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to(kind)


SPECIAL = {"fifo": "a FIFO", "/dev/zero": "a character device", "/dev/null": "a character device"}


def _bpcbench(argv: list[str]) -> subprocess.CompletedProcess:
    """In a fresh process with a timeout: a reader that blocked on a FIFO would hang the test otherwise."""
    return subprocess.run([sys.executable, "-m", "bpcbench", *argv], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("kind", SPECIAL)
@pytest.mark.parametrize("command", ["compare", "report", "merge"])
def test_a_results_csv_that_is_no_regular_file(shards, tmp_path, kind, command):
    target = shards[1] / "results.csv"
    target.unlink()
    _special(kind, target)
    argv = {"compare": ["compare", str(shards[0]), str(shards[1])], "report": ["report", str(shards[1])],
            "merge": ["merge", "--out", str(tmp_path / "out"), *map(str, shards)]}[command]
    p = _bpcbench(argv)
    assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
    assert f"{target}: not a regular file ({SPECIAL[kind]})" in p.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["shard.json", "env.json", "matrix.toml"])
def test_merge_inputs_that_are_fifos(shards, tmp_path, name):
    (shards[0] / name).unlink()
    os.mkfifo(shards[0] / name)
    p = _bpcbench(["merge", "--out", str(tmp_path / "out"), *map(str, shards)])
    assert p.returncode == 2 and f"{shards[0] / name}: not a regular file (a FIFO)" in p.stderr, p.stderr
    assert not (tmp_path / "out").exists()


def test_report_refuses_a_fifo_env_json_and_matrix(shards):
    for name in ("env.json", "matrix.toml"):
        (shards[0] / name).unlink()
        os.mkfifo(shards[0] / name)
        p = _bpcbench(["report", str(shards[0])])
        assert p.returncode == 2 and f"{shards[0] / name}: not a regular file (a FIFO)" in p.stderr, p.stderr
        (shards[0] / name).unlink()


def test_a_results_csv_larger_than_the_limit(shards, capsys, monkeypatch):
    size = (shards[0] / "results.csv").stat().st_size
    monkeypatch.setattr(inputs, "MAX_RESULTS_BYTES", size - 1)
    refused(capsys, ["compare", str(shards[0]), str(shards[1])],
            f"{shards[0] / 'results.csv'}: {size:,} bytes, more than the {size - 1:,}")


def test_compare_of_no_common_cell_is_an_error(shards, capsys):
    err = refused(capsys, ["compare", str(shards[0]), str(shards[1])], "nothing compared: no cell of")
    assert "(1) is in" in err


def test_compare_of_one_cell_warns(shards, tmp_path, capsys):
    assert main(["compare", str(shards[0]), str(shards[0])]) == 0
    out, err = capsys.readouterr()
    assert "no regression (1 cells compared" in out
    assert err == "bpcbench: warning: only 1 cell compared (0 only in the old run, 0 only in the new)\n"
    two = tmp_path / "two"
    two.mkdir()
    results.write_csv(two / "results.csv", [row("gzip-9", size=7000), row("zstd-19", size=6800)])
    assert main(["compare", str(two), str(two)]) == 0
    assert capsys.readouterr().err == ""
    assert compare.few_cells_warning(compare.compare_runs(two, two)) is None


def test_the_shard_spec_is_bounded():
    from bpcbench.bench.shard import MAX_SHARDS, parse
    from bpcbench.errors import BpcError

    assert parse(f"1/{MAX_SHARDS}") == (1, MAX_SHARDS)
    for spec in (f"1/{MAX_SHARDS + 1}", "1/" + "9" * 30, "\u0661/\u0662"):  # Arabic-Indic digits: int() takes them
        with pytest.raises(BpcError):
            parse(spec)
