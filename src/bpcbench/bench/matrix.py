"""Bench matrix: a TOML file naming models × corpora × codecs -> the list of cells to run.

The format, every key and the rules checked before anything runs: matrix_keys.py (FORMAT and
the key tables), rendered into docs/matrix.md.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path

from bpcbench import corpora as corpora_mod
from bpcbench import defaults, models
from bpcbench.baselines import BASELINES
from bpcbench.bench import inputs
from bpcbench.bench.matrix_keys import (
    ALL_POLICIES,
    CELL_SETTINGS,
    LLM_KEYS,
    LOSSY_KEYS,
    RUN_KEYS,
    TOP_LEVEL,
)
from bpcbench.codec import mixing
from bpcbench.codec.session import POLICIES as CODED_POLICIES
from bpcbench.errors import BpcError
from bpcbench.quantize import parse_levels
from bpcbench.schema import check_table
from bpcbench.llama.lanes import MAX_LANES
from bpcbench.models import KNOWN_MODELS
from bpcbench.bench.labels import cell_label

DEFAULT_MATRIX = defaults.MATRICES_DIR / "default.toml"
QUICK_MATRIX = defaults.MATRICES_DIR / "quick.toml"
NIGHTLY_MATRIX = defaults.MATRICES_DIR / "nightly.toml"

MEASURES = ("coded", "ideal")
LLM_MEASURES = MEASURES + ("none",)
BASELINE = "baseline"


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
    repeats: int = 1  # timed values: baseline_repeats or model_repeats
    mix: str = "none"  # what is mixed with the model (codec/mixing.py); named in the codec: llm+match:<model>

    @property
    def is_llm(self) -> bool:
        return self.measure in MEASURES

    def label(self) -> str:
        """labels.cell_label, from what is known before the cell runs (the corpus name, not its size)."""
        return cell_label({"codec": self.codec, "measure": self.measure, "policy": self.policy,
                           "context_tokens": self.context,
                           "corpus_name": os.path.basename(self.corpus), "max_bytes": self.max_bytes})


@dataclass(frozen=True)
class LossyPlan:
    """A [lossy] table: rate-distortion curves drawn in the same run (lossy/curve.py run_curves)."""

    models: list[str]
    corpora: list[str]
    taus: list[float]
    max_bytes: int = defaults.LOSSY_MAX_BYTES
    quant: list[str] = field(default_factory=list)
    context: int | None = None
    threads: int | None = None  # [run]'s; None: measurement_threads


@dataclass
class Matrix:
    path: Path
    name: str
    text: str  # the TOML as read, copied into the run directory
    cells: list[Cell] = field(default_factory=list)
    lossy: LossyPlan | None = None


def model_codec(model: str, mix: str = "none") -> str:
    """`llm:<name>`: the registry name, or a GGUF file's stem (as models.describe names it); `llm+match:<name>`
    with the match model mixed in.

    >>> model_codec("smollm2-135m", "match")
    'llm+match:smollm2-135m'
    """
    name = model if model in KNOWN_MODELS else Path(model).stem
    return f"llm{'' if mix == 'none' else '+' + mix}:{name}"


def codec_model(codec: str) -> tuple[str, str] | None:
    """model_codec read back: (mix, model name) of a model row's codec; None for any other codec.

    >>> codec_model("llm+match:smollm2-135m"), codec_model("llm:gemma3-270m"), codec_model("zstd-19")
    (('match', 'smollm2-135m'), ('none', 'gemma3-270m'), None)
    """
    head, sep, name = str(codec).partition(":")
    mix = "none" if head == "llm" else head.removeprefix("llm+")
    if not sep or not name or not head.startswith("llm") or mix not in mixing.MODES or head == "llm+none":
        return None
    return mix, name


def load(path: str | os.PathLike) -> Matrix:
    """A matrix file, or the name of a shipped one (`bpcbench bench quick`)."""
    path = Path(path)
    if not path.exists() and defaults.shipped(str(path)):
        path = defaults.shipped(str(path))
    try:  # a regular file within its limit: a FIFO named as a matrix would block
        text = inputs.read_text(path)
    except FileNotFoundError:
        raise BpcError(f"bench matrix not found: {path}") from None
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
        self.path, self.text, self.doc, self._manifest = path, text, doc, manifest
        self.base = path.resolve().parent if path.name != "<matrix>" else Path.cwd()

    def fail(self, where: str, message: str) -> BpcError:
        return BpcError(f"{self.path}: {where}: {message}")

    @property
    def manifest(self):
        if self._manifest is None:
            self._manifest = corpora_mod.load_manifest()
        return self._manifest

    # -- validation of single values -------------------------------------------------

    def check_keys(self, where: str, table: object, known: dict) -> dict:
        return check_table(table, known, f"{self.path}: {where}")

    def int_value(self, where: str, key: str, value: int) -> int:
        """An integer setting check_table has already held to its Key's minimum; width also to MAX_LANES."""
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

    def context_list(self, where: str, value) -> list[int]:
        values = [value] if isinstance(value, int) else value
        if not values:
            raise self.fail(where, "context must not be empty")
        for v in values:
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise self.fail(where, f"context entries must be positive integers, got {v!r}")
        return list(dict.fromkeys(values))

    def model(self, where: str, spec: str) -> str:
        return self.named(where, lambda: models.resolve_spec(spec, self.base))

    def corpora(self, where: str, items: list[str]) -> list[str]:
        return self.named(where, lambda: corpora_mod.expand(items, self.manifest, self.base))

    def named(self, where: str, resolve):
        try:
            return resolve()
        except BpcError as exc:
            raise self.fail(where, str(exc)) from None

    # -- the whole document ------------------------------------------------------------

    def parse(self) -> Matrix:
        unknown = sorted(set(self.doc) - set(TOP_LEVEL))
        if unknown:
            raise self.fail("top level", f"unknown key {unknown[0]!r} (expected a [run] table and [[llm]] tables)")
        if "run" not in self.doc:
            raise self.fail("top level", "missing [run] table")
        run = self.check_keys("[run]", self.doc["run"], RUN_KEYS)
        name = run["name"]
        if not name or not all(c.isalnum() or c in "._-" for c in name):
            raise self.fail("[run]", f"name {name!r} must be letters, digits, '.', '_' or '-'")
        models = [self.model("[run] models", m) for m in self.string_list("[run]", "models", run["models"], True)]
        corpora = self.corpora("[run] corpora", self.string_list("[run]", "corpora", run["corpora"]))
        run = {**{k: key.default for k, key in RUN_KEYS.items() if key.default is not None}, **run}
        defaults = {"context": [None], "mix": ["none"], **self.settings("[run]", run)}
        plan = self.model_plan(models, corpora, defaults)
        cells, views = self.model_cells(plan)
        for c in corpora:  # a corpus no model measures still gets its baselines
            if not any(v[0] == c for v in views):
                views[(c, defaults["max_bytes"])] = None
        repeats = self.int_value("[run]", "baseline_repeats", run["baseline_repeats"])
        base_cells = [Cell(measure=BASELINE, codec=b, corpus=c, max_bytes=mb, repeats=repeats)
                      for (c, mb) in views for b in self.baselines(run)]
        lossy = self.lossy(models, corpora, run["threads"])
        if not cells and not base_cells and lossy is None:
            raise self.fail("[run]", "the matrix has no cells (no models with a measure, and no baselines)")
        _check_codec_names(self, cells)
        return Matrix(path=self.path, name=name, text=self.text, cells=base_cells + cells, lossy=lossy)

    def lossy(self, models: list[str], corpora: list[str], threads: int) -> LossyPlan | None:
        """The [lossy] table, validated like the rest (models and corpora default to [run]'s)."""
        if "lossy" not in self.doc:
            return None
        where = "[lossy]"
        table = self.check_keys(where, self.doc["lossy"], LOSSY_KEYS)
        t = {**{k: key.default for k, key in LOSSY_KEYS.items() if key.default is not None}, **table}
        if "models" in table:
            models = [self.model(f"{where} models", m) for m in self.string_list(where, "models", t["models"])]
        if "corpora" in table:
            corpora = self.corpora(f"{where} corpora", self.string_list(where, "corpora", t["corpora"]))
        if not models:
            raise self.fail(where, "no models: list them here or in [run] models")
        if not t["taus"] or any(isinstance(x, bool) or not isinstance(x, (int, float)) or not x >= 0
                                for x in t["taus"]):
            raise self.fail(where, f"taus must be {LOSSY_KEYS['taus'].what}, got {t['taus']!r}")
        quant = self.named(f"{where} quant", lambda: parse_levels(t["quant"])) if t["quant"] else []
        return LossyPlan(models, corpora, sorted({float(x) for x in t["taus"]}), t["max_bytes"], quant,
                         t.get("context"), threads or None)

    def baselines(self, run: dict) -> list[str]:
        baselines = run["baselines"]
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
            table = self.check_keys(where, table, LLM_KEYS)
            t_models = ([self.model(f"{where} models", m) for m in self.string_list(where, "models", table["models"])]
                        if "models" in table else models)
            t_corpora = (self.corpora(f"{where} corpora", self.string_list(where, "corpora", table["corpora"]))
                         if "corpora" in table else corpora)
            if not t_models:
                raise self.fail(where, "no models: list them here or in [run] models")
            override = self.settings(where, table)
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
                if policy not in CODED_POLICIES and s["mix"] != ["none"]:
                    raise self.fail("mix", f"{policy} scores a tool's windows; mixing needs "
                                           f"{' or '.join(CODED_POLICIES)} ({m} on {c})")
                cells += [Cell(measure=s["measure"], codec=model_codec(m, mix), corpus=c, max_bytes=s["max_bytes"],
                               model=m, policy=policy, context=ctx, min_lane_tokens=s["min_lane_tokens"],
                               width=s["width"], threads=s["threads"], n_gpu_layers=s["n_gpu_layers"],
                               repeats=s["model_repeats"], mix=mix)
                          for ctx in s["context"] for mix in s["mix"]]
        return cells, views

    def settings(self, where: str, table: dict) -> dict:
        """The model settings (CELL_SETTINGS) a [run] or [[llm]] table sets, each validated."""
        check = {"measure": self.measure, "policy": self.policy, "context": self.context_list, "mix": self.mix}
        return {k: check[k](where, v) if k in check else self.int_value(where, k, v)
                for k, v in table.items() if k in CELL_SETTINGS}

    def policy(self, where: str, value: str | list) -> list[str]:
        values = [value] if isinstance(value, str) else value
        for v in values or [None]:
            if v not in ALL_POLICIES:
                raise self.fail(where, f"policy must be one of {', '.join(ALL_POLICIES)}, got {v!r}")
        return list(dict.fromkeys(values))

    def mix(self, where: str, value: str | list) -> list[str]:
        values = [value] if isinstance(value, str) else value
        for v in values or [None]:
            if v not in mixing.MODES:
                raise self.fail(where, f"mix must be one of {', '.join(mixing.MODES)}, got {v!r}")
        return list(dict.fromkeys(values))

    def measure(self, where: str, value: str) -> str:
        if value not in LLM_MEASURES:
            raise self.fail(where, f"measure must be {RUN_KEYS['measure'].what}, got {value!r}")
        return value


def _check_codec_names(parser: _Parser, cells: list[Cell]) -> None:
    """Two GGUF files with the same stem would share a codec column: refuse it."""
    seen: dict[str, str] = {}
    for cell in cells:
        other = seen.setdefault(cell.codec, cell.model)
        if other != cell.model:
            raise parser.fail("models", f"{other!r} and {cell.model!r} would both be reported as {cell.codec}; "
                                        "rename one file")


def with_overrides(matrix: Matrix, **settings) -> Matrix:
    """A copy whose model cells use other settings (e.g. threads from the command line)."""
    cells = [replace(c, **settings) if c.is_llm else c for c in matrix.cells]
    return replace(matrix, cells=cells)
