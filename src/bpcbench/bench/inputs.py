"""The files report, compare, merge and nightly read: regular files within a size limit, JSON within a
nesting depth, each refused in one line naming the file.

A FIFO, a device (`/dev/zero`) or a socket named as results.csv would block the reader or grow without
bound; a file larger than its limit is not a run's (20,000 results.csv rows are ~20 MB). The file is
opened without blocking, checked on the open descriptor (no race with a swap after a stat), and read
up to its limit plus one byte, so a file that grows while it is read is caught too. JSON is parsed
only once within its size limit, and refused when nested deeper than MAX_JSON_DEPTH (no file
bpcbench writes nests deeper than 5; Python's parser would raise RecursionError at about 1,000).
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from bpcbench.errors import BpcError

MAX_RESULTS_BYTES = 64 << 20  # results.csv: ~60,000 rows of today's schema
MAX_HISTORY_BYTES = 512 << 20  # history.csv: every night's rows, for years
MAX_JSON_BYTES = 2 << 20  # shard.json (a cell is ~170 B: 12,000 cells), env.json, nightly.json; parsed: <= ~60 MB
MAX_TEXT_BYTES = 4 << 20  # matrix.toml
MAX_LOSSY_FILE_BYTES = 64 << 20  # a [lossy] table's curves and reconstructions, copied by merge
MAX_JSON_DEPTH = 32


def read_bytes(path: str | os.PathLike, limit: int) -> bytes:
    """The bytes of the regular file at `path` (a symlink to one works), at most `limit` of them, else one
    BpcError naming it. FileNotFoundError passes through: a missing file means something else to each caller."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise BpcError(f"{path}: cannot read: {exc.strerror or exc}") from None
    with open(fd, "rb") as fh:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise BpcError(f"{path}: not a regular file ({_kind(st.st_mode)}): bpcbench reads results only "
                           "from regular files")
        if st.st_size > limit:
            raise BpcError(f"{path}: {st.st_size:,} bytes, more than the {limit:,} this file may have")
        try:
            data = fh.read(limit + 1)
        except OSError as exc:
            raise BpcError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise BpcError(f"{path}: more than the {limit:,} bytes this file may have (it grew while read)")
    return data


def _kind(mode: int) -> str:
    kinds = [(stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
             (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket")]
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def read_text(path: str | os.PathLike, limit: int = MAX_TEXT_BYTES) -> str:
    """read_bytes as UTF-8 text; bytes that are not UTF-8 are one BpcError naming the file."""
    data = read_bytes(path, limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BpcError(f"{path}: byte {exc.start}: not UTF-8 text") from None


def read_json(path: str | os.PathLike, limit: int = MAX_JSON_BYTES) -> object:
    """The JSON document at `path`: within `limit` bytes and MAX_JSON_DEPTH levels, else one BpcError."""
    text = read_text(path, limit)
    try:
        doc = json.loads(text)
    except RecursionError:
        raise BpcError(f"{path}: nested more than {MAX_JSON_DEPTH} levels deep: not a file bpcbench wrote") from None
    except ValueError as exc:
        raise BpcError(f"{path}: not JSON: {exc}") from None
    if depth(doc) > MAX_JSON_DEPTH:
        raise BpcError(f"{path}: nested more than {MAX_JSON_DEPTH} levels deep: not a file bpcbench wrote")
    return doc


def depth(doc: object) -> int:
    """Levels of lists and objects in a parsed JSON document (a scalar is 0), without recursion.

    >>> depth(1), depth([]), depth({"a": [1, {"b": []}]})
    (0, 1, 4)
    """
    deepest, todo = 0, [(doc, 1)]
    while todo:
        value, level = todo.pop()
        if isinstance(value, (list, dict)):
            deepest = max(deepest, level)
            if level > MAX_JSON_DEPTH:
                break  # deep enough to refuse: the rest need not be walked
            todo.extend((v, level + 1) for v in (value.values() if isinstance(value, dict) else value))
    return deepest


def read_json_object(path: str | os.PathLike, limit: int = MAX_JSON_BYTES) -> dict:
    """read_json of a file that holds one JSON object (env.json, shard.json, nightly.json)."""
    doc = read_json(path, limit)
    if not isinstance(doc, dict):
        raise BpcError(f"{path}: not a JSON object (got {type(doc).__name__})")
    return doc


def read_env(run_dir: str | os.PathLike) -> dict:
    """A run directory's env.json, {} if it has none; refused in one line if it is not a JSON object
    within these limits (merge copies it, report shows it)."""
    try:
        return read_json_object(Path(run_dir) / "env.json")
    except FileNotFoundError:
        return {}
