"""What a ladder runs: LadderConfig, the [ladder] table of a TOML file, and options over it.

The order of precedence is one rule, `merged`: command-line values that were given win over
the TOML table, which wins over the defaults below. With neither a base nor a config file the
shipped config (data/matrices/ladder.toml, what `make ladder` runs) is read. The context
policy and its window default to the codec's own (bpcbench.codec.session): lanes, a window of
the model's training context capped at 2048 tokens (context None), sliding by a quarter.

>>> cfg, out = merged(None, {"base": "base-f16.gguf", "levels": "q8_0", "corpora": ["alice29,lcet10"],
...                          "max_bytes": 4000, "out": "results/demo"})
>>> cfg.levels, cfg.corpora, cfg.max_bytes, (cfg.policy, cfg.context, cfg.discard), str(out)
(['Q8_0'], ['alice29', 'lcet10'], 4000, ('lanes', None, None), 'results/demo')
>>> shipped, _ = merged(None, {})
>>> shipped.base, shipped.reexpand, len(shipped.levels)
('smollm2-135m', True, 10)
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from bpcbench import defaults, quantize
from bpcbench.codec import mixing
from bpcbench.codec.session import (
    DEFAULT_MIN_LANE_TOKENS,
    DEFAULT_POLICY,
    POLICIES,
    Settings,
)
from bpcbench.errors import BpcError
from bpcbench.llama.binding import default_threads
from bpcbench.llama.lanes import check_window, default_discard
from bpcbench.schema import Key, check_table

DEFAULT_CORPORA = ("alice29",)

# What a [ladder] table may hold ("out" is the run directory), with the ranges LadderConfig.check
# holds every value to, from a file, the command line or code alike.
CONFIG_KEYS = {
    "base": Key(str, "a model name or GGUF path"),
    "levels": Key((list, str), "a list of quantization levels"),
    "corpora": Key((list, str), "a list of corpus names, groups or files"),
    "max_bytes": Key(int, "a non-negative integer (0 = the whole file)", minimum=0),
    "policy": Key(str, f"a context policy ({' or '.join(POLICIES)})"),
    "context": Key(int, "a positive integer (lanes: KV window, BOS included; chunks: tokens per chunk)", minimum=1),
    "discard": Key(int, "a positive integer (lanes: tokens dropped when the window slides)", minimum=1),
    "min_lane_tokens": Key(int, "a positive integer (the coded check's lanes)", minimum=1),
    "threads": Key(int, "a positive integer", minimum=1),
    "reexpand": Key(bool, "true or false"),
    "imatrix": Key(str, "an importance matrix file"),
    "coded_bytes": Key(int, "a non-negative integer (0 = no coded check)", minimum=0),
    "include_source": Key(bool, "true or false"),
    "mix": Key(str, f"a mix mode ({' or '.join(mixing.MODES)}): also score each level with it mixed in, "
                    "for mix_delta_bits_per_byte"),
    "out": Key(str, "a run directory"),
}


def _half_the_cores() -> int:
    """Per model: base and level decode at the same time, one core each on a 2-core machine."""
    return max(1, default_threads() // 2)


@dataclass
class LadderConfig:
    base: str = ""
    levels: list[str] = field(default_factory=lambda: list(quantize.DEFAULT_LEVELS))
    corpora: list[str] = field(default_factory=lambda: list(DEFAULT_CORPORA))
    max_bytes: int = 0  # measure a prefix of each corpus (take_prefix); 0 = the whole file
    policy: str = DEFAULT_POLICY  # "lanes" or "chunks", as the codec (bpcbench.codec.session)
    context: int | None = None  # None: the model's default (Settings.resolved)
    discard: int | None = None  # lanes only; None: context // 4
    min_lane_tokens: int = DEFAULT_MIN_LANE_TOKENS  # the coded check's lanes; scoring is one lane
    threads: int = field(default_factory=_half_the_cores)  # per model; two run at once
    reexpand: bool = False  # widen a quantized base to F16 first
    imatrix: str | None = None
    coded_bytes: int = 0  # real compress + decompress round trip on this prefix, per level
    include_source: bool = True  # with reexpand: also measure the file the base came from
    # also score every level with this mixed in (codec/mixing.py) on the same logits, for the gain from mixing
    # (mix_delta_bits_per_byte); its bits_per_byte and the coded check stay the level alone. Off by default:
    # the mixed scoring costs host time on every token
    mix: str = "none"
    cache_dir: str | None = None

    def check(self) -> "LadderConfig":
        if not self.base:
            raise BpcError("no base model: give BASE.gguf (or a registry name), or --config FILE")
        self.levels = quantize.parse_levels(self.levels)
        self.corpora = _names(self.corpora)
        if not self.corpora:
            raise BpcError("no corpora given")
        given = {k: getattr(self, k) for k in CONFIG_KEYS if k != "out" and getattr(self, k) is not None}
        check_table(given, CONFIG_KEYS, "ladder")  # None: the default (context, discard, imatrix)
        self._check_policy()
        if self.imatrix and not Path(self.imatrix).is_file():
            raise BpcError(f"importance matrix not found: {self.imatrix}")
        return self

    def _check_policy(self) -> None:
        if self.mix not in mixing.MODES:
            raise BpcError(f"unknown mix mode {self.mix!r} (known: {', '.join(mixing.MODES)})")
        if self.policy not in POLICIES:
            raise BpcError(f"unknown policy {self.policy!r} (known: {', '.join(POLICIES)})")
        if self.policy == "chunks" and self.discard is not None:
            raise BpcError("discard applies to the lanes policy only (chunks never slide)")
        if self.policy == "lanes" and self.context is not None:
            check_window(self.context, self.discard or default_discard(self.context))

    def settings(self) -> Settings:
        """The codec settings every evaluation of this ladder runs under (scoring and coded check);
        `.resolved(model)` fills in the model's default context and discard."""
        return Settings(policy=self.policy, context=self.context, min_lane_tokens=self.min_lane_tokens,
                        discard=self.discard, threads=self.threads)


def _names(values) -> list[str]:
    """'a,b' or ['a', 'b,c'] -> ['a', 'b', 'c']."""
    items = values if isinstance(values, (list, tuple)) else [values]
    return [s.strip() for v in items for s in str(v).split(",") if s.strip()]


def load_table(path: str | os.PathLike) -> dict:
    """The [ladder] table of a TOML file (or of a shipped one, by name), keys and types checked."""
    path = Path(path)
    if not path.exists() and defaults.shipped(str(path)):
        path = defaults.shipped(str(path))
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BpcError(f"config not found: {path}") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise BpcError(f"{path}: cannot read config: {e}") from None
    table = doc.get("ladder")
    if not isinstance(table, dict):
        raise BpcError(f"{path}: no [ladder] table")
    return dict(check_table(table, CONFIG_KEYS, f"{path}: [ladder]"))


def merged(config: str | os.PathLike | None, options: Mapping) -> tuple[LadderConfig, Path]:
    """The checked LadderConfig and the run directory: `options` that are not None over the
    [ladder] table of `config` (the shipped ladder.toml when there is neither config nor base)."""
    given = {k: v for k, v in options.items() if v is not None}
    unknown = sorted(set(given) - set(CONFIG_KEYS) - {f.name for f in fields(LadderConfig)})
    if unknown:
        raise TypeError(f"not ladder settings: {', '.join(unknown)}")
    if config is None and not given.get("base"):
        config = defaults.LADDER_CONFIG
    settings = {**(load_table(config) if config is not None else {}), **given}
    out = settings.pop("out", None)
    return LadderConfig(**settings).check(), Path(out) if out else defaults.run_dir("ladder")
