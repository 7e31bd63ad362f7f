"""Writing the data to stdout fails in one line: /dev/full, a closed stdout, a reader that went away."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ARGS = ["--context", "16", "--width", "8", "--threads", "1", "-q"]
DECODE_ARGS = ["--threads", "1", "-q"]
pytestmark = pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")


def bpcbench(*argv, **kw):
    return subprocess.run([sys.executable, "-m", "bpcbench", *map(str, argv)], capture_output="stdout" not in kw,
                          **({"stderr": subprocess.PIPE} if "stdout" in kw else {}), **kw)


@pytest.fixture
def packed(tmp_path, tiny_model_path):
    src = tmp_path / "in.txt"
    src.write_bytes(b"some text for stdout " * 20)
    assert bpcbench("compress", src, "-m", tiny_model_path, "--no-fallback", *ARGS).returncode == 0
    return src, tmp_path / "in.txt.bpcz"


def one_line(err: bytes) -> str:
    lines = [ln for ln in err.decode().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in lines[0] and "Exception ignored" not in lines[0], err
    return lines[0]


@pytest.mark.parametrize("command", ["compress", "decompress"])
def test_stdout_on_a_full_disk_is_one_line(packed, tiny_model_path, command):
    src, args = (packed[0], ARGS) if command == "compress" else (packed[1], DECODE_ARGS)
    with open("/dev/full", "wb") as full:
        r = bpcbench(command, src, "-o", "-", "-m", tiny_model_path, *args, stdout=full)
    assert r.returncode == 2
    assert one_line(r.stderr) == "bpcbench: error: cannot write to stdout: No space left on device"


@pytest.mark.parametrize("command", ["compress", "decompress"])
def test_a_closed_stdout_is_refused_before_the_work(packed, tiny_model_path, command):
    src, args = (packed[0], ARGS) if command == "compress" else (packed[1], DECODE_ARGS)
    r = subprocess.run([sys.executable, "-m", "bpcbench", command, str(src), "-o", "-", "-m", str(tiny_model_path),
                        *args], stderr=subprocess.PIPE, preexec_fn=lambda: os.close(1))
    assert r.returncode == 2
    assert one_line(r.stderr) == "bpcbench: error: stdout is closed; use -o FILE"


def test_json_printed_onto_a_full_disk_is_one_line(tiny_model_path):
    with open("/dev/full", "wb") as full:
        r = bpcbench("models", tiny_model_path, "--json", stdout=full)
    assert r.returncode == 2
    assert "No space left on device" in one_line(r.stderr)


def test_a_reader_that_goes_away_ends_quietly(packed, tiny_model_path):
    proc = subprocess.Popen([sys.executable, "-m", "bpcbench", "decompress", str(packed[1]), "-o", "-", "-m",
                             str(tiny_model_path), *DECODE_ARGS], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # before a byte is read: the write meets a broken pipe
    assert proc.wait(timeout=60) == 1
    assert proc.stderr.read() == b""
