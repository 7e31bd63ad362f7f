"""Bench matrix: a TOML file naming models × corpora × codecs -> the list of cells to run.

A user edits models, corpora, context lengths and prefix sizes here, never in code::

    [run]
    name = "quick"                      # part of the run id: results/<UTC time>-<name>/
    models = ["smollm2-135m"]           # registry names or GGUF paths
    corpora = ["alice29", "iso3166-1"]  # manifest names, groups ("canterbury", "all") or files
    baselines = "all"                   # or a list: ["gzip-9", "zstd-22-long"]; [] for none
    measure = "ideal"                   # what every model × corpus gets: "coded", "ideal", "none"
    policy = "lanes"                    # lanes (the codec's), chunks; ideal only: llama-perplexity, lm-eval-rolling;
                                        # a list measures each
    context = [2048]                    # a list is a context sweep: one cell per value (default: the model's)
    max_bytes = 20000                   # measure a prefix of each corpus (0 = the whole file)

    [[llm]]                             # overrides for some models × corpora, later tables win
    models = ["smollm2-135m"]           # default: every model of [run]
    corpora = ["alice29"]               # default: every corpus of [run]
    measure = "coded"

Cells:
  * ``measure = "coded"``: compress, decompress, compare bytes (the real codec);
  * ``measure = "ideal"``: cross-entropy only (the number a coder approaches, no file);
  * ``measure = "baseline"``: every listed baseline on every (corpus, prefix) that any
    model cell measures, so each table compares equal bytes (and on the [run] prefix of
    a [run] corpus that no model measures).

Everything is validated before anything runs: an unknown key, model, corpus or a value of
the wrong type is a BpcError naming the file and the entry.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path

from bpcbench import corpora as corpora_mod
from bpcbench import models
from bpcbench.baselines import BASELINES
from bpcbench.codec.session import (
    DEFAULT_MIN_LANE_TOKENS,
    DEFAULT_POLICY,
    DEFAULT_WIDTH,
    WINDOW_POLICIES,
)
from bpcbench.codec.session import POLICIES as CODED_POLICIES
from bpcbench.errors import BpcError
from bpcbench.llama.lanes import MAX_LANES
from bpcbench.models import KNOWN_MODELS
from bpcbench.report.labels import cell_label

MATRICES_DIR = Path(__file__).resolve().parent / "matrices"  # package data
DEFAULT_MATRIX = MATRICES_DIR / "default.toml"
QUICK_MATRIX = MATRICES_DIR / "quick.toml"
NIGHTLY_MATRIX = MATRICES_DIR / "nightly.toml"
LADDER_CONFIG = MATRICES_DIR / "ladder.toml"

MEASURES = ("coded", "ideal")
LLM_MEASURES = MEASURES + ("none",)
BASELINE = "baseline"
ALL_POLICIES = CODED_POLICIES + WINDOW_POLICIES  # the window policies score ideal rows only

# key -> (python type(s), description) for the error messages
_RUN_KEYS = {
    "name": (str, "a string"),
    "description": (str, "a string"),
    "models": (list, "a list of model names or paths"),
    "corpora": (list, "a list of corpus names, groups or files"),
    "baselines": ((list, str), '"all" or a list of baseline names'),
    "measure": (str, '"coded", "ideal" or "none"'),
    "policy": ((list, str), '"lanes", "chunks", "llama-perplexity", "lm-eval-rolling" or a list of them'),
    "context": ((list, int), "a positive integer or a list of them"),
    "min_lane_tokens": (int, "a positive integer"),
    "width": (int, "a positive integer"),
    "threads": (int, "a positive integer (0 = default)"),
    "n_gpu_layers": (int, "a non-negative integer"),
    "max_bytes": (int, "a non-negative integer (0 = whole file)"),
    "baseline_repeats": (int, "a positive integer"),
}
_LLM_KEYS = {k: _RUN_KEYS[k] for k in ("models", "corpora", "measure", "policy", "context", "min_lane_tokens", "width",
                                       "threads", "n_gpu_layers", "max_bytes")}
_RUN_REQUIRED = ("name", "models", "corpora")


@dataclass(frozen=True)
class Cell:
    """One row of results.csv: a codec measured on one (prefix of a) corpus."""

    measure: str  # coded | ideal | baseline
    codec: str  # "llm:<model name>" or a baseline name
    corpus: str  # manifest name or resolved file path
    max_bytes: int = 0  # 0 = the whole file
    model: str | None = None  # registry name or resolved GGUF path; None for baselines
    policy: str | None = None
    context: int | None = None  # None: the model's default for the policy
    min_lane_tokens: int | None = None
    width: int | None = None
    threads: int | None = None
    n_gpu_layers: int | None = None
    repeats: int = 1  # baselines: best of this many timings

    @property
    def is_llm(self) -> bool:
        return self.measure in MEASURES

    def label(self) -> str:
        """labels.cell_label, from what is known before the cell runs (the corpus name, not its size)."""
        return cell_label({"codec": self.codec, "measure": self.measure, "policy": self.policy,
                           "context_tokens": self.context,
                           "corpus_name": os.path.basename(self.corpus), "max_bytes": self.max_bytes})


@dataclass
class Matrix:
    path: Path
    name: str
    text: str  # the TOML as read, copied into the run directory
    cells: list[Cell] = field(default_factory=list)


def model_codec(model: str) -> str:
    """`llm:<name>`: the registry name, or a GGUF file's stem (as models.describe names it)."""
    name = model if model in KNOWN_MODELS else Path(model).stem
    return f"llm:{name}"


def shipped(name: str) -> Path | None:
    """A matrix that ships with bpcbench, by name: default, quick, nightly, ladder."""
    path = MATRICES_DIR / f"{name}.toml"
    return path if name and "/" not in name and path.is_file() else None


def load(path: str | os.PathLike) -> Matrix:
    """A matrix file, or the name of a shipped one (`bpcbench bench quick`)."""
    path = Path(path)
    if not path.exists() and shipped(str(path)):
        path = shipped(str(path))
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BpcError(f"bench matrix not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BpcError(f"{path}: cannot read bench matrix: {getattr(exc, 'strerror', None) or exc}") from None
    return loads(text, path)


def loads(text: str, path: str | os.PathLike = "<matrix>", manifest=None) -> Matrix:
    """Parse and validate a matrix; `manifest` (name -> Corpus) defaults to the repository's."""
    path = Path(path)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BpcError(f"{path}: invalid TOML: {exc}") from None
    return _Parser(path, text, doc, manifest).parse()


class _Parser:
    def __init__(self, path: Path, text: str, doc: dict, manifest):
        self.path = path
        self.text = text
        self.doc = doc
        self._manifest = manifest
        self.base = path.resolve().parent if path.name != "<matrix>" else Path.cwd()

    def fail(self, where: str, message: str) -> BpcError:
        return BpcError(f"{self.path}: {where}: {message}")

    @property
    def manifest(self):
        if self._manifest is None:
            self._manifest = corpora_mod.load_manifest()
        return self._manifest

    # -- validation of single values -------------------------------------------------

    def check_keys(self, where: str, table: object, known: dict, required=()) -> dict:
        if not isinstance(table, dict):
            raise self.fail(where, "must be a table")
        unknown = sorted(set(table) - set(known))
        if unknown:
            raise self.fail(where, f"unknown key {unknown[0]!r} (known: {', '.join(known)})")
        missing = [k for k in required if k not in table]
        if missing:
            raise self.fail(where, f"missing key {missing[0]!r}")
        for key, value in table.items():
            types, what = known[key]
            if isinstance(value, bool) or not isinstance(value, types):
                raise self.fail(where, f"{key} must be {what}, got {value!r}")
        return table

    def int_value(self, where: str, key: str, value: int, minimum: int) -> int:
        if value < minimum:
            raise self.fail(where, f"{key} must be >= {minimum}, got {value}")
        if key == "width" and value > MAX_LANES:
            raise self.fail(where, f"width must be <= {MAX_LANES} (llama.cpp's most sequences), got {value}")
        return value

    def string_list(self, where: str, key: str, value: list, allow_empty=False) -> list[str]:
        if not value and not allow_empty:
            raise self.fail(where, f"{key} must not be empty")
        for item in value:
            if not isinstance(item, str) or not item:
                raise self.fail(where, f"{key} entries must be non-empty strings, got {item!r}")
        return list(dict.fromkeys(value))

    def chunk_list(self, where: str, value) -> list[int]:
        values = [value] if isinstance(value, int) else value
        if not values:
            raise self.fail(where, "context must not be empty")
        for v in values:
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise self.fail(where, f"context entries must be positive integers, got {v!r}")
        return list(dict.fromkeys(values))

    # -- names -> things ---------------------------------------------------------------

    def model(self, where: str, spec: str) -> str:
        try:
            return models.resolve_spec(spec, self.base)
        except BpcError as exc:
            raise self.fail(where, str(exc)) from None

    def corpora(self, where: str, items: list[str]) -> list[str]:
        try:
            return corpora_mod.expand(items, self.manifest, self.base)
        except BpcError as exc:
            raise self.fail(where, str(exc)) from None

    # -- the whole document ------------------------------------------------------------

    def parse(self) -> Matrix:
        unknown = sorted(set(self.doc) - {"run", "llm"})
        if unknown:
            raise self.fail("top level", f"unknown key {unknown[0]!r} (expected a [run] table and [[llm]] tables)")
        if "run" not in self.doc:
            raise self.fail("top level", "missing [run] table")
        run = self.check_keys("[run]", self.doc["run"], _RUN_KEYS, _RUN_REQUIRED)
        name = run["name"]
        if not name or not all(c.isalnum() or c in "._-" for c in name):
            raise self.fail("[run]", f"name {name!r} must be letters, digits, '.', '_' or '-'")
        models = [self.model("[run] models", m) for m in self.string_list("[run]", "models", run["models"], True)]
        corpora = self.corpora("[run] corpora", self.string_list("[run]", "corpora", run["corpora"]))
        defaults = {
            "measure": self.measure("[run]", run.get("measure", "ideal")),
            "policy": self.policy("[run]", run.get("policy", DEFAULT_POLICY)),
            "context": self.chunk_list("[run]", run["context"]) if "context" in run else [None],
            "min_lane_tokens": self.int_value("[run]", "min_lane_tokens",
                                              run.get("min_lane_tokens", DEFAULT_MIN_LANE_TOKENS), 1),
            "width": self.int_value("[run]", "width", run.get("width", DEFAULT_WIDTH), 1),
            "threads": self.int_value("[run]", "threads", run.get("threads", 0), 0),
            "n_gpu_layers": self.int_value("[run]", "n_gpu_layers", run.get("n_gpu_layers", 0), 0),
            "max_bytes": self.int_value("[run]", "max_bytes", run.get("max_bytes", 0), 0),
        }
        plan = self.model_plan(models, corpora, defaults)
        cells, views = self.model_cells(plan)
        for c in corpora:  # a corpus no model measures still gets its baselines
            if not any(v[0] == c for v in views):
                views[(c, defaults["max_bytes"])] = None
        repeats = self.int_value("[run]", "baseline_repeats", run.get("baseline_repeats", 1), 1)
        base_cells = [Cell(measure=BASELINE, codec=b, corpus=c, max_bytes=mb, repeats=repeats)
                      for (c, mb) in views for b in self.baselines(run)]
        if not cells and not base_cells:
            raise self.fail("[run]", "the matrix has no cells (no models with a measure, and no baselines)")
        _check_codec_names(self, cells)
        return Matrix(path=self.path, name=name, text=self.text, cells=base_cells + cells)

    def baselines(self, run: dict) -> list[str]:
        baselines = run.get("baselines", "all")
        if isinstance(baselines, str):
            if baselines != "all":
                raise self.fail("[run]", f'baselines must be "all" or a list, got {baselines!r}')
            baselines = list(BASELINES)
        for b in self.string_list("[run]", "baselines", baselines, allow_empty=True):
            if b not in BASELINES:
                raise self.fail("[run] baselines", f"unknown baseline {b!r} (known: {', '.join(BASELINES)})")
        return list(dict.fromkeys(baselines))

    def model_plan(self, models: list[str], corpora: list[str], defaults: dict) -> dict[tuple[str, str], dict]:
        """(model, corpus) -> settings: [run]'s, then each [[llm]] table's overrides, later tables winning."""
        plan: dict[tuple[str, str], dict] = {(m, c): dict(defaults) for m in models for c in corpora}
        tables = self.doc.get("llm", [])
        if not isinstance(tables, list):
            raise self.fail("[llm]", "must be written [[llm]] (an array of tables)")
        for index, table in enumerate(tables, start=1):
            where = f"[[llm]] {index}"
            table = self.check_keys(where, table, _LLM_KEYS)
            t_models = ([self.model(f"{where} models", m) for m in self.string_list(where, "models", table["models"])]
                        if "models" in table else models)
            t_corpora = (self.corpora(f"{where} corpora", self.string_list(where, "corpora", table["corpora"]))
                         if "corpora" in table else corpora)
            if not t_models:
                raise self.fail(where, "no models: list them here or in [run] models")
            override = {}
            for key in ("width", "threads", "n_gpu_layers", "max_bytes"):
                if key in table:
                    override[key] = self.int_value(where, key, table[key], 1 if key == "width" else 0)
            if "measure" in table:
                override["measure"] = self.measure(where, table["measure"])
            if "context" in table:
                override["context"] = self.chunk_list(where, table["context"])
            if "policy" in table:
                override["policy"] = self.policy(where, table["policy"])
            if "min_lane_tokens" in table:
                override["min_lane_tokens"] = self.int_value(where, "min_lane_tokens", table["min_lane_tokens"], 1)
            for m in t_models:
                for c in t_corpora:
                    plan[(m, c)] = {**plan.get((m, c), defaults), **override}
        return plan

    def model_cells(self, plan: dict) -> tuple[list[Cell], dict[tuple[str, int], None]]:
        """The model cells, and the (corpus, prefix) views they measure (baselines run on each)."""
        cells: list[Cell] = []
        views: dict[tuple[str, int], None] = {}
        for (m, c), s in plan.items():
            if s["measure"] == "none":
                continue
            views[(c, s["max_bytes"])] = None
            for policy in s["policy"]:
                if s["measure"] == "coded" and policy not in CODED_POLICIES:
                    raise self.fail("policy", f"{policy} scores ideal rows only; coded rows use "
                                              f"{' or '.join(CODED_POLICIES)} ({m} on {c})")
                cells += [Cell(measure=s["measure"], codec=model_codec(m), corpus=c, max_bytes=s["max_bytes"],
                               model=m, policy=policy, context=ctx, min_lane_tokens=s["min_lane_tokens"],
                               width=s["width"], threads=s["threads"], n_gpu_layers=s["n_gpu_layers"])
                          for ctx in s["context"]]
        return cells, views

    def policy(self, where: str, value: str | list) -> list[str]:
        values = [value] if isinstance(value, str) else value
        for v in values or [None]:
            if v not in ALL_POLICIES:
                raise self.fail(where, f"policy must be one of {', '.join(ALL_POLICIES)}, got {v!r}")
        return list(dict.fromkeys(values))

    def measure(self, where: str, value: str) -> str:
        if value not in LLM_MEASURES:
            raise self.fail(where, f'measure must be "coded", "ideal" or "none", got {value!r}')
        return value


def _check_codec_names(parser: _Parser, cells: list[Cell]) -> None:
    """Two GGUF files with the same stem would share a codec column: refuse it."""
    seen: dict[str, str] = {}
    for cell in cells:
        other = seen.setdefault(cell.codec, cell.model)
        if other != cell.model:
            raise parser.fail("models", f"{other!r} and {cell.model!r} would both be reported as {cell.codec}; rename one file")


def with_overrides(matrix: Matrix, **settings) -> Matrix:
    """A copy whose model cells use other settings (e.g. threads from the command line)."""
    cells = [replace(c, **settings) if c.is_llm else c for c in matrix.cells]
    return replace(matrix, cells=cells)
