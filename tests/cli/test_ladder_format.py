"""`bpcbench ladder --format`: ladder.csv always, ladder.json and ladder.md + ladder.png as asked."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("llama_cpp")

from bpcbench.cli import main
from bpcbench.ladder import results


@pytest.mark.parametrize("formats, expected", [
    ("json", {"ladder.csv", "ladder.json"}),
    ("csv,md", {"ladder.csv", "ladder.md", "ladder.png"}),
])
def test_ladder_format_picks_the_files(tiny_model_path, tmp_path, monkeypatch, capsys, formats, expected):
    monkeypatch.setenv("BPCBENCH_CACHE", str(tmp_path / "cache"))  # the quantized level stays in the test
    text = tmp_path / "story.txt"
    text.write_bytes(b"The rabbit ran across the field and into the hedge, where it waited.\n" * 5)
    out = tmp_path / "run"
    assert main(["ladder", str(tiny_model_path), "--levels", "Q8_0", "--corpora", str(text), "--max-bytes", "200",
                 "--out", str(out), "--format", formats, "-q"]) == 0
    assert {p.name for p in out.iterdir()} == expected
    assert "| Q8_0 |" in capsys.readouterr().out  # the table is printed either way
    if "ladder.json" in expected:
        rows = json.loads((out / "ladder.json").read_text())["rows"]
        assert rows and all(set(r) <= set(results.COLUMN_NAMES) for r in rows)
