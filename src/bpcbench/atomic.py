"""Atomic file writes: a reader sees the old file or the whole new one, never half of it.

Temp files are named `.bpcbench-NAME.XXXXXXXX.tmp` beside the target. Every exit path Python
sees removes them (SIGTERM is turned into an exception by the CLI); one left by SIGKILL or a
power cut is removed by the next write into that directory once it is a day old.
"""

from __future__ import annotations

import errno
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

PREFIX = ".bpcbench-"
STALE_SECONDS = 24 * 3600


def remove_stale(directory: Path, now: float | None = None) -> list[Path]:
    """Remove our temp files older than a day from `directory` (never anyone else's)."""
    now = time.time() if now is None else now
    removed = []
    for p in directory.glob(f"{PREFIX}*.tmp"):
        try:
            if p.is_file() and not p.is_symlink() and now - p.stat().st_mtime > STALE_SECONDS:
                p.unlink()
                removed.append(p)
        except OSError:
            pass  # gone already, or not ours to remove
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_writable(path: str | os.PathLike) -> None:
    """Raise the OSError that writing `path` through atomic_path would raise (a name too long for
    the file system once the temp prefix is added, a folder that is not one or not writable), now,
    before the work that would produce it. Leaves nothing behind."""
    path = Path(path)
    folder = path.parent
    while not folder.exists() and folder != folder.parent:  # atomic_path creates the missing folders
        folder = folder.parent
    if not folder.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(folder))
    fd, tmp = tempfile.mkstemp(prefix=f"{PREFIX}{path.name}.", suffix=".tmp", dir=folder)
    os.close(fd)
    os.unlink(tmp)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temp file name beside `path`, renamed over it only if the block succeeds.

    For writers that want a file name rather than a handle (GGUFWriter, llama.cpp's
    quantizer); on any error the temp file is removed and `path` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f"{PREFIX}{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs should look like any other file
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temp file beside `path`; rename it over `path` only if the block succeeds."""
    with atomic_path(path) as tmp:
        with open(tmp, mode) as fh:
            yield fh


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w") as fh:
        fh.write(text)
