"""The significance levels, defined once in bpcbench.stats: bits at CI_LEVEL, speed at SPEED_LEVEL."""

from __future__ import annotations

from statistics import NormalDist

import pytest

from bpcbench import stats


def test_z_95_is_the_normal_quantile_of_ci_level():
    assert stats.Z_95 == pytest.approx(NormalDist().inv_cdf(0.5 + stats.CI_LEVEL / 2), rel=1e-15)


def test_speed_is_judged_at_speed_level_by_default():
    # Welch's t = 3.16 on 8 degrees of freedom: p = 0.013, significant at 95% but not at 99%
    timings = (1.0, 0.05, 5, 1.1, 0.05, 5)
    assert stats.SPEED_LEVEL == 0.99
    assert stats.speed_significant(*timings) is False
    assert stats.speed_significant(*timings, level=stats.CI_LEVEL) is True


def test_compare_takes_the_speed_level_from_stats():
    from bpcbench.bench import compare

    assert not hasattr(compare, "SPEED_LEVEL")
