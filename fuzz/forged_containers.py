"""Forged .bpcz files against the real CLI, one subprocess each: exit code, one line, time, peak RSS.

    python fuzz/forged_containers.py [--model smollm2-135m] [--seconds 2] [--rss-mb 200]

The unit tests (tests/codec/test_hostile.py) check the same cases in-process for their verdicts;
this script measures what each costs, which a unit test should not (timings vary with the
machine). It exits 1 if any case ends otherwise than in one line and exit 2/3/4, or (for the
cases refused from the header alone) takes more than --seconds or --rss-mb; it also checks
that random bytes cost no more than their size plus the header. `make fuzz` runs it.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from forged import field_cases, group_cases, range_cases, ranged, raw_cases
from tiny_gguf import write_tiny_gguf

from bpcbench.codec.compress import compress
from bpcbench.codec.container import HASH_BYTES, Container, Header
from bpcbench.codec.session import Session, Settings

TEXT = b"Alice was beginning to get very tired of sitting by her sister on the bank.\n"


def run_case(blob: bytes, workdir: Path, extra: list[str]) -> tuple[int, str, float, float]:
    """(exit code, stderr, seconds, peak RSS MiB) of one `bpcbench decompress` in its own process.

    Measured by /usr/bin/time: a child forked from this process (which holds a model) would
    report this process's pages as its own peak.
    """
    src, timing = workdir / "case.bpcz", workdir / "time.txt"
    src.write_bytes(blob)
    proc = subprocess.run(["/usr/bin/time", "-o", str(timing), "-f", "%M %e", sys.executable, "-m", "bpcbench",
                           "decompress", str(src), "-o", str(workdir / "out"), "-t", "1", "-q", *extra],
                          stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    rss_kb, seconds = timing.read_text().split()[-2:]
    return proc.returncode, proc.stderr.decode(errors="replace"), float(seconds), int(rss_kb) / 1024


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--rss-mb", type=float, default=200.0)
    args = ap.parse_args()
    with Session(args.model) as session:
        blob, _ = compress(TEXT, session, Settings(threads=1), fallback=False)
        model_path = session.info.path
    cases = {**field_cases(blob), **raw_cases(blob), **group_cases(blob),
             **range_cases(ranged(blob, TEXT, bytes(range(256))))}
    bad = 0
    print("| case | exit | seconds | peak RSS MiB | message |\n|---|--:|--:|--:|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, (forged_blob, message) in cases.items():
            extra = ["-m", model_path] if name.startswith("payload") else []
            code, err, seconds, rss = run_case(forged_blob, Path(tmp), extra)
            lines = [ln for ln in err.splitlines() if ln.strip()]
            # a file that passes every header check loads the model and decodes until its payload
            # is spent: its cost is the model's, reported but not held to the header-only limits
            within = bool(extra) or (seconds <= args.seconds and rss <= args.rss_mb)
            ok = (code in (2, 3, 4) and len(lines) == 1 and re.search(message, lines[0]) is not None
                  and within and not (Path(tmp) / "out").exists())
            bad += not ok
            print(f"| {name} | {code} | {seconds:.2f} | {rss:.0f} | {'ok' if ok else 'FAIL'}: "
                  f"{lines[0][:90] if lines else '(nothing)'} |")
    bad += random_bytes_check()
    bad += streaming_check(args.rss_mb)
    return 1 if bad else 0


def streaming_check(rss_mb: float) -> int:
    """A zstd container of 1 GiB of zeros (a few dozen KiB) decodes in bounded memory: the output
    is written in pieces as it decodes (bpcbench 0.4.0 held it whole: 2.1 GB RSS)."""
    size, piece = 1 << 30, bytes(1 << 24)
    sha, z = hashlib.sha256(), zstandard.ZstdCompressor(level=3).compressobj()
    frame = bytearray()
    for _ in range(size // len(piece)):
        sha.update(piece)
        frame += z.compress(piece)
    frame += z.flush()
    blob = Container(Header("zstd", size, sha.hexdigest()[: 2 * HASH_BYTES]), bytes(frame)).to_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        code, err, seconds, rss = run_case(blob, Path(tmp), [])
        out = Path(tmp) / "out"
        ok = code == 0 and out.exists() and out.stat().st_size == size and rss <= rss_mb
    print(f"zstd container of {len(blob):,} bytes holding 1 GiB of zeros: exit {code}, {seconds:.2f} s, "
          f"peak RSS {rss:.0f} MiB: {'ok' if ok else 'FAIL ' + err.strip()[:200]}")
    return not ok


def random_bytes_check() -> int:
    """Random bytes are stored or zstd-framed: at most input + header + 1 byte. The tiny test
    model (tests/tiny_gguf.py) codes a megabyte in minutes, where SmolLM2 would take hours."""
    bad = 0
    with tempfile.TemporaryDirectory() as tmp, Session(str(write_tiny_gguf(Path(tmp) / "tiny.gguf"))) as session:
        for size in (1 << 10, 64 << 10, 1 << 20):
            data = os.urandom(size)
            blob, st = compress(data, session, Settings(context=64, width=32, min_lane_tokens=1024, threads=1))
            c = Container.from_bytes(blob)
            ok = len(blob) <= size + c.header_bytes + 1
            bad += not ok
            print(f"random {size:,} bytes: container {len(blob):,} ({c.header.method}, header {c.header_bytes}), "
                  f"model alone {st.coded_bytes:,}: {'ok' if ok else 'FAIL'}")
    return bad


if __name__ == "__main__":
    sys.exit(main())
