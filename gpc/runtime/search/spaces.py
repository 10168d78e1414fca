"""Weight search spaces: the candidates a search chooses among."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from gpc.core.operators import WeightSchedule

SPACES = ("line", "simplex", "schedule")


@dataclass(frozen=True)
class Space:
    kind: str
    candidates: list[WeightSchedule]
    xs: list[float] | None = None  # position on a sweep plot's x axis (the first parent's weight on a line)

    def positions(self) -> np.ndarray:
        """Each candidate as a point (its weights; a schedule's at the clean and at the noise end), one a row."""
        ends = (0.0, 1.0) if self.kind == "schedule" else (0.0,)
        return np.array([np.concatenate([c.at(s) for s in ends]) for c in self.candidates])


def simplex_points(n_parents: int, step: float) -> list[tuple[float, ...]]:
    """Every weight vector on the simplex whose entries are multiples of `step`, first weight ascending."""
    m = round(1 / step)
    if not 0 < step <= 1 or abs(m * step - 1) > 1e-6:
        raise ValueError(f"step: must divide 1 (0.1, 0.25, 0.5, ...), got {step}")
    points = [p + (m - sum(p),) for p in itertools.product(range(m + 1), repeat=n_parents - 1) if sum(p) <= m]
    return [tuple(i / m for i in p) for p in points]


def make_space(kind: str, n_parents: int, step: float) -> Space:
    if kind == "line":
        if n_parents != 2:
            raise ValueError(f"space: a line needs exactly 2 parents, got {n_parents}; use simplex")
        points = simplex_points(2, step)
        return Space(kind, [WeightSchedule.constant(p) for p in points], [p[0] for p in points])
    if kind == "simplex":
        return Space(kind, [WeightSchedule.constant(p) for p in simplex_points(n_parents, step)])
    if kind == "schedule":  # weights at the clean end (s=0) and at the noise end (s=1), linear between
        points = simplex_points(n_parents, step)
        return Space(kind, [WeightSchedule.constant(clean) if clean == noisy else
                            WeightSchedule((0.0, 1.0), (clean, noisy)) for clean in points for noisy in points])
    raise ValueError(f"space: unknown space {kind!r}; choose from {', '.join(SPACES)}")
