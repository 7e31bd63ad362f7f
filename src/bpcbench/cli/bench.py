"""`bpcbench bench | report | compare | merge | nightly`: argument parsing only; the work is in bench/ and report/."""

from __future__ import annotations

import argparse
import sys

from bpcbench import defaults
from bpcbench.cli import options
from bpcbench.errors import BpcError

# The bench modules are imported inside each command: they need the bench extra (pandas,
# matplotlib, scipy), which `bpcbench decompress` (registering these parsers too) runs without.


def lossy_step(plan, out_dir, log) -> list[str]:
    """A matrix's [lossy] table: the curves (lossy/), then their plot (report/); FAILED lines."""
    from bpcbench.lossy import curve
    from bpcbench.report.curves import plot_rate_distortion

    rows = curve.run_table(plan, out_dir, log)
    plot_rate_distortion(rows, out_dir / "lossy.png")
    return curve.failures(rows)


def cmd_bench(args) -> int:
    from pathlib import Path

    from bpcbench.bench import matrix as matrix_mod
    from bpcbench.bench import results
    from bpcbench.bench.runner import run_matrix
    from bpcbench.bench.shard import parse as parse_shard
    from bpcbench.report.markdown import text_tables
    from bpcbench.report.render import render

    if args.quick and args.matrix:
        raise BpcError("give either a MATRIX file or --quick, not both")
    if args.out and (Path(args.out) / "results.csv").exists() and not args.force:
        raise BpcError(f"run directory exists: {args.out} (use -f to overwrite it)")
    m = matrix_mod.load(matrix_mod.QUICK_MATRIX if args.quick else (args.matrix or matrix_mod.DEFAULT_MATRIX))
    overrides = options.model_overrides(args)
    if overrides:
        m = matrix_mod.with_overrides(m, **overrides)
    shard = parse_shard(args.shard) if args.shard else None
    result = run_matrix(m, args.out, use_cache=not args.no_cache,
                        progress=False if args.quiet else None, shard=shard, formats=args.formats,
                        lossy=lossy_step, finish=render, jobs=args.jobs)
    if result.rows:  # lzbench-style tables on stdout; the full tables are in summary.md
        print("\n".join(text_tables(results.to_frame(result.rows))))
    main_file = "summary.md" if "md" in args.formats else "results.csv"
    print(f"{len(result.rows)} cells ({result.n_cached} from cache) in {result.seconds:.1f} s -> "
          f"{result.out_dir}/{main_file}", file=sys.stderr)
    if result.failed:
        print(f"bpcbench: {len(result.failed)} cell(s) FAILED:", file=sys.stderr)
        for line in result.failed:
            print(f"  {line}", file=sys.stderr)
        return 1
    return 0


def cmd_report(args) -> int:
    from pathlib import Path

    from bpcbench.report.render import incomplete_note, render

    for path in render(args.run_dir):
        print(path)
    if (note := incomplete_note(Path(args.run_dir))) is not None:
        print(f"bpcbench: warning: {note}", file=sys.stderr)
    return 0


def cmd_compare(args) -> int:
    from bpcbench.bench.compare import compare_runs, few_cells_warning, format_json, format_text

    c = compare_runs(args.run_a, args.run_b, args.bpb_threshold, args.speed_threshold, args.require_all)
    print(format_json(c) if args.json else format_text(c))
    if (warning := few_cells_warning(c)) is not None:
        print(f"bpcbench: warning: {warning}", file=sys.stderr)
    return 0 if c.ok else 1


def cmd_merge(args) -> int:
    from bpcbench.bench.merge import merge
    from bpcbench.report.render import render

    r = merge(args.out, args.shard_dirs, allow_incomplete=args.allow_incomplete, force=args.force, finish=render)
    for w in r.warnings:
        print(f"bpcbench: warning: {w}", file=sys.stderr)
    print(f"merged shard(s) {', '.join(map(str, r.shards))}: {r.n_rows} cells -> {r.out_dir}/summary.md",
          file=sys.stderr)
    return 0


def cmd_nightly(args) -> int:
    from bpcbench.bench.nightly import run_nightly
    from bpcbench.bench.shard import parse as parse_shard
    from bpcbench.report.curves import plot_history
    from bpcbench.report.render import render

    r = run_nightly(args.matrix, args.out, bpb_threshold=args.bpb_threshold,
                    speed_threshold=args.speed_threshold, shard=parse_shard(args.shard) if args.shard else None,
                    use_cache=args.cache, progress=False if args.quiet else None,
                    overrides=options.model_overrides(args), finish=render, plot_history=plot_history,
                    lossy=lossy_step)
    return r.exit_code


def _add_run_options(p, *, shard: str) -> None:
    """Options every matrix-running command shares."""
    options.add_threads(p, help="override the matrix's llama.cpp thread count")
    options.add_gpu_layers(p, help="override the matrix's GPU offload")
    p.add_argument("--shard", metavar="K/N", help=shard)
    options.add_quiet(p, help="no progress output: neither bars (on a terminal) nor the per-cell lines "
                              "(elsewhere); failed cells are still listed")


def register(sub) -> None:
    """Add the bench subcommands to the main parser's subparsers."""
    p = sub.add_parser("bench", help="run a bench matrix (models × corpora × codecs) into results/<run-id>/",
                       description="Run a bench matrix into a run directory: results.csv (always), results.json, "
                                   "summary.md and plots, env.json and matrix.toml. On a terminal a progress bar "
                                   "shows; elsewhere (cron, CI) one line per finished cell goes to stderr.")
    p.add_argument("matrix", nargs="?",
                   help=f"matrix TOML, or the name of a shipped one: {', '.join(defaults.shipped_names())} "
                        "(default: default)")
    p.add_argument("--quick", action="store_true", help="run the shipped quick matrix (a few minutes)")
    p.add_argument("--out", help="output directory (default results/<UTC time>-<matrix name>/)")
    options.add_force(p, "an existing run directory given with --out")
    options.add_formats(p, csv="results.csv", json="results.json (its rows as records, the same column names)",
                        md="summary.md and the plots")
    p.add_argument("--no-cache", action="store_true",
                   help="measure every cell again (results still refresh the cache)")
    _add_run_options(p, shard="run only shard K of N (1-based), split by estimated cost, the same on every "
                           "machine; default output results/<run-id>-shard-K-of-N/; join the shards with "
                           "`bpcbench merge`")
    options.add_jobs(p)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("report", help="re-render summary.md and plots of a run from its results.csv")
    p.add_argument("run_dir", help="a run directory (results/<run-id>/)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("compare",
                       help="compare two runs cell by cell; exit 1 on a regression, 2 when no cell is in both")
    p.add_argument("run_a", help="old run directory (or its results.csv)")
    p.add_argument("run_b", help="new run directory (or its results.csv)")
    options.add_thresholds(p)
    p.add_argument("--require-all", action="store_true",
                   help="a cell of the old run missing from the new one is a regression (default: compare the "
                        "cells both runs share and list the others)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("merge", help="join the shards of one run (bench --shard K/N) into one run directory",
                       description="Join the shards of one run into one run directory: "
                                   "bpcbench merge --out DIR SHARD_DIR...")
    p.add_argument("--out", required=True, metavar="DIR", help="merged run directory to write (required)")
    p.add_argument("shard_dirs", nargs="+", metavar="SHARD_DIR", help="shard run directories (with shard.json)")
    p.add_argument("--allow-incomplete", action="store_true",
                   help="merge even if some shards are missing (warns; default: refuse)")
    options.add_force(p, "an existing merged results.csv")
    p.set_defaults(func=cmd_merge)

    p = sub.add_parser("nightly", help="run a small matrix into results/nightly/<date>/, append results/history.csv, "
                                       "compare with the last passing night; exit 1 on a regression")
    p.add_argument("matrix", nargs="?", help="matrix TOML or shipped name (default: nightly)")
    p.add_argument("--out", default="results", metavar="DIR",
                   help="directory holding history.csv and nightly/<date>/ (default results)")
    options.add_deprecated_alias(p, "--results-dir", "--out", dest="out")
    options.add_thresholds(p)
    p.add_argument("--cache", action="store_true",
                   help="take unchanged cells from the cell cache (default: measure every cell: a gate on "
                        "replayed timings compares old numbers with old ones); cached speeds are not judged")
    p.add_argument("--no-cache", action="store_true", help=argparse.SUPPRESS)  # the default since 0.3
    _add_run_options(p, shard="run only shard K of N; compared with the same shard of earlier nights")
    p.set_defaults(func=cmd_nightly)
