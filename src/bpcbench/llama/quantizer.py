"""llama.cpp's own quantizer: `llama_model_quantize`, the code `llama-quantize` runs.

Only the C call lives here (parameters, importance matrix as ctypes arrays, the log it
writes); choosing levels, caching and reading the result back are the ladder's.
"""

from __future__ import annotations

import ctypes
import os

import numpy as np

from bpcbench.errors import BpcError
from bpcbench.llama.binding import capture_log, default_threads, require


def version() -> str:
    """llama-cpp-python's version: quantized files are cached per version."""
    return require().__version__


def file_types() -> dict[str, int]:
    """Level name -> llama_ftype, for every type this llama-cpp-python build can write."""
    ll = require()
    out = {"F32": int(ll.LLAMA_FTYPE_ALL_F32)}
    for name in dir(ll):
        if name.startswith("LLAMA_FTYPE_MOSTLY_"):
            out[name[len("LLAMA_FTYPE_MOSTLY_"):]] = int(getattr(ll, name))
    return out


def quantize_file(src: str | os.PathLike, dest: str | os.PathLike, level: str, *,
                  imatrix: dict[str, np.ndarray] | None = None, allow_requantize: bool = False,
                  nthread: int | None = None) -> str:
    """Write `src` quantized to `level` at `dest`; return the quantizer's log.

    The log is where llama.cpp names the tensors it stored in another type than asked
    for. A failure raises BpcError with the quantizer's own reason.
    """
    ll = require()
    params = ll.llama_model_quantize_default_params()
    params.ftype = file_types()[level]
    params.nthread = int(nthread or default_threads())
    params.allow_requantize = bool(allow_requantize)
    keep_alive = None
    if imatrix:
        keep_alive = _imatrix_param(imatrix)
        params.imatrix = ctypes.cast(keep_alive[0], ctypes.POINTER(ll.llama_model_imatrix_data))
    with capture_log() as log:
        rc = ll.llama_model_quantize(os.fsencode(src), os.fsencode(dest), ctypes.byref(params))
    del keep_alive
    if rc != 0:
        raise BpcError(_error_line(log.text))
    return log.text


def _error_line(text: str) -> str:
    for line in reversed(text.splitlines()):
        if "failed to quantize" in line or "error" in line.lower():
            return line.split("failed to quantize:")[-1].strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else "no message from llama.cpp"


def _imatrix_param(data: dict[str, np.ndarray]):
    """The NULL-terminated llama_model_imatrix_data array, plus the buffers it points into."""
    ll = require()
    names = [k.encode() for k in data]
    arrays = [np.ascontiguousarray(v, dtype=np.float32) for v in data.values()]
    entries = (ll.llama_model_imatrix_data * (len(arrays) + 1))()
    for i, (name, arr) in enumerate(zip(names, arrays)):
        entries[i].name = name
        entries[i].data = arr.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        entries[i].size = arr.size
    entries[len(arrays)].name = None  # the terminator llama.cpp looks for
    return entries, names, arrays
