"""The wheel (issue #12): it carries every shipped matrix and corpus and nothing of the checkout
besides the package, and the installed package finds them from any working directory.

The wheel is built from a copy of pyproject.toml, README.md and src/: a stale build/lib in the
checkout cannot slip a file into it, and a build here cannot race another one there. pip builds
it with --no-build-isolation when this environment's setuptools can read pyproject.toml (>= 77,
SPDX `license`), else in pip's isolated build environment (setuptools from the index or pip's
cache, as `make install` needs anyway). `make wheel-check` runs the quick bench from such a wheel.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "bpcbench"
CORPORA = PACKAGE / "data" / "corpora"
CORPORA_GLOB = '"data/corpora/**/*"'  # the package-data entry that ships the corpora


def _setuptools_reads_pyproject() -> bool:
    try:
        major = version("setuptools").split(".")[0]
    except PackageNotFoundError:
        return False
    return major.isdigit() and int(major) >= 77


def copy_sources(dest: Path) -> Path:
    dest.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, dest / name)
    shutil.copytree(REPO / "src", dest / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    return dest


def build_wheel(tree: Path, out: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(tree)]
    if _setuptools_reads_pyproject():
        cmd.insert(5, "--no-build-isolation")
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}{proc.stderr[-4000:]}"
    (wheel,) = out.glob("bpcbench-*.whl")
    return wheel


def shipped_files() -> dict[str, str | None]:
    """Wheel entry -> the sha256 its bytes must have (None: not checked): the shipped matrices, the
    corpus manifest and every corpus it lists, read here with tomllib, not through bpcbench."""
    expected: dict[str, str | None] = {
        f"bpcbench/data/matrices/{p.name}": None for p in (PACKAGE / "data" / "matrices").glob("*.toml")}
    expected["bpcbench/data/corpora/manifest.toml"] = None
    manifest = tomllib.loads((CORPORA / "manifest.toml").read_text(encoding="utf-8"))
    for entry in manifest["corpus"]:
        expected[f"bpcbench/data/corpora/{entry['path']}"] = entry["sha256"]
    return expected


def wheel_problems(wheel: Path) -> list[str]:
    """Everything wrong with the wheel's contents, all at once."""
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        problems = [f"missing: {n}" for n, _ in sorted(shipped_files().items()) if n not in names]
        problems += [f"bytes differ from the manifest: {n}" for n, sha in sorted(shipped_files().items())
                     if sha and n in names and hashlib.sha256(zf.read(n)).hexdigest() != sha]
    dist_info = f"bpcbench-{wheel.name.split('-')[1]}.dist-info"
    problems += [f"not part of the package: {n}" for n in sorted(names)
                 if n.split("/")[0] not in ("bpcbench", dist_info)
                 or n.startswith(("tests/", "results/")) or "/tests/" in n or "/results/" in n]
    return problems


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    return build_wheel(copy_sources(tmp / "tree"), tmp / "dist")


def test_the_expected_files_are_the_shipped_ones():
    expected = shipped_files()
    assert len([n for n in expected if n.startswith("bpcbench/data/matrices/")]) >= 5
    assert "bpcbench/data/matrices/quick.toml" in expected
    assert all((REPO / "src" / n).is_file() for n in expected)
    assert sum(sha is not None for sha in expected.values()) >= 10  # every corpus, with its checksum


def test_wheel_ships_matrices_and_corpora_and_nothing_else(wheel):
    assert wheel_problems(wheel) == []


def test_a_wheel_without_the_corpora_glob_is_caught(tmp_path):
    tree = copy_sources(tmp_path / "tree")
    pyproject = tree / "pyproject.toml"
    text = pyproject.read_text()
    assert CORPORA_GLOB in text
    pyproject.write_text(text.replace(CORPORA_GLOB + ", ", "").replace(CORPORA_GLOB, ""))
    problems = wheel_problems(build_wheel(tree, tmp_path / "dist"))
    missing = {p.removeprefix("missing: ") for p in problems}
    assert "bpcbench/data/corpora/manifest.toml" in missing
    assert "bpcbench/data/corpora/canterbury/alice29.txt" in missing


CHECK_QUICK = """
import sys
from pathlib import Path

import bpcbench
from bpcbench import corpora
from bpcbench.bench import matrix

site = Path(sys.argv[1]).resolve()
assert Path(bpcbench.__file__).resolve().is_relative_to(site), bpcbench.__file__
m = matrix.load("quick")
assert m.path.resolve().is_relative_to(site), m.path
names = sorted({cell.corpus for cell in m.cells})
for name in names:
    corpus = corpora.resolve(name)  # a manifest name: the shipped manifest, checksummed below
    assert corpus.path.resolve().is_relative_to(site), corpus.path
    corpus.read_bytes()
print(m.name, len(m.cells), *names)
"""


def test_installed_wheel_loads_the_quick_matrix_from_another_folder(wheel, tmp_path):
    """The wheel's files, installed (its dependencies are this environment's), from a folder that is
    not the checkout: the shipped quick matrix and each of its corpora resolve inside the install."""
    site, elsewhere = tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--no-compile",
                           "--target", str(site), str(wheel)], check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-4000:]
    env = {k: v for k, v in os.environ.items() if not k.startswith("BPCBENCH_CORPORA")}
    env["PYTHONPATH"] = str(site)  # ahead of the editable install's path to src/
    proc = subprocess.run([sys.executable, "-c", CHECK_QUICK, str(site)], cwd=elsewhere, env=env,
                          check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-4000:]
    name, n_cells, *names = proc.stdout.split()
    assert name == "quick" and int(n_cells) > 0
    assert {"alice29", "pytest-changelog-2026"} <= set(names)


def test_the_version_is_defined_once_in_init():
    """pyproject.toml reads the version from bpcbench.__version__ (setuptools' attr, read without
    importing), so neither the wheel nor an editable install can disagree with `bpcbench --version`."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "bpcbench.__version__"}


def test_the_wheel_and_the_install_carry_the_version_of_init(wheel):
    import bpcbench

    assert wheel.name.startswith(f"bpcbench-{bpcbench.__version__}-")
    with zipfile.ZipFile(wheel) as zf:
        metadata = zf.read(f"bpcbench-{bpcbench.__version__}.dist-info/METADATA").decode()
    assert f"\nVersion: {bpcbench.__version__}\n" in metadata
    assert {"bench", "lossy", "all", "test"} <= set(re.findall(r"^Provides-Extra: (\S+)$", metadata, re.M))
    assert version("bpcbench") == bpcbench.__version__  # the editable install of this checkout
