"""The command line as a user meets it: round trips through files and pipes, one-line errors, no debris."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cli_lines import one_line, run
from bpcbench.codec.container import Container

ARGS = ["--context", "16", "--width", "8", "--threads", "1", "-q"]  # 1: CI may have one usable core




def test_compress_decompress_files(tmp_path, tiny_model_path, capsys):
    src = tmp_path / "in.txt"
    src.write_bytes(b"hello \xff world, and a line of text long enough to stay text\r\n" * 20)
    assert run("compress", src, "-m", tiny_model_path, "--stats", *ARGS) == 0
    err = capsys.readouterr().err
    assert "bits/byte: ideal" in err and "tokens/s" in err
    packed = tmp_path / "in.txt.bpcz"
    assert packed.exists()
    out = tmp_path / "out.txt"
    assert run("decompress", packed, "-o", out, "-m", tiny_model_path, "-t", "1", "-q") == 0
    assert out.read_bytes() == src.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt", "in.txt.bpcz", "out.txt"]  # no temp files


def test_stdin_stdout_pipe(tmp_path, tiny_model_path):
    data = b"piped data \x00\x01 and text " * 30
    cmd = [sys.executable, "-m", "bpcbench"]
    packed = subprocess.run(cmd + ["compress", "-", "-m", str(tiny_model_path), *ARGS], input=data,
                            capture_output=True, check=True).stdout
    assert packed[:4] == b"BPCZ"
    out = subprocess.run(cmd + ["decompress", "-", "-m", str(tiny_model_path), "-t", "1", "-q"], input=packed,
                         capture_output=True, check=True).stdout
    assert out == data


def test_refuses_to_overwrite_without_force(tmp_path, tiny_model_path, capsys):
    src = tmp_path / "a"
    src.write_bytes(b"abc")
    (tmp_path / "a.bpcz").write_bytes(b"keep me")
    assert run("compress", src, "-m", tiny_model_path, *ARGS) == 2
    assert "output exists" in one_line(capsys.readouterr().err)
    assert (tmp_path / "a.bpcz").read_bytes() == b"keep me"
    assert run("compress", src, "-m", tiny_model_path, "-f", *ARGS) == 0
    assert (tmp_path / "a.bpcz").read_bytes()[:4] == b"BPCZ"


@pytest.mark.parametrize(
    "argv, message, code",
    [
        (["compress", "{tmp}/missing.txt", "-m", "{model}"], "input not found", 2),
        (["compress", "{tmp}/in.txt", "-m", "{tmp}/nope.gguf"], "model not found", 2),
        (["compress", "{tmp}/in.txt", "-m", "{tmp}/in.txt"], "not a GGUF file", 2),
        (["compress", "{tmp}/in.txt", "-m", "{tmp}/truncated.gguf"], "truncated or corrupt", 2),
        (["compress", "{tmp}/in.txt", "-m", "{model}", "--context", "0"], "must be positive", 2),
        (["compress", "{tmp}/in.txt", "-m", "{model}", "--threads", "100000"], "usable core", 2),
        (["compress", "{tmp}/in.txt", "-m", "{model}", "--width", "512"], "more lanes than llama.cpp allows (256)", 2),
        (["decompress", "{tmp}/in.txt", "-o", "{tmp}/out", "-m", "{model}"], "not a bpcbench compressed file", 3),
        (["decompress", "{tmp}/in.txt", "-m", "{model}"], "cannot derive an output name", 2),
    ],
)
def test_bad_input_is_one_line_and_nonzero(tmp_path, tiny_model_path, capsys, argv, message, code):
    (tmp_path / "in.txt").write_bytes(b"some text")
    (tmp_path / "truncated.gguf").write_bytes(tiny_model_path.read_bytes()[:5000])
    argv = [a.format(tmp=tmp_path, model=tiny_model_path) for a in argv]
    assert run(*argv) == code
    line = one_line(capsys.readouterr().err)
    assert line.startswith("bpcbench: error: ") and message in line
    assert not (tmp_path / "out").exists()


def test_corrupt_file_leaves_no_output(tmp_path, tiny_model_path, capsys):
    src = tmp_path / "x"
    src.write_bytes(b"the text to protect " * 10)
    assert run("compress", src, "-m", tiny_model_path, *ARGS) == 0
    blob = bytearray((tmp_path / "x.bpcz").read_bytes())
    blob[len(blob) // 2] ^= 1
    (tmp_path / "bad.bpcz").write_bytes(bytes(blob))
    assert run("decompress", tmp_path / "bad.bpcz", "-m", tiny_model_path, "-q") == 3
    assert "CRC-32" in one_line(capsys.readouterr().err)
    assert not (tmp_path / "bad").exists()
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_models_lists_metadata(tiny_model_path, capsys):
    assert run("models", tiny_model_path, "--json") == 0
    out = capsys.readouterr().out
    assert '"vocab_size": 512' in out and '"arch": "llama"' in out and '"quant_type": "F32"' in out


def test_outputs_get_ordinary_permissions(tmp_path, tiny_model_path):
    src = tmp_path / "p.txt"
    src.write_bytes(b"perm check")
    os.chmod(src, 0o644)
    old = os.umask(0o022)
    try:
        assert run("compress", src, "-m", tiny_model_path, *ARGS) == 0
    finally:
        os.umask(old)
    assert (tmp_path / "p.txt.bpcz").stat().st_mode & 0o777 == 0o644


def test_compressing_a_file_onto_itself_is_refused_even_with_force(tmp_path, tiny_model_path, capsys):
    src = tmp_path / "in.txt"
    src.write_bytes(b"precious")
    assert run("compress", src, "-o", src, "-f", "-m", tiny_model_path, *ARGS) == 2
    assert "is the input file" in one_line(capsys.readouterr().err)
    assert src.read_bytes() == b"precious"


def test_sigterm_mid_write_leaves_no_temp_file(tmp_path, tiny_model_path, capsys, monkeypatch):
    import signal

    from bpcbench import atomic

    src = tmp_path / "in.txt"
    src.write_bytes(b"some text " * 20)
    real_open = atomic.atomic_open

    def killed_while_writing(path, mode="wb"):
        with real_open(path, mode) as fh:
            fh.write(b"half")
            os.kill(os.getpid(), signal.SIGTERM)
            yield fh

    monkeypatch.setattr(atomic, "atomic_open", __import__("contextlib").contextmanager(killed_while_writing))
    monkeypatch.setattr("bpcbench.cli.codec.atomic_open", atomic.atomic_open)
    assert run("compress", src, "-o", tmp_path / "out.bpcz", "-m", tiny_model_path, *ARGS) == 143
    assert "terminated" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt"]  # no output, no .out.bpcz.*.tmp


# --- the model found by its hash --------------------------------------------------------------


@pytest.fixture
def compressed_with_a_path(tmp_path, tiny_model_path):
    """A file compressed with --model PATH; the model then moved and renamed."""
    src = tmp_path / "in.txt"
    src.write_bytes(b"found by hash " * 30)
    assert run("compress", src, "-m", tiny_model_path, "--no-fallback", *ARGS) == 0
    assert Container.from_bytes(Path(f"{src}.bpcz").read_bytes()).header.method == "model"
    models = tmp_path / "models"
    models.mkdir()
    (models / "renamed.gguf").write_bytes(tiny_model_path.read_bytes())
    return src, models


def test_decompress_finds_the_model_in_a_model_dir_even_renamed(compressed_with_a_path, capsys):
    src, models = compressed_with_a_path
    out = src.parent / "out"
    assert run("decompress", f"{src}.bpcz", "-o", out, "--model-dir", models, "-t", "1", "-q") == 0
    assert out.read_bytes() == src.read_bytes()


def test_decompress_finds_the_model_on_the_model_path(compressed_with_a_path, monkeypatch):
    src, models = compressed_with_a_path
    monkeypatch.setenv("BPCBENCH_MODEL_PATH", str(models))
    assert run("decompress", f"{src}.bpcz", "-o", src.parent / "out", "-t", "1", "-q") == 0
    assert (src.parent / "out").read_bytes() == src.read_bytes()


def test_a_model_that_cannot_be_found_names_its_file_and_hash(compressed_with_a_path, tiny_session, capsys,
                                                              monkeypatch):
    src, _ = compressed_with_a_path
    monkeypatch.delenv("BPCBENCH_MODEL_PATH", raising=False)
    assert run("decompress", f"{src}.bpcz", "-o", src.parent / "out", "-t", "1", "-q") == 2
    line = one_line(capsys.readouterr().err)
    assert "'tiny'" in line and tiny_session.info.sha256[:12] in line and "--model PATH" in line


# --- bounded reads, free space, stale temp files, header size in --stats ----------------------------


def test_an_endless_device_is_refused_at_the_input_limit(tmp_path, tiny_model_path, capsys):
    assert run("compress", "/dev/zero", "-o", tmp_path / "z.bpcz", "-m", tiny_model_path,
               "--max-input-bytes", "100000", *ARGS) == 2
    assert "larger than 100,000 bytes (--max-input-bytes)" in one_line(capsys.readouterr().err)
    assert not list(tmp_path.iterdir())


def test_a_full_disk_is_found_before_the_work(tmp_path, tiny_model_path, capsys, monkeypatch):
    import shutil

    src = tmp_path / "in.txt"
    src.write_bytes(b"x" * 5000)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 100, 100))
    monkeypatch.setattr("bpcbench.cli.codec.compress", lambda *a, **k: pytest.fail("compressed anyway"))
    assert run("compress", src, "-m", tiny_model_path, *ARGS) == 2
    assert "not enough disk space" in one_line(capsys.readouterr().err)


def test_stale_temp_files_of_ours_are_removed_on_the_next_write(tmp_path, tiny_model_path):
    import time

    stale, fresh, foreign = (tmp_path / ".bpcbench-old.bpcz.abcd1234.tmp", tmp_path / ".bpcbench-new.x.tmp",
                             tmp_path / ".someone-else.tmp")
    for p in (stale, fresh, foreign):
        p.write_bytes(b"debris")
    two_days_ago = time.time() - 2 * 86400
    for p in (stale, foreign):
        os.utime(p, (two_days_ago, two_days_ago))
    src = tmp_path / "in.txt"
    src.write_bytes(b"some text")
    assert run("compress", src, "-m", tiny_model_path, *ARGS) == 0
    assert not stale.exists() and fresh.exists() and foreign.exists()


def test_stats_report_the_storage_method_and_header_size(tmp_path, tiny_model_path, capsys):
    src = tmp_path / "r.bin"
    src.write_bytes(os.urandom(3000))
    assert run("compress", src, "-m", tiny_model_path, "--stats", *ARGS) == 0
    err = capsys.readouterr().err
    assert "stored as stored, header" in err or "stored as zstd, header" in err
    assert (tmp_path / "r.bin.bpcz").stat().st_size <= 3000 + 40


# --- --json: stdout, results.csv's names; refused where stdout holds the data ----------------------


def test_json_goes_to_stdout_under_the_results_column_names(tmp_path, tiny_model_path, capsys):
    import json

    from bpcbench.bench.results import COLUMN_NAMES

    src = tmp_path / "in.txt"
    src.write_bytes(b"hello json world\n" * 30)
    assert run("compress", src, "-m", tiny_model_path, "--json", "--no-fallback", *ARGS) == 0
    out, err = capsys.readouterr()
    enc = json.loads(out)
    assert "{" not in err
    assert enc["direction"] == "compress" and enc["corpus_bytes"] == 510 and enc["method"] == "model"
    assert enc["container_bytes"] == (tmp_path / "in.txt.bpcz").stat().st_size
    assert enc["bits_per_byte"] == pytest.approx(8 * enc["container_bytes"] / 510)
    assert enc["encode_kB_per_s"] == pytest.approx(510 / 1000 / enc["encode_seconds"])
    own = {"direction", "method", "header_bytes", "container_bits_per_byte", "segment_lanes", "mix",
           "mix_state"}  # not results.csv columns (the codec column names the mix: llm+match:<model>)
    assert set(enc) - own <= set(COLUMN_NAMES), set(enc) - own - set(COLUMN_NAMES)
    for name in ("coded_bytes", "n_tokens", "ideal_bits", "tokens_per_s", "context_tokens", "peak_rss_mb"):
        assert name in enc, name

    assert run("decompress", tmp_path / "in.txt.bpcz", "-o", tmp_path / "back.txt", "-m", tiny_model_path,
               "-t", "1", "-q", "--json") == 0
    dec = json.loads(capsys.readouterr().out)
    assert dec["direction"] == "decompress" and dec["corpus_bytes"] == 510 and "decode_seconds" in dec
    assert set(dec) - own - {"decode_tokens_per_s"} <= set(COLUMN_NAMES)


def test_json_with_the_data_on_stdout_is_refused_before_the_work(tmp_path, tiny_model_path):
    cmd = [sys.executable, "-m", "bpcbench", "compress", "-", "-m", str(tiny_model_path), "--json", *ARGS]
    r = subprocess.run(cmd, input=b"some text", capture_output=True)
    assert r.returncode == 2 and r.stdout == b""
    assert r.stderr.decode().count("\n") == 1 and "--json prints to stdout" in r.stderr.decode()


def test_lane_groups_are_a_compress_flag_the_decoder_follows(tmp_path, tiny_model_path, capsys):
    src = tmp_path / "in.txt"
    src.write_bytes(b"a line of text long enough to give the eight lanes a few tokens each\n" * 12)
    assert run("compress", src, "-m", tiny_model_path, "--lane-groups", "2", "--min-lane-tokens", "10", "--no-fallback",
               *ARGS) == 0
    header = Container.from_bytes((tmp_path / "in.txt.bpcz").read_bytes()).header
    assert (header.lane_groups, header.version) == (2, 5)
    out = tmp_path / "out.txt"
    assert run("decompress", tmp_path / "in.txt.bpcz", "-o", out, "-m", tiny_model_path, "-t", "1", "-q") == 0
    assert out.read_bytes() == src.read_bytes()
    assert run("compress", src, "-o", tmp_path / "x.bpcz", "-m", tiny_model_path, "--lane-groups", "3", *ARGS) == 2
    assert "--lane-groups" in one_line(capsys.readouterr().err)
