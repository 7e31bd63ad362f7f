"""The files report, compare, merge and nightly read: regular files within a size limit, JSON within a
nesting depth, each refused in one line naming the file.

A FIFO, a device (`/dev/zero`) or a socket named as results.csv would block the reader or grow without
bound; a file larger than its limit is not a run's (20,000 results.csv rows are ~20 MB). The file is
opened without blocking, checked on the open descriptor (no race with a swap after a stat), and read
up to its limit plus one byte, so a file that grows while it is read is caught too. JSON text is
measured before it is parsed: nested deeper than MAX_JSON_DEPTH (no file bpcbench writes nests deeper
than 5; Python's parser raises RecursionError at about 1,000) or holding more than MAX_JSON_CONTAINERS
lists and objects (each costs ~100 B parsed: a megabyte of `{},` would be 70 MB) is refused unparsed.
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import numpy as np

from bpcbench.errors import BpcError

MAX_RESULTS_BYTES = 64 << 20  # results.csv: ~60,000 rows of today's schema
MAX_HISTORY_BYTES = 512 << 20  # history.csv: every night's rows, for years
MAX_JSON_BYTES = 2 << 20  # shard.json (a cell is ~170 B: 12,000 cells), env.json, nightly.json; parsed: <= ~60 MB
MAX_TEXT_BYTES = 4 << 20  # matrix.toml
MAX_LOSSY_FILE_BYTES = 64 << 20  # a [lossy] table's curves and reconstructions, copied by merge
MAX_JSON_DEPTH = 32
MAX_JSON_CONTAINERS = 100_000  # lists and objects in one JSON file: a shard.json of 12,000 cells has ~12,000


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
    """The JSON document at `path`: within `limit` bytes, MAX_JSON_DEPTH levels and MAX_JSON_CONTAINERS
    lists and objects, all checked on the text before it is parsed; else one BpcError naming the file."""
    text = read_text(path, limit)
    levels, containers = structure(text)
    if levels > MAX_JSON_DEPTH:
        raise BpcError(f"{path}: nested {levels} levels deep, more than {MAX_JSON_DEPTH}: not a file bpcbench wrote")
    if containers > MAX_JSON_CONTAINERS:
        raise BpcError(f"{path}: {containers:,} lists and objects, more than {MAX_JSON_CONTAINERS:,}: "
                       "not a file bpcbench wrote")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise BpcError(f"{path}: not JSON: {exc}") from None


_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')  # a JSON string, escapes included (unrolled: linear)


def structure(text: str) -> tuple[int, int]:
    """(deepest nesting, number of lists and objects) of JSON text, brackets inside strings not counted;
    one vectorized pass, so a forged file costs a few bytes per byte however it nests.

    >>> structure('{"a": [1, {"b": "[[["}]}'), structure("7")
    ((3, 3), (0, 0))
    """
    code = np.frombuffer(_STRING.sub("", text).encode("utf-8", "replace"), dtype=np.uint8)
    opens = (code == ord("[")) | (code == ord("{"))
    closes = (code == ord("]")) | (code == ord("}"))
    if not opens.any():
        return 0, 0
    levels = np.cumsum(opens.view(np.int8) - closes.view(np.int8), dtype=np.int32)
    return int(levels.max()), int(np.count_nonzero(opens))


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
