"""The one place that talks to llama.cpp's C API (through llama-cpp-python's ctypes layer).

Everything above this module sees numpy arrays and plain Python values. Keeping the
ctypes details here lets the evaluator, the tokenizer and the quantizer share one
loader, one log silencer and one description of the build.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from bpcbench.errors import BpcError, called_from_c

# llama.cpp's CPU backend in this build uses OpenMP (libgomp), whose threads spin at each of
# the graph's barriers before they sleep. Spinning is a little faster on an idle machine and far
# slower beside another CPU-bound process (benchmarks/wait_policy.py; figures in
# docs/measurements.md). A benchmark on a shared machine needs the second more than the first,
# so passive unless the user set OMP_WAIT_POLICY (active brings the idle speed back). The wait
# policy changes no result, only how threads wait. libgomp reads the variable once, when it
# loads: before llama_cpp is imported.
OMP_WAIT_POLICY = os.environ.setdefault("OMP_WAIT_POLICY", "passive")

try:
    import llama_cpp as ll
except ImportError:  # pragma: no cover - exercised only on broken installs
    ll = None


def require():
    if ll is None:
        raise BpcError("llama-cpp-python is not installed: pip install bpcbench (which installs the version it "
                       "pins, compiling llama.cpp for minutes; from a checkout: make install)")
    return ll


_LOG_LINES: list[str] = []


@lru_cache(maxsize=1)
def _init_backend() -> None:
    """Silence llama.cpp's stderr chatter (kept for error messages) and init once per process."""
    lib = require()

    @lib.llama_log_callback
    @called_from_c
    def _log(level, text, user_data):
        try:
            _LOG_LINES.append(text.decode("utf-8", "replace"))
            del _LOG_LINES[:-50]
        except Exception:
            pass

    _init_backend.callback = _log  # keep the ctypes callback alive
    lib.llama_log_set(_log, ctypes.c_void_p(0))
    lib.llama_backend_init()


class capture_log:
    """Route llama.cpp's log into `text` for the duration of a block (the quantizer reports
    per-tensor fallbacks only there), then restore the silencer and keep the tail for errors."""

    def __enter__(self):
        lib = require()
        _init_backend()
        self.parts: list[str] = []

        @lib.llama_log_callback
        @called_from_c
        def _cb(level, text, user_data):
            try:
                self.parts.append(text.decode("utf-8", "replace"))
            except Exception:
                pass

        self._cb = _cb  # keep the ctypes callback alive
        lib.llama_log_set(_cb, ctypes.c_void_p(0))
        return self

    def __exit__(self, *exc):
        ll.llama_log_set(_init_backend.callback, ctypes.c_void_p(0))
        _LOG_LINES.extend(self.text.splitlines()[-50:])
        del _LOG_LINES[:-50]

    @property
    def text(self) -> str:
        return "".join(self.parts)


def last_log_line() -> str:
    lines = [ln.strip() for ln in _LOG_LINES if ln.strip()]
    return lines[-1] if lines else ""


@dataclass(frozen=True)
class BuildInfo:
    """What must match between encoder and decoder for bit-identical logits."""

    llama_cpp_python: str
    system_info: str
    backend: str

    def as_dict(self) -> dict:
        """Compact form for containers: the system-info string (CPU features, backends) as a hash."""
        return {
            "llama_cpp_python": self.llama_cpp_python,
            "system_sha": hashlib.sha256(self.system_info.encode()).hexdigest()[:16],
            "backend": self.backend,
        }


def build_info(n_gpu_layers: int = 0) -> BuildInfo:
    lib = require()
    _init_backend()
    system = lib.llama_print_system_info().decode("utf-8", "replace").strip()
    gpu = bool(lib.llama_supports_gpu_offload()) and n_gpu_layers != 0
    return BuildInfo(lib.__version__, system, "gpu" if gpu else "cpu")


def usable_cores() -> int:
    """CPUs this process may run on (affinity, as taskset or a container sets it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def default_threads() -> int:
    """The codec's default: the usable cores, at most 8. It does not follow the machine's load,
    since a decoder must run the encoder's thread count and a file made on an idle machine
    should decode with the same default on a busy one."""
    return min(8, usable_cores())


def machine_load(path: str = "/proc/loadavg") -> dict:
    """Load averages and runnable/total threads, as pyperf records them (Linux; None elsewhere)."""
    out = {"load_1m": None, "load_5m": None, "load_15m": None, "runnable": None, "threads": None}
    try:
        out["load_1m"], out["load_5m"], out["load_15m"] = os.getloadavg()
    except (AttributeError, OSError):
        return out
    try:
        with open(path) as fh:
            runnable, total = fh.read().split()[3].split("/")
        out["runnable"], out["threads"] = int(runnable), int(total)
    except (OSError, IndexError, ValueError):
        pass
    return out


def _cpu_times(path: str) -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from /proc/stat's first line."""
    with open(path) as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields[:8]) - idle, sum(fields[:8])


@lru_cache(maxsize=1)
def busy_cores(interval: float = 0.5, path: str = "/proc/stat") -> float | None:
    """Cores other processes keep busy now: CPU time used over `interval` s (this process sleeps
    meanwhile) × the machine's CPUs. The 1-minute load average lags: right after a run it still
    counts that run, so an idle machine looks busy. None where /proc/stat is missing."""
    import time

    try:
        busy0, total0 = _cpu_times(path)
        time.sleep(interval)
        busy1, total1 = _cpu_times(path)
    except (OSError, ValueError, IndexError):
        return None
    if total1 <= total0:
        return None
    return (busy1 - busy0) / (total1 - total0) * (os.cpu_count() or 1)


def _others_load() -> float:
    busy = busy_cores()
    return busy if busy is not None else machine_load()["load_1m"] or 0.0


@lru_cache(maxsize=1)
def measurement_threads() -> int:
    """Threads for a timed run (bench cells that set none): the usable cores other processes
    leave free now (busy_cores; the load average where that cannot be read), at least 1, at most
    8: llama.cpp's threads on a core another process keeps busy run many times slower. Chosen
    once per process, so every cell of a run agrees."""
    return max(1, min(8, usable_cores() - int(round(_others_load()))))


def load_warning() -> str | None:
    """One line when the machine is already busy: timings taken now will be slow and noisy."""
    load = _others_load()
    if load >= usable_cores() - 0.5:
        return (f"other processes keep {load:.1f} of {usable_cores()} usable core(s) busy: timings will be slow "
                f"and noisy; running llama.cpp on {measurement_threads()} thread(s)")
    return None


class Closeable:
    """Native llama.cpp objects must be freed in order; use close(), a with-block, or GC."""

    def close(self) -> None:  # pragma: no cover - every subclass overrides it
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


class Model(Closeable):
    """A loaded GGUF model and its vocabulary."""

    def __init__(self, path: str | os.PathLike, n_gpu_layers: int = 0):
        lib = require()
        _init_backend()
        path = Path(path)
        params = lib.llama_model_default_params()
        params.n_gpu_layers = int(n_gpu_layers)
        self.ptr = lib.llama_model_load_from_file(str(path).encode(), params)
        if not self.ptr:
            detail = last_log_line()
            raise BpcError(
                f"cannot load model {path}: file is truncated, corrupt or of an unsupported "
                f"architecture{' (' + detail + ')' if detail else ''}"
            )
        self.path = path
        self.n_gpu_layers = int(n_gpu_layers)
        self.vocab = lib.llama_model_get_vocab(self.ptr)
        self.n_vocab = int(lib.llama_vocab_n_tokens(self.vocab))

    def close(self) -> None:
        if getattr(self, "ptr", None):
            ptr, self.ptr = self.ptr, None  # first: a signal after the free must not leave it to be freed twice
            ll.llama_model_free(ptr)

    @property
    def n_ctx_train(self) -> int:
        """The context length the model was trained with (GGUF metadata)."""
        return int(ll.llama_model_n_ctx_train(self.ptr))

    # -- vocabulary -------------------------------------------------------------------
    @property
    def start_token(self) -> int:
        """The token each chunk starts from: BOS where the vocabulary has one, else EOS, else 0."""
        for tok in (ll.llama_vocab_bos(self.vocab), ll.llama_vocab_eos(self.vocab)):
            if 0 <= tok < self.n_vocab:
                return int(tok)
        return 0

    @property
    def add_bos(self) -> bool:
        """Whether llama.cpp's tokenizer puts BOS before a text (GGUF tokenizer.ggml.add_bos_token)."""
        return bool(ll.llama_vocab_get_add_bos(self.vocab))

    def tokenize(self, data: bytes) -> np.ndarray:
        """Raw llama.cpp tokenization: no BOS added, special-token text treated as plain text."""
        if not data:
            return np.zeros(0, dtype=np.int32)
        n_max = len(data) + 16
        buf = (ll.llama_token * n_max)()
        n = ll.llama_tokenize(self.vocab, data, len(data), buf, n_max, False, False)
        if n < 0:  # buffer too small: -n is the size needed
            n_max = -n
            buf = (ll.llama_token * n_max)()
            n = ll.llama_tokenize(self.vocab, data, len(data), buf, n_max, False, False)
        return np.frombuffer(buf, dtype=np.int32, count=n).copy()

    @property
    def pieces(self) -> list[bytes]:
        """Byte string of every token id, as the detokenizer emits it (control tokens -> b'')."""
        cached = getattr(self, "_pieces", None)
        if cached is not None:
            return cached
        buf = ctypes.create_string_buffer(256)
        out = []
        for tok in range(self.n_vocab):
            n = ll.llama_token_to_piece(self.vocab, tok, buf, 256, 0, False)
            if n < 0:
                big = ctypes.create_string_buffer(-n)
                n = ll.llama_token_to_piece(self.vocab, tok, big, -n, 0, False)
                out.append(big.raw[:n])
            else:
                out.append(buf.raw[:n])
        self._pieces = out
        return out


class Context(Closeable):
    """A llama.cpp context configured for reproducible multi-sequence evaluation.

    Flash attention and the unified KV cache are off, n_seq_max equals the batch
    width: under those settings a sequence's logits do not depend on what else
    shares the batch, as long as the batch shape is the same.
    """

    def __init__(self, model: Model, *, n_seq: int, n_ctx_per_seq: int, n_batch: int, threads: int,
                 flash_attn: bool = False):
        lib = require()
        params = lib.llama_context_default_params()
        # llama.cpp rounds the per-sequence context up to a multiple of 256
        per_seq = ((max(1, n_ctx_per_seq) + 255) // 256) * 256
        params.n_ctx = per_seq * n_seq
        params.n_batch = max(n_batch, n_seq)
        params.n_ubatch = max(n_batch, n_seq)
        params.n_seq_max = n_seq
        params.n_threads = threads
        params.n_threads_batch = threads
        params.flash_attn_type = lib.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash_attn else lib.LLAMA_FLASH_ATTN_TYPE_DISABLED
        params.kv_unified = False
        params.no_perf = True
        self.ptr = lib.llama_init_from_model(model.ptr, params)
        if not self.ptr:
            raise BpcError(f"cannot create a llama.cpp context ({last_log_line() or 'out of memory?'})")
        self.model = model
        self.n_seq = n_seq
        self.n_batch = params.n_batch
        self.memory = lib.llama_get_memory(self.ptr)

    def clear(self) -> None:
        ll.llama_memory_clear(self.memory, True)

    @property
    def can_shift(self) -> bool:
        """Whether this model's KV cache can move positions (RoPE re-rotation by llama.cpp)."""
        return bool(ll.llama_memory_can_shift(self.memory))

    def forget(self, seq: int, p0: int, p1: int) -> None:
        """Drop positions [p0, p1) of sequence `seq` from the KV cache (p1 < 0: to the end)."""
        if not ll.llama_memory_seq_rm(self.memory, seq, p0, p1):
            raise BpcError(f"llama.cpp cannot remove positions {p0}..{p1} of sequence {seq}")

    def shift(self, seq: int, p0: int, delta: int) -> None:
        """Move positions >= p0 of sequence `seq` by `delta` (llama.cpp re-rotates the keys)."""
        ll.llama_memory_seq_add(self.memory, seq, p0, -1, delta)

    def close(self) -> None:
        if getattr(self, "ptr", None):
            ptr, self.ptr = self.ptr, None  # first: a signal after the free must not leave it to be freed twice
            ll.llama_free(ptr)


class Batch(Closeable):
    """A llama_batch whose token/pos/logits fields are numpy views, so a step costs no Python loop."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.raw = ll.llama_batch_init(capacity, 0, 1)
        self.token = np.ctypeslib.as_array(self.raw.token, shape=(capacity,))
        self.pos = np.ctypeslib.as_array(self.raw.pos, shape=(capacity,))
        self.n_seq_id = np.ctypeslib.as_array(self.raw.n_seq_id, shape=(capacity,))
        self.logits = np.ctypeslib.as_array(self.raw.logits, shape=(capacity,))
        self.n_seq_id[:] = 1
        self._seq_rows = [np.ctypeslib.as_array(self.raw.seq_id[i], shape=(1,)) for i in range(capacity)]

    def set_seq_ids(self, seq_ids) -> None:
        for row, s in zip(self._seq_rows, seq_ids):
            row[0] = s

    def decode(self, ctx: Context, n_tokens: int) -> None:
        self.raw.n_tokens = n_tokens
        rc = ll.llama_decode(ctx.ptr, self.raw)
        if rc != 0:
            raise BpcError(f"llama_decode failed with code {rc} ({last_log_line()})")

    def close(self) -> None:
        if getattr(self, "raw", None) is not None:
            raw, self.raw = self.raw, None
            ll.llama_batch_free(raw)


def logits_rows(ctx: Context, n_rows: int, n_vocab: int) -> np.ndarray:
    """The logits of the last decode, one row per output token, as a float32 view (copy before reuse)."""
    ptr = ll.llama_get_logits(ctx.ptr)
    return np.ctypeslib.as_array(ptr, shape=(n_rows, n_vocab))
