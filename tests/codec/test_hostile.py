"""Forged and damaged containers: every one ends in one line and exit 2/3/4, touching no file but its input.

The cases are those of the hostile-input run in issue #11 (n_tokens 10**12, a header bomb,
threads 10**5, model names that are paths or FIFOs, /etc/shadow, a payload that cannot hold the
tokens claimed, fields missing, out of range or of the wrong type). Time and memory per forged
file are measured by fuzz/forged_containers.py (`make fuzz`), not here: no timed unit tests.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from pathlib import Path
from typing import ClassVar

import pytest
import zstandard
from forged import field_cases, forged, group_cases, range_cases, ranged, raw_cases, reseal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_segments import compress_mixed

from bpcbench import corpora
from bpcbench.cli import main
from bpcbench.codec import compress as codec
from bpcbench.codec import lossy
from bpcbench.codec.container import LANE_MODEL, LANE_ZSTD, Container
from bpcbench.codec.decompress import decompress
from bpcbench.codec.entropy_model import max_tokens
from bpcbench.codec.session import Settings
from bpcbench.errors import BpcError
from bpcbench import atomic, defaults

SMALL = Settings(context=16, width=8, min_lane_tokens=40, threads=1)
TEXT = b"The quick brown fox jumps over the lazy dog.\n" * 2


@pytest.fixture(scope="module")
def model_blob(tiny_session):
    return codec.compress(TEXT, tiny_session, SMALL, fallback=False)[0]


class OpenAudit:
    """Every file opened while active (sys.addaudithook cannot be removed, so it is switched on and off)."""

    opened: ClassVar[list[str]] = []
    active = False

    @classmethod
    def hook(cls, event, args):
        if cls.active and event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
            cls.opened.append(os.fsdecode(args[0]))


sys.addaudithook(OpenAudit.hook)


CODE_SUFFIXES = (".py", ".pyc", ".nbi", ".nbc")  # imports, and numba's cache of codec/kernel.py


def decode_cli(tmp_path: Path, blob: bytes, capsys, *extra) -> tuple[int, str, list[str]]:
    src = tmp_path / "forged.bpcz"
    src.write_bytes(blob)
    OpenAudit.opened, OpenAudit.active = [], True
    try:
        code = main(["decompress", str(src), "-o", str(tmp_path / "out"), "-t", "1", "-q", *extra])
    finally:
        OpenAudit.active = False
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".bpcbench-*"))
    ours = (str(defaults.cache_root()), "/proc/", sys.prefix, sys.base_prefix)  # our hash cache, /proc probes, imports
    probe = str(tmp_path / f"{atomic.PREFIX}out.")  # the output's own writability probe (atomic.check_writable)
    foreign = [p for p in OpenAudit.opened if Path(p).resolve() != src.resolve()
               and not p.startswith((*ours, probe)) and not p.endswith(CODE_SUFFIXES)]
    return code, lines[0], foreign


def test_forged_fields(tmp_path, capsys, model_blob, tiny_model_path):
    for name, (blob, message) in field_cases(model_blob).items():
        # the payload check runs inside the decoder, so that case loads the model it is given
        extra = ["-m", str(tiny_model_path)] if name.startswith("payload") else []
        code, line, foreign = decode_cli(tmp_path, blob, capsys, *extra)
        assert code in (2, 3, 4), name
        assert re.search(message, line), (name, line)
        assert set(foreign) <= {str(tiny_model_path)} if extra else foreign == [], (name, foreign)


def test_raw_damage(tmp_path, capsys, model_blob):
    for name, (blob, message) in raw_cases(model_blob).items():
        code, line, foreign = decode_cli(tmp_path, blob, capsys)
        assert code in (2, 3, 4), name
        assert re.search(message, line), (name, line)
        assert foreign == [], (name, foreign)


def test_forged_lane_groups(tmp_path, capsys, model_blob):
    for name, (blob, message) in group_cases(model_blob).items():
        code, line, foreign = decode_cli(tmp_path, blob, capsys)
        assert code == 3, name
        assert re.search(message, line), (name, line)
        assert foreign == [], (name, foreign)


def test_a_payload_spent_mid_decode_with_two_lane_groups_is_one_line(tmp_path, capsys, tiny_session,
                                                                     tiny_model_path):
    """The step refuses while the worker thread's llama_decode of the other group is in flight."""
    blob = codec.compress(TEXT * 4, tiny_session, dataclasses.replace(SMALL, lane_groups=2), fallback=False)[0]
    most = max_tokens(len(Container.from_bytes(blob).payload))
    code, line, _ = decode_cli(tmp_path, forged(blob, n_tokens=most, original_bytes=most), capsys,
                               "-m", str(tiny_model_path))
    assert code == 3 and "payload is spent" in line, line


@pytest.fixture(scope="module")
def ranged_blob(model_blob):
    """A version-4 file: TEXT by the model, then 256 bytes stored."""
    return ranged(model_blob, TEXT, bytes(range(256)))


def test_a_segment_map_decodes(tiny_session, ranged_blob):
    assert Container.from_bytes(ranged_blob).header.ranges and ranged_blob[4] == 4
    assert decompress(ranged_blob, tiny_session, settings=SMALL)[0] == TEXT + bytes(range(256))


def test_forged_segment_maps(tmp_path, capsys, ranged_blob):
    """Counts, method bytes, lengths: every one refused from the header, no model opened."""
    for name, (blob, message) in range_cases(ranged_blob).items():
        code, line, foreign = decode_cli(tmp_path, blob, capsys)
        assert code == 3, (name, line)
        assert re.search(message, line), (name, line)
        assert foreign == [], (name, foreign)


@pytest.mark.parametrize("size, message", [(1000, "more bytes than"), (100, "fewer bytes")])
def test_a_zstd_range_of_the_wrong_length_is_refused(tmp_path, capsys, tiny_session, tiny_model_path, model_blob,
                                                     size, message):
    """A zstd range whose frame holds more (a bomb) or fewer bytes than its map entry says."""
    c = Container.from_bytes(model_blob)
    frame = zstandard.ZstdCompressor().compress(b"\0" * size)
    h = dataclasses.replace(c.header, original_bytes=len(TEXT) + 256,
                            ranges=((LANE_MODEL, len(TEXT), 0), (LANE_ZSTD, 256, len(frame))))
    code, line, _ = decode_cli(tmp_path, Container(h, frame + c.payload).to_bytes(), capsys,
                               "-m", str(tiny_model_path))
    assert code == 3 and message in line, line


def test_a_model_name_that_is_a_fifo_or_a_secret_is_never_opened(tmp_path, capsys, model_blob, monkeypatch):
    """The name is only a hint for messages and for which file of a search directory to hash first."""
    models = tmp_path / "models"
    models.mkdir()
    os.mkfifo(models / "trap.gguf")
    (models / "shadow.gguf").write_bytes(b"GGUF not this one")
    monkeypatch.setenv("BPCBENCH_MODEL_PATH", str(models))
    for name in ("trap.gguf", "shadow"):
        code, line, foreign = decode_cli(tmp_path, forged(model_blob, model_name=name, model_sha="0" * 12), capsys)
        assert code == 2 and "not found" in line and "000000000000" in line and "--model PATH" in line
        assert str(models / "trap.gguf") not in foreign


def test_every_truncation_is_one_line(tmp_path, capsys, model_blob):
    for cut in range(0, len(model_blob)):
        code, line, _ = decode_cli(tmp_path, model_blob[:cut], capsys)
        assert code == 3, (cut, line)


def test_every_truncation_resealed_is_one_line(tmp_path, capsys, model_blob, tiny_model_path):
    """With the CRC fixed up, each cut reaches the field reader or the decoder, never a traceback."""
    for cut in range(6, len(model_blob) - 4, 3):
        code, line, _ = decode_cli(tmp_path, reseal(model_blob[:cut]), capsys, "-m", str(tiny_model_path))
        assert code in (2, 3, 4), (cut, line)


# --- fuzzing: flips, truncations and splices, with and without a fixed CRC ----------------------


def _mutate(blob: bytes, other: bytes, kind: str, at: int, value: int, fix_crc: bool) -> bytes:
    at = at % max(1, len(blob))
    if kind == "flip":
        out = blob[:at] + bytes([blob[at] ^ (1 << (value % 8))]) + blob[at + 1:] if blob else blob
    elif kind == "truncate":
        out = blob[:at]
    else:  # splice: this file's head, another file's tail
        out = blob[:at] + other[value % max(1, len(other)):]
    return reseal(out[:-4]) if fix_crc and len(out) > 4 else out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(["flip", "truncate", "splice"]), at=st.integers(0, 10**6), value=st.integers(0, 10**6),
       fix_crc=st.booleans(), source=st.sampled_from(["model", "chunks", "stored", "zstd", "lossy", "segments"]))
def test_fuzz_never_a_traceback_never_a_wrong_byte(tiny_session, fuzz_blobs, kind, at, value, fix_crc, source):
    blob, original = fuzz_blobs[source]
    other, other_original = fuzz_blobs["chunks" if source == "model" else "model"]
    mutated = _mutate(blob, other, kind, at, value, fix_crc)
    try:
        out, _ = decompress(mutated, tiny_session, settings=SMALL)
    except BpcError:
        return
    assert out in (original, other_original)  # a splice may carry the whole other file


@pytest.fixture(scope="module")
def fuzz_blobs(tiny_session):
    texts = {"model": TEXT, "chunks": b"0123456789 abc " * 3, "stored": bytes(range(40)),
             "zstd": b"a" * 300}
    out = {}
    for name, data in texts.items():
        s = dataclasses.replace(SMALL, policy="chunks") if name == "chunks" else SMALL
        blob, _ = codec.compress(data, tiny_session, s, fallback=name in ("stored", "zstd"))
        out[name] = (blob, data)
    mixed = corpora.resolve("alice29").read_bytes()[:1500] + bytes(range(128, 256)) * 12
    blob, _ = compress_mixed(tiny_session, mixed, SMALL)
    assert Container.from_bytes(blob).header.lane_methods  # some lanes stored or zstd, the others by the model
    out["segments"] = (blob, mixed)
    r = lossy.encode(TEXT, tiny_session, SMALL, 4.0)
    out["lossy"] = (r.blob, r.reconstruction)  # what a lossy file decodes to is its reconstruction
    for name in ("model", "stored", "zstd", "lossy"):
        assert Container.from_bytes(out[name][0]).header.method == name
    return out


@pytest.fixture(scope="module")
def lossy_blob(tiny_session):
    return lossy.encode(TEXT, tiny_session, SMALL, 4.0).blob


def lossy_cases(blob: bytes, session) -> dict[str, tuple[bytes, str]]:
    """What only a lossy file has: its tau byte, its payload after it, its coding's version."""
    c = Container.from_bytes(blob)
    tau = c.payload[0]
    cases = {
        "lossy-empty-payload": (Container(c.header, b"").to_bytes(), "lossy payload is empty|payload can hold"),
        "lossy-tau-only": (Container(c.header, c.payload[:1]).to_bytes(), "payload|checksum|forged"),
        "lossy-first-coding": (forged(blob, codec=session.fingerprint(0)), "first lossy coding"),
    }
    for b in sorted({0, 1, 37, 254, 255} - {tau}):  # another tau: other tables, never the same bytes
        cases[f"lossy-tau-byte-{b}"] = (Container(c.header, bytes([b]) + c.payload[1:]).to_bytes(),
                                        "checksum|corrupt|forged|payload|alphabet")
    return cases


def test_forged_lossy_files(tmp_path, capsys, lossy_blob, tiny_session, tiny_model_path):
    """The header cases of a model file, and the lossy method's own, on a lossy file: one line each.
    (Its payload-spent case is tests/codec/test_lossy.py's: a flag stream of zeros decodes slowly.)"""
    cases = {**{k: v for k, v in field_cases(lossy_blob).items() if k != "payload-spent-mid-decode"},
             **lossy_cases(lossy_blob, tiny_session)}
    for name, (blob, message) in cases.items():
        code, line, foreign = decode_cli(tmp_path, blob, capsys, "-m", str(tiny_model_path))
        assert code in (2, 3, 4), name
        assert re.search(message, line), (name, line)
        assert set(foreign) <= {str(tiny_model_path)}, (name, foreign)
