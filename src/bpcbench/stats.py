"""Every statistical rule bpcbench reports with, defined once.

* ``bits_per_byte``: bits divided by input bytes (NaN for no input), the headline unit.
* ``bootstrap_interval``: 95% percentile bootstrap of Σbits/Σbytes over independently
  scored pieces (chunks, lanes), fixed seed, so a rerun gives the same interval.
* ``mean_and_uncertainty``: llama-perplexity's mean ± sqrt(var / (n − 1)).
* ``significant``: a difference is significant when it lies outside the 95% interval of
  the difference; with independent intervals the half-widths add in quadrature.
* ``pareto_front``: the points no other point beats on every axis.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 20240901
CI_LEVEL = 0.95
Z_95 = 1.959963984540054  # two-sided 95% quantile of the normal distribution


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
    """Percentile bootstrap of Σbits/Σbytes over pieces (resampled with replacement).

    >>> lo, hi = bootstrap_interval([10.0, 12.0, 8.0, 11.0], [10, 10, 10, 10])
    >>> lo <= 41 / 40 <= hi
    True
    """
    bits = np.asarray(piece_bits, dtype=np.float64)
    nbytes = np.asarray(piece_bytes, dtype=np.float64)
    if bits.shape != nbytes.shape or bits.ndim != 1:
        raise ValueError("piece_bits and piece_bytes must be 1-D and the same length")
    n = len(bits)
    if n == 0 or nbytes.sum() <= 0:
        return math.nan, math.nan
    point = bits.sum() / nbytes.sum()
    if n == 1:
        return point, point
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(resamples, n))
    num = bits[idx].sum(axis=1)
    den = nbytes[idx].sum(axis=1)
    ratios = num[den > 0] / den[den > 0]
    alpha = (1 - level) / 2
    lo, hi = np.quantile(ratios, [alpha, 1 - alpha])
    # the percentile interval of a skewed ratio can miss the point estimate by a hair
    return float(min(lo, point)), float(max(hi, point))


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
    """Is `delta` outside the 95% interval of the difference?

    Each argument after `delta` is the 95% half-width of one independent source of noise
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
