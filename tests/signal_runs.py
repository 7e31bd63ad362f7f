"""SIGTERM/SIGINT at a random moment against `bpcbench compress` and `decompress`, one subprocess each.

Shared by tests/cli/test_signals.py (a few signals per test) and fuzz/signals.py (the 100-signal run).
A run passes when it ends either

* by the signal: exit 143 (SIGTERM) or 130 (SIGINT), exactly one stderr line and no traceback, and its
  folder holds the inputs and nothing else, or the output whole (the signal came after the rename); or
* before the signal came: exit 0, nothing on stderr, the output byte for byte what it must be.

Anything else (a traceback, "Exception ignored", exit 0 after the signal, a crash, a partial output
or a temp file) is a failure, described in one line by `check`.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

TEXT = (b"Alice was beginning to get very tired of sitting by her sister on the bank, and of having "
        b"nothing to do: once or twice she had peeped into the book her sister was reading.\n") * 6
SIGNALS = {signal.SIGTERM: (143, "bpcbench: terminated"), signal.SIGINT: (130, "bpcbench: interrupted")}
ARGS = ["--context", "16", "--width", "8", "--threads", "1", "-q"]


@dataclass
class Case:
    """One command to interrupt: its input files (name -> bytes), argv, output name and expected bytes."""

    name: str
    inputs: dict[str, bytes]
    argv: list[str]
    output: str
    expected: bytes


def cases(model: Path, workdir: Path) -> list[Case]:
    """compress of TEXT, and decompress of TEXT coded by the model (so that decoding loads it)."""
    (workdir / "text").write_bytes(TEXT)
    packed = workdir / "text.bpcz"
    subprocess.run([sys.executable, "-m", "bpcbench", "compress", str(workdir / "text"), "-o", str(packed),
                    "-m", str(model), "--no-fallback", "-f", *ARGS], check=True, capture_output=True)
    return [Case("compress", {"in.txt": TEXT},
                 ["compress", "in.txt", "-o", "out", "-m", str(model), "--no-fallback", *ARGS], "out",
                 packed.read_bytes()),
            Case("decompress", {"in.bpcz": packed.read_bytes()},
                 ["decompress", "in.bpcz", "-o", "out", "-m", str(model), "-t", "1", "-q"], "out", TEXT)]


@dataclass
class Outcome:
    rc: int
    stderr: str
    files: dict[str, bytes]
    seconds: float


def interrupt(case: Case, sig: int, delay: float, folder: Path) -> Outcome:
    """Run `case` in a fresh `folder`, send `sig` after `delay` seconds, wait for the end."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for name, data in case.inputs.items():
        (folder / name).write_bytes(data)
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "bpcbench", *case.argv], cwd=folder,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(delay)
    if proc.poll() is None:
        os.kill(proc.pid, sig)
    _, err = proc.communicate(timeout=120)
    files = {p.name: p.read_bytes() for p in folder.iterdir()}
    return Outcome(proc.returncode, err.decode(errors="replace"), files, time.monotonic() - t0)


def check(case: Case, sig: int, out: Outcome) -> str | None:
    """None when `out` is one of the two good endings (module docstring); else what went wrong."""
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    extra = sorted(set(out.files) - set(case.inputs) - {case.output})
    if extra:
        return f"left behind: {extra}"
    if case.output in out.files and out.files[case.output] != case.expected:
        return f"a partial or wrong output ({len(out.files[case.output])} bytes)"
    if out.rc == 0:
        if lines or case.output not in out.files:
            return f"exit 0 with stderr {lines!r} and output {'present' if case.output in out.files else 'missing'}"
        return None
    code, line = SIGNALS[sig]
    if out.rc != code or lines != [line]:
        return f"exit {out.rc}, stderr {out.stderr[-300:]!r}"
    return None


def campaign(model: Path, workdir: Path, n: int, seed: int, min_delay: float, max_delay: float):
    """`n` signals, alternating cases and drawing signal and delay from Random(seed).
    Yields (case, signal, delay, outcome, problem or None)."""
    rng = random.Random(seed)
    all_cases = cases(model, workdir)
    for i in range(n):
        case = all_cases[i % len(all_cases)]
        sig = rng.choice(list(SIGNALS))
        delay = rng.uniform(min_delay, max_delay)
        out = interrupt(case, sig, delay, workdir / "run")
        yield case, sig, delay, out, check(case, sig, out)
