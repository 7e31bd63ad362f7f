"""`bpcbench lossy`: rate-distortion curves of the lossy codec; the work is in bpcbench.lossy.

    bpcbench lossy alice29 pytest-changelog-2026 --max-bytes 2000 --out results/lossy
    bpcbench lossy notes.txt -m gemma3-270m --taus 0,2,8,inf
    bpcbench lossy alice29 pytest-changelog-2026 --quant Q8_0,Q4_K_M,Q2_K --taus 2,8,inf
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from bpcbench import defaults
from bpcbench.cli import options
from bpcbench.models import DEFAULT_MODEL

_TAUS = ",".join(f"{t:g}" for t in defaults.LOSSY_TAUS)  # 0,1,2,4,8,16,inf


def register(sub) -> None:
    p = sub.add_parser("lossy", help="rate-distortion curves: how much of a text the model can rebuild from few bits")
    p.add_argument("texts", nargs="+", help="corpus names, groups or files")
    p.add_argument("-m", "--model", action="append", dest="models",
                   help=f"model name or GGUF path, repeatable (default {DEFAULT_MODEL})")
    p.add_argument("--taus", default=_TAUS,
                   help="thresholds in bits: a token costing at most tau bits is replaced by the model's guess "
                        f"(default {_TAUS}; 0 is lossless)")
    p.add_argument("--max-bytes", type=options.non_negative_int, default=defaults.LOSSY_MAX_BYTES,
                   help="measure this prefix of each text, cut to a UTF-8 boundary "
                        f"(default {defaults.LOSSY_MAX_BYTES}; 0: whole)")
    p.add_argument("--quant", metavar="LEVELS",
                   help="also each of these quantization levels of every model, e.g. Q8_0,Q4_K_M,Q2_K: made by "
                        "llama.cpp's quantizer as `bpcbench ladder` makes them (a quantized model is widened "
                        "to F16 first), cached")
    p.add_argument("--out", help="output directory (default results/<UTC time>-lossy)")
    options.add_context(p)
    options.add_threads(p)
    options.add_quiet(p, help="no progress lines on stderr")
    p.set_defaults(func=cmd_lossy)


def cmd_lossy(args: argparse.Namespace) -> int:
    # imported here: pandas and matplotlib cost seconds that `bpcbench decompress` should not pay
    from bpcbench.codec.session import Settings
    from bpcbench.lossy import curve
    from bpcbench.quantize import parse_levels
    from bpcbench.report.curves import plot_rate_distortion

    taus = curve.parse_taus(args.taus)
    texts = curve.load_texts(args.texts, args.max_bytes)
    out = Path(args.out) if args.out else defaults.run_dir("lossy")
    settings = Settings(**{k: v for k in ("context", "threads") if (v := getattr(args, k)) is not None})
    log = (lambda m: None) if args.quiet else (lambda m: print(f"lossy: {m}", file=sys.stderr, flush=True))
    quant = parse_levels(args.quant) if args.quant else []
    models = curve.model_list(args.models or [DEFAULT_MODEL], quant, args.threads, log)
    rows = curve.run_curves(models, texts, taus, settings, out, log)
    plot_rate_distortion(rows, out / "lossy.png")
    w = max([16, *(len(r["model"]) for r in rows)])
    print(f"{'model':<{w}} {'text':<28} {'tau':>5} {'bits/byte':>9}  " + "  ".join(f"{m:>16}" for m in curve.MEASURES))
    for r in rows:
        tau = "—" if r["tau"] == "" else ("inf" if r["tau"] == math.inf else f"{r['tau']:g}")
        vals = "  ".join(f"{r.get(m, float('nan')):>16.4f}" for m in curve.MEASURES)
        bpb = r["bits_per_byte"] if r["bits_per_byte"] != "" else float("nan")
        print(f"{r['model']:<{w}} {r['corpus'][:28]:<28} {tau:>5} {bpb:>9.4f}  {vals}")
    print(f"wrote {out}/lossy.csv, {out}/lossy.png", file=sys.stderr)
    return 0 if all(r["roundtrip_ok"] for r in rows) else 1
