"""Every statistical rule bpcbench reports with, defined once.

* ``bits_per_byte``: bits divided by input bytes (NaN for no input), the headline unit.
* ``CI_LEVEL``, ``SPEED_LEVEL``: the significance levels, of bits (95%) and of speed (99%).
* ``bootstrap_interval``: CI_LEVEL BCa bootstrap (scipy.stats.bootstrap) of Σbits/Σbytes over
  independently scored pieces (chunks, lanes), fixed seed, so a rerun gives the same
  interval; the percentile interval where BCa is undefined (identical pieces).
* ``interval_warning``: an interval over fewer than MIN_CI_PIECES pieces is flagged.
* ``mean_and_uncertainty``: llama-perplexity's mean ± sqrt(var / (n − 1)).
* ``significant``: a difference is significant when it lies outside the CI_LEVEL interval of
  the difference; with independent intervals the half-widths add in quadrature.
* ``speed_significant``: pyperf's rule for two timings (mean, std, n each): Welch's t-test
  at SPEED_LEVEL; untestable (None) below two values on either side.
* ``pareto_front``: the points no other point beats on every axis.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np

BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 20240901
CI_LEVEL = 0.95  # bits per byte: bootstrap intervals, and what counts as a significant change
CI_PERCENT = f"{CI_LEVEL:.0%}"  # "95%": CI_LEVEL as reports and column docs print it
# Speed changes are judged at 99%, not pyperf's 95%: a baseline's values come from several
# processes whose means differ (bench/measure.baseline_round), and with n = 5 per run the t-test's
# assumptions hold loosely; at 95% nightly pairs with nothing changed raised false regressions.
SPEED_LEVEL = 0.99
# BCa's jackknife holds n x (n - 1) values: above this many pieces the percentile interval
# (which BCa approaches as n grows) is used instead.
BCA_MAX_PIECES = 2000
MIN_CI_PIECES = 30  # below this a bootstrap interval understates the spread (flagged, not hidden)
# the normal distribution's two-sided CI_LEVEL quantile, as scipy.stats.norm.ppf(0.975) prints it
# (statistics.NormalDist's differs in the last bit; test_stats_levels keeps the two in step)
Z_95 = 1.959963984540054


def bits_per_byte(bits: float, n_bytes: int | float | None) -> float:
    """Bits per byte of input; NaN where there was no input.

    >>> bits_per_byte(12.0, 8)
    1.5
    >>> math.isnan(bits_per_byte(3.0, 0))
    True
    """
    if not n_bytes:
        return math.nan
    return float(bits) / float(n_bytes)


def bootstrap_interval(piece_bits, piece_bytes, resamples: int = BOOTSTRAP_RESAMPLES,
                       seed: int = BOOTSTRAP_SEED, level: float = CI_LEVEL) -> tuple[float, float]:
    """BCa bootstrap of Σbits/Σbytes over pieces, resampled in pairs with replacement.

    BCa (bias-corrected and accelerated, scipy.stats.bootstrap) corrects the skew of a
    ratio that a plain percentile interval misses; where it is undefined (pieces all alike,
    the jackknife has no spread) or too costly (more than BCA_MAX_PIECES pieces) the
    percentile interval is used.

    >>> lo, hi = bootstrap_interval([10.0, 12.0, 8.0, 11.0], [10, 10, 10, 10])
    >>> lo <= 41 / 40 <= hi
    True
    """
    # imported here: scipy is slow to import, and only runs that report intervals need it
    from scipy.stats import bootstrap

    bits = np.asarray(piece_bits, dtype=np.float64)
    nbytes = np.asarray(piece_bytes, dtype=np.float64)
    if bits.shape != nbytes.shape or bits.ndim != 1:
        raise ValueError("piece_bits and piece_bytes must be 1-D and the same length")
    if len(bits) == 0 or nbytes.sum() <= 0:
        return math.nan, math.nan
    point = bits.sum() / nbytes.sum()
    if len(bits) == 1:
        return point, point

    def ratio(b, n, axis=-1):
        total = n.sum(axis=axis)
        return b.sum(axis=axis) / np.where(total > 0, total, np.nan)

    lo = hi = math.nan
    for method in ("BCa", "percentile") if len(bits) <= BCA_MAX_PIECES else ("percentile",):
        with warnings.catch_warnings():  # scipy warns (and returns NaN) where BCa is undefined
            warnings.simplefilter("ignore")
            r = bootstrap((bits, nbytes), ratio, paired=True, vectorized=True, n_resamples=resamples,
                          confidence_level=level, method=method, rng=np.random.default_rng(seed))
        lo, hi = float(r.confidence_interval.low), float(r.confidence_interval.high)
        if np.isfinite(lo) and np.isfinite(hi):
            break
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return point, point  # every resample equal: no spread to report
    # an interval of a skewed ratio can miss the point estimate by a hair
    return float(min(lo, point)), float(max(hi, point))


def interval_warning(n_pieces) -> str | None:
    """The ci_warning text for an interval resampled from n_pieces; None when there are enough.

    >>> interval_warning(5), interval_warning(30)
    ('only 5 pieces (< 30)', None)
    """
    if n_pieces is None or n_pieces >= MIN_CI_PIECES:
        return None
    return f"only {int(n_pieces)} piece{'s' if n_pieces != 1 else ''} (< {MIN_CI_PIECES})"


def mean_and_uncertainty(x: np.ndarray) -> tuple[float, float]:
    """llama-perplexity's mean_and_uncertainty: the mean and sqrt(var / (n − 1)), 0 for n ≤ 10.

    >>> mean_and_uncertainty(np.array([1.0, 3.0]))
    (2.0, 0.0)
    """
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    if n < 1:
        return math.nan, math.nan
    f = float(x.mean())
    var = float((x * x).mean()) - f * f
    return f, (math.sqrt(var / (n - 1)) if var > 0 and n > 10 else 0.0)


def half_width(low: float | None, high: float | None) -> float | None:
    """Half the width of an interval; None if either end is missing."""
    if low is None or high is None or math.isnan(low) or math.isnan(high):
        return None
    return (high - low) / 2


def significant(delta: float, *half_widths: float) -> bool:
    """Is `delta` outside the CI_LEVEL (95%) interval of the difference?

    Each argument after `delta` is the CI_LEVEL half-width of one independent source of noise
    (one run's bootstrap interval, or Z_95 × the standard error of paired differences);
    they add in quadrature. With no noise at all (deterministic codecs on the same bytes)
    any non-zero difference is significant.

    >>> significant(0.03, 0.02, 0.02)
    True
    >>> significant(0.02, 0.02, 0.02)
    False
    >>> significant(1e-9)
    True
    """
    return abs(delta) > math.hypot(*half_widths) if half_widths else delta != 0


def speed_significant(mean_a: float, std_a: float, n_a: int, mean_b: float, std_b: float, n_b: int,
                      level: float = SPEED_LEVEL) -> bool | None:
    """Is the difference of two timings significant? Welch's t-test (pyperf's compare_to rule) at `level`.

    None when either side has fewer than two values (no spread: nothing to test with).
    Two timings with no spread at all differ significantly exactly when their means differ.

    >>> speed_significant(1.0, 0.05, 5, 1.02, 0.05, 5)
    False
    >>> speed_significant(1.0, 0.05, 5, 2.0, 0.1, 5)
    True
    >>> speed_significant(1.0, float("nan"), 1, 2.0, 0.1, 5) is None
    True
    """
    from scipy.stats import ttest_ind_from_stats

    if n_a < 2 or n_b < 2 or not all(map(math.isfinite, (mean_a, std_a, mean_b, std_b))):
        return None
    if std_a == 0 and std_b == 0:
        return mean_a != mean_b
    p = ttest_ind_from_stats(mean_a, std_a, n_a, mean_b, std_b, n_b, equal_var=False).pvalue
    return bool(p < 1 - level)


def pareto_front(points: Sequence[Sequence[float]]) -> list[bool]:
    """For points to be minimised on every axis, which ones no other point dominates.

    A point is dominated when another is no worse on every axis and better on one. Negate
    an axis to maximise it (speed).

    >>> pareto_front([(1, 5), (2, 2), (3, 3), (5, 1)])
    [True, True, False, True]
    """
    if not len(points):
        return []
    p = np.asarray(points, dtype=np.float64).reshape(len(points), -1)
    no_worse = (p[None, :, :] <= p[:, None, :]).all(axis=2)  # [i, j]: j is no worse than i
    better = (p[None, :, :] < p[:, None, :]).any(axis=2)
    dominated = (no_worse & better).any(axis=1)
    return [not d for d in dominated.tolist()]
