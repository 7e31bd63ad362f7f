"""Run a script in a fresh interpreter whose numba pool has 8 threads: the tables-per-thread-count tests.

A fresh process because numba's thread count is fixed once its pool has started, and the test
process's pool may already have started with this machine's core count.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import bpcbench


def run_json(script: str) -> dict:
    """`script`'s JSON on stdout, run against this tree's package (the one the test process imports)."""
    src = str(Path(bpcbench.__file__).parents[1])
    path = os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "NUMBA_NUM_THREADS": "8", "PYTHONPATH": path}
    return json.loads(subprocess.run([sys.executable, "-c", script], env=env, check=True, capture_output=True,
                                     text=True).stdout)
