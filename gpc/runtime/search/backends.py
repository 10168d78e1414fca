"""Search backends: where a batch of (candidate, seed) episodes runs.

`LocalBackend` runs it as one vectorized rollout in this process, `RayBackend` spreads it over Ray actors (each
builds its composer and envs from factories the caller gives), and `SimulatedBandit` / `ReplayBandit` answer
from known success curves or a stored sweep, to test and benchmark strategies without a simulator.
"""

from __future__ import annotations

import math
from dataclasses import replace
from statistics import NormalDist
from typing import Callable, Protocol, Sequence

import numpy as np

from gpc.core.operators import WeightSchedule
from gpc.runtime.episodes import Episode, display_name
from gpc.runtime.rollout import RolloutSettings, rollout, stored_and_missing
from gpc.runtime.search.spaces import Space


class Backend(Protocol):
    def evaluate(self, candidates: Sequence[WeightSchedule], seeds: Sequence[int]) -> list[Episode]: ...


class LocalBackend:
    """All candidates of a batch in one vectorized rollout in this process, recorded in the store."""

    def __init__(self, composer, make_env: Callable, settings: RolloutSettings, store=None, setup: str = ""):
        self.composer, self.make_env, self.settings, self.store, self.setup = composer, make_env, settings, store, setup

    def evaluate(self, candidates, seeds):
        return rollout(self.composer, self.make_env, candidates, seeds, self.settings, self.store, self.setup)

    def close(self) -> None:
        pass


class _RayWorker:
    """A Ray actor: builds its composer once and its envs only when it runs (both from the caller's factories)."""

    def __init__(self, make_composer: Callable, make_env: Callable, settings: RolloutSettings):
        import torch

        torch.set_num_threads(1)
        self.composer, self.make_env, self.settings = make_composer(), make_env, settings

    def run(self, candidates, seeds):
        return rollout(self.composer, self.make_env, candidates, seeds, self.settings)


class RayBackend:
    """(candidate, seed) work spread over Ray actors, n_envs // candidates seeds x all candidates per task,
    each task one batched rollout; the driver records every episode in the store as its task returns.
    When n_envs is a multiple of the number of candidates, tasks are exactly the local rollout's waves, so
    both backends batch the same rows and give bit-identical episodes (otherwise equal up to floating-point
    differences of batching). `address=None` starts a local cluster unless Ray is already initialized."""

    def __init__(self, make_composer: Callable, make_env: Callable, settings: RolloutSettings, store=None,
                 setup: str = "", address: str | None = None, workers: int | None = None):
        import ray

        self.started = not ray.is_initialized()
        if self.started:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        workers = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        actor = ray.remote(num_cpus=1)(_RayWorker)
        quiet = replace(settings, progress=False, video_dir=None)
        self.actors = [actor.remote(make_composer, make_env, quiet) for _ in range(workers)]
        self.settings, self.store, self.setup = settings, store, setup

    def evaluate(self, candidates, seeds):
        from ray.util import ActorPool
        from tqdm import tqdm

        episodes, todo = stored_and_missing(self.store, self.setup, [c.key for c in candidates], seeds)
        done = {(e.candidate, e.seed) for e in episodes}
        missing = list(dict.fromkeys(seed for _, seed in todo))
        per_task = max(1, self.settings.n_envs // len(candidates))
        tasks = [missing[i:i + per_task] for i in range(0, len(missing), per_task)]
        bar = tqdm(total=len(todo), desc="episodes", disable=not self.settings.progress)
        pool = ActorPool(self.actors)
        for finished in pool.map_unordered(lambda a, task: a.run.remote(candidates, task), tasks):
            for e in finished:
                if (e.candidate, e.seed) in done:
                    continue
                if self.store:
                    self.store.record(self.setup, e)
                episodes.append(e)
                bar.update(1)
        bar.close()
        return episodes

    def close(self) -> None:
        import ray

        for a in self.actors:
            ray.kill(a)
        if self.started:
            ray.shutdown()


class SimulatedBandit:
    """Episodes with known success probabilities, one per candidate, and no simulator.

    Outcomes of one seed are correlated across candidates like rollouts from a shared start state and shared
    noise: candidate k succeeds on seed s iff sqrt(rho) z_s + sqrt(1 - rho) e_sk < Phi^-1(p_k), with z, e
    standard normal, drawn from (`seed`, s) so every strategy sees the same episodes.
    """

    def __init__(self, space: Space, probabilities: Sequence[float], rho: float = 0.5, seed: int = 0):
        self.index = {c.key: k for k, c in enumerate(space.candidates)}
        self.thresholds = np.array([-math.inf if p <= 0 else math.inf if p >= 1 else NormalDist().inv_cdf(p)
                                    for p in probabilities])
        self.rho, self.seed = rho, seed
        self.cache: dict[int, np.ndarray] = {}
        self.episodes_run = 0

    def evaluate(self, candidates, seeds):
        episodes = []
        for s in seeds:
            if s not in self.cache:
                rng = np.random.default_rng([self.seed, int(s)])
                z, e = rng.standard_normal(), rng.standard_normal(len(self.thresholds))
                self.cache[s] = math.sqrt(self.rho) * z + math.sqrt(1 - self.rho) * e < self.thresholds
            for c in candidates:
                episodes.append(Episode(c.key, int(s), bool(self.cache[s][self.index[c.key]]), 1))
        self.episodes_run += len(episodes)
        return episodes


class ReplayBandit:
    """Episodes replayed from a stored sweep: the pool is every seed that ran all candidates of the space,
    and search seed s plays pool seed number draw(`seed`, s), drawn with replacement, so a strategy meets
    real paired outcomes (and their tie-break maxima) whose true rates, the pool's means, are known. Stored
    episodes are matched to candidates by label, so sweeps stored before exact keys replay too."""

    def __init__(self, space: Space, episodes: Sequence[Episode], seed: int = 0):
        labels = [c.label for c in space.candidates]
        by_seed: dict[int, dict[str, Episode]] = {}
        for e in episodes:
            by_seed.setdefault(e.seed, {})[display_name(e.candidate)] = e
        self.pool = [by_seed[s] for s in sorted(by_seed) if all(label in by_seed[s] for label in labels)]
        if not self.pool:
            raise ValueError("episodes: no seed ran every candidate of the space")
        self.rates = [float(np.mean([row[label].success for row in self.pool])) for label in labels]
        self.seed = seed
        self.drawn: dict[int, dict[str, Episode]] = {}

    def evaluate(self, candidates, seeds):
        episodes = []
        for s in seeds:
            if s not in self.drawn:
                self.drawn[s] = self.pool[np.random.default_rng([self.seed, int(s)]).integers(len(self.pool))]
            episodes += [replace(self.drawn[s][c.label], candidate=c.key, seed=int(s)) for c in candidates]
        return episodes
