"""Confidence intervals for what rollouts measure."""

from __future__ import annotations

import math

import numpy as np

Z95 = 1.959963984540054


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """95% Wilson score interval for a success rate; honest at 0% and 100%, unlike the normal one."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


def mean_interval(values, z: float = Z95) -> tuple[float, float] | tuple[None, None]:
    """Normal-approximation 95% interval of a mean (for bounded per-episode scores); (None, None) for fewer than two
    values, which give no spread (written as null, never as NaN)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        return None, None
    half = z * values.std(ddof=1) / math.sqrt(len(values))
    return float(values.mean() - half), float(values.mean() + half)


def sign_test(wins: int, losses: int) -> float:
    """One-sided p-value of `wins` or more among `wins + losses` discordant pairs under a fair coin."""
    n = wins + losses
    return sum(math.comb(n, i) for i in range(wins, n + 1)) / 2 ** n if n else 1.0


def two_sided_sign_test(wins: int, losses: int) -> float:
    """Exact two-sided p-value (McNemar's exact test) of a split at least this uneven."""
    return min(1.0, 2 * sign_test(max(wins, losses), min(wins, losses)))
