"""OpenMP wait policy against a busy core: `python benchmarks/wait_policy.py [--bytes N] [--repeats R]`.

llama.cpp's CPU backend (this build links libgomp) waits at a barrier after every graph node.
With OMP_WAIT_POLICY=active its threads spin there; when another process holds one of the
cores, a spinning thread burns the time slice the thread it waits for needs. `passive` makes
them sleep. This script compresses the same bytes with all usable cores under both policies,
on an idle machine and beside one CPU-bound process, each in a fresh process (libgomp reads
the variable once, at load), and prints the wall times and their ratios. Pairs run back to
back so the ratios, not the absolute times, are the result (the machine may be shared).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bpcbench.corpora import load_manifest
from bpcbench.llama.binding import usable_cores


def policy_env(policy: str) -> dict:
    """'active' / 'passive': OMP_WAIT_POLICY; 'unset': libgomp's default (spin ~300k times, then
    sleep); 'spin:N': GOMP_SPINCOUNT=N (spin N times, then sleep)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    if policy.startswith("spin:"):
        env["GOMP_SPINCOUNT"] = policy.removeprefix("spin:")
    elif policy != "unset":
        env["OMP_WAIT_POLICY"] = policy
    return env


def compress_seconds(src: Path, policy: str, threads: int) -> float:
    env = policy_env(policy)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "bpcbench", "compress", str(src), "-o", f"{tmp}/x.bpcz",
                        "-t", str(threads), "--no-fallback"], env=env, check=True, capture_output=True)
        return time.perf_counter() - start


def busy_core():
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bytes", type=int, default=2000, help="prefix of alice29 to compress (default 2000)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per setting (default 3; median shown)")
    ap.add_argument("--policies", default="active,passive",
                    help="comma-separated: active, passive, unset (libgomp's default), spin:N (GOMP_SPINCOUNT); "
                         "ratios are against the last one (default active,passive)")
    args = ap.parse_args()
    threads = usable_cores()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "alice.txt"
        src.write_bytes(load_manifest()["alice29"].read_bytes()[: args.bytes])
        compress_seconds(src, "passive", threads)  # warm the page cache and the GGUF metadata cache
        policies = args.policies.split(",")
        rows = []
        for load in ("idle", "one busy core"):
            hog = busy_core() if load != "idle" else None
            try:
                times = {p: [] for p in policies}
                for _ in range(args.repeats):  # interleaved: a change in the machine's load hits all
                    for policy in policies:
                        times[policy].append(compress_seconds(src, policy, threads))
            finally:
                if hog is not None:
                    hog.kill()
            rows.append((load, [statistics.median(times[p]) for p in policies]))
    last = policies[-1]
    print(f"compress {args.bytes} bytes of alice29, smollm2-135m, -t {threads}, median of {args.repeats}; "
          f"seconds (ratio to {last})")
    print(f"{'machine':<15}" + "".join(f"{p:>18}" for p in policies))
    for load, med in rows:
        print(f"{load:<15}" + "".join(f"{m:>9.2f} ({m / med[-1]:4.2f}x)" for m in med))
    return 0


if __name__ == "__main__":
    sys.exit(main())
