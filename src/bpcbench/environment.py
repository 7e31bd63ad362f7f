"""env.json: the machine and software a run measured on, so any number can be traced back.

Like pyperf's metadata: CPU model and flags, cores, memory, GPU (if nvidia-smi answers),
Python and library versions, llama.cpp's system info, and the git commit of the checkout.
Every probe is best effort: a missing /proc or git gives an empty field, never an error.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import socket
import subprocess
import sys
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from bpcbench import __version__
from bpcbench.atomic import write_text
from bpcbench.baselines import BASELINES
from bpcbench.llama import binding

# git walks up from here: the checkout of an editable install; nothing for a wheel in site-packages
SOURCE_DIR = Path(__file__).resolve().parent
LIBRARIES = ("numpy", "pandas", "matplotlib", "llama_cpp_python", "constriction", "gguf", "zstandard",
             "brotli", "tqdm")
# flags that decide llama.cpp's speed (and, with a different build, its logits)
INTERESTING_FLAGS = ("sse3", "ssse3", "sse4_1", "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f",
                     "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile",
                     "neon", "asimd", "sve")


def _run(argv: list[str], timeout: float = 10) -> str | None:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def cpu_info(path: str = "/proc/cpuinfo") -> dict:
    model, flags = "", []
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        text = ""
    physical = set()
    phys_id = None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key in ("model name", "Hardware", "cpu model") and value and not model:
            model = value
        elif key in ("flags", "Features") and not flags:
            flags = value.split()
        elif key == "physical id":
            phys_id = value
        elif key == "core id":
            physical.add((phys_id, value))
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    return {
        "model": model or platform.processor() or platform.machine(),
        "logical_cores": os.cpu_count(),
        "physical_cores": len(physical) or None,
        "usable_cores": affinity,
        "simd_flags": [f for f in INTERESTING_FLAGS if f in flags],
        "flags": flags,
    }


def cpu_frequency(base: str = "/sys/devices/system/cpu/cpu0/cpufreq") -> dict:
    """CPU 0's current frequency (kHz) and governor, where the kernel exposes them (pyperf records both)."""
    out = {}
    for key, name in (("scaling_cur_freq", "current_khz"), ("scaling_governor", "governor")):
        try:
            text = Path(base, key).read_text().strip()
            out[name] = int(text) if text.isdigit() else text
        except OSError:
            pass
    return out


def memory_bytes(path: str = "/proc/meminfo") -> int | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def gpus() -> list[dict]:
    out = _run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader,nounits"])
    if not out:
        return []
    rows = []
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3:
            rows.append({"name": parts[0], "memory_mib": parts[1], "driver": parts[2]})
    return rows


def git_info(repo: Path = SOURCE_DIR) -> dict:
    commit = _run(["git", "-C", str(repo), "rev-parse", "HEAD"])
    if not commit:
        return {"commit": None, "dirty": None}
    status = _run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"])
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def library_versions() -> dict:
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def llama_system_info(n_gpu_layers: int = 0) -> dict:
    try:
        info = binding.build_info(n_gpu_layers)
    except Exception as exc:  # a broken llama.cpp install must not stop baselines
        return {"error": f"{type(exc).__name__}: {exc}"}
    return {"llama_cpp_python": info.llama_cpp_python, "system_info": info.system_info, "backend": info.backend,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}  # binding.OMP_WAIT_POLICY unless the user set one


def collect(n_gpu_layers: int = 0, argv: list[str] | None = None) -> dict:
    return {
        "timestamp_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "cpu": cpu_info(),
        # at the start: a slow run explained afterwards
        "load": {**binding.machine_load(), "busy_cores": binding.busy_cores()},
        "cpu_frequency": cpu_frequency(),
        "memory_bytes": memory_bytes(),
        "gpus": gpus(),
        "python": {"version": platform.python_version(), "implementation": platform.python_implementation(),
                   "executable": sys.executable},
        "bpcbench": __version__,
        "libraries": library_versions(),
        "baselines": {name: b.library_version for name, b in BASELINES.items()},
        "llama_cpp": llama_system_info(n_gpu_layers),
        "git": git_info(),
        "argv": list(sys.argv if argv is None else argv),
        "env": {k: os.environ[k] for k in ("BPCBENCH_CACHE", "BPCBENCH_CORPORA", "OMP_NUM_THREADS",
                                              "CUDA_VISIBLE_DEVICES") if k in os.environ},
    }


def write(path: str | os.PathLike, env: dict) -> None:
    write_text(path, json.dumps(env, indent=1, sort_keys=False) + "\n")


class PeakMemory:
    """Peak RSS of this process during a block: the one memory probe every report uses.

    Linux: VmHWM, reset at the start by writing 5 to /proc/self/clear_refs, so each block
    gets its own peak. Elsewhere (or where the reset is refused) the lifetime maximum
    (ru_maxrss), which `reset` False says.
    """

    def __enter__(self):
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            self.reset = True
        except OSError:
            self.reset = False
        self.mb = None
        return self

    def __exit__(self, *exc):
        self.mb = self.read()

    @staticmethod
    def read() -> float | None:
        try:
            with open("/proc/self/status") as fh:
                for line in fh:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
        except (OSError, ValueError):
            pass
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
