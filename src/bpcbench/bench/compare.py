"""Compare two runs cell by cell, pyperf style, and gate on regressions.

Cells are matched on (corpus, measured bytes, codec, measure, policy, context). For each:

* bits/byte change in percent; "not significant" unless the change lies outside the 95%
  interval of the difference (stats.significant: the two runs' bootstrap half-widths added
  in quadrature). The same bytes through a deterministic codec have no sampling noise, so
  there any change is real.
* speed as "1.23x faster" / "1.23x slower" (encode and decode), pyperf's compare_to rule:
  Welch's t-test on the two timings (mean, std, n: timing.Timing) and "not significant"
  when the difference lies within their noise (stats.speed_significant, at stats.SPEED_LEVEL). A timing of one
  value has no spread to test with and is not judged either ("1 value: not judged"), as
  pyperf refuses to: a single whole-file timing on a shared machine moves by tens of percent
  from one minute to the next with nothing changed (docs/measurements.md). Model cells are
  gated on speed when the matrix times them more than once (`model_repeats`). Nor is a cell
  judged whose values covered less than MIN_TIMED_SECONDS
  of work, whose new row came from the cell cache (an old timing replayed, not measured), or
  that ran with other threads, backend or offload in the two runs (a bench cell's default
  threads follow the machine's free cores, bench/measure.settings).

A regression is: bits/byte worse by more than the threshold and significant; a speed lower
by more than the threshold and significant; any failed round trip or error in the new run, or a cell of it
without bits/byte (empty or NaN); and, with `require_all` (`--require-all`, and always for
`nightly`, whose runs share one matrix), a cell of the old run missing from the new one.
Without it only the cells both runs share are compared, so runs of different shapes (the
reference run against a quick one) compare on what they have in common.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from bpcbench import stats
from bpcbench.bench import plausible
from bpcbench.bench.results import read_csv, row_failed
from bpcbench.bench.labels import cell_label
from bpcbench.errors import BpcError

MIN_TIMED_SECONDS = 0.1
MIN_CELLS = 2  # fewer compared cells: a warning (one) or an error (none: compare_runs)
KEY = plausible.CELL_COLUMNS  # what makes two rows the same cell; read_csv refuses a cell twice


def _v(x):
    """pandas scalar -> plain Python (None for NA)."""
    try:
        if pd.isna(x):
            return None
    except (TypeError, ValueError):
        pass
    return x.item() if hasattr(x, "item") else x


def speed_change(a_kb_s, b_kb_s) -> str:
    """pyperf's wording: '1.23x faster' / '1.23x slower' (b against a)."""
    if not a_kb_s or not b_kb_s:
        return ""
    if b_kb_s >= a_kb_s:
        return f"{b_kb_s / a_kb_s:.2f}x faster"
    return f"{a_kb_s / b_kb_s:.2f}x slower"


@dataclass
class CellDelta:
    corpus: str
    corpus_bytes: int | None
    codec: str
    measure: str
    policy: str | None
    context_tokens: int | None
    bpb_a: float | None = None
    bpb_b: float | None = None
    bpb_change_percent: float | None = None
    bpb_significant: bool | None = None
    encode_kB_per_s_a: float | None = None
    encode_kB_per_s_b: float | None = None
    decode_kB_per_s_a: float | None = None
    decode_kB_per_s_b: float | None = None
    encode_change: str = ""
    decode_change: str = ""
    encode_significant: bool | None = None  # Welch's t-test; None: untested (n < 2) or not judged
    decode_significant: bool | None = None
    problems: list[str] = field(default_factory=list)  # regressions found in this cell
    notes: list[str] = field(default_factory=list)
    label: str = ""  # labels.cell_label of the cell

    def bits_text(self) -> str:
        if self.bpb_a is None or self.bpb_b is None:
            return ""
        text = f"{self.bpb_a:.4f} -> {self.bpb_b:.4f}"
        if self.bpb_change_percent is None:
            return text
        if self.bpb_a == self.bpb_b:
            return text + "  same"
        verdict = "" if self.bpb_significant else "  not significant"
        return f"{text}  {self.bpb_change_percent:+.2f}%{verdict}"


@dataclass
class Comparison:
    run_a: str
    run_b: str
    bpb_threshold_percent: float
    speed_threshold_percent: float
    cells: list[CellDelta] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # in A, not in B
    added: list[str] = field(default_factory=list)  # in B only
    require_all: bool = False  # a missing cell is a regression (else it is only listed)

    @property
    def regressions(self) -> list[str]:
        out = [f"{c.label}: {p}" for c in self.cells for p in c.problems]
        if self.require_all:
            out += [f"{m}: missing from the new run" for m in self.missing]
        return out

    @property
    def ok(self) -> bool:
        return not self.regressions

    def as_dict(self) -> dict:
        d = asdict(self)
        for cell, cd in zip(self.cells, d["cells"]):
            cd["label"] = cell.label
        d["regressions"] = self.regressions
        d["ok"] = self.ok
        return d


def _failed(row) -> str | None:
    """Why the row failed (results.row_failed, or no bits/byte to compare: never 'no change'), or None."""
    if not row_failed(row):
        return None if _v(row["bits_per_byte"]) is not None else "no bits/byte"
    return str(row["error"]) if _v(row["error"]) else "round trip failed"


def _index(frame) -> dict[tuple, object]:
    out = {}
    for _, row in frame.iterrows():
        out[tuple(_v(row[k]) for k in KEY)] = row
    return out


def _timing(row, phase: str) -> tuple[float, float, int]:
    """(mean, std, n) of a row's timing of one phase; std NaN and n 1 where it has no spread."""
    std = _v(row[f"{phase}_seconds_std"])
    return _v(row[f"{phase}_seconds"]), float("nan") if std is None else std, _v(row["timing_values"]) or 1


def _judge_speed(d: CellDelta, phase: str, ra, rb, threshold: float) -> None:
    sa, sb = _v(ra[f"{phase}_kB_per_s"]), _v(rb[f"{phase}_kB_per_s"])
    setattr(d, f"{phase}_kB_per_s_a", sa)
    setattr(d, f"{phase}_kB_per_s_b", sb)
    if not sa or not sb:
        return
    change = speed_change(sa, sb)

    def say(text: str) -> None:
        setattr(d, f"{phase}_change", f"{change} ({text})" if text else change)

    if _v(rb["cached"]):
        return say("cached: not measured again")
    for setting in ("threads", "backend", "n_gpu_layers"):  # another setup: a speed, not a change
        if _v(ra[setting]) != _v(rb[setting]):
            return say(f"{setting} {_v(ra[setting])} -> {_v(rb[setting])}: not judged")
    (ma, xa, na), (mb, xb, nb) = _timing(ra, phase), _timing(rb, phase)
    # a value of more than one call was calibrated to >= 0.1 s of work (timing.time_calls)
    if all((_v(r["timing_loops"]) or 1) <= 1 and m < MIN_TIMED_SECONDS for m, r in ((ma, ra), (mb, rb))):
        return say("too short to judge")
    sig = stats.speed_significant(ma, xa, na, mb, xb, nb, level=stats.SPEED_LEVEL)
    setattr(d, f"{phase}_significant", sig)
    if sig is None:
        return say("1 value: not judged")
    say("" if sig else "not significant")
    if sig and sb < sa * (1 - threshold / 100):
        d.problems.append(f"{phase} speed {change} (lower by more than {threshold}%)")


def compare_frames(a, b, bpb_threshold: float = 0.5, speed_threshold: float = 10.0,
                   name_a: str = "A", name_b: str = "B", require_all: bool = False) -> Comparison:
    result = Comparison(name_a, name_b, bpb_threshold, speed_threshold, require_all=require_all)
    ia, ib = _index(a), _index(b)
    for key, ra in ia.items():
        d = CellDelta(*key, label=cell_label(ra))
        if key not in ib:
            result.missing.append(d.label)
            continue
        rb = ib[key]
        result.cells.append(d)
        if _v(ra["input_sha256"]) and _v(rb["input_sha256"]) and ra["input_sha256"] != rb["input_sha256"]:
            d.notes.append("input bytes differ between the runs")
        fail_b = _failed(rb)
        if fail_b:
            d.problems.append(f"FAILED in the new run: {fail_b}")
            continue
        if _failed(ra):
            d.notes.append(f"failed in the old run: {_failed(ra)}")
            continue
        d.bpb_a, d.bpb_b = _v(ra["bits_per_byte"]), _v(rb["bits_per_byte"])
        if d.bpb_a and d.bpb_b is not None:
            d.bpb_change_percent = (d.bpb_b / d.bpb_a - 1) * 100
            same_input = bool(_v(ra["input_sha256"])) and ra["input_sha256"] == rb["input_sha256"]
            # same bytes through a deterministic codec: no sampling noise, any change is real
            noise = [] if same_input else [
                w for w in (stats.half_width(_v(r["bits_per_byte_ci95_low"]), _v(r["bits_per_byte_ci95_high"]))
                            for r in (ra, rb)) if w is not None]
            d.bpb_significant = stats.significant(d.bpb_b - d.bpb_a, *noise)
            if d.bpb_significant and d.bpb_change_percent > bpb_threshold:
                d.problems.append(f"bits/byte {d.bpb_change_percent:+.2f}% (worse by more than {bpb_threshold}%)")
        for phase in ("encode", "decode"):
            _judge_speed(d, phase, ra, rb, speed_threshold)
    for key in ib:
        if key not in ia:
            result.added.append(cell_label(ib[key]))
    return result


def compare_runs(run_a: str | Path, run_b: str | Path, bpb_threshold: float = 0.5,
                 speed_threshold: float = 10.0, require_all: bool = False) -> Comparison:
    """RUN_A and RUN_B are run directories or results.csv files. No cell in common is an error: a gate
    that compared nothing would pass anything (one line, exit 2)."""
    c = compare_frames(read_csv(run_a), read_csv(run_b), bpb_threshold, speed_threshold, str(run_a), str(run_b),
                       require_all)
    if not c.cells:
        raise BpcError(f"nothing compared: no cell of {run_a} ({len(c.missing)}) is in {run_b} ({len(c.added)}); "
                       f"cells are matched on {', '.join(KEY)}")
    return c


def few_cells_warning(c: Comparison) -> str | None:
    """The line that says a comparison rests on fewer than MIN_CELLS cells (a gate of one cell is weak), or None."""
    if len(c.cells) >= MIN_CELLS:
        return None
    return f"only {len(c.cells)} cell compared ({len(c.missing)} only in the old run, {len(c.added)} only in the new)"


def format_text(c: Comparison) -> str:
    rows = [("cell", "bits/byte (old -> new)", "compress", "decompress")]
    for d in c.cells:
        status = "FAILED" if any(p.startswith("FAILED") for p in d.problems) else ""
        rows.append((d.label, status or d.bits_text(), d.encode_change, d.decode_change))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [f"old: {c.run_a}", f"new: {c.run_b}", ""]
    lines += ["  ".join(x.ljust(w) for x, w in zip(r, widths)).rstrip() for r in rows]
    for d in c.cells:
        for n in d.notes:
            lines.append(f"note: {d.label}: {n}")
    for a in c.added:
        lines.append(f"new cell (not compared): {a}")
    if not c.require_all:
        for m in c.missing:
            lines.append(f"old cell only (not compared; --require-all makes this a regression): {m}")
    lines.append("")
    if c.regressions:
        lines += [f"REGRESSION {r}" for r in c.regressions]
        lines.append(f"{len(c.regressions)} regression(s) (thresholds: bits/byte {c.bpb_threshold_percent}%, "
                     f"speed {c.speed_threshold_percent}%)")
    else:
        lines.append(f"no regression ({len(c.cells)} cells compared; thresholds: bits/byte "
                     f"{c.bpb_threshold_percent}%, speed {c.speed_threshold_percent}%)")
    return "\n".join(lines)


def format_json(c: Comparison) -> str:
    return json.dumps(c.as_dict(), indent=1)
