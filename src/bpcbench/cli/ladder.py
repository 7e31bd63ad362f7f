"""`bpcbench ladder`: argument parsing for the quantization ladder; the work is in bpcbench.ladder.

    bpcbench ladder                                  # the shipped config: what `make ladder` runs
    bpcbench ladder BASE.gguf --levels Q8_0,Q4_K_M,Q2_K --corpora alice29 --max-bytes 20000
    bpcbench ladder smollm2-135m --reexpand          # a quantized base, widened to F16 first
    bpcbench ladder BASE.gguf -c 512 --policy chunks # the old disjoint chunks of ≤512 tokens
    bpcbench ladder --config my-ladder.toml          # a [ladder] table; options given here win
"""

from __future__ import annotations

import argparse
import sys

from bpcbench.cli import options
from bpcbench.codec import mixing
from bpcbench.ladder import config
from bpcbench.quantize import DEFAULT_LEVELS


def register(sub) -> None:
    p = sub.add_parser(
        "ladder",
        help="quantize one base GGUF to many levels and measure bits/byte, KL divergence and speed of each",
        description="Quantize one base GGUF with llama.cpp's quantizer to each level, evaluate base and level "
                    "side by side on the same corpora, and write ladder.csv (always), ladder.json, ladder.md and "
                    "ladder.png (--format). "
                    "With neither BASE nor --config, the shipped ladder config is run.",
    )
    p.add_argument("base", nargs="?",
                   help="F16/BF16/F32 GGUF or registry name; a quantized one needs --reexpand")
    p.add_argument("--levels", help=f"comma-separated levels (default {','.join(DEFAULT_LEVELS)})")
    p.add_argument("--imatrix", help="importance matrix from llama-imatrix (GGUF or legacy .dat format)")
    p.add_argument("--corpora", nargs="+",
                   help=f"corpus names, groups or files, space- or comma-separated "
                        f"(default {','.join(config.DEFAULT_CORPORA)})")
    p.add_argument("--max-bytes", type=options.non_negative_int, dest="max_bytes",
                   help="measure only this prefix of each corpus, cut to a UTF-8 boundary (default 0: whole file)")
    options.add_policy(p)
    options.add_context(p)
    p.add_argument("--discard", type=options.positive_int,
                   help="lanes: tokens dropped after BOS when the window slides (default context // 4)")
    options.add_threads(p, help="CPU threads for llama.cpp, per model (default: half the usable cores, since "
                                "base and level run at once)")
    p.add_argument("--coded-bytes", type=options.non_negative_int, dest="coded_bytes",
                   help="per level, also compress and decompress this prefix of the first corpus (default 0: off)")
    p.add_argument("--mix", choices=mixing.MODES,
                   help="also score each level with this mixed in (match: the codec's match model, on the same "
                        "logits) and write the gain in mix_delta_bits_per_byte (default none: off)")
    p.add_argument("--reexpand", action="store_true", default=None,
                   help="the base is quantized: widen it to F16 first (the ladder then measures requantization)")
    p.add_argument("--out", help="run directory (default results/<UTC time>-ladder)")
    options.add_formats(p, csv="ladder.csv", json="ladder.json (run metadata and the same rows, same column names)",
                        md="ladder.md and ladder.png")
    p.add_argument("--config", help="TOML file with a [ladder] table, or a shipped one's name (ladder); "
                                    "options given here win")
    options.add_quiet(p, help="no progress bar and no log lines")
    p.set_defaults(func=cmd_ladder)


def cmd_ladder(args: argparse.Namespace) -> int:
    # imported here: the bench extra's modules, which `bpcbench decompress` runs without
    from tqdm import tqdm

    from bpcbench.ladder import results
    from bpcbench.ladder.run import run_ladder
    from bpcbench.report.findings import ladder_markdown
    from bpcbench.report.ladder import write_report

    cfg, out_dir = config.merged(args.config, {k: getattr(args, k) for k in config.CONFIG_KEYS if k in args})
    log = (lambda msg: None) if args.quiet else (lambda msg: print(f"ladder: {msg}", file=sys.stderr, flush=True))
    bar = None
    if not args.quiet and sys.stderr.isatty():
        bar = tqdm(total=None, desc="ladder", unit="tok", leave=False, file=sys.stderr, dynamic_ncols=True)
    try:
        result = run_ladder(cfg, log=log, progress=bar.update if bar else None)
    finally:
        if bar is not None:
            bar.close()
    doc = results.document(result)
    paths = results.write_outputs(result, out_dir, args.formats)
    if "md" in args.formats:
        paths.update(write_report(doc, out_dir))
    paths = paths.values()
    print(ladder_markdown(doc))
    log(f"{result.meta['wall_seconds']:.0f} s; wrote {', '.join(str(p) for p in paths)}")
    return 0
