"""Where bpcbench keeps things, and the defaults more than one layer needs: one definition each.

* The cache root: `$BPCBENCH_CACHE`, else the platform's user cache folder for bpcbench
  (platformdirs: `$XDG_CACHE_HOME/bpcbench`, else `~/.cache/bpcbench` on Linux). Read when
  asked, not at import, so a test or a job can point it elsewhere by setting the variable.
* Run directories: `results/<UTC time>-<name>`; the run id is the folder's name.
* The shipped matrices (TOML files in `data/matrices/`), by name.
* The lossy curve's defaults, shared by the CLI, the bench matrix and the curve itself.

The codec's own settings (policy, context, width, lanes) are defined by the codec
(`bpcbench.codec.session`), which every layer above imports.

>>> run_id("demo", datetime(2026, 12, 2, 16, 11, 19, tzinfo=timezone.utc))
'20261202T161119Z-demo'
>>> sorted(shipped_names())[:3]
['context', 'default', 'gpu']
"""

from __future__ import annotations

import os
import sys
from datetime import datetime, timezone
from pathlib import Path

import platformdirs

CACHE_ENV = "BPCBENCH_CACHE"
RESULTS_ROOT = Path("results")
MATRICES_DIR = Path(__file__).resolve().parent / "data" / "matrices"  # package data
LADDER_CONFIG = MATRICES_DIR / "ladder.toml"  # the ladder's shipped config sits beside the matrices

LOSSY_TAUS = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0, float("inf"))  # bits; 0 is lossless, inf stores only flags
LOSSY_MAX_BYTES = 2000  # the prefix of each text a lossy curve codes (0 = whole file)


def cache_root() -> Path:
    """$BPCBENCH_CACHE if set, else the user cache folder platformdirs gives for bpcbench."""
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path(platformdirs.user_cache_dir("bpcbench", appauthor=False))


def run_id(name: str, now: datetime | None = None) -> str:
    """`<UTC time>-<name>`: sorts by time, says what ran."""
    now = now or datetime.now(timezone.utc)
    return f"{now:%Y%m%dT%H%M%SZ}-{name}"


def run_dir(name: str, root: str | os.PathLike = RESULTS_ROOT) -> Path:
    """A new run's directory under `root`."""
    return Path(root) / run_id(name)


def shipped(name: str) -> Path | None:
    """A matrix (or the ladder config) that ships with bpcbench, by name; None if there is none."""
    path = MATRICES_DIR / f"{name}.toml"
    return path if name and "/" not in name and os.sep not in name and path.is_file() else None


def shipped_names(*, matrices_only: bool = True) -> list[str]:
    """The names `bpcbench bench NAME` takes, read from the folder (the ladder config left out)."""
    return sorted(p.stem for p in MATRICES_DIR.glob("*.toml") if not (matrices_only and p == LADDER_CONFIG))


if __name__ == "__main__":  # the Makefile and scripts/ ask: where the cache is, what a run is called
    if sys.argv[1:] == ["cache"]:
        print(cache_root())
    elif len(sys.argv) == 3 and sys.argv[1] == "run-id":
        print(run_id(sys.argv[2]))
    else:
        sys.exit("usage: python -m bpcbench.defaults cache | run-id NAME")
