"""Weight search: which convex weights make the composition succeed most, at what cost in episodes.

A *space* lists the weight candidates (a line for two parents, a simplex grid for N, or two-knot schedules
over the noise level). A *strategy* proposes batches (candidates x fresh selection seeds) given the results
so far; every candidate of a batch runs on the same seeds (paired comparisons on common starts and noise).
A *backend* evaluates a batch: `LocalBackend` in one vectorized rollout, `RayBackend` spread over Ray
actors, `SimulatedBandit` from known success probabilities (to test and benchmark strategies). The chosen
weight is then evaluated again on report seeds that played no part in choosing it. Spaces, strategies and
backends each have their module; this one holds the loop.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

from gpc.runtime.episodes import Episode
from gpc.runtime.search.backends import Backend
from gpc.runtime.search.spaces import Space
from gpc.runtime.search.strategies import Results, Strategy


@dataclass
class SearchResult:
    space: Space
    best: int
    selection: list[Episode]
    held_out: list[Episode]
    wall_s: float


def run_search(space: Space, strategy: Strategy, backend: Backend, report_seeds: Sequence[int],
               score_key: str | None = None) -> SearchResult:
    """Run the strategy's batches, then the chosen candidate on the report seeds. `score_key` (a tracked
    maximum such as coverage) breaks ties in success rate."""
    began = time.perf_counter()
    index = {c.key: k for k, c in enumerate(space.candidates)}
    results = Results(len(space.candidates))
    selection: list[Episode] = []
    while (batch := strategy.propose(results)) is not None:
        episodes = backend.evaluate([space.candidates[k] for k in batch.candidates], batch.seeds)
        for e in episodes:
            results.add(index[e.candidate], e.seed, e.success, e.maxima.get(score_key, 0.0) if score_key else 0.0)
        selection += episodes
    best = strategy.best(results)
    held_out = backend.evaluate([space.candidates[best]], list(report_seeds)) if len(report_seeds) else []
    return SearchResult(space, best, selection, held_out, time.perf_counter() - began)
