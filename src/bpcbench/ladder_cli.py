"""`bpcbench ladder`: argument parsing for the quantization ladder; the work is in ladder.py.

    bpcbench ladder BASE.gguf --levels Q8_0,Q4_K_M,Q2_K --corpora alice29 --max-bytes 20000
    bpcbench ladder smollm2-135m --reexpand          # a quantized base, widened to F16 first
    bpcbench ladder --config bench/ladder.toml       # what `make ladder` runs
"""

from __future__ import annotations

import argparse
import sys


def register(sub) -> None:
    from .quantize import DEFAULT_LEVELS

    p = sub.add_parser(
        "ladder",
        help="quantize one base GGUF to many levels and measure bits/byte, KL divergence and speed of each",
        description="Quantize one base GGUF with llama.cpp's quantizer to each level, evaluate base and level "
                    "side by side on the same corpora, and write ladder.csv, ladder.md, ladder.png and ladder.json.",
    )
    p.add_argument("base", nargs="?",
                   help="F16/BF16/F32 GGUF or registry name; a quantized one needs --reexpand")
    p.add_argument("--levels", help=f"comma-separated levels (default {','.join(DEFAULT_LEVELS)})")
    p.add_argument("--imatrix", help="importance matrix from llama-imatrix (GGUF or legacy .dat format)")
    p.add_argument("--corpora", nargs="+",
                   help="corpus names, groups or files, space- or comma-separated (default alice29)")
    p.add_argument("--max-bytes", type=int, dest="max_bytes", help="measure only this prefix of each corpus")
    p.add_argument("--chunk-tokens", type=int, dest="chunk_tokens", help="maximum tokens per chunk (default 512)")
    p.add_argument("--threads", type=int, help="CPU threads for llama.cpp")
    p.add_argument("--coded-bytes", type=int, dest="coded_bytes",
                   help="per level, also compress and decompress this prefix of the first corpus (default 0: off)")
    p.add_argument("--reexpand", action="store_true", default=None,
                   help="the base is quantized: widen it to F16 first (the ladder then measures requantization)")
    p.add_argument("--out", help="run directory (default results/ladder-<UTC timestamp>)")
    p.add_argument("--config", help="TOML file with a [ladder] table (bench/ladder.toml); options given here win")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=cmd_ladder)


def _split(values) -> list[str]:
    out = []
    for v in values if isinstance(values, (list, tuple)) else [values]:
        out += [s.strip() for s in str(v).split(",") if s.strip()]
    return out


def cmd_ladder(args: argparse.Namespace) -> int:
    from . import ladder

    settings = ladder.load_config(args.config) if args.config else {}
    for key in ("base", "levels", "imatrix", "corpora", "max_bytes", "chunk_tokens", "threads",
                "coded_bytes", "reexpand", "out"):
        value = getattr(args, key, None)
        if value is not None:
            settings[key] = value
    out = settings.pop("out", None)
    for key in ("levels", "corpora"):
        if key in settings:
            settings[key] = _split(settings[key])
    cfg = ladder.LadderConfig(**{k: v for k, v in settings.items()}).check()
    out_dir = out or ladder.default_out_dir()

    quiet = args.quiet
    log = (lambda msg: None) if quiet else (lambda msg: print(f"ladder: {msg}", file=sys.stderr, flush=True))
    bar = None
    if not quiet and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=None, desc="ladder", unit="tok", leave=False, file=sys.stderr, dynamic_ncols=True)
    try:
        result = ladder.run_ladder(cfg, log=log, progress=bar.update if bar else None)
    finally:
        if bar is not None:
            bar.close()
    paths = ladder.write_outputs(result, out_dir)
    print(paths["md"].read_text(encoding="utf-8"))
    log(f"{result.meta['wall_seconds']:.0f} s; wrote {', '.join(str(p) for p in paths.values())}")
    return 0
