import numpy as np
import pytest

from gpc.runtime.stats import mean_interval, wilson_interval


def test_wilson_interval_matches_the_textbook_value_and_stays_inside_zero_one():
    lo, hi = wilson_interval(60, 100)
    assert (lo, hi) == pytest.approx((0.5020, 0.6906), abs=1e-4)
    assert all(wilson_interval(0, n)[0] == 0.0 and wilson_interval(n, n)[1] == 1.0 for n in range(1, 30))
    assert wilson_interval(0, 20)[1] > 0.1  # zero successes in 20 is not proof of 0%


def test_mean_interval_covers_the_mean_and_shrinks_with_more_samples():
    rng = np.random.default_rng(0)
    small, large = mean_interval(rng.uniform(size=20)), mean_interval(rng.uniform(size=2000))
    assert small[0] < 0.5 < small[1] and large[0] < 0.5 < large[1]
    assert large[1] - large[0] < small[1] - small[0]
