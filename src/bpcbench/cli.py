"""Command line: parses arguments and calls library functions; no logic of its own.

Every BpcError becomes one line on stderr and a non-zero exit; nothing half-written is
left behind because every output goes through atomic_open.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from . import __version__, bench_cli, ladder_cli
from .atomic import atomic_open
from .errors import BpcError


def _read_input(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise BpcError(f"input not found: {path}") from None
    except IsADirectoryError:
        raise BpcError(f"input is a directory: {path}") from None
    except OSError as e:
        raise BpcError(f"cannot read {path}: {e.strerror}") from None


def _write_output(path: str, data: bytes, force: bool) -> None:
    if path == "-":
        if sys.stdout.isatty():
            raise BpcError("refusing to write binary data to a terminal; use -o FILE or a pipe")
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    if os.path.exists(path) and not force:
        raise BpcError(f"output exists: {path} (use -f to overwrite)")
    try:
        with atomic_open(path, "wb") as fh:
            fh.write(data)
    except OSError as e:
        raise BpcError(f"cannot write {path}: {e.strerror}") from None


def _progress(desc: str, enabled: bool):
    """A token progress bar on stderr, shown only on a terminal."""
    from tqdm import tqdm

    return tqdm(total=0, desc=desc, unit="tok", disable=not enabled or not sys.stderr.isatty(),
                leave=False, file=sys.stderr, dynamic_ncols=True)


def _settings(args):
    from .codec import Settings

    s = Settings()
    for name in ("chunk_tokens", "width", "threads", "n_gpu_layers"):
        value = getattr(args, name, None)
        if value is not None:
            if value < (0 if name == "n_gpu_layers" else 1):
                raise BpcError(f"--{name.replace('_', '-')} must be positive")
            setattr(s, name, value)
    return s


def _print_stats(direction: str, stats, args) -> None:
    d = stats.as_dict()
    if getattr(args, "json", False):
        print(json.dumps({"direction": direction, **d}, indent=1), file=sys.stderr)
        return
    lines = [
        f"{direction}: {d['input_bytes']:,} bytes <-> {d['container_bytes']:,} bytes "
        f"(coded payload {d['coded_bytes']:,} bytes), {d['n_tokens']:,} tokens in {d['n_chunks']} chunks",
    ]
    if direction == "compress":
        lines.append(
            f"  bits/byte: ideal {d['ideal_bits_per_byte']:.4f}  coded {d['coded_bits_per_byte']:.4f}  "
            f"file {d['container_bits_per_byte']:.4f}  overhead {d['overhead_percent']:+.3f}%"
        )
        if d["fallback_bytes"]:
            lines.append(f"  {d['fallback_bytes']:,} bytes coded as single-byte tokens (not tokenizable losslessly)")
    lines.append(
        f"  {d['seconds']:.2f} s, {d['tokens_per_second']:.1f} tokens/s, {d['kb_per_second']:.2f} KB/s, "
        f"peak RSS {d['peak_rss_mb']:.0f} MB"
    )
    print("\n".join(lines), file=sys.stderr)


def cmd_compress(args) -> int:
    from .codec import Session, compress

    data = _read_input(args.input)
    out = args.output or ("-" if args.input == "-" else args.input + ".bpcz")
    if out != "-" and os.path.exists(out) and not args.force:
        raise BpcError(f"output exists: {out} (use -f to overwrite)")
    settings = _settings(args)
    with Session(args.model, n_gpu_layers=settings.n_gpu_layers) as session:
        with _progress("compress", not args.quiet) as bar:
            blob, stats = compress(data, session, settings, progress=bar)
    _write_output(out, blob, args.force)
    if args.stats or args.json:
        _print_stats("compress", stats, args)
    return 0


def cmd_decompress(args) -> int:
    from .codec import Session, decompress, read_header

    blob = _read_input(args.input)
    if args.output:
        out = args.output
    elif args.input == "-":
        out = "-"
    elif args.input.endswith(".bpcz"):
        out = args.input[: -len(".bpcz")]
    else:
        raise BpcError(f"cannot derive an output name from {args.input}: use -o FILE")
    if out != "-" and os.path.exists(out) and not args.force:
        raise BpcError(f"output exists: {out} (use -f to overwrite)")
    header = read_header(blob).header
    settings = _settings(args)
    if args.threads is None:
        settings.threads = header["threads"]
    if args.n_gpu_layers is None:
        settings.n_gpu_layers = header["n_gpu_layers"]
    with Session(args.model or header["model"]["name"], n_gpu_layers=settings.n_gpu_layers) as session:
        with _progress("decompress", not args.quiet) as bar:
            data, stats = decompress(blob, session, settings=settings, force=args.allow_mismatch, progress=bar)
    _write_output(out, data, args.force)
    if args.stats or args.json:
        _print_stats("decompress", stats, args)
    return 0


def cmd_models(args) -> int:
    from .models import KNOWN_MODELS, describe

    specs = args.models or list(KNOWN_MODELS)
    rows = []
    for spec in specs:
        try:
            info = describe(spec)
            rows.append(info.as_dict())
        except BpcError as e:
            if args.models:
                raise
            rows.append({"name": spec, "path": f"(not installed: {e})"})
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    for r in rows:
        if "sha256" not in r:
            print(f"{r['name']:<16} {r['path']}")
            continue
        print(
            f"{r['name']:<16} {r['file_bytes'] / 1e6:7.1f} MB  {r['arch']:<8} vocab {r['vocab_size']:>7,}  "
            f"{r['quant_type']:<8} {r['n_params'] / 1e6:6.1f}M params  sha256 {r['sha256'][:16]}…\n"
            f"{'':<16} {r['path']}"
        )
    return 0


def _add_eval_options(p: argparse.ArgumentParser) -> None:
    from .codec import DEFAULT_CHUNK_TOKENS, DEFAULT_WIDTH

    p.add_argument("--chunk-tokens", type=int, dest="chunk_tokens",
                   help=f"maximum tokens per independent chunk (default {DEFAULT_CHUNK_TOKENS})")
    p.add_argument("--width", type=int, help=f"sequences evaluated in lockstep per llama_decode call (default {DEFAULT_WIDTH})")
    p.add_argument("--threads", type=int, help="CPU threads for llama.cpp (decode: defaults to the encoder's)")
    p.add_argument("--n-gpu-layers", type=int, dest="n_gpu_layers", help="layers to offload to a GPU build (default 0)")


def build_parser() -> argparse.ArgumentParser:
    from .models import DEFAULT_MODEL

    parser = argparse.ArgumentParser(prog="bpcbench", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"bpcbench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("compress", help="compress a file with a language model and an arithmetic coder")
    p.add_argument("input", help="file to compress, or - for stdin")
    p.add_argument("-o", "--output", help="output file (default INPUT.bpcz; stdout for stdin)")
    p.add_argument("-m", "--model", default=DEFAULT_MODEL, help=f"model name or GGUF path (default {DEFAULT_MODEL})")
    p.add_argument("-f", "--force", action="store_true", help="overwrite an existing output")
    p.add_argument("--stats", action="store_true", help="print sizes, bits per byte and speed to stderr")
    p.add_argument("--json", action="store_true", help="print the statistics as JSON to stderr")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _add_eval_options(p)
    p.set_defaults(func=cmd_compress)

    p = sub.add_parser("decompress", help="restore a .bpcz file byte for byte")
    p.add_argument("input", help=".bpcz file, or - for stdin")
    p.add_argument("-o", "--output", help="output file (default INPUT without .bpcz; stdout for stdin)")
    p.add_argument("-m", "--model", help="model name or GGUF path (default: the one recorded in the file)")
    p.add_argument("-f", "--force", action="store_true", help="overwrite an existing output")
    p.add_argument("--allow-mismatch", action="store_true",
                   help="decode even if the llama.cpp build, threads or offload differ (the checksum still guards)")
    p.add_argument("--stats", action="store_true")
    p.add_argument("--json", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("--threads", type=int)
    p.add_argument("--n-gpu-layers", type=int, dest="n_gpu_layers")
    p.set_defaults(func=cmd_decompress)

    p = sub.add_parser("models", help="list known models: file, size, architecture, vocabulary, quantization, sha256")
    p.add_argument("models", nargs="*", help="names or GGUF paths (default: the registry)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models)
    bench_cli.register(sub)
    ladder_cli.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except BpcError as e:
        print(f"bpcbench: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("bpcbench: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1


if __name__ == "__main__":
    sys.exit(main())
