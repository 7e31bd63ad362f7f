"""The committed corpora are the bytes the manifest names, and every way to break that is loud."""

from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path

import pytest

from bpcbench import corpora
from bpcbench.corpora import (
    KINDS,
    Corpus,
    count_characters,
    load_manifest,
    main,
    resolve,
    select,
)
from bpcbench.errors import BpcError

REPO = Path(__file__).resolve().parents[2]
CORPORA_DIR = REPO / "src" / "bpcbench" / "data" / "corpora"
CANTERBURY = ["alice29", "asyoulik", "lcet10", "plrabn12"]


@pytest.fixture(autouse=True)
def _default_manifest(monkeypatch):
    """Tests see the repository's manifest unless they point elsewhere themselves."""
    monkeypatch.delenv(corpora.ENV_VAR, raising=False)


def _entry(**overrides) -> dict:
    entry = {
        "name": "tiny",
        "path": "tiny.txt",
        "kind": "english",
        "bytes": 5,
        "sha256": hashlib.sha256(b"hello").hexdigest(),
        "source": "test",
        "licence": "CC0-1.0",
        "groups": ["g"],
    }
    entry.update(overrides)
    return {k: v for k, v in entry.items() if v is not None}


def _toml_value(value) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(value)  # strings, ints, bools happen to share TOML's syntax


def _write_manifest(directory: Path, *entries: dict, files: dict[str, bytes] | None = None) -> Path:
    for name, data in (files if files is not None else {"tiny.txt": b"hello"}).items():
        (directory / name).write_bytes(data)
    tables = [
        "[[corpus]]\n" + "".join(f"{key} = {_toml_value(value)}\n" for key, value in entry.items())
        for entry in entries
    ]
    path = directory / "manifest.toml"
    path.write_text("\n".join(tables), encoding="utf-8")
    return path


# --------------------------------------------------------------------------
# The committed corpora


def test_every_committed_corpus_verifies():
    assert corpora.report(load_manifest())[1] == []  # every file read and checked, as `corpora verify` does


def test_manifest_covers_every_kind_with_sane_sizes():
    manifest = load_manifest()
    assert {c.kind for c in manifest.values()} == set(KINDS)
    for corpus in manifest.values():
        assert 10_000 <= corpus.bytes <= 500_000, corpus.name
        assert corpus.path.is_absolute() and corpus.path.is_relative_to(CORPORA_DIR)
        assert corpus.source and corpus.licence
        assert "==" in corpus.source, f"{corpus.name}: source must pin package==version"
    assert sum(c.bytes for c in manifest.values()) < 3_000_000


def test_no_stray_files_in_corpora():
    listed = {c.path for c in load_manifest().values()}
    on_disk = {
        p for p in CORPORA_DIR.rglob("*")
        if p.is_file() and p.name not in {"manifest.toml", "README.md", ".gitattributes"}
    }
    assert on_disk == listed


def test_readme_table_matches_manifest():
    readme = (CORPORA_DIR / "README.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| ([\w.-]+) \| [\w-]+ \| ([\d,]+) \|", readme, re.MULTILINE))
    manifest = load_manifest()
    assert {name: int(size.replace(",", "")) for name, size in rows.items()} == {
        name: c.bytes for name, c in manifest.items()
    }


def test_gitattributes_keeps_line_ends():
    assert "* -text" in (CORPORA_DIR / ".gitattributes").read_text().splitlines()
    assert b"\r\n" in load_manifest()["alice29"].read_bytes()[:200]


def test_canterbury_group():
    assert [c.name for c in select(["canterbury"])] == CANTERBURY
    assert all(c.kind == "english" for c in select(["canterbury"]))


def test_fresh_corpus_holds_only_2026_releases():
    text = load_manifest()["pytest-changelog-2026"].read_bytes().decode("utf-8")
    dates = re.findall(r"^pytest \d+\.\d+\.\d+ \((\d{4})-\d\d-\d\d\)$", text, re.MULTILINE)
    assert len(dates) >= 4 and set(dates) == {"2026"}


def test_structured_corpus_is_valid_json():
    document = json.loads(load_manifest()["iso3166-1"].read_bytes())
    assert len(document["3166-1"]) > 200


def test_character_counts_of_committed_text():
    manifest = load_manifest()
    assert count_characters(manifest["alice29"].read_bytes()) == manifest["alice29"].bytes
    for name in ("pymorphy2-guide-ru", "constitution-ko"):
        assert count_characters(manifest[name].read_bytes()) < manifest[name].bytes * 0.75
    assert count_characters(manifest["random-org-10k"].read_bytes()) is None


# --------------------------------------------------------------------------
# count_characters


@pytest.mark.parametrize(
    ("data", "chars"),
    [(b"", 0), (b"abc", 3), ("h\u00e9llo".encode(), 5), ("\ud55c\uad6d\uc5b4".encode(), 3),
     ("\U0001F1F0\U0001F1F7".encode(), 2), (b"\xff", None), ("\u00e9".encode()[:1], None)],
)
def test_count_characters(data, chars):
    assert count_characters(data) == chars


# --------------------------------------------------------------------------
# select / resolve


def test_select_expands_groups_keeps_order_and_drops_repeats():
    chosen = select(["lcet10", "canterbury", "alice29"])
    assert [c.name for c in chosen] == ["lcet10", "alice29", "asyoulik", "plrabn12"]
    assert [c.name for c in select(["all"])] == list(load_manifest())
    assert [c.name for c in select("alice29")] == ["alice29"]
    assert select([]) == []


def test_select_unknown_names_it():
    with pytest.raises(BpcError, match="'nosuch'") as excinfo:
        select(["alice29", "nosuch"])
    assert "\n" not in str(excinfo.value) and "canterbury" in str(excinfo.value)


def test_resolve_name_and_path(tmp_path):
    assert resolve("alice29") == load_manifest()["alice29"]
    path = tmp_path / "mine.bin"
    path.write_bytes(b"\x00\x01abc")
    corpus = resolve(str(path))
    assert corpus.kind == "file" and corpus.name == "mine.bin"
    assert corpus.bytes == 5 and corpus.sha256 == hashlib.sha256(b"\x00\x01abc").hexdigest()
    assert corpus.path == path.resolve() and corpus.read_bytes() == b"\x00\x01abc"
    assert resolve(path) == corpus  # PathLike works too

    path.write_bytes(b"changed")  # edited between resolve and read: caught
    with pytest.raises(BpcError, match="corpus mine.bin: checksum mismatch"):
        corpus.read_bytes()


def test_resolve_unknown_is_an_error(tmp_path):
    with pytest.raises(BpcError, match="neither a corpus name"):
        resolve(str(tmp_path / "absent.txt"))
    with pytest.raises(BpcError, match="neither a corpus name"):
        resolve(str(tmp_path))  # a directory is not a corpus


def test_resolve_file_needs_no_manifest(tmp_path, monkeypatch):
    monkeypatch.setenv(corpora.ENV_VAR, str(tmp_path / "missing.toml"))
    path = tmp_path / "x.txt"
    path.write_bytes(b"x")
    assert resolve(str(path)).bytes == 1
    with pytest.raises(BpcError, match="missing.toml"):
        resolve("alice29")


# --------------------------------------------------------------------------
# Manifests: env var, relative paths, and every kind of breakage


def test_env_var_points_at_another_manifest(tmp_path, monkeypatch):
    path = _write_manifest(tmp_path, _entry())
    monkeypatch.setenv(corpora.ENV_VAR, str(path))
    manifest = load_manifest()
    assert list(manifest) == ["tiny"]
    tiny = manifest["tiny"]
    assert tiny == Corpus("tiny", tmp_path.resolve() / "tiny.txt", "english", 5,
                          _entry()["sha256"], "test", "CC0-1.0", ("g",))
    assert tiny.read_bytes() == b"hello"
    assert select(["g"]) == [tiny]
    # an explicit argument beats the variable
    assert "alice29" in load_manifest(corpora.DEFAULT_MANIFEST)


def test_checksum_mismatch_names_the_entry(tmp_path):
    path = _write_manifest(tmp_path, _entry(), files={"tiny.txt": b"hellO"})
    manifest = load_manifest(path)
    with pytest.raises(BpcError) as excinfo:
        manifest["tiny"].read_bytes()
    message = str(excinfo.value)
    assert message.startswith("corpus tiny: checksum mismatch") and "\n" not in message
    assert corpora.report(manifest)[1] == [message]


def test_size_mismatch_is_a_checksum_mismatch(tmp_path):
    path = _write_manifest(tmp_path, _entry(bytes=6))
    with pytest.raises(BpcError, match="corpus tiny: checksum mismatch.*expected 6 bytes"):
        load_manifest(path)["tiny"].read_bytes()


def test_missing_file_names_the_entry(tmp_path):
    path = _write_manifest(tmp_path, _entry(path="gone.txt"))
    with pytest.raises(BpcError, match=r"corpus tiny: cannot read .*gone\.txt"):
        load_manifest(path)["tiny"].read_bytes()
    assert len(corpora.report(load_manifest(path))[1]) == 1


def test_missing_manifest(tmp_path):
    with pytest.raises(BpcError, match="nothere.toml: cannot read corpus manifest"):
        load_manifest(tmp_path / "nothere.toml")


def test_invalid_toml_names_the_file(tmp_path):
    path = tmp_path / "manifest.toml"
    path.write_text("[[corpus]]\nname = \n")
    with pytest.raises(BpcError, match=r"manifest\.toml: invalid TOML"):
        load_manifest(path)


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        (_entry(sha256=None), "corpus entry 1 (tiny): missing key 'sha256'"),
        (_entry(name=None), "corpus entry 1: missing key 'name'"),
        (_entry(license="MIT"), "corpus entry 1 (tiny): unknown key 'license'"),
        (_entry(kind="poetry"), "kind 'poetry' is not one of"),
        (_entry(bytes="5"), "bytes must be a non-negative integer"),
        (_entry(bytes=-1), "bytes must be a non-negative integer"),
        (_entry(sha256="ABC"), "sha256 must be 64 lower-case hex digits"),
        (_entry(path="../tiny.txt"), "must be relative to the manifest"),
        (_entry(path="/etc/passwd"), "must be relative to the manifest"),
        (_entry(groups="g"), "groups must be a list"),
        (_entry(groups=["all"]), "group 'all' is implicit"),
        (_entry(name="has space"), "name 'has space' must be"),
        (_entry(name="all"), "reserved"),
        (_entry(source=3), "source must be a string"),
    ],
)
def test_bad_entries_name_file_and_entry(tmp_path, entry, fragment):
    path = _write_manifest(tmp_path, entry)
    with pytest.raises(BpcError) as excinfo:
        load_manifest(path)
    message = str(excinfo.value)
    assert message.startswith(f"{path}: ") and fragment in message and "\n" not in message


def test_entry_is_counted_from_one(tmp_path):
    path = _write_manifest(tmp_path, _entry(), _entry(name="second", kind="bogus"))
    with pytest.raises(BpcError, match=r"corpus entry 2 \(second\): kind 'bogus'"):
        load_manifest(path)


def test_duplicate_names_and_group_clashes(tmp_path):
    with pytest.raises(BpcError, match="duplicate name"):
        load_manifest(_write_manifest(tmp_path, _entry(), _entry()))
    with pytest.raises(BpcError, match="both as a corpus name and a group name"):
        load_manifest(_write_manifest(tmp_path, _entry(), _entry(name="g", groups=[])))


def test_empty_or_foreign_manifest(tmp_path):
    path = tmp_path / "manifest.toml"
    path.write_text("")
    with pytest.raises(BpcError, match="no \\[\\[corpus\\]\\] entries"):
        load_manifest(path)
    path.write_text('title = "x"\n')
    with pytest.raises(BpcError, match="unknown top-level key"):
        load_manifest(path)


# --------------------------------------------------------------------------
# python -m bpcbench.corpora


def test_main_prints_table_and_succeeds(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    for name in load_manifest():
        assert re.search(rf"^{re.escape(name)} .* ok ", out, re.MULTILINE)
    assert re.search(r"^(\d+)/\1 corpora ok$", out, re.MULTILINE)


def test_main_fails_on_mismatch(tmp_path, capsys):
    path = _write_manifest(tmp_path, _entry(), files={"tiny.txt": b"HELLO"})
    assert main([str(path)]) == 1
    captured = capsys.readouterr()
    assert "FAIL" in captured.out
    assert "error: corpus tiny: checksum mismatch" in captured.err


def test_main_fails_on_bad_manifest(tmp_path, capsys):
    assert main([str(tmp_path / "none.toml")]) == BpcError.exit_code
    assert "cannot read corpus manifest" in capsys.readouterr().err


def test_module_runs_as_script():
    import subprocess

    env_path = str(REPO / "src")
    proc = subprocess.run(
        [sys.executable, "-m", "bpcbench.corpora"],
        capture_output=True, text=True, cwd=REPO,
        env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "alice29" in proc.stdout
