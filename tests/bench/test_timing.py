"""Timings with a spread: repeated values, mean ± std and n in results.csv, determinism checked."""

from __future__ import annotations

import math

import pytest
from tiny_matrices import tiny_matrix

from bpcbench import baselines, timing
from bpcbench.bench import incomplete, matrix, results, runner
from bpcbench.codec import cross_entropy

MATRIX = tiny_matrix("timed", ["text.txt"], 1200, """
model_repeats = 2
[[llm]]
measure = "coded"
""").replace("max_bytes = 1200", "max_bytes = 1200\nbaseline_repeats = 3")


@pytest.fixture(scope="module")
def bench_dir(make_bench_dir):
    return make_bench_dir("timed", b"The quick brown fox jumps over the lazy dog. " * 40, m=MATRIX,
                          ideal=MATRIX.replace('measure = "coded"', 'measure = "ideal"'))


def run(bench_dir, name: str, tmp_path):
    m = matrix.load(bench_dir / f"{name}.toml")
    r = runner.run_matrix(m, tmp_path / name, use_cache=False, cache_dir=tmp_path / "cache", progress=False)
    return r, results.read_csv(tmp_path / name)


def test_every_timed_quantity_has_n_values_and_a_spread(bench_dir, tmp_path):
    r, frame = run(bench_dir, "m", tmp_path)
    assert r.ok, r.failed
    base = frame[frame["measure"] == "baseline"]
    assert (base["timing_values"] == 3).all() and (base["timing_loops"] >= 1).all()
    # gzip on 1.2 kB needs many calls per value; how many is calibrated (below, on a fake clock)
    gz = base[base["codec"] == "gzip-9"].iloc[0]
    loops = int(gz["timing_loops"])
    assert loops > 10 and loops & (loops - 1) == 0
    model = frame[frame["measure"] == "coded"].iloc[0]
    assert model["timing_values"] == 2 and model["timing_loops"] == 1 and model["roundtrip_ok"]
    for _, row in frame.iterrows():
        assert row["encode_seconds_std"] >= 0 and row["decode_seconds_std"] >= 0


def test_a_codec_that_is_not_deterministic_fails_its_cell(bench_dir, tmp_path, monkeypatch):
    real = cross_entropy.cross_entropy
    calls = []

    def drifting(*args, **kw):
        st = real(*args, **kw)
        calls.append(1)
        return st if len(calls) == 1 else type(st)(**{**st.__dict__, "ideal_bits": st.ideal_bits + 1.0})

    monkeypatch.setattr(cross_entropy, "cross_entropy", drifting)
    r, frame = run(bench_dir, "ideal", tmp_path)
    model = frame[frame["measure"] == "ideal"].iloc[0]
    assert not r.ok and model["error"].startswith("not deterministic: round 2 gave")
    assert results.row_failed(model) and model["bits_per_byte"] is results.pd.NA


def test_values_are_taken_in_rounds_across_the_run(bench_dir, tmp_path, monkeypatch):
    """Round 1 measures every cell; rounds 2.. take one more value of each, in run order, so a
    cell's values are spread across the run (a slow drift of the machine shows in their spread)."""
    order = []
    real_round, real_ce = runner.baseline_round, cross_entropy.cross_entropy

    def logged_round(ms):
        order.extend(m.cell.codec for m in ms)
        return real_round(ms)

    monkeypatch.setattr(runner, "baseline_round", logged_round)
    monkeypatch.setattr(cross_entropy, "cross_entropy", lambda *a, **k: order.append("model") or real_ce(*a, **k))
    r, frame = run(bench_dir, "ideal", tmp_path)
    assert r.ok and not (tmp_path / "ideal" / "INCOMPLETE.json").exists()
    names = list(dict.fromkeys(n for n in order if n != "model"))
    # round 1 (model only: baselines' first values come from run_baseline), round 2 of all, round 3 of the baselines
    assert order == ["model", *names, "model", *names] and len(names) == 2
    assert (frame[frame["measure"] == "baseline"]["timing_values"] == 3).all()
    assert (frame[frame["measure"] == "ideal"]["timing_values"] == 2).all()


def test_a_run_stopped_in_a_timing_round_says_so(tmp_path):
    incomplete.mark_incomplete(tmp_path, 4, 4, (2, 3))
    note = incomplete.incomplete_note(tmp_path)
    assert "every cell measured" in note and "timing round 2 of 3" in note
    incomplete.mark_incomplete(tmp_path, 1, 4)
    assert incomplete.incomplete_note(tmp_path).startswith("INCOMPLETE run: 1 of 4 cells")


def test_a_later_round_joins_the_first_values_at_their_loops():
    first = baselines.run_baseline("gzip-9", b"abc" * 100)
    later = baselines.retime(first, b"abc" * 100)
    assert later.encode.n == later.decode.n == 2 and later.encode.values[0] == first.encode.values[0]
    assert later.encode.loops == first.encode.loops and later.roundtrip_ok
    with pytest.raises(ValueError):
        timing.Timing((1.0,), 2) + timing.Timing((1.0,), 4)


def test_baseline_timing_values_and_loops():
    r = baselines.run_baseline("gzip-9", b"abc" * 100, repeats=4)
    assert r.roundtrip_ok and r.encode.n == 4 and r.decode.n == 4
    assert r.encode.loops > 1 and r.encode.mean * r.encode.loops >= 0.05  # ~0.1 s per value, noise allowed
    assert r.encode_seconds == r.encode.mean and not math.isnan(r.encode.std)


def test_one_value_has_no_spread():
    t = timing.Timing((0.5,))
    assert t.n == 1 and t.mean == 0.5 and math.isnan(t.std)
    with pytest.raises(ValueError):
        timing.time_calls(len, b"", values=0)


def test_calibration_doubles_the_loops_until_a_run_covers_min_seconds(monkeypatch):
    """On a clock that every call moves by 10 ms, 8 calls (80 ms) are too few for 100 ms and 16
    are enough: one value is 16 calls, and each value is their mean."""
    clock = [0.0]
    monkeypatch.setattr(timing.time, "perf_counter", lambda: clock[0])

    def call(arg):
        clock[0] += 0.01
        return arg

    out, t = timing.time_calls(call, "x", values=3)
    assert out == "x" and t.loops == 16 and t.n == 3
    assert abs(t.mean - 0.01) < 1e-12 and t.std < 1e-12
