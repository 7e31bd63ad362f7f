"""The cell cache: a finished row stored under the sha256 of everything it depends on.

The key covers the cell's settings, the input bytes, the model file, library versions and
the code itself: every file under codec/ and llama/, and baselines.py, is hashed, so a
change to how a number is computed never serves a stale row, version bump or not. Rows are
JSON files under ``<cache>/cells/<key>.json``; a rerun with nothing changed is served from
here in seconds, and an interrupted run resumes where it stopped.

The cache root holds other kinds too (`KINDS`: models, quantized levels, hash and metadata
caches, wheels, the llama-cpp-python sdist); `usage` and `clear` are what `bpcbench cache
ls|clear` run, and docs/cache.md describes each kind.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import sys
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from bpcbench import __version__, defaults
from bpcbench.atomic import write_text
from bpcbench.baselines import BASELINES
from bpcbench.bench.migrations import SCHEMA_VERSION
from bpcbench.codec import container, range_coder
from bpcbench.errors import BpcError

CELLS_SUBDIR = "cells"
PACKAGE_DIR = Path(__file__).resolve().parents[1]
# What decides a cell's numbers: the whole codec core and llama.cpp layer, and the baselines.
MEASURING_CODE = ("codec", "llama", "baselines.py")


def llama_cpp_python_version() -> str:
    try:
        return version("llama_cpp_python")
    except PackageNotFoundError:
        return "not installed"


@functools.lru_cache(maxsize=1)
def code_sha256() -> str:
    """sha256 over every .py file of MEASURING_CODE, by relative path and content."""
    h = hashlib.sha256()
    for entry in MEASURING_CODE:
        root = PACKAGE_DIR / entry
        files = sorted(root.rglob("*.py")) if root.is_dir() else [root]
        for f in files:
            h.update(f.relative_to(PACKAGE_DIR).as_posix().encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def key_of(material: dict) -> str:
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def common_material(cell, corpus_sha256: str, data: bytes) -> dict:
    """What every cell's key holds, baseline or model."""
    return {
        "schema_version": SCHEMA_VERSION,
        "bpcbench": __version__,
        "code": code_sha256(),
        "codec": cell.codec,
        "measure": cell.measure,
        "corpus_sha256": corpus_sha256,
        "input_sha256": hashlib.sha256(data).hexdigest(),
        "max_bytes": cell.max_bytes,
        "repeats": cell.repeats,  # timed values: part of what a row reports
    }


def baseline_material(cell) -> dict:
    return {"library": BASELINES[cell.codec].library_version}


def model_material(settings, model_sha256: str, build: dict) -> dict:
    return {
        "model_sha256": model_sha256, "policy": settings.policy, "context": settings.context,
        "min_lane_tokens": settings.min_lane_tokens, "width": settings.width,
        "threads": settings.threads, "n_gpu_layers": settings.n_gpu_layers,
        "llama_cpp_python": llama_cpp_python_version(), "build": build,
        "coder": range_coder.VERSION, "container_format": container.FORMAT_VERSION, "numpy": np.__version__,
    }


class CellCache:
    """Finished rows as JSON files; `read=False` (--no-cache) recomputes but still stores."""

    def __init__(self, root: Path | None, read: bool = True):
        self.dir = Path(root) / CELLS_SUBDIR if root is not None else None
        self.read = read

    def get(self, key: str) -> dict | None:
        if self.dir is None or not self.read:
            return None
        try:
            doc = json.loads((self.dir / f"{key}.json").read_text())
        except (OSError, ValueError):
            return None
        row = doc.get("row") if isinstance(doc, dict) else None
        if not isinstance(row, dict) or row.get("schema_version") != SCHEMA_VERSION:
            return None
        return row

    def put(self, key: str, material: dict, row: dict) -> None:
        if self.dir is None:
            return
        stored = {k: v for k, v in row.items() if k not in ("run_id", "cached")}
        try:
            write_text(self.dir / f"{key}.json", json.dumps({"key": material, "row": stored}, indent=1) + "\n")
        except OSError as exc:
            print(f"bpcbench: warning: cannot write cell cache {self.dir}: {exc.strerror or exc}", file=sys.stderr)


# -- what lies under the cache root: `bpcbench cache ls | clear` ------------------------


@dataclass(frozen=True)
class CacheKind:
    name: str
    paths: tuple[str, ...]  # relative to the cache root: directories or files
    holds: str


KINDS = (
    CacheKind("cells", (CELLS_SUBDIR,), "finished bench cells, one JSON file each (bench, nightly)"),
    CacheKind("metadata", ("sha256.json", "gguf-metadata.json"), "model files' sha256 and GGUF metadata"),
    CacheKind("quantized", ("quantized",), "ladder levels made by llama.cpp's quantizer"),
    CacheKind("models", ("models",), "Gemma 3 assembled by `bpcbench models` from its parts; GGUF files found by hash"),
    CacheKind("wheels", ("wheels",),
              "llama-cpp-python wheels built once per llama.cpp flavour (from a checkout: make install)"),
    CacheKind("sdist", ("sdist",), "llama-cpp-python source downloaded by `make gpu-kit`"),
    CacheKind("tools", ("tools",), "llama-perplexity built by `make llama-tools` (the ladder's KLD reference)"),
)
DEFAULT_CLEAR = ("cells",)  # `cache clear` with no KIND; the only kind cleared without --yes
ALL = "all"  # every kind but these build inputs (5-18 minute compiles, a download):
NOT_IN_ALL = ("wheels", "sdist", "tools")
OTHER = "other"  # anything else under the root: listed, never removed


@dataclass(frozen=True)
class Usage:
    kind: str
    entries: int  # files
    bytes: int
    paths: tuple[Path, ...]  # the ones that exist


def _files(path: Path) -> list[Path]:
    """Every file under `path` (itself if a file), symlinks as files; directory links not followed."""
    if path.is_symlink() or path.is_file():
        return [path]
    out = []
    for top, dirs, files in os.walk(path):
        out += [Path(top) / name for name in files]
        out += [Path(top) / d for d in dirs if (Path(top) / d).is_symlink()]
    return out


def usage(root: Path | None = None) -> list[Usage]:
    """Entries and bytes of each kind under `root` (default cache_root()), then `other` if any."""
    root = defaults.cache_root() if root is None else Path(root)
    known = {p for kind in KINDS for p in kind.paths}
    out = [_usage(kind.name, [root / p for p in kind.paths]) for kind in KINDS]
    try:
        others = [p for p in root.iterdir() if p.name not in known]
    except OSError:
        others = []
    if others:
        out.append(_usage(OTHER, others))
    return out


def _usage(name: str, paths: list[Path]) -> Usage:
    existing = [p for p in paths if p.exists() or p.is_symlink()]
    files = [f for p in existing for f in _files(p)]
    size = 0
    for f in files:
        try:
            size += f.lstat().st_size
        except OSError:
            pass  # removed while we looked
    return Usage(name, len(files), size, tuple(existing))


def kinds_to_clear(names: list[str]) -> list[str]:
    """Kind names from the command line: none -> cells; `all` -> every kind but wheels and sdist."""
    known = [k.name for k in KINDS]
    chosen: list[str] = []
    for name in names or DEFAULT_CLEAR:
        if name == ALL:
            chosen += [k for k in known if k not in NOT_IN_ALL]
        elif name in known:
            chosen.append(name)
        else:
            raise BpcError(f"unknown cache kind {name!r} (known: {', '.join(known)}, {ALL})")
    return list(dict.fromkeys(chosen))


def clear(names: list[str], root: Path | None = None) -> list[Usage]:
    """Remove these kinds from `root`; a symlinked directory is unlinked, not emptied. What was removed."""
    root = defaults.cache_root() if root is None else Path(root)
    removed = [u for u in usage(root) if u.kind in names]
    for u in removed:
        for path in u.paths:
            try:
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
            except OSError as exc:
                raise BpcError(f"cannot remove {path}: {exc.strerror or exc}") from None
    return removed
