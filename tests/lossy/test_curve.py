"""Distortion measures on hand-made pairs, the curve's CSV, and the command's one-line errors."""

from __future__ import annotations

import csv
import math

import pytest

from bpcbench.cli import main
from bpcbench.errors import BpcError
from bpcbench.lossy import distortion
from bpcbench.lossy.curve import mark_dominated, parse_taus


def test_token_error_rate():
    assert distortion.token_error_rate([1, 2, 3, 4], [1, 9, 3, 9]) == 0.5
    assert distortion.token_error_rate([], []) == 0.0


def test_char_edit_rate_is_normalized_levenshtein():
    assert distortion.char_edit_rate("kitten", "sitting") == pytest.approx(3 / 7)
    assert distortion.char_edit_rate("abc", "abc") == 0.0
    assert distortion.char_edit_rate("a", "bcdef") == 1.0


@pytest.mark.parametrize("ref, hyp, chrf", [
    ("abc", "abd", (2 / 3 + 1 / 2 + 0) / 3),  # 1-, 2-, 3-gram precision = recall, averaged: F = the average
    ("ab ce", "ab cd", (3 / 4 + 2 / 3 + 1 / 2 + 0) / 4),  # whitespace removed: abce / abcd, four orders
    ("same text", "same text", 1.0),
    ("aaaa", "zzzz", 0.0),
])
def test_chrf_distance_against_hand_computed_chrf(ref, hyp, chrf):
    assert distortion.chrf_distance(ref, hyp) == pytest.approx(1 - chrf)


def test_line_error_rate():
    assert distortion.line_error_rate("a\nb\nc\nd", "a\nx\nc") == 0.5
    assert distortion.line_error_rate("one", "one") == 0.0


def test_unknown_measure_is_refused():
    with pytest.raises(Exception, match="unknown distortion measure 'bleu'"):
        distortion.measure(b"a", b"a", [1], [1], names=["bleu"])


@pytest.mark.parametrize("text, taus", [("0,1,inf", [0, 1, math.inf]), ("4, 2,2", [2, 4])])
def test_parse_taus(text, taus):
    assert parse_taus(text) == taus


@pytest.mark.parametrize("argv, message", [
    (["--taus", "1,-2"], "--taus must be numbers >= 0"),
    (["--taus", "nan"], "--taus must be numbers >= 0"),
    (["--taus", "one"], "comma-separated numbers"),
])
def test_bad_taus_are_one_line(tmp_path, tiny_model_path, capsys, argv, message):
    (tmp_path / "t.txt").write_text("some text")
    assert main(["lossy", str(tmp_path / "t.txt"), "-m", str(tiny_model_path), "--out", str(tmp_path / "o"),
                 *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_an_empty_file_is_one_line(tmp_path, tiny_model_path, capsys):
    (tmp_path / "empty.txt").write_bytes(b"")
    assert main(["lossy", str(tmp_path / "empty.txt"), "-m", str(tiny_model_path), "--out", str(tmp_path / "o")]) == 2
    assert "empty text" in capsys.readouterr().err


def test_the_curve_writes_csv_plot_and_the_reconstruction(tmp_path, tiny_model_path, capsys):
    (tmp_path / "t.txt").write_bytes(b"Once upon a time there was a tiny model. " * 4)
    out = tmp_path / "run"
    assert main(["lossy", str(tmp_path / "t.txt"), "-m", str(tiny_model_path), "--taus", "0,4,inf", "--out", str(out),
                 "-c", "16", "-t", "1", "-q"]) == 0
    rows = list(csv.DictReader((out / "lossy.csv").open()))
    assert [r["tau"] for r in rows] == ["", "0", "4", "inf"]
    assert all(r["roundtrip_ok"] == "True" for r in rows)
    assert rows[1]["token_error_rate"] == "0" and float(rows[3]["token_error_rate"]) > 0
    assert float(rows[3]["bits_per_byte"]) < float(rows[1]["bits_per_byte"])
    assert (out / "lossy.png").stat().st_size > 0 and (out / "reconstruction-tiny-t.txt-tau4.txt").exists()
    assert "bits/byte" in capsys.readouterr().out


def test_quant_adds_a_curve_per_quantization_level(tmp_path, tiny_model_path, monkeypatch):
    """--quant measures the model as given and each level, made by the ladder's quantizer (cached)."""

    monkeypatch.setenv("BPCBENCH_CACHE", str(tmp_path / "cache"))
    (tmp_path / "t.txt").write_bytes(b"Once upon a time there was a tiny model. " * 3)
    out = tmp_path / "run"
    assert main(["lossy", str(tmp_path / "t.txt"), "-m", str(tiny_model_path), "--taus", "0,inf", "--out", str(out),
                 "--quant", "q8_0", "-c", "16", "-t", "1", "-q"]) == 0
    rows = list(csv.DictReader((out / "lossy.csv").open()))
    by_model = {}
    for r in rows:
        by_model.setdefault(r["model"], []).append(r)
    assert list(by_model) == ["tiny", "tiny Q8_0"] and all(len(v) == 3 for v in by_model.values())
    assert {r["model_quant_type"] for r in by_model["tiny Q8_0"]} == {"Q8_0"}
    assert by_model["tiny"][0]["model_sha256"] != by_model["tiny Q8_0"][0]["model_sha256"]
    assert all(r["roundtrip_ok"] == "True" for r in rows)
    assert list((tmp_path / "cache" / "quantized").glob("*/Q8_0-*.gguf"))


def test_a_point_dearer_than_lossless_or_a_smaller_tau_is_dominated():
    rows = [{"tau": "", "bits_per_byte": 1.33}, {"tau": 0.0, "bits_per_byte": 1.332},
            {"tau": 2.0, "bits_per_byte": 1.30}, {"tau": 4.0, "bits_per_byte": 1.31},
            {"tau": 8.0, "bits_per_byte": ""}, {"tau": math.inf, "bits_per_byte": 0.13}]
    mark_dominated(rows)
    assert [r["dominated"] for r in rows] == ["", "lossless", "", "tau=2", "", ""]


def test_a_tau_the_format_cannot_record_is_refused_before_any_model():
    with pytest.raises(BpcError, match="steps of 0.25"):
        parse_taus("0,0.3")
