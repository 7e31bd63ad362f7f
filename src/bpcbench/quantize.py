"""One GGUF -> another quantization level, with llama.cpp's own quantizer, cached and inspected.

`quantize(src, "Q4_K_M")` runs llama.cpp's quantizer (`bpcbench.llama.quantizer`, the same
code `llama-quantize` runs) and caches the result under
<cache root>/quantized/<source sha256[:16]>/<level>-<llama-cpp-python version>.gguf
(written to a temporary name and renamed, so a cache entry is whole or absent).

What came out is then read back with the `gguf` package instead of trusting the level's
name: llama.cpp silently substitutes another type for a tensor whose rows do not fit the
requested block size (K-quants need rows that are multiples of 256; SmolLM2's width 576
is not, so "Q2_K" leaves 180 of its 272 tensors at Q4_0). The report therefore gives the
real bits per weight (Σ tensor bytes·8 / Σ elements) and counts, per tensor, what was asked
for and what was stored. The per-tensor fallbacks come from the quantizer's own log and are
kept in a JSON file beside the cached GGUF.

>>> parse_levels("q4_k_m, Q8_0,Q4_K_M")
['Q4_K_M', 'Q8_0']
>>> log = ("llama_tensor_get_type: warning: blk.0.ffn_down.weight - cols 1536 x 576 are not divisible "
...        "by 256 (required for type q6_K) -> falling back to q8_0")
>>> parse_quantize_log(log)["fallbacks"], fallbacks_text(parse_quantize_log(log)["fallbacks"])
([['blk.0.ffn_down.weight', 'Q6_K', 'Q8_0']], '1× Q6_K→Q8_0')
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from gguf import GGUFReader

from bpcbench import defaults, gguf_header, models
from bpcbench.atomic import atomic_path, write_text
from bpcbench.errors import BpcError
from bpcbench.llama import quantizer

# The ladder `make ladder` walks, from nearly lossless to the smallest K-quant.
DEFAULT_LEVELS = ("Q8_0", "Q6_K", "Q5_K_M", "Q5_K_S", "Q4_K_M", "Q4_K_S", "Q4_0", "Q3_K_M", "Q3_K_S", "Q2_K")

# The ggml type a level is named after (for a mix like Q4_K_M, the type most tensors get).
def parse_levels(spec) -> list[str]:
    """'Q8_0,q4_k_m' or a list -> validated upper-case names, in order, without repeats."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    names = [str(s).strip().upper() for s in items if str(s).strip()]
    if not names:
        raise BpcError("no quantization levels given")
    known = quantizer.file_types()
    for name in names:
        if name not in known:
            raise BpcError(f"unknown quantization level {name!r}; valid levels: {', '.join(sorted(known))}")
    return list(dict.fromkeys(names))


def fallbacks_text(fallbacks) -> str:
    """[[tensor, asked, given], ...] -> '180× Q6_K→Q8_0, ...', most frequent first."""
    counts: dict[tuple[str, str], int] = {}
    for _, asked, given in fallbacks:
        counts[(asked, given)] = counts.get((asked, given), 0) + 1
    return ", ".join(f"{n}× {a}→{g}" for (a, g), n in sorted(counts.items(), key=lambda kv: -kv[1]))


@dataclass
class QuantReport:
    """What one quantization produced, read back from the file."""

    level: str
    path: str
    source_path: str
    source_sha256: str
    file_bytes: int
    n_elements: int
    bits_per_weight: float
    tensors_total: int
    tensor_types: dict = field(default_factory=dict)  # ggml type name -> tensors
    tensor_data_sha256: str = ""  # of the tensor data alone (headers differ between levels)
    # From llama.cpp's log (None where unknown, e.g. a file not made here):
    tensors_converted: int | None = None  # tensors the quantizer wrote in a new type
    tensors_fallback: int | None = None  # of those, how many got another type than the mix asked for
    fallbacks: list = field(default_factory=list)  # [tensor, type asked for, type given]
    imatrix: str | None = None  # sha256 of the importance matrix file, if one was used
    llama_cpp_python: str = ""
    seconds: float = 0.0  # time spent quantizing (0 when served from the cache)
    cached: bool = False

    @property
    def file_mb(self) -> float:
        return self.file_bytes / 1e6

    @property
    def tensors_requested_type(self) -> int | None:
        """Tensors stored in the type llama.cpp's mix for this level chose (converted, no fallback)."""
        if self.tensors_converted is None or self.tensors_fallback is None:
            return None
        return self.tensors_converted - self.tensors_fallback

    def types_text(self) -> str:
        return " ".join(f"{k}:{v}" for k, v in sorted(self.tensor_types.items(), key=lambda kv: -kv[1]))

    def fallbacks_text(self) -> str:
        return fallbacks_text(self.fallbacks)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["file_mb"] = self.file_mb
        d["tensors_requested_type"] = self.tensors_requested_type
        return d


def inspect_gguf(path: str | os.PathLike) -> tuple[int, int, dict[str, int], int, str]:
    """(tensor bytes, elements, {type: tensors}, tensors, sha256 of the tensor data) of a GGUF.

    The data hash ignores the metadata, so two levels that store the same tensors (on
    SmolLM2, Q3_K_S and Q2_K) are recognisable although their headers name different types.
    """
    path = Path(path)
    models.check_gguf_file(path)
    try:
        header = gguf_header.read_header(path)
        n_bytes = sum(t.n_bytes for t in header.tensors)
        n_elem = sum(t.n_elements for t in header.tensors)
        types: dict[str, int] = {}
        for t in header.tensors:
            types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + 1
        n = len(header.tensors)
        data_sha = _sha256(path, header.data_offset)
    except Exception as e:  # a malformed header (ValueError) or an unreadable file
        raise BpcError(f"cannot read {path} as GGUF: {type(e).__name__}: {e}") from None
    if n == 0 or n_elem == 0:
        raise BpcError(f"{path} holds no tensors")
    return n_bytes, n_elem, types, n, data_sha


def report_for_file(path: str | os.PathLike, level: str | None = None) -> QuantReport:
    """A report for an existing GGUF (no quantizer log, so no fallback counts)."""
    info = models.describe(path)
    n_bytes, n_elem, types, n, data_sha = inspect_gguf(info.path)
    return QuantReport(
        level=level or info.quant_type, path=info.path, source_path=info.path, source_sha256=info.sha256,
        file_bytes=info.file_bytes, n_elements=n_elem, bits_per_weight=n_bytes * 8 / n_elem,
        tensors_total=n, tensor_types=types, tensor_data_sha256=data_sha, llama_cpp_python=quantizer.version(),
    )


# -- the quantizer's log ------------------------------------------------------------------

_FALLBACK = re.compile(r"warning:\s+(\S+)\s+-\s+.*?required for type\s+(\S+)\)\s*->\s*falling back to\s+(\S+)")
_TENSOR = re.compile(r"\[\s*\d+/\s*(\d+)\]\s+(\S+)\s+-\s+\[[^\]]*\],\s+type =\s+(\S+),\s+(converting to\s+(\S+)|size)")
_SUMMARY = re.compile(r"(\d+) of (\d+) tensor\(s\) required fallback quantization")


def parse_quantize_log(text: str) -> dict:
    """Converted tensors and fallbacks as llama.cpp's quantizer logged them."""
    fallbacks = [[m.group(1), m.group(2).upper(), m.group(3).upper()] for m in _FALLBACK.finditer(text)]
    converted = kept = 0
    for m in _TENSOR.finditer(text):
        if m.group(5):
            converted += 1
        else:
            kept += 1
    summary = _SUMMARY.search(text)
    n_fallback = int(summary.group(1)) if summary else len(fallbacks)
    return {
        "tensors_converted": converted if converted + kept else None,
        "tensors_fallback": n_fallback if converted + kept else None,
        "fallbacks": fallbacks,
    }


# -- importance matrix --------------------------------------------------------------------


def load_imatrix(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Tensor name -> importance values, as llama-quantize prepares them.

    Reads the GGUF imatrix format (`<tensor>.in_sum2` and `<tensor>.counts`, values =
    sums / count per expert, 1 where a count is 0) and the legacy binary format (values
    stored multiplied by ncall, so divided by it).
    """
    path = Path(path)
    try:
        head = path.read_bytes()[:4]
    except OSError as e:
        raise BpcError(f"cannot read importance matrix {path}: {e.strerror}") from None
    try:
        out = _imatrix_gguf(path) if head == models.GGUF_MAGIC else _imatrix_legacy(path.read_bytes())
    except BpcError:
        raise
    except Exception as e:
        raise BpcError(f"importance matrix {path} is corrupt: {type(e).__name__}: {e}") from None
    if not out:
        raise BpcError(f"importance matrix {path} holds no entries")
    for name, v in out.items():
        if not np.all(np.isfinite(v)):
            raise BpcError(f"importance matrix {path}: entry {name} has NaN or infinite values")
    return out


def _imatrix_gguf(path: Path) -> dict[str, np.ndarray]:
    reader = GGUFReader(str(path), "r")
    tensors = {t.name: t for t in reader.tensors}
    out = {}
    for name, t in tensors.items():
        if not name.endswith(".in_sum2"):
            continue
        base = name[: -len(".in_sum2")]
        counts_t = tensors.get(base + ".counts")
        if counts_t is None:
            raise BpcError(f"importance matrix {path}: {base} has sums but no counts")
        sums = np.asarray(t.data, dtype=np.float32).reshape(-1)
        counts = np.asarray(counts_t.data, dtype=np.float32).reshape(-1)
        ne0 = sums.size // counts.size
        per = sums.reshape(counts.size, ne0)
        values = np.where(counts[:, None] > 0, per / np.where(counts > 0, counts, 1)[:, None], 1.0)
        out[base] = np.ascontiguousarray(values.reshape(-1), dtype=np.float32)
    return out


def _imatrix_legacy(data: bytes) -> dict[str, np.ndarray]:
    pos = 0

    def take(fmt):
        nonlocal pos
        size = struct.calcsize(fmt)
        if pos + size > len(data):
            raise BpcError("importance matrix is truncated")
        vals = struct.unpack_from(fmt, data, pos)
        pos += size
        return vals

    (n_entries,) = take("<i")
    if n_entries <= 0 or n_entries > 1_000_000:
        raise BpcError(f"importance matrix: implausible entry count {n_entries} (not an imatrix file?)")
    out = {}
    for _ in range(n_entries):
        (name_len,) = take("<i")
        if not 0 < name_len < 4096:
            raise BpcError("importance matrix: bad tensor name length (not an imatrix file?)")
        name = data[pos : pos + name_len].decode("utf-8")
        pos += name_len
        ncall, nval = take("<ii")
        if nval <= 0 or pos + 4 * nval > len(data):
            raise BpcError("importance matrix is truncated")
        values = np.frombuffer(data, dtype="<f4", count=nval, offset=pos).astype(np.float32)
        pos += 4 * nval
        out[name] = values / ncall if ncall > 0 else values.copy()
    return out


# -- quantizing ---------------------------------------------------------------------------


def cache_path(source_sha256: str, level: str, imatrix_sha256: str | None = None, cache_dir=None) -> Path:
    root = Path(cache_dir) if cache_dir is not None else defaults.cache_root()
    tag = f"{level}-imatrix-{imatrix_sha256[:12]}" if imatrix_sha256 else level
    return root / "quantized" / source_sha256[:16] / f"{tag}-{quantizer.version()}.gguf"


def quantize(src: str | os.PathLike, level: str, *, imatrix: str | os.PathLike | None = None,
             allow_requantize: bool = False, nthread: int | None = None, cache_dir=None) -> QuantReport:
    """Quantize (or re-expand) a GGUF to `level`, or return the cached result.

    A level the model cannot take raises BpcError with llama.cpp's reason; nothing is
    substituted. allow_requantize is needed when the source is itself quantized (the
    re-expansion of a Q4_1 file to F16 uses it).
    """
    (level,) = parse_levels([level])
    info = models.describe(src)  # resolves registry names; one-line errors for bad files
    imatrix_sha = models.sha256_file(imatrix) if imatrix else None
    dest = cache_path(info.sha256, level, imatrix_sha, cache_dir)
    meta_path = dest.with_suffix(".json")
    cached = _load_cached(dest, meta_path)
    if cached is not None:
        return cached
    t0 = time.perf_counter()
    with atomic_path(dest) as tmp:
        try:
            log = quantizer.quantize_file(info.path, tmp, level, imatrix=load_imatrix(imatrix) if imatrix else None,
                                          allow_requantize=allow_requantize, nthread=nthread)
        except BpcError as e:
            raise BpcError(f"llama.cpp cannot quantize {Path(info.path).name} to {level}: {e}") from None
        seconds = time.perf_counter() - t0
        n_bytes, n_elem, types, n, data_sha = inspect_gguf(tmp)
        report = QuantReport(
            level=level, path=str(dest), source_path=str(info.path), source_sha256=info.sha256,
            file_bytes=os.path.getsize(tmp), n_elements=n_elem, bits_per_weight=n_bytes * 8 / n_elem,
            tensors_total=n, tensor_types=types, tensor_data_sha256=data_sha, imatrix=imatrix_sha,
            llama_cpp_python=quantizer.version(), seconds=seconds, **parse_quantize_log(log),
        )
        write_text(meta_path, json.dumps(report.as_dict(), indent=1))
    return report


def reexpand(src: str | os.PathLike, *, nthread: int | None = None, cache_dir=None) -> QuantReport:
    """A quantized GGUF widened to F16 (allow_requantize), so a ladder can start from it.

    The values stay those of the source quantization: the result is a Q4_1-precision model
    stored in F16, not the original F16 weights.
    """
    return quantize(src, "F16", allow_requantize=True, nthread=nthread, cache_dir=cache_dir)


def _sha256(path, offset: int = 0) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        fh.seek(offset)
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _load_cached(dest: Path, meta_path: Path) -> QuantReport | None:
    """The cached report, if the GGUF and its JSON are both there and agree on the size."""
    if not dest.exists() or not meta_path.exists():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        if int(meta["file_bytes"]) != dest.stat().st_size or not meta.get("tensor_data_sha256"):
            return None
        fields = {k: meta[k] for k in QuantReport.__dataclass_fields__ if k in meta}
        fields.update(path=str(dest), cached=True, seconds=0.0)
        return QuantReport(**fields)
    except (OSError, ValueError, KeyError, TypeError):
        return None
