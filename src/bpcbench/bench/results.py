"""results.csv: one row per (model, corpus, codec, policy, context), every column defined once here.

The column list below is the schema: name, type, unit and meaning. docs/results-schema.md
is generated from it (`python -m bpcbench.bench.results > docs/results-schema.md`) and a test
checks the two agree. The headline number of a row is ``bits_per_byte``: bits of output
per byte of the input the row measured (``corpus_bytes``).
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from bpcbench import stats
from bpcbench.atomic import atomic_open
from bpcbench.bench import inputs, migrations, plausible
from bpcbench.bench.migrations import SCHEMA_VERSION
from bpcbench.errors import BpcError
from bpcbench.schema import Column



C = Column
COLUMNS: list[Column] = [
    # the run
    C("schema_version", "int", "-", "Version of this column list; changes whenever a column is added, removed or redefined."),
    C("run_id", "str", "-", "`<UTC date-time>-<matrix name>`; also the run directory's name unless `--out` gives another."),
    C("timestamp_utc", "str", "ISO 8601", "When the cell's measurement started (for a cached row: when it was first measured)."),
    C("host", "str", "-", "Host name of the machine that measured the cell."),
    C("cached", "bool", "-", "True if the row was loaded from the cell cache instead of measured in this run."),
    C("cell_key", "str", "hex", "sha256 of everything the result depends on (the cell-cache key); equal keys, equal results."),
    # the model
    C("model_name", "str", "-", "Registry name (e.g. `smollm2-135m`) or the GGUF file's stem; empty for baselines."),
    C("model_path", "str", "-", "GGUF file the model was loaded from."),
    C("model_sha256", "str", "hex", "sha256 of the GGUF file."),
    C("model_arch", "str", "-", "`general.architecture` from the GGUF metadata."),
    C("model_quant_type", "str", "-", "Quantization type (`general.file_type`, e.g. `Q4_1`, `Q4_K_M`)."),
    C("model_file_bytes", "int", "bytes", "Size of the GGUF file; the model's cost in the all-in size."),
    C("model_n_params", "int", "parameters", "Number of weights (sum of tensor elements)."),
    C("model_vocab_size", "int", "tokens", "Vocabulary size."),
    # the input
    C("corpus_name", "str", "-", "Manifest name of the corpus, or the file name for a corpus given as a path."),
    C("corpus_kind", "str", "-", "Manifest kind: english, code, non-english, structured, binary, fresh (or `file`)."),
    C("corpus_sha256", "str", "hex", "sha256 of the whole corpus file (as in the manifest)."),
    C("corpus_file_bytes", "int", "bytes", "Size of the whole corpus file."),
    C("corpus_bytes", "int", "bytes", "Bytes actually measured: the whole file, or the prefix that `max_bytes` kept. Every per-byte number divides by this."),
    C("corpus_characters", "int", "characters", "Unicode code points in the measured bytes if they are valid UTF-8; empty otherwise."),
    C("input_sha256", "str", "hex", "sha256 of the measured bytes (equals corpus_sha256 unless a prefix was taken)."),
    C("max_bytes", "int", "bytes", "The matrix's prefix limit for this cell; 0 = whole file. A prefix is cut back to a UTF-8 character boundary for UTF-8 text."),
    C("note", "str", "-", "Free text, e.g. `prefix: first 20000 of 152089 bytes`."),
    # the codec
    C("codec", "str", "-", "`llm:<model_name>` or a baseline: gzip-9, bzip2-9, xz-9e, zstd-19, zstd-22-long, brotli-11."),
    C("measure", "str", "-", "`coded`: real arithmetic coding, compressed and decompressed and compared; `ideal`: cross-entropy only, no file; `baseline`: a classical compressor, round trip checked."),
    C("policy", "str", "-", "How the model saw the text: `lanes` (contiguous lanes, each with a sliding KV window: the codec's default), `chunks` (disjoint chunks, each from BOS), `llama-perplexity` or `lm-eval-rolling` (those tools' windows, ideal rows only). See docs/design.md, \"What the numbers mean\". Empty for baselines."),
    C("context_tokens", "int", "tokens", "The policy's window, as resolved for the model: KV cells per lane (BOS included), tokens per chunk, or the tool's n_ctx / max_length. Empty for baselines."),
    C("width", "int", "sequences", "Most lanes (or chunks) evaluated together per llama_decode call: a speed setting. Empty for baselines."),
    C("lanes", "int", "lanes", "Cold starts: lanes (coded lanes rows), chunks or windows that start from BOS with no history; 1 for an ideal lanes row (one stream)."),
    C("context_mean", "float", "tokens", "Mean history per scored token (BOS included): what the row actually measured, below context_tokens by the cold starts and slides."),
    C("context_min", "int", "tokens", "Smallest history of a scored token."),
    C("context_max", "int", "tokens", "Largest history of a scored token."),
    C("scored_bytes", "int", "bytes", "Bytes of the tokens the policy scores: corpus_bytes, except for llama-perplexity, which scores the second half of each window (its ideal_bits_per_byte divides by this)."),
    C("perplexity", "float", "-", "exp(mean −ln p) over the scored tokens with the model's plain softmax: llama-perplexity's and lm-eval's figure (window policies only)."),
    C("n_tokens", "int", "tokens", "Tokens the input was split into (model rows)."),
    C("n_pieces", "int", "pieces", "Pieces the bootstrap resamples (model rows): lanes or chunks of a coded row; chunks, windows or context-sized blocks of the stream for an ideal row."),
    C("fallback_bytes", "int", "bytes", "Input bytes coded as single-byte escape tokens because the tokenizer cannot represent them losslessly."),
    # sizes and the headline
    C("ideal_bits", "float", "bits", "Sum over tokens of −log2 p(token): the size an ideal entropy coder would reach with these probabilities. Empty for baselines."),
    C("coded_bytes", "int", "bytes", "Compressed payload: the range coder's output (coded) or the compressor's whole output stream (baseline). Empty for ideal rows and failed round trips."),
    C("container_bytes", "int", "bytes", "The complete file that decompresses to the input: .bpcz container with header (coded), the compressor's output (baseline). Empty for ideal rows and failed round trips."),
    C("bits_per_byte", "float", "bits/byte", "HEADLINE. coded and baseline: 8 × container_bytes / corpus_bytes, the size of the file that restores the input; ideal: ideal_bits / corpus_bytes, a bound that no file backs. Empty for failed round trips."),
    C("bits_per_byte_ci95_low", "float", "bits/byte", f"Lower end of the {stats.CI_PERCENT} bootstrap interval of bits_per_byte: the n_pieces pieces resampled with replacement (BCa, {stats.BOOTSTRAP_RESAMPLES} resamples, fixed seed; percentile where BCa is undefined), ratio Σ ideal bits / Σ piece bytes, shifted by bits_per_byte − ideal_bits_per_byte. Says how much the number depends on which text was sampled. Empty for baselines."),
    C("bits_per_byte_ci95_high", "float", "bits/byte", "Upper end of the same interval."),
    C("ci_warning", "str", "-", f"Why the interval is weak, e.g. `only 5 pieces (< {stats.MIN_CI_PIECES})`: a bootstrap over fewer than {stats.MIN_CI_PIECES} pieces understates the spread. Empty when the interval rests on {stats.MIN_CI_PIECES} or more pieces, and for baselines."),
    C("ideal_bits_per_byte", "float", "bits/byte", "ideal_bits / corpus_bytes (model rows)."),
    C("coded_bits_per_byte", "float", "bits/byte", "8 × coded_bytes / corpus_bytes: the payload alone, without container header."),
    C("bits_per_character", "float", "bits/character", "bits_per_byte × corpus_bytes / corpus_characters; empty unless the input is valid UTF-8."),
    C("compression_ratio", "float", "-", "corpus_bytes / container_bytes (ideal rows: corpus_bytes / (ideal_bits / 8))."),
    C("overhead_percent", "float", "%", "Coded rows: how much larger the payload is than the ideal size, 100 × (8 × coded_bytes / ideal_bits − 1)."),
    C("roundtrip_ok", "bool", "-", "True if decompressing gave back exactly the input bytes; False if not (its sizes are then empty); empty for ideal rows, which write no file."),
    # time and memory
    C("encode_seconds", "float", "s", "Mean wall time of one compression over `timing_values` timed values (ideal rows: one cross-entropy evaluation). pyperf style: a baseline value averages `timing_loops` calls covering at least 0.1 s of work, after one warm-up call; a model value is one whole compression."),
    C("encode_seconds_std", "float", "s", "Sample standard deviation (n − 1) of the encode values; empty with fewer than 2 values."),
    C("decode_seconds", "float", "s", "Mean wall time of one decompression, timed like encode_seconds; empty for ideal rows."),
    C("decode_seconds_std", "float", "s", "Sample standard deviation of the decode values; empty with fewer than 2 values."),
    C("timing_values", "int", "values", "n: timed values behind each of encode_seconds and decode_seconds (the matrix's `baseline_repeats` or `model_repeats`). `compare` tests speed changes with Welch's t-test when both runs have n >= 2."),
    C("timing_loops", "int", "calls", "Calls averaged into one value (baselines: calibrated so a value covers at least 0.1 s; models: 1)."),
    C("encode_kB_per_s", "float", "kB/s", "corpus_bytes / 1000 / encode_seconds (kB = 1000 bytes of input)."),
    C("decode_kB_per_s", "float", "kB/s", "corpus_bytes / 1000 / decode_seconds."),
    C("tokens_per_s", "float", "tokens/s", "n_tokens / encode_seconds (model rows)."),
    C("peak_rss_mb", "float", "MiB", "Peak resident memory of the bench process while the cell ran (Linux VmHWM, reset before the cell; includes the mapped model file). 1 MiB = 2^20 bytes."),
    # the environment of the cell
    C("threads", "int", "threads", "CPU threads given to llama.cpp. Empty for baselines (single-threaded)."),
    C("n_gpu_layers", "int", "layers", "Layers offloaded to a GPU (0 = CPU only)."),
    C("backend", "str", "-", "`cpu` or `gpu` (where the model ran)."),
    C("llama_cpp_python_version", "str", "-", "llama-cpp-python version (model rows)."),
    C("codec_library_version", "str", "-", "The compression library and version (baselines)."),
    C("bpcbench_version", "str", "-", "bpcbench version that measured the row."),
    C("error", "str", "-", "Why the cell failed (one line); empty when it succeeded."),
]
del C

COLUMN_NAMES = [c.name for c in COLUMNS]
SIZE_COLUMNS = ("coded_bytes", "container_bytes", "bits_per_byte", "bits_per_byte_ci95_low",
                "bits_per_byte_ci95_high", "ci_warning", "coded_bits_per_byte", "bits_per_character",
                "compression_ratio", "overhead_percent")
# filled in every row the runner writes, failed ones too (measure.describe_row, finish_row)
REQUIRED_COLUMNS = ("schema_version", "run_id", "timestamp_utc", "host", "cached", "codec", "measure",
                    "corpus_name", "max_bytes")


# --- the failed-row rule ------------------------------------------------------------------


def row_failed(error, roundtrip_ok=None) -> bool:
    """THE rule: a row failed if it carries an error or its round trip did not give the input back.

    Takes a row (dict or pandas Series) or its two fields. A failed row is never shown as
    a result, never cached, and makes `bench`, `compare` and `nightly` exit non-zero.

    >>> row_failed({"error": None, "roundtrip_ok": True}), row_failed({"error": None, "roundtrip_ok": False})
    (False, True)
    """
    if roundtrip_ok is None and hasattr(error, "get"):
        error, roundtrip_ok = error.get("error"), error.get("roundtrip_ok")
    return bool(_clean(error)) or _clean(roundtrip_ok) is False


def failed_mask(frame):
    """row_failed for every row of a results frame, as a boolean Series."""
    return pd.Series([row_failed(e, r) for e, r in zip(frame["error"], frame["roundtrip_ok"])],
                     index=frame.index, dtype=bool)


def _bpb(bits, n_bytes):
    return None if bits is None else _clean(stats.bits_per_byte(bits, n_bytes))


def _div(a, b):
    if a is None or b is None or b == 0 or (isinstance(a, float) and math.isnan(a)):
        return None
    return a / b


def finish_row(row: dict) -> dict:
    """Derive every ratio column from the measured ones, so they are defined in one place."""
    n = row.get("corpus_bytes")
    measure = row.get("measure")
    failed = row_failed(row)
    if failed:
        for k in SIZE_COLUMNS:
            row[k] = None
    ideal = row.get("ideal_bits")
    row["ideal_bits_per_byte"] = _bpb(ideal, row.get("scored_bytes") or n)
    if not failed:
        coded = row.get("coded_bytes")
        row["coded_bits_per_byte"] = _bpb(None if coded is None else coded * 8, n)
        if measure == "ideal":
            headline = row["ideal_bits_per_byte"]
            row["compression_ratio"] = _div(row.get("scored_bytes") or n, ideal / 8) if ideal else None
        else:
            cont = row.get("container_bytes")
            headline = _bpb(None if cont is None else cont * 8, n)
            row["compression_ratio"] = _div(n, cont)
        row["bits_per_byte"] = headline
        # characters are counted over the whole input: no per-character figure for a partial scoring
        chars = row.get("corpus_characters") if row.get("scored_bytes") in (None, n) else None
        row["bits_per_character"] = _div(headline * n, chars) if headline is not None and chars else None
        if measure == "coded" and ideal:
            row["overhead_percent"] = (8 * coded / ideal - 1) * 100
        ci = row.pop("_ci_ideal", None)
        if ci is not None and headline is not None and row["ideal_bits_per_byte"] is not None:
            shift = headline - row["ideal_bits_per_byte"]
            row["bits_per_byte_ci95_low"] = ci[0] + shift
            row["bits_per_byte_ci95_high"] = ci[1] + shift
            row["ci_warning"] = stats.interval_warning(row.get("n_pieces"))
    row.pop("_ci_ideal", None)
    row["encode_kB_per_s"] = _div(n / 1000 if n is not None else None, row.get("encode_seconds"))
    row["decode_kB_per_s"] = _div(n / 1000 if n is not None else None, row.get("decode_seconds"))
    if measure != "baseline":
        row["tokens_per_s"] = _div(row.get("n_tokens"), row.get("encode_seconds"))
    row.setdefault("schema_version", SCHEMA_VERSION)
    unknown = set(row) - set(COLUMN_NAMES)
    if unknown:
        raise ValueError(f"row has columns outside the schema: {sorted(unknown)}")
    return {name: _clean(row.get(name)) for name in COLUMN_NAMES}


def _clean(value):
    """NaN, pandas' NA and numpy scalars -> None or the plain Python value."""
    if value is None or (not isinstance(value, (list, tuple, dict)) and pd.isna(value)):
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value


# --- CSV: one writer, one validating reader -----------------------------------------------


def _pandas_dtype(dtype: str) -> str:
    return {"str": "string", "int": "Int64", "float": "Float64", "bool": "boolean"}[dtype]


def to_frame(rows: list[dict]):
    frame = pd.DataFrame([{k: r.get(k) for k in COLUMN_NAMES} for r in rows], columns=COLUMN_NAMES)
    return frame.astype({c.name: _pandas_dtype(c.dtype) for c in COLUMNS})


def csv_text(rows_or_frame) -> str:
    """results.csv's text, as write_csv writes it (merge validates it with read_csv before writing)."""
    frame = rows_or_frame if isinstance(rows_or_frame, pd.DataFrame) else to_frame(rows_or_frame)
    return frame.to_csv(index=False, float_format="%.12g", lineterminator="\n")


def write_csv(path: str | os.PathLike, rows_or_frame) -> None:
    """Atomic: a reader (or a crash) sees the previous file or this whole one."""
    with atomic_open(path, "w") as fh:
        fh.write(csv_text(rows_or_frame))


def read_csv(path: str | os.PathLike, text: str | None = None):
    """Read a results.csv (a run directory works too), typed by the schema: THE reader of every tool.

    Anything the writer does not write is refused with one line naming the file, the row and
    the column, before a caller writes anything: an unknown, missing or repeated column, a row
    of the wrong length, a bad number, NaN or infinity, a boolean not spelled True/False, an
    empty required cell, another schema version, a cell key twice, a value no run can produce
    (bench/plausible.py); a file that is not a regular one, or is larger than inputs.MAX_RESULTS_BYTES.
    Other empty cells (failed rows, baselines, optional columns) load as NA. `text`: the file's
    contents, checked as if they were at `path` (merge's rows, before it writes them there).
    """
    path = Path(path)
    if text is None and path.is_dir():
        path = path / "results.csv"
    header, rows, lines = _read_rows(path, text)
    header, rows = migrations.to_current(path, header, rows, SCHEMA_VERSION)
    _check_header(path, header, rows)
    frame = pd.DataFrame(rows, columns=header, dtype=object).reindex(columns=COLUMN_NAMES)
    problems = [(row, i, what) for i, c in enumerate(COLUMNS) for row, what in _column_problems(frame, c)]
    problems = problems or [(row, 0, what) for row, what in plausible.problems(frame)]  # values, once they parse
    if problems:
        row, _, what = min(problems)  # the earliest in the file
        raise BpcError(f"{path}: row {row + 1} (line {lines[row]}), column {what}")
    return pd.DataFrame({c.name: _typed(frame[c.name], c.dtype) for c in COLUMNS}, index=frame.index)


def _read_rows(path: Path, text: str | None) -> tuple[list[str], list[list[str]], list[int]]:
    """Header, data rows (text, "" = empty) and the line each data row starts on."""
    try:  # a regular file within its limit (a FIFO or /dev/zero would block or grow without end)
        text = inputs.read_text(path, inputs.MAX_RESULTS_BYTES) if text is None else text
    except FileNotFoundError:
        raise BpcError(f"no results found: {path}") from None
    rows, lines, end = [], [], 0
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        for row in reader:
            if row:  # a blank line holds no row
                rows.append(row)
                lines.append(end + 1)
            end = reader.line_num
    except csv.Error as exc:
        raise BpcError(f"{path}: line {reader.line_num + 1}: cannot read results: {exc}") from None
    if not rows:
        raise BpcError(f"{path}: empty file, not a bpcbench results.csv")
    header = rows[0]
    for n, (row, line) in enumerate(zip(rows[1:], lines[1:]), start=1):
        if len(row) != len(header):
            where = f"{path}: row {n} (line {line})"
            if len(row) < len(header):
                raise BpcError(f"{where}, column {header[len(row)]}: missing (the row ends after {len(row)} "
                               f"of {len(header)} fields; truncated?)")
            raise BpcError(f"{where}: {len(row)} fields, but the header has {len(header)}")
    return header, rows[1:], lines[1:]


def _check_header(path: Path, header: list[str], rows: list[list[str]]) -> None:
    """Exactly the schema's columns, each once (in any order)."""
    where = f"{path}: header (line 1), column"
    for i, name in enumerate(header):
        if name not in COLUMN_NAMES:
            raise BpcError(f"{where} {name!r}: unknown (not in results schema version {SCHEMA_VERSION})")
        if name in header[:i]:
            raise BpcError(f"{where} {name}: given twice")
    missing = [c for c in COLUMN_NAMES if c not in header]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise BpcError(f"{where} {missing[0]}{more}: missing (not a bpcbench results.csv of schema version "
                       f"{SCHEMA_VERSION}?)")


# ASCII digits only: Python's int() and float() also take '٣', '1_000' and ' 2 ', which no writer writes
_SPELLING = {"int": (r"-?[0-9]{1,18}", "not an integer"), "bool": (r"True|False", "not True or False")}
_FLOAT = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]{1,4})?")


def _column_problems(frame, c: Column) -> list[tuple[int, str]]:
    """(row, 'column: what') of the first bad cell of column c, or nothing."""
    cells = frame[c.name]
    filled = cells != ""
    checks = []  # (bad rows, why), in the order they are reported for one cell
    if c.name in REQUIRED_COLUMNS:
        checks.append((~filled, "empty, but every row has one"))
    if c.dtype in _SPELLING:
        pattern, why = _SPELLING[c.dtype]
        checks.append((filled & ~cells.str.fullmatch(pattern).astype(bool), why))
    elif c.dtype == "float":
        checks.append((filled & ~np.isfinite(cells.map(_number).astype(float)), "not a finite number"))
    if c.name == "schema_version":
        checks.append((filled & (cells != str(SCHEMA_VERSION)), f"not schema version {SCHEMA_VERSION}"))
    if c.name == "cell_key":
        checks.append((filled & cells.duplicated(), "a cell key already in row {first}"))
    found = [(int(np.argmax(bad.to_numpy())), k, why) for k, (bad, why) in enumerate(checks) if bad.any()]
    if not found:
        return []
    row, _, why = min(found)
    first = int(np.argmax((cells == cells.iloc[row]).to_numpy())) + 1
    return [(row, f"{c.name}: {cells.iloc[row]!r} is {why.format(first=first)}")]


def _number(text: str) -> float:
    """A float as the writer spells it (%.12g), else NaN (refused as not a finite number)."""
    return float(text) if _FLOAT.fullmatch(text) else math.nan


def _typed(cells, dtype: str):
    """Validated text cells -> the schema's pandas dtype, "" -> NA."""
    cells = cells.where(cells != "")
    if dtype == "int":
        cells = cells.map(int, na_action="ignore")
    elif dtype == "float":
        cells = cells.map(float, na_action="ignore")
    elif dtype == "bool":
        cells = cells.map({"True": True, "False": False}.get, na_action="ignore")
    return cells.astype(_pandas_dtype(dtype))


# --- the schema as Markdown --------------------------------------------------------------


def schema_markdown() -> str:
    lines = [
        "# results.csv schema",
        "",
        "<!-- generated by `python -m bpcbench.bench.results > docs/results-schema.md`; edit src/bpcbench/bench/results.py -->",
        "",
        f"Schema version {SCHEMA_VERSION} (older versions are read too: see the end). One row per (model, corpus, codec, policy, context) cell of a bench",
        "matrix; `bpcbench bench` writes it to `results/<run-id>/results.csv` (UTF-8, comma-separated,",
        "header row, empty field = no value).",
        "",
        "**Headline:** `bits_per_byte` — bits of output per byte of the input the row measured. For a "
        "`coded` or `baseline` row it is 8 × the size of the complete file that decompresses to the",
        "input, divided by `corpus_bytes`; for an `ideal` row it is the cross-entropy of the model on",
        "the input (a bound, no file). Lower is better; 8 means no compression.",
        "",
        "A cell whose round trip failed has `roundtrip_ok` = False and empty size columns; a cell "
        "that raised has its message in `error`. Neither is ever shown as a result.",
        "",
        "`report`, `compare`, `merge` and `nightly` read the file through one validating reader. It "
        "refuses, in one line that names the file, the row and the column: a number that does not",
        "parse, NaN or infinity, a boolean not written `True`/`False`, a `cell_key` twice, an unknown",
        "or missing column, or an empty cell in a column every row fills:",
        ", ".join(f"`{c}`" for c in REQUIRED_COLUMNS) + ".",
        "",
        "Units: bytes are 8-bit bytes; kB = 1000 bytes; MiB = 2^20 bytes; s = wall-clock seconds.",
        "",
        "| column | type | unit | meaning |",
        "|---|---|---|---|",
    ]
    for c in COLUMNS:
        lines.append(f"| `{c.name}` | {c.dtype} | {c.unit} | {c.doc} |")
    lines += [
        "",
        "## Derived numbers in summary.md",
        "",
        "* **all-in size** = `container_bytes` + `model_file_bytes` (the Large Text Compression",
        "  Benchmark rule: the decompressor's size counts). For ideal rows, `ideal_bits` / 8 is used.",
        "* **break-even input size** against zstd-22-long = 8 × `model_file_bytes` /",
        "  (bits_per_byte of zstd-22-long − bits_per_byte of the model): the input size above which",
        "  the model's all-in size is smaller; `never` if the model is not better per byte.",
        "* **Pareto-best**: no other real codec (coded or baseline) on the same input is both "
        "smaller and faster to compress.",
        "* **saved by the weights** = bits_per_byte of zstd-19 − the model's (`llm:<model>`); **saved by the "
        "file's repetitions** = the model's − the same model's with the match model mixed in",
        "  (`llm+match:<model>`, same view, measure, policy and context): the table after the overview "
        "and bpb_split.png, when a run has both rows.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(schema_markdown())
