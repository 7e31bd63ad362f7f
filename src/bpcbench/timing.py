"""Timings with a spread, pyperf style: every timed quantity is a mean ± standard deviation of n values.

A *value* is the wall time of one call, averaged over enough back-to-back calls (*loops*)
that the value covers at least ``MIN_VALUE_SECONDS`` of work: a sub-millisecond gzip call
is timed over ~100 ms, the way pyperf calibrates its loops, so timer resolution and one
scheduler hiccup do not decide the figure. A call that already takes longer (a model
compressing a file) is one loop per value. The calibration runs double as warm-up (caches,
page-ins, allocator) and are not values.

We time in process instead of through pyperf's worker processes because every call's
output is needed (the round trip is checked on it) and a model is loaded once per run,
not once per worker. Comparison of two timings is ``stats.speed_significant`` (Welch's t-test,
pyperf's rule), so a regression gate can say "not significant".
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

MIN_VALUE_SECONDS = 0.1  # pyperf's default min_time: each value covers at least this much work
MAX_LOOPS = 100_000


@dataclass(frozen=True)
class Timing:
    """Seconds per call: one value per entry of `values`, each averaged over `loops` calls."""

    values: tuple[float, ...]
    loops: int = 1

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        """Mean seconds per call (NaN without values).

        >>> Timing((1.0, 3.0)).mean
        2.0
        """
        return float(np.mean(self.values)) if self.values else math.nan

    @property
    def std(self) -> float:
        """Sample standard deviation of the values (n − 1); NaN below two values.

        >>> round(Timing((1.0, 3.0)).std, 6), math.isnan(Timing((1.0,)).std)
        (1.414214, True)
        """
        return float(np.std(self.values, ddof=1)) if self.n >= 2 else math.nan

    def __add__(self, more: Timing) -> Timing:
        """The values of both, at the same loops (a later round of the same quantity).

        >>> (Timing((1.0,), 4) + Timing((3.0,), 4)).values
        (1.0, 3.0)
        """
        if more.values and self.values and more.loops != self.loops:
            raise ValueError(f"cannot join values of {self.loops} and {more.loops} loops")
        return Timing(self.values + more.values, self.loops if self.values else more.loops)


def time_calls(func: Callable, arg, values: int, min_seconds: float = MIN_VALUE_SECONDS) -> tuple[object, Timing]:
    """Calibrate, then time `values` values of func(arg).

    Calibration is pyperf's: run 1, 2, 4, … calls back to back until a run lasts at least
    `min_seconds`; that many loops make one value. The calibration runs are the warm-up.
    Returns the first call's output (every call must give the same: the callers check round
    trips on it) and the Timing.

    >>> out, t = time_calls(sum, [1, 2, 3], values=3, min_seconds=0.001)
    >>> out, t.n, t.loops >= 1
    (6, 3, True)
    """
    if values < 1:
        raise ValueError(f"values must be >= 1, got {values}")
    out, loops = func(arg), 1
    while True:
        start = time.perf_counter()
        for _ in range(loops):
            func(arg)
        if time.perf_counter() - start >= min_seconds or loops >= MAX_LOOPS:
            break
        loops *= 2
    return out, time_values(func, arg, loops, values)


def time_values(func: Callable, arg, loops: int, values: int) -> Timing:
    """`values` values of func(arg), each the mean of `loops` back-to-back calls (loops as
    calibrated by time_calls; a later round reuses them so its values join the first ones)."""
    timed = []
    for _ in range(values):
        start = time.perf_counter()
        for _ in range(loops):
            func(arg)
        timed.append((time.perf_counter() - start) / loops)
    return Timing(tuple(timed), loops)
