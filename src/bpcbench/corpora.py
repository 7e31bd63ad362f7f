"""Named, checksummed corpora: every reported number names the exact bytes it measured.

The manifest (corpora/manifest.toml) pins each file's size and sha256, so a
silently edited or re-encoded corpus fails loudly instead of skewing a table. `add_entry`
appends an entry (`bpcbench corpora add`), checked by the same parser that reads it.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from bpcbench.atomic import atomic_open, write_bytes
from bpcbench.errors import BpcError
from bpcbench.schema import Key, check_table

KINDS = ("english", "code", "non-english", "structured", "binary", "fresh", "memorised")
FILE_KIND = "file"  # a path given on the command line, not a manifest entry
ALL_GROUP = "all"
ENV_VAR = "BPCBENCH_CORPORA"
DEFAULT_MANIFEST = Path(__file__).resolve().parent / "data" / "corpora" / "manifest.toml"

_TEXT = "a string"
ENTRY_KEYS = {  # one [[corpus]] entry of a manifest; _parse_entry checks what the types cannot say
    "name": Key(str, _TEXT, "Letters, digits, `.`, `_`, `-`; unique; not `all`.", required=True),
    "path": Key(str, _TEXT, "The file, relative to the manifest, without `..`.", required=True),
    "kind": Key(str, _TEXT, "What the bytes are (KINDS).", required=True),
    "bytes": Key(int, "a non-negative integer", "The file's size.", required=True),
    "sha256": Key(str, _TEXT, "64 lower-case hex digits.", required=True),
    "source": Key(str, _TEXT, "Where the file comes from.", required=True),
    "licence": Key(str, _TEXT, "Why it may be redistributed.", required=True),
    "note": Key(str, _TEXT, "Free text."),
    "groups": Key(list, "a list of non-empty strings", "Group names (`all` is implicit)."),
}
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Corpus:
    name: str
    path: Path
    kind: str
    bytes: int
    sha256: str
    source: str
    licence: str
    groups: tuple[str, ...] = ()
    note: str = ""

    def read_bytes(self) -> bytes:
        """Read and verify: a result is only worth reporting for the bytes the manifest names."""
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            raise BpcError(
                f"corpus {self.name}: cannot read {self.path}: {exc.strerror or exc}"
            ) from None
        actual_sha256 = hashlib.sha256(data).hexdigest()
        if len(data) != self.bytes or actual_sha256 != self.sha256:
            raise BpcError(
                f"corpus {self.name}: checksum mismatch for {self.path}: expected "
                f"{self.bytes} bytes sha256 {self.sha256}, found {len(data)} bytes "
                f"sha256 {actual_sha256}"
            )
        return data


def count_characters(data: bytes) -> int | None:
    """Code points, for bits per character; None where 'character' has no meaning (not UTF-8)."""
    try:
        return len(bytes(data).decode("utf-8"))
    except UnicodeDecodeError:
        return None


def manifest_path(path: str | os.PathLike | None = None) -> Path:
    """The argument wins, then $BPCBENCH_CORPORA, then the repository's own manifest."""
    if path is not None:
        return Path(path)
    env = os.environ.get(ENV_VAR)
    return Path(env) if env else DEFAULT_MANIFEST


def load_manifest(path: str | os.PathLike | None = None) -> dict[str, Corpus]:
    """Parse and validate strictly: a typo in a field name would otherwise drop a checksum."""
    path = manifest_path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise BpcError(f"{path}: cannot read corpus manifest: {exc.strerror or exc}") from None
    return _parse_manifest(path, raw)


def _parse_manifest(path: Path, raw: bytes) -> dict[str, Corpus]:
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise BpcError(f"{path}: invalid TOML: {exc}") from None

    extra = sorted(set(doc) - {"corpus"})
    if extra:
        raise BpcError(
            f"{path}: unknown top-level key(s) {', '.join(extra)}; expected [[corpus]] tables"
        )
    entries = doc.get("corpus")
    if not isinstance(entries, list) or not entries:
        raise BpcError(f"{path}: no [[corpus]] entries")

    base = path.resolve().parent
    corpora: dict[str, Corpus] = {}
    for index, entry in enumerate(entries, start=1):
        corpus = _parse_entry(path, base, index, entry)
        if corpus.name in corpora:
            raise BpcError(f"{path}: corpus entry {index} ({corpus.name}): duplicate name")
        corpora[corpus.name] = corpus

    groups = {g for c in corpora.values() for g in c.groups}
    clashes = sorted(groups & set(corpora))
    if clashes:
        raise BpcError(f"{path}: {', '.join(clashes)} used both as a corpus name and a group name")
    return corpora


def _parse_entry(path: Path, base: Path, index: int, entry: object) -> Corpus:
    label = f"corpus entry {index}"
    if not isinstance(entry, dict):
        raise BpcError(f"{path}: {label}: not a table")
    if isinstance(entry.get("name"), str):
        label = f"{label} ({entry['name']})"

    def fail(message: str) -> BpcError:
        return BpcError(f"{path}: {label}: {message}")

    check_table(entry, ENTRY_KEYS, f"{path}: {label}")

    name = entry["name"]
    if not _NAME_RE.fullmatch(name):
        raise fail(f"name {name!r} must be letters, digits, '.', '_' or '-'")
    if name == ALL_GROUP:
        raise fail(f"name {ALL_GROUP!r} is reserved for the implicit group of every corpus")
    if entry["kind"] not in KINDS:
        raise fail(f"kind {entry['kind']!r} is not one of {', '.join(KINDS)}")
    size = entry["bytes"]
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise fail("bytes must be a non-negative integer")
    if not _SHA256_RE.fullmatch(entry["sha256"]):
        raise fail("sha256 must be 64 lower-case hex digits")
    relative = Path(entry["path"])
    if relative.is_absolute() or ".." in relative.parts or not entry["path"]:
        raise fail(f"path {entry['path']!r} must be relative to the manifest, without '..'")
    groups = entry.get("groups", [])
    if not isinstance(groups, list) or not all(isinstance(g, str) and g for g in groups):
        raise fail("groups must be a list of non-empty strings")
    if ALL_GROUP in groups:
        raise fail(f"group {ALL_GROUP!r} is implicit; do not list it")

    return Corpus(
        name=name,
        path=base / relative,
        kind=entry["kind"],
        bytes=size,
        sha256=entry["sha256"],
        source=entry["source"],
        licence=entry["licence"],
        groups=tuple(dict.fromkeys(groups)),
        note=entry.get("note", ""),
    )


def groups_of(corpora: Mapping[str, Corpus]) -> dict[str, list[str]]:
    """Group name -> member names in manifest order, including the implicit 'all'."""
    groups: dict[str, list[str]] = {ALL_GROUP: list(corpora)}
    for corpus in corpora.values():
        for group in corpus.groups:
            groups.setdefault(group, []).append(corpus.name)
    return groups


def select(
    names_or_groups: Iterable[str], corpora: Mapping[str, Corpus] | None = None
) -> list[Corpus]:
    """Expand groups so a bench matrix can say 'canterbury'; keep order, drop repeats."""
    if isinstance(names_or_groups, str):
        names_or_groups = [names_or_groups]
    corpora = load_manifest() if corpora is None else corpora
    groups = groups_of(corpora)
    chosen: dict[str, Corpus] = {}
    for item in names_or_groups:
        if item in corpora:
            chosen.setdefault(item, corpora[item])
        elif item in groups:
            for member in groups[item]:
                chosen.setdefault(member, corpora[member])
        else:
            raise BpcError(
                f"unknown corpus or group {item!r}; corpora: {', '.join(corpora)}; "
                f"groups: {', '.join(groups)}"
            )
    return list(chosen.values())


def _existing_file(item: str, base_dir: Path | None) -> Path | None:
    """`item` as a file: relative to `base_dir` first (a matrix's folder), then the cwd."""
    candidate = Path(item).expanduser()
    tries = [candidate] if candidate.is_absolute() or base_dir is None else [base_dir / candidate, candidate]
    return next((p.resolve() for p in tries if p.is_file()), None)


def expand(items: Iterable[str], corpora: Mapping[str, Corpus] | None = None,
           base_dir: Path | None = None) -> list[str]:
    """The one resolver of corpus specs: names and groups expand to manifest names, anything
    else must be a file (an absolute path comes back); order kept, repeats dropped."""
    corpora = load_manifest() if corpora is None else corpora
    groups = groups_of(corpora)
    out: list[str] = []
    for item in items:
        if item in corpora or item in groups:
            out += [c.name for c in select([item], corpora)]
            continue
        found = _existing_file(item, base_dir)
        if found is None:
            raise BpcError(f"unknown corpus or group {item!r} (corpora: {', '.join(corpora)}; "
                           f"groups: {', '.join(groups)}; or a file path)")
        out.append(str(found))
    return list(dict.fromkeys(out))


def take_prefix(data: bytes, max_bytes: int) -> bytes:
    """The first max_bytes bytes; for UTF-8 text cut back to a character boundary (≤ 3 bytes).

    >>> take_prefix("héllo".encode(), 2)
    b'h'
    >>> take_prefix(b"abc", 0)
    b'abc'
    """
    if not max_bytes or len(data) <= max_bytes:
        return data
    if count_characters(data) is not None:
        for cut in range(max_bytes, max(max_bytes - 4, 0), -1):
            if count_characters(data[:cut]) is not None:
                return data[:cut]
    return data[:max_bytes]


def resolve(spec: str | os.PathLike, corpora: Mapping[str, Corpus] | None = None) -> Corpus:
    """A manifest name, or any file, checksummed now so that an edit mid-run still shows."""
    text = os.fspath(spec)
    file_path = Path(text)
    if corpora is None:
        try:
            corpora = load_manifest()
        except BpcError:
            if not file_path.is_file():
                raise
            corpora = {}  # a plain file needs no manifest
    if text in corpora:
        return corpora[text]
    if not file_path.is_file():
        raise BpcError(
            f"{text!r} is neither a corpus name ({', '.join(corpora) or 'none loaded'}) nor a file"
        )
    try:
        data = file_path.read_bytes()
    except OSError as exc:
        raise BpcError(f"{text}: cannot read: {exc.strerror or exc}") from None
    return Corpus(
        name=file_path.name,
        path=file_path.resolve(),
        kind=FILE_KIND,
        bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        source=str(file_path.resolve()),
        licence="unknown",
    )


def _toml_string(text: str) -> str:
    """A TOML basic string: quote and backslash escaped, control characters as \\uXXXX."""
    return '"' + "".join("\\" + c if c in '"\\' else f"\\u{ord(c):04x}" if c < " " or c == "\x7f" else c
                         for c in text) + '"'


def add_entry(file: str | os.PathLike, name: str, kind: str, source: str, licence: str, note: str = "",
              groups: Iterable[str] = (), manifest: str | os.PathLike | None = None,
              copy: bool = False) -> tuple[Corpus, Path]:
    """Append a [[corpus]] entry for `file` (its bytes and sha256 computed now) to the manifest,
    atomically, after checking the whole new manifest as load_manifest does (names, kinds,
    duplicates, groups). The file must lie under the manifest's folder, or `copy` puts it in
    `<folder>/<kind>/<file name>`. A manifest that does not exist yet is created."""
    path, src = manifest_path(manifest), Path(file)
    try:
        data = src.read_bytes()
        old = path.read_bytes() if path.exists() else b""
    except OSError as exc:
        raise BpcError(f"{exc.filename}: cannot read: {exc.strerror or exc}") from None
    if not source.strip() or not licence.strip():
        raise BpcError("a corpus needs a non-empty source and licence")
    base = path.resolve().parent
    located = Path(os.path.realpath(src.parent)) / src.name  # a link to the file stays a link
    if not (located.is_relative_to(base) or copy):
        raise BpcError(f"{file} is not under the manifest's folder {base}: move it there, or copy it (--copy)")
    fields = {"name": name, "path": (located.relative_to(base) if located.is_relative_to(base) else
                                     Path(kind, src.name)).as_posix(), "kind": kind, "bytes": len(data),
              "sha256": hashlib.sha256(data).hexdigest(), "source": source, "licence": licence, "note": note}
    entry = "[[corpus]]\n" + "".join(f"{k} = {v if isinstance(v, int) else _toml_string(v)}\n"
                                     for k, v in fields.items() if v != "")
    if groups:
        entry += f"groups = [{', '.join(_toml_string(g) for g in groups)}]\n"
    try:
        new = (old.rstrip(b"\n") + b"\n\n" if old.strip() else b"") + entry.encode("utf-8")
    except UnicodeEncodeError:
        raise BpcError("the name, source, licence, note, groups and file name must be valid UTF-8 text") from None
    corpus = _parse_manifest(path, new)[name]  # every rule of the reader, before anything is written
    try:
        if corpus.path != located:  # --copy
            if corpus.path.exists() and corpus.path.read_bytes() != data:
                raise BpcError(f"{corpus.path} exists with other bytes; rename the file to add")
            write_bytes(corpus.path, data)
        with atomic_open(path, "wb") as fh:
            fh.write(new)
    except OSError as exc:
        raise BpcError(f"{exc.filename or path}: cannot write: {exc.strerror or exc}") from None
    return corpus, path


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows
    )


def report(corpora: Mapping[str, Corpus], verify: bool = True) -> tuple[str, list[str]]:
    """The table `corpora verify` prints (every file read and checked) and the problems found;
    verify=False (`corpora ls`) reads no file and leaves out the chars and status columns."""
    rows = [("name", "kind", "bytes", *(("chars",) if verify else ()), "sha256", *(("status",) if verify else ()),
             "groups")]
    problems = []
    for c in corpora.values():
        chars, status = (), ()
        if verify:
            try:
                count = count_characters(c.read_bytes())
                chars, status = ("-" if count is None else str(count),), ("ok",)
            except BpcError as exc:
                problems.append(str(exc))
                chars, status = ("-",), ("FAIL",)
        rows.append((c.name, c.kind, str(c.bytes), *chars, c.sha256[:12], *status, ",".join(c.groups)))
    return _table(rows), problems


def main(argv: list[str] | None = None) -> int:
    """`python -m bpcbench.corpora [MANIFEST]`: verify all; non-zero exit on any problem."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) > 1 or any(arg in ("-h", "--help") for arg in argv):
        print("usage: python -m bpcbench.corpora [MANIFEST]", file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    try:
        corpora = load_manifest(argv[0] if argv else None)
    except BpcError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    table, problems = report(corpora)
    print(table)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    print(f"{len(corpora) - len(problems)}/{len(corpora)} corpora ok")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
