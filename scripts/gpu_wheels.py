"""Wheels for the GPU machine: every dependency its image lacks, for its Python (3.12).

The GPU machine is offline: it cannot reach a package index, so what bpcbench and
llama-cpp-python need at run time, less what its image already holds
(device-image-packages.txt), travels as wheels, downloaded here for its Python and platform
(`pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux...`).
Versions are the ones tested here: the project's exact pins, else what this environment has
installed. `closure` then reads each wheel's Requires-Dist and adds whatever is neither in the
image nor in the kit, until nothing is missing.

>>> normalise("Typing_Extensions")
'typing-extensions'
>>> sorted(needs(["numpy>=1.16", "cffi; extra == 'cffi'", "tomli; python_version < '3.11'"], "3.12"))
['numpy']
"""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64")
LLAMA_CPP_RUNTIME = ("typing-extensions>=4.5.0", "numpy>=1.20.0", "diskcache>=5.6.1", "jinja2>=2.11.3")
# Needed to build llama-cpp-python there; the image has a scikit-build-core of unknown version,
# and a pinned one costs 0.2 MB.
BUILD_ONLY = ("scikit-build-core==1.1.2",)
NOT_CARRIED = {"llama-cpp-python"}  # built from source on the machine


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def image_packages(path: Path) -> set[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return {normalise(s.strip()) for s in lines if s.strip() and not s.startswith("#")}


def _marker_env(python_version: str) -> dict:
    env = default_environment()
    env.update(python_version=python_version, python_full_version=f"{python_version}.0", sys_platform="linux",
               platform_system="Linux", platform_machine="x86_64", os_name="posix",
               implementation_name="cpython", platform_python_implementation="CPython", extra="")
    return env


def needs(requirements: list[str], python_version: str) -> dict[str, Requirement]:
    """name -> requirement (the first one named), for the ones that apply on that Python without extras."""
    env = _marker_env(python_version)
    out = {}
    for text in requirements:
        req = Requirement(text)
        if req.marker is None or req.marker.evaluate(env):
            out.setdefault(normalise(req.name), req)
    return out


def pinned_spec(req: Requirement) -> str:
    """The exact pin if the requirement has one, else the version installed here if it fits."""
    pins = [s.version for s in req.specifier if s.operator == "=="]
    if pins:
        return f"{req.name}=={pins[0]}"
    try:
        installed = importlib.metadata.version(req.name)
    except importlib.metadata.PackageNotFoundError:
        return f"{req.name}{req.specifier}"
    return f"{req.name}=={installed}" if req.specifier.contains(installed, prereleases=True) else str(req)


# The GPU run benches, draws and scores lossy curves: the core set and these extras travel.
EXTRAS = ("bench", "lossy")


def project_requirements(pyproject: Path) -> list[str]:
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    extras = project.get("optional-dependencies", {})
    return list(project["dependencies"]) + [r for name in EXTRAS for r in extras.get(name, [])]


def wanted(pyproject: Path, image: set[str], python_version: str, carry: set[str]) -> tuple[list[str], list[str]]:
    """(pip specs to download, notes on pinned packages left to the image)."""
    reqs = needs(project_requirements(pyproject) + list(LLAMA_CPP_RUNTIME), python_version)
    specs, notes = [], []
    for name, req in reqs.items():
        if name in NOT_CARRIED:
            continue
        if name in image and name not in carry:
            if any(s.operator == "==" for s in req.specifier):
                notes.append(f"{req.name}: pinned {req.specifier} here; the image's version is used there "
                             f"(--carry {name} to carry the pin)")
            continue
        specs.append(pinned_spec(req))
    return specs + list(BUILD_ONLY), notes


def download(specs: list[str], dest: Path, python_version: str, native: bool = False) -> None:
    """pip download for the machine's Python and manylinux platforms; `native` fetches for the running interpreter."""
    if not specs:
        return
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "-d", str(dest)]
    if not native:
        cmd += ["--python-version", python_version, "--implementation", "cp"]
        for p in PLATFORMS:
            cmd += ["--platform", p]
    proc = subprocess.run(cmd + specs, capture_output=True, text=True)
    if proc.returncode:
        tail = [line for line in proc.stderr.splitlines() if "is ignored" not in line][-3:]
        raise RuntimeError(f"pip download {' '.join(specs)} failed: {' | '.join(tail)}")


def wheel_name(path: Path) -> str:
    return normalise(path.name.split("-")[0])


def wheel_requires(path: Path) -> list[str]:
    with zipfile.ZipFile(path) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        text = z.read(meta).decode("utf-8", "replace")
    return [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Requires-Dist:")]


def missing(dest: Path, image: set[str], python_version: str) -> dict[str, Requirement]:
    """Requirements of the wheels in dest that neither the image nor dest provides."""
    have = {wheel_name(w) for w in dest.glob("*.whl")} | image | NOT_CARRIED
    out = {}
    for w in sorted(dest.glob("*.whl")):
        for name, req in needs(wheel_requires(w), python_version).items():
            if name not in have:
                out[name] = req
    return out


def closure(dest: Path, image: set[str], python_version: str, native: bool = False, rounds: int = 5) -> None:
    """Download what the wheels in dest need until nothing is missing."""
    for _ in range(rounds):
        todo = missing(dest, image, python_version)
        if not todo:
            return
        download([pinned_spec(r) for r in todo.values()], dest, python_version, native)
    raise RuntimeError(f"wheels still missing after {rounds} rounds: {', '.join(missing(dest, image, python_version))}")


def duplicates(dest: Path) -> list[str]:
    """Packages with two wheels in dest (pip refuses to install both)."""
    seen: dict[str, str] = {}
    dup = []
    for w in sorted(dest.glob("*.whl")):
        if wheel_name(w) in seen:
            dup.append(f"{seen[wheel_name(w)]} and {w.name}")
        seen[wheel_name(w)] = w.name
    return dup
