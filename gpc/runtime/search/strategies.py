"""Search strategies: which candidates run on which fresh seeds next, given the results so far, and which is best."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np

from gpc.runtime.stats import sign_test


class Results:
    """Selection outcomes so far: for each candidate, seed -> (success, tie-break score)."""

    def __init__(self, n_candidates: int):
        self.outcomes: list[dict[int, tuple[bool, float]]] = [{} for _ in range(n_candidates)]

    def add(self, k: int, seed: int, success: bool, score: float = 0.0) -> None:
        self.outcomes[k][seed] = (bool(success), float(score))

    def rank(self, ks: Sequence[int], seeds: Sequence[int]) -> list[int]:
        """Candidates best first by success rate on common seeds, ties by mean score, then by order."""
        def key(k):
            mine = [self.outcomes[k][s] for s in seeds]
            return -np.mean([ok for ok, _ in mine]), -np.mean([score for _, score in mine]), k
        return sorted(ks, key=key)

    def discordant(self, a: int, b: int, seeds: Sequence[int]) -> tuple[int, int]:
        """(seeds where only a succeeded, seeds where only b succeeded)."""
        oa = [self.outcomes[a][s][0] for s in seeds]
        ob = [self.outcomes[b][s][0] for s in seeds]
        return sum(x and not y for x, y in zip(oa, ob)), sum(y and not x for x, y in zip(oa, ob))


@dataclass(frozen=True)
class Batch:
    candidates: tuple[int, ...]
    seeds: tuple[int, ...]


class Strategy(Protocol):
    def propose(self, results: Results) -> Batch | None: ...
    def best(self, results: Results) -> int: ...


class Grid:
    """The paper's sweep: every candidate on the same seeds, the best measured one wins."""

    def __init__(self, n_candidates: int, episodes_per_candidate: int, first_seed: int):
        if episodes_per_candidate < 1:
            raise ValueError(f"budget: the grid needs at least one episode for each of {n_candidates} candidates")
        self.candidates = tuple(range(n_candidates))
        self.seeds = tuple(range(first_seed, first_seed + episodes_per_candidate))
        self.proposed = False

    def propose(self, results: Results) -> Batch | None:
        if self.proposed:
            return None
        self.proposed = True
        return Batch(self.candidates, self.seeds)

    def best(self, results: Results) -> int:
        return results.rank(self.candidates, self.seeds)[0]


def _logbar(n_candidates: int) -> float:
    return 0.5 + sum(1 / i for i in range(2, n_candidates + 1))


class SuccessiveRejects:
    """Successive rejects on common seeds (Audibert & Bubeck 2010), with a paired early stop.

    K candidates, K - 1 phases; in phase k every survivor has run on the first n_k seeds, with
    n_k = ceil((budget - K) / (logbar(K) (K + 1 - k))) and logbar(K) = 1/2 + sum_{i=2..K} 1/i, and the worst
    survivor on those common seeds is dropped. Early phases spend few episodes on many candidates but drop
    only one, so the best rarely goes out on a handful of seeds (successive halving's usual miss); the last
    two candidates get the most. The total stays within the budget. Early stop: if, on the seeds where the
    leader and a rival disagree, an exact one-sided sign test finds the leader better than every rival at
    level delta / ((survivors - 1) (K - 1)), the leader wins at once: Bonferroni over the rivals and over the
    K - 1 times the test can run, so a false early stop has probability at most delta.
    """

    def __init__(self, n_candidates: int, budget: int, first_seed: int, delta: float = 0.05):
        if n_candidates > 1 and budget < 2 * n_candidates:
            raise ValueError(f"budget: successive rejects over {n_candidates} candidates needs at least "
                             f"{2 * n_candidates} episodes, got {budget}")
        self.survivors = list(range(n_candidates))
        self.budget, self.delta, self.spent, self.tests = budget, delta, 0, max(n_candidates - 1, 1)
        self.plan = (n_candidates, budget, 1)  # the schedule in force: (candidates, budget, phase)
        self.seeds: tuple[int, ...] = ()
        self.next_seed = first_seed

    def propose(self, results: Results) -> Batch | None:
        while True:
            if self.seeds:
                ranked = results.rank(self.survivors, self.seeds)
                keep = ranked[:1] if self._leader_clearly_best(results, ranked) else self._keep(results, ranked)
                n_plan, plan_budget, phase = self.plan
                if len(keep) == len(ranked) - 1:
                    self.plan = (n_plan, plan_budget, phase + 1)
                else:  # several dropped at once: successive rejects over the rest, with what is left
                    self.plan = (len(keep), self.budget - self.spent + len(keep) * len(self.seeds), 1)
                self.survivors = sorted(keep)
            if len(self.survivors) == 1:
                return None
            n_plan, plan_budget, phase = self.plan
            n_k = math.ceil((plan_budget - n_plan) / (_logbar(n_plan) * (n_plan + 1 - phase)))
            n_k = min(n_k, len(self.seeds) + (self.budget - self.spent) // len(self.survivors))
            if n_k > len(self.seeds):  # otherwise this phase adds no seeds: drop the next worst at once
                new = tuple(range(self.next_seed, self.next_seed + n_k - len(self.seeds)))
                self.next_seed += len(new)
                self.seeds += new
                self.spent += len(new) * len(self.survivors)
                return Batch(tuple(self.survivors), new)
            if self.spent + len(self.survivors) > self.budget:
                return None

    def best(self, results: Results) -> int:
        return results.rank(self.survivors, self.seeds)[0]

    def _keep(self, results: Results, ranked: list[int]) -> list[int]:
        """The survivors of a phase, given them best first: all but the worst."""
        return ranked[:-1]

    def _leader_clearly_best(self, results: Results, ranked: list[int]) -> bool:
        level = self.delta / ((len(ranked) - 1) * self.tests)
        return all(sign_test(*results.discordant(ranked[0], k, self.seeds)) < level for k in ranked[1:])


class GaussianProcessRejects(SuccessiveRejects):
    """Successive rejects that also drops every candidate a smooth model gives little chance of being best.

    Success rates are modelled as a Gaussian process over the candidates' weights (squared-exponential kernel),
    fitted to every episode so far, eliminated candidates' included, so neighbours share evidence: on a
    simplex of many weights a whole region that did badly goes at once, and the budget replans over the
    rest. The model only steers the spending; the choice is still the best on common seeds. Draws come from
    a fixed generator, so a rerun proposes the same batches (resume and reproducibility).
    """

    def __init__(self, positions: np.ndarray, budget: int, first_seed: int, delta: float = 0.05,
                 lengthscale: float = 0.15, amplitude: float = 0.15, prune: float = 0.01, draws: int = 10000):
        super().__init__(len(positions), budget, first_seed, delta)
        positions = np.asarray(positions, dtype=np.float64)
        sq_dist = ((positions[:, None] - positions[None, :]) ** 2).sum(-1)
        self.kernel = amplitude ** 2 * np.exp(-0.5 * sq_dist / lengthscale ** 2)
        self.prune, self.draws = prune, draws

    def _keep(self, results: Results, ranked: list[int]) -> list[int]:
        # Below a quarter of the uniform 1/K too: with no evidence against a weight, its chance is about 1/K.
        level = min(self.prune, 0.25 / len(ranked))
        chance = self.best_probabilities(results, ranked)
        keep = [ranked[0]] + [k for k, p in zip(ranked[1:], chance[1:]) if p >= level]
        return keep if len(keep) < len(ranked) else ranked[:-1]

    def best_probabilities(self, results: Results, candidates: Sequence[int]) -> np.ndarray:
        """Posterior probability that each of `candidates` has the highest success rate."""
        counts = np.array([len(o) for o in results.outcomes], dtype=np.float64)
        wins = np.array([sum(ok for ok, _ in o.values()) for o in results.outcomes], dtype=np.float64)
        seen = np.flatnonzero(counts)
        mean = wins.sum() / counts.sum()
        noise = max(mean * (1 - mean), 0.01) / counts[seen]  # binomial variance at the pooled rate
        kernel, rows = self.kernel, np.asarray(candidates)
        gain = np.linalg.solve(kernel[np.ix_(seen, seen)] + np.diag(noise), kernel[np.ix_(seen, rows)]).T
        centre = mean + gain @ (wins[seen] / counts[seen] - mean)
        cov = kernel[np.ix_(rows, rows)] - gain @ kernel[np.ix_(seen, rows)]
        factor = np.linalg.cholesky(cov + 1e-9 * np.eye(len(rows)))
        rng = np.random.default_rng([len(results.outcomes), len(self.seeds), len(rows)])
        draws = centre + rng.standard_normal((self.draws, len(rows))) @ factor.T
        return np.bincount(draws.argmax(1), minlength=len(rows)) / self.draws
