"""-o names a regular file or stdout, nothing else: -f never replaces a device, FIFO, socket or folder
(nor a symlink to one), and a name that cannot be written is refused before the model runs."""

from __future__ import annotations

import os
import socket
import stat

import pytest

from bpcbench.cli import main

ARGS = ["--context", "16", "--width", "8", "--threads", "1", "-q"]


def refused(capsys, *argv) -> str:
    assert main([str(a) for a in argv]) == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in lines[0]
    return lines[0]


@pytest.fixture
def src(tmp_path):
    p = tmp_path / "in.txt"
    p.write_bytes(b"some text to compress " * 10)
    return p


def _fifo(p):
    os.mkfifo(p)


def _socket(p):
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(p))
    return s


def _null_device(p):
    if os.geteuid() != 0:
        pytest.skip("mknod of a character device needs root")
    st = os.stat("/dev/null")
    os.mknod(p, stat.S_IFCHR | 0o666, st.st_rdev)  # a copy of /dev/null, in the temp folder


@pytest.mark.parametrize("make, kind", [(_fifo, "a FIFO"), (_socket, "a socket"), (_null_device, "a character device"),
                                        (os.mkdir, "a directory")])
@pytest.mark.parametrize("through_symlink", [False, True])
def test_force_never_replaces_what_is_not_a_regular_file(tmp_path, src, tiny_model_path, capsys, make, kind,
                                                         through_symlink):
    node = tmp_path / "node"
    keep = make(node)  # noqa: F841 - a socket lives as long as its object
    before = os.lstat(node)
    out = node
    if through_symlink:
        out = tmp_path / "link"
        out.symlink_to(node)
    line = refused(capsys, "compress", src, "-o", out, "-f", "-m", tiny_model_path, *ARGS)
    assert f"is {kind}, not a regular file" in line
    after = os.lstat(node)
    assert (after.st_ino, after.st_mode, after.st_rdev) == (before.st_ino, before.st_mode, before.st_rdev)
    assert not list(tmp_path.glob(".bpcbench-*"))


def test_decompress_onto_a_device_is_refused_too(tmp_path, src, tiny_model_path, capsys):
    assert main(["compress", str(src), "-m", str(tiny_model_path), *ARGS]) == 0
    os.mkfifo(tmp_path / "fifo")
    line = refused(capsys, "decompress", f"{src}.bpcz", "-o", tmp_path / "fifo", "-f", "-m", tiny_model_path)
    assert "is a FIFO" in line
    assert stat.S_ISFIFO(os.lstat(tmp_path / "fifo").st_mode)


def test_a_symlink_to_a_regular_file_is_replaced_and_its_target_kept(tmp_path, src, tiny_model_path):
    target = tmp_path / "target"
    target.write_bytes(b"keep")
    link = tmp_path / "link"
    link.symlink_to(target)
    assert main(["compress", str(src), "-o", str(link), "-m", str(tiny_model_path), *ARGS]) == 2  # exists: needs -f
    assert main(["compress", str(src), "-o", str(link), "-f", "-m", str(tiny_model_path), *ARGS]) == 0
    assert not link.is_symlink() and link.read_bytes()[:4] == b"BPCZ"  # as gzip -f: the link itself is replaced
    assert target.read_bytes() == b"keep"


@pytest.mark.parametrize("name, why", [("x" * 240, "File name too long"), ("file/out", "Not a directory")])
def test_an_output_that_cannot_be_written_is_refused_before_the_model_loads(tmp_path, src, capsys, name, why):
    (tmp_path / "file").write_bytes(b"")
    # a model that does not exist: the output's check comes first, so the model is never looked at
    line = refused(capsys, "compress", src, "-o", tmp_path / name, "-m", tmp_path / "no-such.gguf", *ARGS)
    assert why in line and "cannot write" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "in.txt"]
