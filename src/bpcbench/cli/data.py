"""`bpcbench cache ls|clear` and `bpcbench corpora ls|verify|add`: argument parsing only.

The work is in bench/cache.py (what lies under the cache root) and corpora.py (the manifest);
docs/cache.md describes both.
"""

from __future__ import annotations

import os
import sys

from bpcbench import corpora, defaults
from bpcbench.errors import BpcError

MIB = 2**20


def _mib(n_bytes: int) -> str:
    return f"{n_bytes / MIB:,.1f}"


def _size(u) -> str:
    return f"{u.entries} entr{'y' if u.entries == 1 else 'ies'}, {_mib(u.bytes)} MiB"


def cmd_cache_ls(args) -> int:
    from bpcbench.bench import cache  # the codec's hashes and versions: only when asked

    root = defaults.cache_root()
    where = "from $BPCBENCH_CACHE" if os.environ.get("BPCBENCH_CACHE") else "default; $BPCBENCH_CACHE moves it"
    print(f"cache root: {root} ({where}{'' if root.is_dir() else '; does not exist'})")
    holds = {k.name: k.holds for k in cache.KINDS}
    rows = cache.usage(root)
    print(f"{'kind':<10} {'entries':>8} {'MiB':>10}  holds")
    for u in rows:
        print(f"{u.kind:<10} {u.entries:>8} {_mib(u.bytes):>10}  "
              f"{holds.get(u.kind, 'not a cache kind: never cleared')}")
    print(f"{'total':<10} {sum(u.entries for u in rows):>8} {_mib(sum(u.bytes for u in rows)):>10}")
    return 0


def cmd_cache_clear(args) -> int:
    from bpcbench.bench import cache

    kinds = cache.kinds_to_clear(args.kinds)
    unconfirmed = [k for k in kinds if k not in cache.DEFAULT_CLEAR]
    if unconfirmed and not args.yes:
        for u in cache.usage():
            if u.kind in kinds:
                print(f"would remove {u.kind}: {_size(u)} ({', '.join(map(str, u.paths)) or 'nothing there'})")
        raise BpcError(f"nothing removed: clearing {', '.join(unconfirmed)} needs --yes")
    for u in cache.clear(kinds):
        print(f"removed {u.kind}: {_size(u)}")
    return 0


def cmd_corpora_list(args) -> int:
    """`corpora ls` and `corpora verify` (args.verify: read every file and check its sha256)."""
    found = corpora.load_manifest(args.manifest)
    table, problems = corpora.report(found, verify=args.verify)
    print(table)
    for problem in problems:
        print(f"bpcbench: error: {problem}", file=sys.stderr)
    if args.verify:
        print(f"{len(found) - len(problems)}/{len(found)} corpora ok")
    else:
        print(f"{len(found)} corpora in {corpora.manifest_path(args.manifest)}")
    return 1 if problems else 0


def cmd_corpora_add(args) -> int:
    corpus, path = corpora.add_entry(args.file, name=args.name, kind=args.kind, source=args.source,
                                     licence=args.licence, note=args.note, groups=args.group,
                                     manifest=args.manifest, copy=args.copy)
    print(f"added {corpus.name} ({corpus.kind}, {corpus.bytes} bytes, sha256 {corpus.sha256[:12]}…, "
          f"{corpus.path}) to {path}")
    return 0


def _add_manifest(p) -> None:
    p.add_argument("--manifest", help=f"corpus manifest (default ${corpora.ENV_VAR}, else the shipped one)")


def register(sub) -> None:
    """Add `cache` and `corpora` (each with its own subcommands) to the main parser's subparsers."""
    p = sub.add_parser("cache", help="list or clear what bpcbench keeps under ~/.cache/bpcbench ($BPCBENCH_CACHE)",
                       description="The cache root holds finished bench cells, models, quantized ladder levels, "
                                   "hash and metadata caches, llama-cpp-python wheels and sdist, llama.cpp tools "
                                   "(docs/cache.md).")
    actions = p.add_subparsers(dest="action", required=True, metavar="{ls,clear}")
    a = actions.add_parser("ls", help="one line per cache kind: entries and size in MiB (2^20 bytes)")
    a.set_defaults(func=cmd_cache_ls)
    a = actions.add_parser("clear", help="remove cached bench cells (default) or the kinds named",
                           description="With no KIND, remove the cached bench cells (the next bench run measures "
                                       "every cell again). Any other kind needs --yes; without it the command "
                                       "only prints what it would remove.")
    a.add_argument("kinds", nargs="*", metavar="KIND",
                   help="cells, metadata, quantized, models, wheels, sdist, tools, or all (every kind but wheels, "
                        "sdist and tools)")
    a.add_argument("--yes", action="store_true", help="really remove kinds other than cells")
    a.set_defaults(func=cmd_cache_clear)

    p = sub.add_parser("corpora", help="list, verify or add corpora of a manifest",
                       description="Corpora are named, checksummed files listed in a manifest.toml (docs/cache.md).")
    actions = p.add_subparsers(dest="action", required=True, metavar="{ls,verify,add}")
    a = actions.add_parser("ls", help="name, kind, bytes, sha256 and groups of every corpus (no file read)")
    _add_manifest(a)
    a.set_defaults(func=cmd_corpora_list, verify=False)
    a = actions.add_parser("verify", help="read every corpus and check its size and sha256; exit 1 on a mismatch")
    _add_manifest(a)
    a.set_defaults(func=cmd_corpora_list, verify=True)
    a = actions.add_parser("add", help="append a checksummed entry for FILE to the manifest",
                           description="Compute FILE's size and sha256 and append a [[corpus]] entry to the "
                                       "manifest, checked by the same rules that read it. FILE must lie under the "
                                       "manifest's folder unless --copy.")
    a.add_argument("file", metavar="FILE", help="the corpus file")
    a.add_argument("--name", required=True, help="short id: letters, digits, '.', '_' or '-'; unique in the manifest")
    a.add_argument("--kind", required=True, help=f"one of {', '.join(corpora.KINDS)}")
    a.add_argument("--source", required=True, help="where the bytes come from (pinned package and path, URL, ...)")
    a.add_argument("--licence", "--license", required=True, help="the file's licence")
    a.add_argument("--note", default="", help="optional remark (encoding, line ends, cut)")
    a.add_argument("--group", action="append", default=[], help="a group bench matrices can name; repeatable")
    a.add_argument("--copy", action="store_true",
                   help="FILE lies elsewhere: copy it to <manifest folder>/<kind>/<file name> first")
    _add_manifest(a)
    a.set_defaults(func=cmd_corpora_add)
