"""Baselines report the sizes their libraries really produce, and never hide a failed round trip."""

from __future__ import annotations

import bz2
import dataclasses
import gzip
import lzma
import math

import brotli
import numpy as np
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from bpcbench import baselines
from bpcbench.baselines import BASELINES, BaselineResult, run_baseline
from bpcbench.corpora import load_manifest
from bpcbench.errors import BpcError

NAMES = ["gzip-9", "bzip2-9", "xz-9e", "zstd-19", "zstd-22-long", "brotli-11"]


def _zstd22_long(data: bytes) -> bytes:
    params = zstandard.ZstdCompressionParameters.from_level(
        22, window_log=27, enable_ldm=True, write_content_size=True
    )
    return zstandard.ZstdCompressor(compression_params=params).compress(data)


# Each library called directly, independent of bpcbench, at the documented settings.
DIRECT = {
    "gzip-9": lambda d: gzip.compress(d, compresslevel=9, mtime=0),
    "bzip2-9": lambda d: bz2.compress(d, 9),
    "xz-9e": lambda d: lzma.compress(d, preset=9 | lzma.PRESET_EXTREME),
    "zstd-19": lambda d: zstandard.ZstdCompressor(level=19).compress(d),
    "zstd-22-long": _zstd22_long,
    "brotli-11": lambda d: brotli.compress(d, quality=11, lgwin=24),
}
DIRECT_DECODE = {
    "gzip-9": gzip.decompress,
    "bzip2-9": bz2.decompress,
    "xz-9e": lzma.decompress,
    "zstd-19": lambda c: zstandard.ZstdDecompressor().decompress(c),
    "zstd-22-long": lambda c: zstandard.ZstdDecompressor(max_window_size=1 << 27).decompress(c),
    "brotli-11": brotli.decompress,
}


def _inputs() -> dict[str, bytes]:
    alice = load_manifest()["alice29"].read_bytes()
    rng = np.random.default_rng(20260101)
    return {
        "empty": b"",
        "one-byte": b"A",
        "alice29-prefix": alice[:20_000],
        "random": rng.integers(0, 256, size=8_000, dtype=np.uint8).tobytes(),
    }


INPUTS = _inputs()


def test_codec_names_are_exact():
    assert list(BASELINES) == NAMES
    assert all(BASELINES[name].name == name for name in NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_library_version_names_the_library(name):
    version = BASELINES[name].library_version
    expected = {"gzip-9": "zlib", "bzip2-9": "libbz2", "xz-9e": "liblzma",
                "zstd-19": "libzstd", "zstd-22-long": "libzstd", "brotli-11": "brotli"}[name]
    assert expected in version and "unknown" not in version


@pytest.mark.parametrize("input_name", list(INPUTS))
@pytest.mark.parametrize("name", NAMES)
def test_sizes_match_the_library_and_round_trip(name, input_name):
    data = INPUTS[input_name]
    result = run_baseline(name, data)
    assert isinstance(result, BaselineResult)
    assert result.codec == name
    assert result.roundtrip_ok, result.error
    assert result.error is None
    assert result.input_bytes == len(data)
    assert result.coded_bytes == len(DIRECT[name](data))
    assert result.library_version == BASELINES[name].library_version
    assert result.encode_seconds >= 0 and result.decode_seconds >= 0
    if data:
        assert result.bits_per_byte == pytest.approx(result.coded_bytes * 8 / len(data))
    else:
        assert math.isnan(result.bits_per_byte)

    # What bpcbench writes is what the stock library reads, and vice versa.
    coded = BASELINES[name].compress(data)
    assert DIRECT_DECODE[name](coded) == data
    assert BASELINES[name].decompress(DIRECT[name](data)) == data


def test_bits_per_byte_orders_text_below_random():
    text = run_baseline("zstd-19", INPUTS["alice29-prefix"])
    noise = run_baseline("zstd-19", INPUTS["random"])
    assert text.bits_per_byte < 4.0 < 8.0 <= noise.bits_per_byte


def test_zstd_frames_carry_content_size_and_long_window():
    data = INPUTS["alice29-prefix"]
    for name in ("zstd-19", "zstd-22-long"):
        frame = zstandard.get_frame_parameters(BASELINES[name].compress(data))
        assert frame.content_size == len(data)
        assert frame.has_checksum is False
    assert baselines.ZSTD_LONG_MAX_WINDOW_BYTES == 1 << 27


def test_repeats_take_the_best_time_and_keep_the_size():
    data = INPUTS["alice29-prefix"]
    once = run_baseline("gzip-9", data)
    thrice = run_baseline("gzip-9", data, repeats=3)
    assert thrice.coded_bytes == once.coded_bytes and thrice.roundtrip_ok


def test_accepts_bytearray_and_memoryview():
    data = INPUTS["alice29-prefix"][:1000]
    for view in (bytearray(data), memoryview(data)):
        result = run_baseline("brotli-11", view)
        assert result.roundtrip_ok and result.input_bytes == 1000


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(BpcError) as excinfo:
        run_baseline("zip-9", b"abc")
    message = str(excinfo.value)
    assert "zip-9" in message and "\n" not in message
    assert all(name in message for name in NAMES)


@pytest.mark.parametrize("repeats", [0, -1, 1.5, True])
def test_bad_repeats_are_refused(repeats):
    with pytest.raises(BpcError, match="repeats"):
        run_baseline("gzip-9", b"abc", repeats=repeats)


# --------------------------------------------------------------------------
# Corruption: the decoder raising, or returning the wrong bytes, is a failed
# round trip in the result (roundtrip_ok False, error says why), not an exception.


def _with(monkeypatch, name, **changes):
    monkeypatch.setitem(BASELINES, name, dataclasses.replace(BASELINES[name], **changes))


@pytest.mark.parametrize("name", NAMES)
def test_truncated_stream_is_a_failed_round_trip(monkeypatch, name):
    real = BASELINES[name].compress
    _with(monkeypatch, name, compress=lambda d: real(d)[: len(real(d)) // 2])
    result = run_baseline(name, INPUTS["alice29-prefix"])
    assert result.roundtrip_ok is False
    assert result.error and name in result.error and "\n" not in result.error
    assert result.coded_bytes == len(real(INPUTS["alice29-prefix"])) // 2


@pytest.mark.parametrize("name", NAMES)
def test_flipped_byte_is_a_failed_round_trip(monkeypatch, name):
    real = BASELINES[name].compress

    def flip_middle(data: bytes) -> bytes:
        coded = bytearray(real(data))
        coded[len(coded) // 2] ^= 0x55
        return bytes(coded)

    _with(monkeypatch, name, compress=flip_middle)
    result = run_baseline(name, INPUTS["alice29-prefix"])
    assert result.roundtrip_ok is False
    assert result.error


def test_decoder_exception_is_reported_with_nan_decode_time(monkeypatch):
    def refuse(coded: bytes) -> bytes:
        raise OSError("boom")

    _with(monkeypatch, "gzip-9", decompress=refuse)
    result = run_baseline("gzip-9", b"hello")
    assert result.roundtrip_ok is False
    assert math.isnan(result.decode_seconds)
    assert result.error == "gzip-9: decompression failed: OSError: boom"
    assert result.coded_bytes == len(gzip.compress(b"hello", 9, mtime=0))


def test_silently_wrong_decoder_is_caught_and_located(monkeypatch):
    real = BASELINES["zstd-19"].decompress

    def off_by_one(coded: bytes) -> bytes:
        out = bytearray(real(coded))
        out[1234] ^= 1
        return bytes(out)

    _with(monkeypatch, "zstd-19", decompress=off_by_one)
    result = run_baseline("zstd-19", INPUTS["alice29-prefix"])
    assert result.roundtrip_ok is False
    assert "first difference at byte 1234" in result.error


def test_short_decoder_output_is_caught(monkeypatch):
    real = BASELINES["brotli-11"].decompress
    _with(monkeypatch, "brotli-11", decompress=lambda c: real(c)[:-1])
    result = run_baseline("brotli-11", b"abcdef")
    assert result.roundtrip_ok is False
    assert "decoded 5 bytes, expected 6" in result.error


# --------------------------------------------------------------------------
# Property: any small input round-trips, and the size is the library's.


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=25, deadline=None)
@given(data=st.binary(max_size=300))
def test_round_trip_property(name, data):
    result = run_baseline(name, data)
    assert result.roundtrip_ok, result.error
    assert result.coded_bytes == len(DIRECT[name](data))
