"""`bpcbench cache ls|clear` and `bpcbench corpora ls|verify|add`, on a temp cache root and a temp manifest."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from bpcbench import corpora
from bpcbench.bench import cache
from cli_lines import one_line, run
from bpcbench.errors import BpcError

DOCS = Path(__file__).resolve().parents[2] / "docs"




@pytest.fixture
def root(tmp_path, monkeypatch):
    """A cache root holding two cells, one model, one quantized level, a wheel and a stranger."""
    root = tmp_path / "cache"
    files = {"cells/a.json": 100, "cells/b.json": 200, "models/m.gguf": 2**20, "quantized/0123/Q4_0-0.3.gguf": 3000,
             "sha256.json": 10, "wheels/cpu-native/x.whl": 50, "notes.txt": 5}
    for rel, size in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x" * size)
    monkeypatch.setenv("BPCBENCH_CACHE", str(root))
    return root


def ls_lines(capsys) -> dict[str, list[str]]:
    assert run("cache", "ls") == 0
    out = capsys.readouterr().out
    return {line.split()[0]: line.split() for line in out.splitlines()[1:]} | {"root": [out.splitlines()[0]]}


def test_cache_ls_counts_entries_and_mib_per_kind(root, capsys):
    lines = ls_lines(capsys)
    assert str(root) in lines["root"][0] and "BPCBENCH_CACHE" in lines["root"][0]
    assert lines["cells"][1:3] == ["2", "0.0"]
    assert lines["models"][1:3] == ["1", "1.0"]  # 1 MiB = 2^20 bytes
    assert lines["quantized"][1] == "1" and lines["wheels"][1] == "1" and lines["sdist"][1] == "0"
    assert lines["other"][1] == "1"  # notes.txt: listed, never cleared
    assert lines["total"][1] == "7"
    assert set(lines) >= {k.name for k in cache.KINDS}


def test_cache_clear_removes_cells_only_by_default(root, capsys):
    assert run("cache", "clear") == 0
    assert "removed cells: 2 entries" in capsys.readouterr().out
    assert not (root / "cells").exists()
    assert (root / "models" / "m.gguf").exists() and (root / "notes.txt").exists()
    assert run("cache", "clear") == 0  # nothing left: still fine
    assert "removed cells: 0 entries" in capsys.readouterr().out


def test_cache_clear_other_kinds_needs_yes(root, capsys):
    assert run("cache", "clear", "all") == BpcError.exit_code
    captured = capsys.readouterr()
    assert "needs --yes" in one_line(captured.err)
    assert "would remove models: 1 entry" in captured.out
    assert (root / "cells" / "a.json").exists() and (root / "models" / "m.gguf").exists()  # nothing removed

    assert run("cache", "clear", "all", "--yes") == 0
    assert {p.name for p in root.iterdir()} == {"wheels", "notes.txt"}  # all = every kind but wheels and sdist
    assert run("cache", "clear", "wheels", "--yes") == 0
    assert {p.name for p in root.iterdir()} == {"notes.txt"}


def test_cache_clear_leaves_a_linked_directory_alone(root, tmp_path, capsys):
    elsewhere = tmp_path / "my-models"
    elsewhere.mkdir()
    (elsewhere / "keep.gguf").write_bytes(b"GGUF")
    (root / "models" / "m.gguf").unlink()
    (root / "models").rmdir()
    (root / "models").symlink_to(elsewhere)
    assert run("cache", "clear", "models", "--yes") == 0
    assert not (root / "models").exists() and (elsewhere / "keep.gguf").exists()


@pytest.mark.parametrize("argv, fragment", [
    (["cache", "clear", "bogus"], "unknown cache kind 'bogus'"),
    (["cache"], "required"),
    (["cache", "ls", "extra"], "unrecognized arguments"),
])
def test_cache_bad_input_is_one_line(root, capsys, argv, fragment):
    assert run(*argv) == BpcError.exit_code
    assert fragment in one_line(capsys.readouterr().err)


def test_cache_docs_name_every_kind_and_variable():
    text = (DOCS / "cache.md").read_text()
    for kind in cache.KINDS:
        assert f"`{kind.name}`" in text
    for variable in ("BPCBENCH_CACHE", "BPCBENCH_CORPORA", "BPCBENCH_MODEL_PATH"):
        assert variable in text


# -- corpora ------------------------------------------------------------------------------


@pytest.fixture
def manifest(tmp_path, monkeypatch):
    monkeypatch.delenv(corpora.ENV_VAR, raising=False)
    d = tmp_path / "corpora"
    d.mkdir()
    (d / "a.txt").write_bytes(b"hello\n")
    return d / "manifest.toml"


def add(manifest: Path, file, *extra) -> int:
    return run("corpora", "add", file, "--manifest", manifest, "--source", "test", "--licence", "CC0-1.0", *extra)


def test_corpora_add_appends_a_checked_entry(manifest, capsys):
    assert add(manifest, manifest.parent / "a.txt", "--name", "a", "--kind", "english", "--group", "g",
               "--note", 'say "hi"\n') == 0
    assert "added a (english, 6 bytes" in capsys.readouterr().out
    (manifest.parent / "sub").mkdir()
    (manifest.parent / "sub" / "b.bin").write_bytes(b"\0\1")
    assert add(manifest, manifest.parent / "sub" / "b.bin", "--name", "b", "--kind", "binary") == 0
    found = corpora.load_manifest(manifest)
    assert list(found) == ["a", "b"]
    assert found["a"].sha256 == hashlib.sha256(b"hello\n").hexdigest() and found["a"].bytes == 6
    assert found["a"].note == 'say "hi"\n' and found["a"].groups == ("g",)
    assert found["b"].path == manifest.parent / "sub" / "b.bin"
    assert corpora.report(found)[1] == []
    assert not [p for p in manifest.parent.iterdir() if p.name.startswith(".bpcbench-")]  # no temp files

    assert run("corpora", "ls", "--manifest", manifest) == 0
    out = capsys.readouterr().out
    assert re.search(r"^a +english +6 ", out, re.MULTILINE) and "2 corpora in" in out
    assert run("corpora", "verify", "--manifest", manifest) == 0
    assert "2/2 corpora ok" in capsys.readouterr().out


def test_corpora_add_copies_a_file_from_elsewhere(manifest, tmp_path, capsys):
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"far away")
    assert add(manifest, outside, "--name", "far", "--kind", "fresh") == 2
    assert "--copy" in one_line(capsys.readouterr().err)
    assert not manifest.exists()
    assert add(manifest, outside, "--name", "far", "--kind", "fresh", "--copy") == 0
    assert (manifest.parent / "fresh" / "outside.txt").read_bytes() == b"far away"
    assert corpora.load_manifest(manifest)["far"].read_bytes() == b"far away"


@pytest.mark.parametrize("extra, fragment", [
    (["--name", "a", "--kind", "english"], "duplicate name"),
    (["--name", "new", "--kind", "poetry"], "kind 'poetry' is not one of"),
    (["--name", "bad name", "--kind", "english"], "must be letters, digits"),
    (["--name", "all", "--kind", "english"], "reserved"),
    (["--name", "new", "--kind", "english", "--group", "a"], "both as a corpus name and a group name"),
    (["--name", "new"], "the following arguments are required: --kind"),
])
def test_corpora_add_refuses_in_one_line_and_writes_nothing(manifest, capsys, extra, fragment):
    assert add(manifest, manifest.parent / "a.txt", "--name", "a", "--kind", "english") == 0
    before = manifest.read_bytes()
    capsys.readouterr()
    assert add(manifest, manifest.parent / "a.txt", *extra) == BpcError.exit_code
    assert fragment in one_line(capsys.readouterr().err)
    assert manifest.read_bytes() == before


def test_corpora_add_missing_file_and_verify_mismatch(manifest, capsys):
    assert add(manifest, manifest.parent / "absent.txt", "--name", "x", "--kind", "english") == BpcError.exit_code
    assert "absent.txt: cannot read: No such file" in one_line(capsys.readouterr().err)
    assert add(manifest, manifest.parent / "a.txt", "--name", "a", "--kind", "english", "--source", " ") == 2
    assert "non-empty source" in one_line(capsys.readouterr().err)
    assert add(manifest, manifest.parent / "a.txt", "--name", "a", "--kind", "english") == 0
    (manifest.parent / "a.txt").write_bytes(b"edited")
    capsys.readouterr()
    assert run("corpora", "verify", "--manifest", manifest) == 1
    captured = capsys.readouterr()
    assert "FAIL" in captured.out and "checksum mismatch" in one_line(captured.err)
    assert run("corpora", "ls", "--manifest", manifest.parent / "none.toml") == BpcError.exit_code
    assert "cannot read corpus manifest" in one_line(capsys.readouterr().err)
