"""What no real run can write into results.csv, refused by results.read_csv (so by report, compare,
merge and nightly alike) in one line naming the row and the column.

The type checks of read_csv say a cell parses; these say its value could have been measured:

* bits per byte are > 0 and at most MAX_BITS_PER_BYTE (a stored file of one byte with its header
  is a few hundred; 1e300 is a forgery);
* a bootstrap interval is not inverted (low <= high);
* timings and speeds are > 0, a standard deviation >= 0 and at most mean × sqrt(n): n positive
  values with that mean cannot spread further;
* timing_values and timing_loops are >= 1, sizes are >= 0;
* one cell (CELL_COLUMNS: what compare matches rows on) has one row: a second would silently win.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

MAX_BITS_PER_BYTE = 1e5
CELL_COLUMNS = ("corpus_name", "corpus_bytes", "codec", "measure", "policy", "context_tokens")
_BPB = ("bits_per_byte", "ideal_bits_per_byte", "coded_bits_per_byte", "bits_per_byte_ci95_low",
        "bits_per_byte_ci95_high", "bits_per_character")
_POSITIVE = ("encode_seconds", "decode_seconds", "encode_kB_per_s", "decode_kB_per_s", "tokens_per_s",
             "timing_values", "timing_loops")
_NON_NEGATIVE = ("corpus_bytes", "corpus_file_bytes", "coded_bytes", "container_bytes", "n_tokens", "n_pieces",
                 "ideal_bits", "peak_rss_mb", "encode_seconds_std", "decode_seconds_std")


def _num(frame, column: str) -> pd.Series:
    return pd.to_numeric(frame[column].replace("", np.nan), errors="coerce").astype(float)


def _first(bad: pd.Series, column: str, frame, why: str) -> tuple[int, str] | None:
    bad = bad.fillna(False).to_numpy(dtype=bool)
    if not bad.any():
        return None
    row = int(np.argmax(bad))
    return row, f"{column}: {frame[column].iloc[row]!r} is {why}"


def problems(frame) -> list[tuple[int, str]]:
    """(row, 'column: what') of the first implausible cell of each rule; `frame` holds the text cells."""
    found = []
    for c in _BPB:
        v = _num(frame, c)
        found.append(_first((v <= 0) | (v > MAX_BITS_PER_BYTE), c, frame,
                            f"not in (0, {MAX_BITS_PER_BYTE:g}] bits/byte: no real run writes it"))
    low, high = _num(frame, "bits_per_byte_ci95_low"), _num(frame, "bits_per_byte_ci95_high")
    found.append(_first(high < low, "bits_per_byte_ci95_high", frame,
                        "below bits_per_byte_ci95_low: an inverted interval"))
    for c in _POSITIVE:
        found.append(_first(_num(frame, c) <= 0, c, frame, "not positive: no real run writes it"))
    for c in _NON_NEGATIVE:
        found.append(_first(_num(frame, c) < 0, c, frame, "negative: no real run writes it"))
    n = _num(frame, "timing_values").fillna(1).clip(lower=2)
    for phase in ("encode", "decode"):
        std, mean = _num(frame, f"{phase}_seconds_std"), _num(frame, f"{phase}_seconds")
        found.append(_first(std > mean * n.map(math.sqrt) * (1 + 1e-9), f"{phase}_seconds_std", frame,
                            f"more than {phase}_seconds × sqrt(timing_values): no positive timings spread so far"))
    found.append(_duplicate_cell(frame))
    return [f for f in found if f is not None]


def _duplicate_cell(frame) -> tuple[int, str] | None:
    keys = frame[list(CELL_COLUMNS)].apply(tuple, axis=1) if len(frame) else pd.Series([], dtype=object)
    dup = keys.duplicated()
    if not dup.any():
        return None
    row = int(np.argmax(dup.to_numpy()))
    first = int(np.argmax((keys == keys.iloc[row]).to_numpy())) + 1
    return row, (f"codec: the cell {keys.iloc[row]!r} (corpus, bytes, codec, measure, policy, context) is already "
                 f"in row {first}: one cell, one row")
