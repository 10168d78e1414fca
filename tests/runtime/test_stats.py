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


def test_one_episode_has_no_interval_and_its_report_is_strict_json():
    import json
    from dataclasses import asdict

    from gpc.runtime.episodes import Episode
    from gpc.runtime.report import format_table, summarize

    assert mean_interval([0.5]) == (None, None)
    rows = summarize([Episode("w=1.0", 0, True, 10, {"coverage": 0.96})], ["w=1.0"], ["a alone"])
    assert "0.960 [one episode]" in format_table(rows)
    json.dumps([asdict(r) for r in rows], allow_nan=False)  # NaN would raise: it is not JSON
