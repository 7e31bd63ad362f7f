"""The bench matrix format: its description (FORMAT) and the one table of its keys, what the
validator (matrix.py) accepts and what docs/matrix.md shows
(`python -m bpcbench.bench.matrix_keys > docs/matrix.md`)."""

from __future__ import annotations

import sys
from dataclasses import replace

from bpcbench import defaults
from bpcbench.baselines import BASELINES
from bpcbench.codec import mixing, session
from bpcbench.codec.session import POLICIES as CODED_POLICIES
from bpcbench.llama.lanes import MAX_LANES
from bpcbench.models import KNOWN_MODELS
from bpcbench.schema import Key

FORMAT = """
A user edits models, corpora, context lengths and prefix sizes here, never in code:

```toml
[run]
name = "quick"                      # part of the run id: results/<UTC time>-<name>/
models = ["smollm2-135m"]           # registry names or GGUF paths
corpora = ["alice29", "iso3166-1"]  # manifest names, groups ("canterbury", "all") or files
baselines = "all"                   # or a list: ["gzip-9", "zstd-22-long"]; [] for none
measure = "ideal"                   # what every model × corpus gets: "coded", "ideal", "none"
policy = "lanes"                    # or chunks; ideal only: llama-perplexity, lm-eval-rolling; a list: each
context = [2048]                    # a list is a context sweep: one cell per value (default: the model's)
max_bytes = 20000                   # measure a prefix of each corpus (0 = the whole file)

[[llm]]                             # overrides for some models × corpora, later tables win
models = ["smollm2-135m"]           # default: every model of [run]
corpora = ["alice29"]               # default: every corpus of [run]
measure = "coded"
```

Cells:

* `measure = "coded"`: compress, decompress, compare bytes (the real codec);
* `measure = "ideal"`: cross-entropy only (the number a coder approaches, no file);
* `measure = "baseline"`: every listed baseline on every (corpus, prefix) that any
  model cell measures, so each table compares equal bytes (and on the [run] prefix of
  a [run] corpus that no model measures).

Everything is validated before anything runs: an unknown key, a value of the wrong type or out
of range, an unknown model, corpus, group, baseline, measure or policy, a window policy asked
for coded rows, two GGUF files reported under one name, or a matrix with no cells is a
BpcError naming the file and the entry (`m.toml: [[llm]] 2: unknown key 'contxt' (known: ...)`).
"""
ALL_POLICIES = CODED_POLICIES + session.WINDOW_POLICIES  # the window policies score ideal rows only


TOP_LEVEL = {"run": "[run]: one table, required: the run's name, models, corpora and default settings",
              "llm": "[[llm]]: any number of tables, optional: settings for some models × corpora, later tables win",
              "lossy": "[lossy]: one table, optional: rate-distortion curves (`bpcbench lossy`) in the same run"}
_POSITIVE, _NON_NEGATIVE = "a positive integer", "a non-negative integer"
RUN_KEYS = {
    "name": Key(str, "a string", "Letters, digits, `.`, `_`, `-`; the run id is `<UTC time>-<name>`.",
                required=True, llm=False),
    "description": Key(str, "a string", "Free text for readers of the matrix and of the run's copy.", "", llm=False),
    "models": Key(list, "a list of model names or paths",
                  f"Registry names ({', '.join(f'`{m}`' for m in KNOWN_MODELS)})"
                  " or GGUF paths, relative to the matrix file's folder first. [run]'s may be empty (baselines only).",
                  required=True),
    "corpora": Key(list, "a list of corpus names, groups or files", "Names or groups (`all`: every corpus) of the "
                   "manifest, or file paths, relative to the matrix file's folder first. Not empty.", required=True),
    "baselines": Key((list, str), '"all" or a list of baseline names', "Classical compressors run on every measured "
                     f"prefix: {', '.join(f'`{b}`' for b in BASELINES)}; `[]` for none.", "all", llm=False),
    "measure": Key(str, '"coded", "ideal" or "none"', "`coded`: compress, decompress, compare; `ideal`: the model's "
                   "cross-entropy only, no file; `none`: no model cell (an [[llm]] table's way to skip).", "ideal"),
    "policy": Key((list, str), f"one of {', '.join(ALL_POLICIES)} or a list of them", "How the model sees the text "
                  f"(docs/design.md: What the numbers mean); a list measures each. "
                  f"{', '.join(session.WINDOW_POLICIES)}: ideal rows only.", session.DEFAULT_POLICY),
    "mix": Key((list, str), f"one of {', '.join(mixing.MODES)} or a list of them", "What is mixed with the model's "
               "distribution: `match`, an online match model of the text's own repetitions (codec/mixing.py), in rows "
               "named `llm+match:<model>`; a list measures each.", "none"),
    "context": Key((list, int), f"{_POSITIVE} or a list of them", "Tokens of KV window (lanes) or per chunk; a list "
                   f"is a sweep, one cell per value. Unset: {session.DEFAULT_CHUNK_TOKENS} for chunks, else the "
                   f"model's training context, at most {session.DEFAULT_CONTEXT_CAP}."),
    "min_lane_tokens": Key(int, _POSITIVE, "Coded rows: a lane per this many tokens, up to `width` lanes.",
                           session.DEFAULT_MIN_LANE_TOKENS, 1),
    "width": Key(int, _POSITIVE, f"The most lanes (or chunks) evaluated together, at most {MAX_LANES}.",
                 session.DEFAULT_WIDTH, 1),
    "threads": Key(int, f"{_POSITIVE} (0 = default)", "llama.cpp threads; 0: the usable cores other processes leave "
                   "free now (/proc/stat over 0.5 s), 1 to 8 (`measurement_threads`).", 0, 0),
    "n_gpu_layers": Key(int, _NON_NEGATIVE, "Layers llama.cpp offloads to a GPU (99: all).", 0, 0),
    "max_bytes": Key(int, f"{_NON_NEGATIVE} (0 = whole file)", "Measure this prefix of each corpus, cut back to "
                     "a UTF-8 character boundary.", 0, 0),
    "baseline_repeats": Key(int, _POSITIVE, "Timed values per baseline and direction, each >= 0.1 s of "
                            "work, one per round across the run; results.csv: mean, std, n.", 1, 1, llm=False),
    "model_repeats": Key(int, _POSITIVE, "Times a model cell is evaluated, or compressed and decompressed, in rounds "
                         "across the run, each checked to give the same bits; 2+ let `compare` test speed.", 1, 1),
}
LLM_KEYS = {k: replace(key, required=False) for k, key in RUN_KEYS.items() if key.llm}  # [[llm]]: all optional
CELL_SETTINGS = tuple(k for k in LLM_KEYS if k not in ("models", "corpora"))  # what a model cell is measured with
LOSSY_KEYS = {
    "models": Key(list, "a list of model names or paths", "Models whose curves are drawn. Default: [run]'s."),
    "corpora": Key(list, "a list of corpus names, groups or files", "Texts, e.g. a famous and a fresh one. "
                   "Default: [run]'s."),
    "taus": Key(list, "a list of numbers >= 0 (inf allowed)", "Thresholds in bits: a token costing at most tau bits "
                "is replaced by the model's guess; 0 is lossless, inf stores only flags.", list(defaults.LOSSY_TAUS)),
    "max_bytes": Key(int, f"{_NON_NEGATIVE} (0 = whole file)", "The prefix of each text.", defaults.LOSSY_MAX_BYTES, 0),
    "quant": Key(list, "a list of quantization levels", "Also each of these levels of every model (e.g. `Q8_0`, "
                 "`Q2_K`), made as `bpcbench ladder` makes them, cached.", []),
    "context": Key(int, _POSITIVE, "KV window in tokens. Unset: the model's training context, at most "
                   f"{session.DEFAULT_CONTEXT_CAP}.", None, 1),
}


def _default_text(key: Key, title: str) -> str:
    if title == "[[llm]]":
        return "[run]'s"
    if key.required:
        return "required"
    if key.default is None:
        return "unset"
    return f"`{key.default!r}`".replace("'", '"')


def reference_markdown() -> str:
    """docs/matrix.md: matrix.py's docstring, then every key from the tables the validator uses."""
    names = ", ".join(defaults.shipped_names())
    lines = ["# Bench matrix reference", "",
             "<!-- generated by `python -m bpcbench.bench.matrix_keys > docs/matrix.md`; edit "
             "src/bpcbench/bench/matrix_keys.py -->",
             "", f"`bpcbench bench FILE` runs a matrix file, `bpcbench bench NAME` a shipped one ({names}: "
             "`src/bpcbench/data/matrices/`). Corpus and model names, `$BPCBENCH_CORPORA`, `$BPCBENCH_MODEL_PATH` "
             "and the cell cache: [cache.md](cache.md).", "", FORMAT.strip(), "",
             "## Top-level keys", "", "| key | meaning |", "|---|---|",
             *(f"| `{k}` | {d} |" for k, d in TOP_LEVEL.items())]
    for title, keys, note in (
            ("[run]", RUN_KEYS, "Settings here are the defaults of every model × corpus of the run."),
            ("[[llm]]", LLM_KEYS, "Each table applies to its `models` × `corpora` (default: all of [run]'s) and "
                                   "overrides the values before it there (a key it leaves unset keeps them)."),
            ("[lossy]", LOSSY_KEYS, "Curves of the lossy codec, each point a real file decoded and checked; the run "
                                     "writes lossy.csv, lossy.png and the reconstruction at the smallest tau > 0. "
                                     "Threads come from [run]. Not cached; with --shard, shard 1 draws them.")):
        lines += ["", f"## `{title}`", "", note, "", "| key | type | default | allowed values | meaning |",
                  "|---|---|---|---|---|"]
        for k, key in keys.items():
            types = " or ".join({str: "string", int: "integer", list: "array"}[t] for t in
                                (key.types if isinstance(key.types, tuple) else (key.types,)))
            lines.append(f"| `{k}` | {types} | {_default_text(key, title)} | {key.what} | {key.doc} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(reference_markdown())
