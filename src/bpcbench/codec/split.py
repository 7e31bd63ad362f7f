"""The cheap test before the model: which byte ranges of an input are text worth the model's time.

The model spends ~30 ms a token on two CPU threads and codes random or binary bytes worse than
storing them, so bytes that are not text must never reach it: 4 KiB of random bytes took 135 s
to be stored, 1 MiB would take most of a day. `text_ranges` cuts the input with a test that runs
at memory speed, before any tokenization:

* every byte is marked text-like if it is printable ASCII, tab, newline, form feed or carriage
  return, or part of a well-formed UTF-8 sequence (a lead byte with its continuation bytes);
* blocks of BLOCK bytes are text when at least TEXT_SHARE of their bytes are text-like and at
  most MAX_NULS are NUL (prose, code, markup and logs score ~1.0; random bytes ~0.42, machine
  code and compressed data below 0.6; string tables are kept off by their NUL separators);
* neighbouring blocks of one class merge; a run of text shorter than MIN_TEXT_BYTES between
  non-text is not worth a lane's cold start and goes with the non-text (unless the whole input
  is that run); then each boundary moves to the byte that best parts text-like bytes from the
  others, so a splice point costs the text nothing;
* never more than MAX_RANGES ranges (the container's bound): the shortest text runs go to the
  non-text side until the map fits.

Only the text ranges are tokenized and coded by the model, joined into one stream (so the text on
both sides of a binary blob keeps its context); the others are zstd frames or stored bytes. A
wrong call costs little and is bounded: a text block sent to zstd costs zstd's rate on at most
its bytes, a binary block sent to the model is still caught lane by lane (compress._segmented)
and by the whole-file fallbacks. `--stats` prints every range with its method and size.
"""

from __future__ import annotations

import numpy as np

from bpcbench.codec.container import MAX_RANGES

BLOCK = 512
TEXT_SHARE = 0.95
# NUL bytes a text block may hold: text files hold none; a block with NULs every few dozen bytes
# is a symbol or string table (a .so's .dynstr scores 0.95 printable), which the model would
# take minutes to code for a gain of a few hundred bytes over zstd
MAX_NULS = 2
TEXT_LIKE_WEIGHT = 0.25  # split._to_the_byte: what a text-like byte counts against a cut
MIN_TEXT_BYTES = 8192
_CHUNK = 1 << 24  # bytes marked per numpy pass: bounded scratch memory on a large input
_UTF8 = ((0xC2, 0xDF, 1), (0xE0, 0xEF, 2), (0xF0, 0xF4, 3))  # lead bytes and their continuation count


def text_mask(data: bytes) -> np.ndarray:
    """One bool per byte: printable ASCII, \\t \\n \\f \\r, or a byte of a well-formed UTF-8 sequence."""
    b = np.frombuffer(data, dtype=np.uint8)
    n = len(b)
    ok = ((b >= 0x20) & (b < 0x7F)) | (b == 9) | (b == 10) | (b == 12) | (b == 13)
    cont = (b & 0xC0) == 0x80
    for lo, hi, k in _UTF8:
        if n <= k:  # no room for a whole sequence (and the shifts below need k < n)
            continue
        whole = (b >= lo) & (b <= hi)
        whole[max(0, n - k):] = False  # a sequence cut by the end of the input is not well formed
        for j in range(1, k + 1):
            whole[: n - j] &= cont[j:]
        for j in range(k + 1):
            ok[j:] |= whole[: n - j]
    return ok


def block_classes(data: bytes) -> np.ndarray:
    """Whether each BLOCK-byte block (the last one possibly shorter) is text."""
    out = []
    for start in range(0, len(data), _CHUNK):
        piece = data[start : start + _CHUNK + 3]  # 3 bytes more: a UTF-8 sequence across the cut
        mask = text_mask(piece)[: min(_CHUNK, len(data) - start)]
        starts = np.arange(0, len(mask), BLOCK)
        counts = np.add.reduceat(mask.astype(np.int32), starts)
        nuls = np.add.reduceat((np.frombuffer(piece, dtype=np.uint8)[: len(mask)] == 0).astype(np.int32), starts)
        sizes = np.diff(np.append(starts, len(mask)))
        out.append((counts >= TEXT_SHARE * sizes) & (nuls <= MAX_NULS))
    return np.concatenate(out) if out else np.zeros(0, dtype=bool)


def _runs(classes: list[bool], lengths: list[int]) -> tuple[list[bool], list[int]]:
    """Neighbours of one class merged."""
    cls, lens = [], []
    for c, n in zip(classes, lengths):
        if cls and cls[-1] == c:
            lens[-1] += n
        else:
            cls.append(c)
            lens.append(n)
    return cls, lens


def text_ranges(data: bytes) -> list[tuple[bool, int]]:
    """The input cut into (is text, length) ranges: lengths > 0 summing to len(data), neighbours
    of different classes, at most MAX_RANGES of them. [] for empty input."""
    if not data:
        return []
    blocks = block_classes(data)
    lengths = [BLOCK] * len(blocks)
    lengths[-1] = len(data) - BLOCK * (len(blocks) - 1)
    cls, lens = _runs(blocks.tolist(), lengths)
    if len(cls) == 1:
        return [(cls[0], lens[0])]
    cls = [c and n >= MIN_TEXT_BYTES for c, n in zip(cls, lens)]
    cls, lens = _runs(cls, lens)
    while len(cls) > MAX_RANGES:  # the shortest text runs join the non-text beside them
        shortest = sorted((n, i) for i, (c, n) in enumerate(zip(cls, lens)) if c)
        drop = {i for _, i in shortest[: max(1, (len(cls) - MAX_RANGES + 1) // 2)]}
        cls, lens = _runs([c and i not in drop for i, c in enumerate(cls)], lens)
    return _to_the_byte(data, cls, lens)


def _to_the_byte(data: bytes, cls: list[bool], lens: list[int]) -> list[tuple[bool, int]]:
    """Each text/non-text boundary moved, within a block either side, to the byte that best parts
    text-like bytes from the others: the cut p maximises, over the bytes that change sides, +1 for
    a byte that is not text-like on the non-text side and -TEXT_LIKE_WEIGHT for a text-like one
    (a random byte is text-like 42% of the time, so a run of random bytes still gains). Both
    ranges stay non-empty."""
    ends = np.cumsum(lens).tolist()
    for i in range(len(cls) - 1):
        start = ends[i - 1] if i else 0  # as moved by the boundary before
        cut, stop = ends[i], ends[i + 1]
        lo, hi = max(start + 1, cut - BLOCK), min(stop - 1, cut + BLOCK)
        score = np.where(text_mask(data[lo : hi + 3])[: hi - lo], -TEXT_LIKE_WEIGHT, 1.0)
        gain = np.concatenate([[0.0], np.cumsum(score)])  # gain[k]: bytes lo .. lo + k - 1 on the left
        # text on the left: the non-text range [p, hi) gains gain[-1] - gain[p - lo]
        ends[i] = lo + int(np.argmin(gain) if cls[i] else np.argmax(gain))
    bounds = [0, *ends]
    return [(c, b - a) for c, a, b in zip(cls, bounds[:-1], bounds[1:])]
