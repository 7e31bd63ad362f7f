"""results.read_csv, the one reader of report, compare, merge and nightly: a real results.csv
(tiny model, one corpus removed after loading so some rows fail) loads; each kind of damage is
refused with one line naming the file, the row and the column."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
from tiny_matrices import tiny_matrix

from bpcbench.bench import matrix, results, runner
from bpcbench.cli import main
from bpcbench.corpora import load_manifest
from bpcbench.errors import BpcError, OtherSchema
from bpcbench.report.render import render

REPO = Path(__file__).resolve().parents[2]
REFERENCE_RUNS = sorted(p.parent for p in (REPO / "results" / "reference").glob("*/results.csv"))

MATRIX = tiny_matrix("reader", ["text.txt", "gone.txt"], 1000)


@pytest.fixture(scope="module")
def run(make_bench_dir):
    """A run directory as the runner writes it: 3 measured rows, 3 failed ones (corpus gone)."""
    d = make_bench_dir("reader", load_manifest()["alice29"].read_bytes()[:2000], m=MATRIX)
    (d / "gone.txt").write_text("x" * 100)
    m = matrix.load(d / "m.toml")
    (d / "gone.txt").unlink()
    res = runner.run_matrix(m, d / "run", cache_dir=d / "cache", progress=False, finish=render)
    assert len(res.rows) == 6 and len(res.failed) == 3
    return d / "run"


def damaged(tmp_path, run, edit):
    """A copy of the run whose results.csv (rows of text, header first) went through edit(rows)."""
    dst = tmp_path / "damaged"
    shutil.copytree(run, dst)
    with open(dst / "results.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    edit(rows)
    with open(dst / "results.csv", "w", newline="") as fh:
        csv.writer(fh, lineterminator="\n").writerows(rows)
    return dst


def set_cell(row: int, column: str, value: str):
    """An edit: data row `row` (1 = the first after the header) gets `value` in `column`."""
    return lambda rows: rows[row].__setitem__(rows[0].index(column), value)


def refused(run_dir, where: str, column: str) -> str:
    with pytest.raises(BpcError) as e:
        results.read_csv(run_dir)
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith(f"{run_dir / 'results.csv'}: {where}") and f"column {column}" in message, message
    return message


def test_the_writers_file_loads_failed_rows_and_empty_cells_included(run, tmp_path):
    frame = results.read_csv(run)
    assert len(frame) == 6 and list(frame.columns) == results.COLUMN_NAMES
    failed = results.failed_mask(frame)
    assert failed.sum() == 3 and frame.loc[failed, "cell_key"].isna().all()
    assert frame.loc[failed, "bits_per_byte"].isna().all() and frame.loc[~failed, "bits_per_byte"].notna().all()
    assert frame.loc[frame["measure"] == "baseline", "context_tokens"].isna().all()  # optional, empty
    results.write_csv(tmp_path / "again.csv", frame)  # what the reader gives back is what was written
    assert (tmp_path / "again.csv").read_text() == (run / "results.csv").read_text()


@pytest.mark.parametrize("value", ["abc", "1.2.3", "0x10", "1,5",
                                   "\u0661.\u0665", "1_000.5", " 2.5", "2.5\u00a0"])  # float() takes these four
def test_a_bad_number(run, tmp_path, value):
    d = damaged(tmp_path, run, set_cell(2, "bits_per_byte", value))
    assert f"{value!r} is not a finite number" in refused(d, "row 2 (line 3)", "bits_per_byte")


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-Infinity"])
def test_nan_or_infinity_where_a_number_is_required(run, tmp_path, value):
    d = damaged(tmp_path, run, set_cell(1, "encode_seconds", value))
    assert "not a finite number" in refused(d, "row 1 (line 2)", "encode_seconds")


# int() takes "\u0663" and "1_000"
@pytest.mark.parametrize("value", ["12.5", "1e3", "twelve", "nan", "\u0663", "1_000", "\u00b2"])
def test_a_bad_integer(run, tmp_path, value):
    d = damaged(tmp_path, run, set_cell(3, "corpus_bytes", value))
    assert "is not an integer" in refused(d, "row 3 (line 4)", "corpus_bytes")


@pytest.mark.parametrize("column, value", [("roundtrip_ok", "true"), ("roundtrip_ok", "1"),
                                           ("cached", "FALSE"), ("cached", "no")])
def test_a_boolean_not_spelled_as_the_writer_spells_it(run, tmp_path, column, value):
    d = damaged(tmp_path, run, set_cell(2, column, value))
    assert "is not True or False" in refused(d, "row 2 (line 3)", column)


@pytest.mark.parametrize("column", ["run_id", "codec", "schema_version", "cached"])
def test_an_empty_required_cell(run, tmp_path, column):
    d = damaged(tmp_path, run, set_cell(4, column, ""))
    assert "empty, but every row has one" in refused(d, "row 4 (line 5)", column)


def test_an_unknown_column(run, tmp_path):
    def add(rows):
        for i, row in enumerate(rows):
            row.append("chunk_tokens" if i == 0 else "512")

    assert "unknown" in refused(damaged(tmp_path, run, add), "header (line 1)", "'chunk_tokens'")


def test_a_missing_column(run, tmp_path):
    def drop(rows):
        i = rows[0].index("bits_per_byte")
        for row in rows:
            del row[i]

    assert "missing" in refused(damaged(tmp_path, run, drop), "header (line 1)", "bits_per_byte")


def test_a_column_given_twice(run, tmp_path):
    d = damaged(tmp_path, run, lambda rows: rows[0].__setitem__(rows[0].index("note"), "codec"))
    assert "given twice" in refused(d, "header (line 1)", "codec")


def test_the_same_cell_twice(run, tmp_path):
    d = damaged(tmp_path, run, lambda rows: rows.append(list(rows[2])))
    assert "already in row 2" in refused(d, "row 7 (line 8)", "cell_key")


def test_a_truncated_row(run, tmp_path):
    d = damaged(tmp_path, run, lambda rows: rows[-1].__delitem__(slice(20, None)))
    column = results.COLUMN_NAMES[20]
    assert "truncated?" in refused(d, "row 6 (line 7)", column)


def test_a_row_with_too_many_fields(run, tmp_path):
    n = len(results.COLUMN_NAMES)
    d = damaged(tmp_path, run, lambda rows: rows[3].append("x"))
    with pytest.raises(BpcError, match=rf"results\.csv: row 3 \(line 4\): {n + 1} fields, but the header has {n}$"):
        results.read_csv(d)


def test_a_schema_version_this_bpcbench_cannot_read(run, tmp_path):
    d = damaged(tmp_path, run, set_cell(1, "schema_version", "1"))
    assert f"1, but this bpcbench reads 2 to {results.SCHEMA_VERSION}" in refused(d, "row 1", "schema_version")
    newer = str(results.SCHEMA_VERSION + 1)
    d1 = damaged(tmp_path / "n", run, lambda rows: [set_cell(i, "schema_version", newer)(rows) for i in range(1, 7)])
    with pytest.raises(OtherSchema, match=f"use a bpcbench that reads {newer}"):
        results.read_csv(d1)
    d3 = damaged(tmp_path / "s", run, set_cell(1, "schema_version", "\u00b2"))  # isdigit() says yes
    assert "is not an integer" in refused(d3, "row 1 (line 2)", "schema_version")
    d2 = damaged(tmp_path / "b", run, set_cell(5, "schema_version", str(results.SCHEMA_VERSION + 1)))
    assert f"not schema version {results.SCHEMA_VERSION}" in refused(d2, "row 5 (line 6)", "schema_version")


def test_the_earliest_damage_is_named(run, tmp_path):
    def two(rows):
        set_cell(5, "bits_per_byte", "x")(rows)
        set_cell(2, "threads", "x")(rows)

    refused(damaged(tmp_path, run, two), "row 2 (line 3)", "threads")


def test_not_a_results_file(tmp_path):
    (tmp_path / "results.csv").write_bytes(b"")
    with pytest.raises(BpcError, match="empty file"):
        results.read_csv(tmp_path)
    (tmp_path / "results.csv").write_bytes(b"codec,\xff\n")
    with pytest.raises(BpcError, match="byte 6: not UTF-8 text"):
        results.read_csv(tmp_path)
    with pytest.raises(BpcError, match="no results found"):
        results.read_csv(tmp_path / "nope")


@pytest.mark.parametrize("command", [["report", "{bad}"], ["compare", "{good}", "{bad}"],
                                     ["compare", "{bad}", "{good}", "--json"]])
def test_report_and_compare_refuse_a_damaged_file_in_one_line(run, tmp_path, capsys, command):
    bad = damaged(tmp_path, run, set_cell(2, "roundtrip_ok", "yes"))
    before = sorted(p.name for p in bad.iterdir())
    stamp = (bad / "summary.md").stat().st_mtime_ns
    argv = [a.format(bad=bad, good=run) for a in command]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err.startswith(f"bpcbench: error: {bad / 'results.csv'}: row 2 (line 3), column roundtrip_ok")
    assert sorted(p.name for p in bad.iterdir()) == before and (bad / "summary.md").stat().st_mtime_ns == stamp


def _as_version(rows, version: int, drop=(), rename=None):
    """rows (header first) rewritten as an older bpcbench wrote them."""
    keep = [i for i, name in enumerate(rows[0]) if name not in drop]
    rows[:] = [[row[i] for i in keep] for row in rows]
    if rename:
        rows[0] = [rename.get(name, name) for name in rows[0]]
    for row in rows[1:]:
        row[rows[0].index("schema_version")] = str(version)


V3_RENAME = {"n_pieces": "n_chunks"}
V2_DROP = ("ci_warning", "encode_seconds_std", "decode_seconds_std", "timing_values", "timing_loops")


def test_schema_3_files_read_as_today(run, tmp_path):
    today = results.read_csv(run)
    old = results.read_csv(damaged(tmp_path, run, lambda rows: _as_version(rows, 3, rename=V3_RENAME)))
    assert old.equals(today) and (old["schema_version"] == results.SCHEMA_VERSION).all()


def test_schema_2_files_read_with_the_later_columns_empty(run, tmp_path):
    today = results.read_csv(run)
    old = results.read_csv(damaged(tmp_path, run, lambda rows: _as_version(rows, 2, V2_DROP, V3_RENAME)))
    assert old[list(V2_DROP)].isna().all().all()
    rest = [c for c in results.COLUMN_NAMES if c not in V2_DROP]
    assert old[rest].equals(today[rest])


def test_one_file_holds_one_schema_version(run, tmp_path):
    d = damaged(tmp_path, run,
                lambda rows: (_as_version(rows, 3, rename=V3_RENAME), set_cell(4, "schema_version", "2")(rows)))
    assert "'2', but row 1 has 3" in refused(d, "row 4", "schema_version")


@pytest.mark.parametrize("ref", REFERENCE_RUNS, ids=lambda p: p.name)
def test_every_committed_reference_run_reads_compares_and_renders(ref, tmp_path, capsys):
    frame = results.read_csv(ref)
    assert len(frame) and (frame["schema_version"] == results.SCHEMA_VERSION).all()
    assert main(["compare", str(ref), str(ref)]) == 0
    out, err = capsys.readouterr()
    assert f"no regression ({len(frame)} cells compared" in out  # every cell against itself
    assert len(frame) < 2 or err == ""  # no few-cells warning
    copy = tmp_path / ref.name
    shutil.copytree(ref, copy)
    (copy / "summary.md").unlink()
    assert main(["report", str(copy)]) == 0
    assert f"{len(frame)} cells" in (copy / "summary.md").read_text()


def test_the_reference_runs_include_every_schema_this_project_kept():
    versions = {next(csv.DictReader((ref / "results.csv").open()))["schema_version"] for ref in REFERENCE_RUNS}
    assert {"2", "3"} <= versions


# --- values no real run writes (bench/plausible.py) -------------------------------------------


def _first_filled(rows, *columns) -> int:
    idx = [rows[0].index(c) for c in columns]
    return next(n for n, r in enumerate(rows[1:], start=1) if all(r[i] != "" for i in idx))


def set_filled(column: str, value: str, *also: str):
    """An edit: the first row with `column` (and `also`) filled gets `value` there."""
    def edit(rows):
        rows[_first_filled(rows, column, *also)][rows[0].index(column)] = value
    return edit


@pytest.mark.parametrize("column, value, why", [
    ("bits_per_byte", "0", "not in (0,"), ("bits_per_byte", "-1.5", "not in (0,"),
    ("bits_per_byte", "1e300", "not in (0,"), ("bits_per_byte_ci95_low", "-1e300", "not in (0,"),
    ("encode_seconds", "0", "not positive"), ("timing_values", "0", "not positive"),
    ("container_bytes", "-4", "negative"),
])
def test_a_value_no_real_run_writes(run, tmp_path, column, value, why):
    d = damaged(tmp_path, run, set_filled(column, value))
    with pytest.raises(BpcError) as e:
        results.read_csv(d)
    assert f"column {column}: {value!r} is {why}" in str(e.value) and "\n" not in str(e.value)


def test_an_inverted_interval(run, tmp_path):
    def invert(rows):
        n = _first_filled(rows, "bits_per_byte_ci95_low", "bits_per_byte_ci95_high")
        lo, hi = rows[0].index("bits_per_byte_ci95_low"), rows[0].index("bits_per_byte_ci95_high")
        rows[n][lo], rows[n][hi] = rows[n][hi], rows[n][lo]
    d = damaged(tmp_path, run, invert)
    with pytest.raises(BpcError, match="an inverted interval"):
        results.read_csv(d)


def test_a_spread_no_positive_timings_have(run, tmp_path):
    def spread(rows):
        rows[_first_filled(rows, "encode_seconds")][rows[0].index("encode_seconds_std")] = "1e300"
    d = damaged(tmp_path, run, spread)
    with pytest.raises(BpcError, match=r"more than encode_seconds × sqrt\(timing_values\)"):
        results.read_csv(d)


def test_the_same_cell_twice_under_another_cell_key(run, tmp_path):
    def twice(rows):
        copy = list(rows[1])
        copy[rows[0].index("cell_key")] = "f" * 64
        rows.append(copy)
    d = damaged(tmp_path, run, twice)
    with pytest.raises(BpcError, match="is already in row 1: one cell, one row"):
        results.read_csv(d)
