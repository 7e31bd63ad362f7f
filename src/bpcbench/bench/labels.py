"""The one way a cell is named, in progress lines, summary tables, compare output and plots.

A label is built from fields every results.csv row has (and a matrix cell can supply
before it runs), so the same cell reads the same everywhere:

    llm:smollm2-135m (coded lanes ctx 2048) · alice29[:16k]
    gzip-9 · alice29[:16k]

>>> codec_label({"codec": "llm:smollm2-135m", "measure": "coded", "policy": "lanes", "context_tokens": 2048})
'llm:smollm2-135m (coded lanes ctx 2048)'
>>> input_label({"corpus_name": "alice29", "max_bytes": 16000, "corpus_file_bytes": 152089})
'alice29[:16k]'
>>> input_label({"corpus_name": "alice29", "max_bytes": 0})
'alice29'
"""

from __future__ import annotations

from collections.abc import Mapping


REFERENCE_CODEC = "zstd-22-long"  # the classical codec tables and plots measure models against


def is_missing(v) -> bool:
    """None, NaN or pandas' NA (a list or array is a value)."""
    if v is None or isinstance(v, (list, tuple, dict)):
        return v is None
    try:
        return bool(v != v)  # NaN is the one value unequal to itself
    except TypeError:  # pandas.NA refuses bool()
        return True


def _value(row: Mapping, key: str):
    """row[key], with pandas' NA, NaN, "" (a CSV read as text) and absent keys all read as None."""
    try:
        v = row[key]
    except (KeyError, IndexError):
        return None
    return None if is_missing(v) or v == "" else v


def prefix_label(n_bytes: int) -> str:
    """16000 -> '16k' (whole kB), 16384 -> '16384'."""
    return f"{n_bytes // 1000}k" if n_bytes % 1000 == 0 else str(n_bytes)


def codec_label(row: Mapping) -> str:
    """'gzip-9' for a baseline; 'llm:NAME (MEASURE POLICY ctx N)' for a model row, from the row's own fields."""
    measure = _value(row, "measure")
    if measure == "baseline":
        return str(row["codec"])
    policy, ctx = _value(row, "policy"), _value(row, "context_tokens")
    return f"{row['codec']} ({measure}{f' {policy}' if policy else ''}{f' ctx {int(ctx)}' if ctx else ''})"


def input_label(row: Mapping) -> str:
    """The corpus name, with '[:N]' when only a prefix of the file was measured."""
    name = str(_value(row, "corpus_name") or "?")
    limit = _value(row, "max_bytes")
    file_bytes = _value(row, "corpus_file_bytes")
    if limit and (file_bytes is None or int(limit) < int(file_bytes)):
        return f"{name}[:{prefix_label(int(limit))}]"
    return name


def cell_label(row: Mapping) -> str:
    return f"{codec_label(row)} · {input_label(row)}"


def view_key(row) -> tuple:
    """Rows measured on the same bytes share a view: one table, one plot panel."""
    n = _value(row, "corpus_bytes")
    return (row["corpus_name"], None if n is None else int(n))


def view_positions(frame) -> dict:
    """{view: positions of its rows in the frame}, views in first-appearance order: one pass over
    the rows whatever the number of views (a pass per view made a report of 20,000 rows take hours).
    A plot takes the rows of the few views it draws (frame.iloc), not a frame per view."""
    groups: dict[tuple, list[int]] = {}
    for k, row in enumerate(frame[["corpus_name", "corpus_bytes"]].to_dict("records")):  # ~100x iterrows
        groups.setdefault(view_key(row), []).append(k)
    return groups


def group_rows(rows) -> dict:
    """{view: its rows} of rows as mappings (records), views in first-appearance order, one pass:
    the summary's tables are built from records, not from a DataFrame per view."""
    groups: dict[tuple, list] = {}
    for row in rows:
        groups.setdefault(view_key(row), []).append(row)
    return groups


def view_title(row: Mapping) -> str:
    """'alice29 (english, first 16,000 of 152,089 bytes, 16,000 characters)', from any row of the view."""
    name, n, total = row["corpus_name"], _value(row, "corpus_bytes"), _value(row, "corpus_file_bytes")
    if n is None:
        return str(name)
    parts = [str(_value(row, "corpus_kind") or "")]
    parts.append(f"first {int(n):,} of {int(total):,} bytes" if total is not None and n < total
                 else f"{int(n):,} bytes")
    if _value(row, "corpus_characters") is not None:
        parts.append(f"{int(row['corpus_characters']):,} characters")
    return f"{name} ({', '.join(p for p in parts if p)})"
