"""The pins the build steps need, read from where each is defined, so none is typed twice.

    python3 scripts/pins.py llama-cpp-python   # its exact version: pyproject.toml's dependency pin
    python3 scripts/pins.py models [NAME ...]  # pip requirements of registry models (bpcbench.models;
                                               # all of them without NAME): needs the package's deps

The Makefile, scripts/*.sh and scripts/gpu_kit.py ask this instead of repeating the numbers.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def exact_pin(package: str, pyproject: Path = ROOT / "pyproject.toml") -> str:
    """The version `package==X` pins among pyproject.toml's core dependencies."""
    deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    for dep in deps:
        m = re.fullmatch(rf"{re.escape(package)}\s*==\s*([^\s;]+)", dep.strip())
        if m:
            return m.group(1)
    raise SystemExit(f"pins: {package} has no exact pin in {pyproject}")


def model_requirements(names: list[str]) -> list[str]:
    # imported here, not at the top: the version query runs before any venv exists (make install's
    # first step), and bpcbench.models needs the package's dependencies (gguf)
    sys.path.insert(0, str(ROOT / "src"))
    from bpcbench.models import KNOWN_MODELS

    unknown = [n for n in names if n not in KNOWN_MODELS]
    if unknown:
        raise SystemExit(f"pins: unknown model {unknown[0]!r} (known: {', '.join(KNOWN_MODELS)})")
    return [r for name in names or KNOWN_MODELS for r in KNOWN_MODELS[name].requirements]


def main(argv: list[str]) -> None:
    if argv[:1] == ["models"]:
        print(" ".join(model_requirements(argv[1:])))
    elif len(argv) == 1:
        print(exact_pin(argv[0]))
    else:
        raise SystemExit("usage: pins.py PACKAGE | pins.py models [NAME ...]")


if __name__ == "__main__":
    main(sys.argv[1:])
