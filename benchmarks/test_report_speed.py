"""`bpcbench report` on 20,000 rows (issue #23 target: <= 30 s; it was hours when every view
rescanned every row). `make bench-micro` prints the time; the assertion keeps the target."""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from synthetic_rows import row

from bpcbench.bench import results
from bpcbench.report.render import render

ROWS = 20_000


def test_report_of_20000_rows(tmp_path, benchmark):
    rows = []
    for k in range(ROWS // 4):  # 5,000 views of four codecs each: the case that was quadratic
        corpus = f"c{k}"
        rows += [row("gzip-9", size=7000, corpus=corpus), row("zstd-22-long", size=6500, corpus=corpus),
                 row("llm:a", "coded", size=5000, corpus=corpus), row("llm:b", "ideal", size=4800, corpus=corpus)]
    results.write_csv(tmp_path / "results.csv", rows)
    t0 = time.perf_counter()
    benchmark.pedantic(render, args=(tmp_path,), rounds=1, iterations=1)
    seconds = time.perf_counter() - t0
    benchmark.extra_info["seconds"] = seconds
    assert seconds <= 30, f"report of {ROWS:,} rows took {seconds:.1f} s"
