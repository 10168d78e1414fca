"""Adaptive search vs the paper's grid where the true success rates are known.

Each curve gives the true success rate of the 11 weights w = 0, 0.1, ..., 1: four simulated bandits
(outcomes of one seed correlated across weights with `rho`), or, with `--replay STORE`, a real sweep whose
seeds are drawn with replacement (true rates: the stored means). The shipped PushT sweep,
`docs/results/pusht_sweep_episodes.sqlite`, is `gpc eval sweep=0.1 episodes=200 env.n_envs=55
output_dir=outputs/sweep_pusht`'s store. `--simplex` instead simulates three parents: the 66 weight vectors
in steps of 0.1, with a smooth peak inside the simplex. A search "finds" the best weight when the one it
chooses is truly within 3 points of the best. For each budget (selection episodes in all), every strategy
runs on the same episodes (common seeds), many times: the grid spends budget / candidates on each weight,
`adaptive` is successive rejects, `gp` successive rejects that also drops the weights a Gaussian process
over the weights gives little chance of being best. The paper's grid is 200 episodes per weight (2200 on
the line); on the simplex the reference grid is 100 per weight (6600).
An oracle grid runs only the contenders (the weights truly within 3 points of the best, and the best of
the rest): no strategy can run it without knowing the answer, so its needs show how much of a search's
cost goes to ruling out the other weights.

    python benchmarks/search_bandit.py [--repeats 400] [--rho 0.5] [--replay docs/results/pusht_sweep_episodes.sqlite]
    python benchmarks/search_bandit.py --simplex --repeats 200
"""

from __future__ import annotations

import argparse
import itertools
import time
from typing import Callable

import numpy as np

from gpc.runtime.episodes import EpisodeStore
from gpc.runtime.search import run_search
from gpc.runtime.search.backends import ReplayBandit, SimulatedBandit
from gpc.runtime.search.spaces import Space, make_space
from gpc.runtime.search.strategies import GaussianProcessRejects, Grid, SuccessiveRejects

CURVES = {  # shapes like the paper's sweeps: a peak inside, a sharp peak, a plateau, the best at a parent alone
    "smooth": [0.55, 0.60, 0.64, 0.68, 0.72, 0.74, 0.75, 0.73, 0.70, 0.66, 0.62],
    "sharp": [0.50, 0.52, 0.55, 0.58, 0.62, 0.66, 0.78, 0.70, 0.64, 0.60, 0.58],
    "plateau": [0.40, 0.50, 0.58, 0.64, 0.68, 0.70, 0.71, 0.70, 0.69, 0.66, 0.30],
    "edge": [0.80, 0.78, 0.75, 0.72, 0.68, 0.64, 0.60, 0.55, 0.50, 0.45, 0.40],
}
FRACTIONS = [1 / 16, 1 / 8, 3 / 16, 0.225, 1 / 4, 0.275, 5 / 16, 3 / 8, 1 / 2, 3 / 4, 1]  # of the reference grid
SEARCHES = ("grid", "adaptive", "gp")


def simplex_surface(space: Space) -> list[float]:
    """Success 0.3 far from a peak of 0.7 at weights (0.5, 0.3, 0.2), a Gaussian bump of width 0.25."""
    distance = ((space.positions() - np.array([0.5, 0.3, 0.2])) ** 2).sum(1)
    return list(0.3 + 0.4 * np.exp(-distance / (2 * 0.25 ** 2)))


def latent_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """The correlation of two normals that, thresholded, give 0/1 outcomes a and b (tetrachoric): rho's scale."""
    from scipy.optimize import brentq
    from scipy.stats import multivariate_normal, norm

    ta, tb, both = norm.ppf(a.mean()), norm.ppf(b.mean()), (a * b).mean()
    return brentq(lambda r: multivariate_normal([0, 0], [[1, r], [r, 1]]).cdf([ta, tb]) - both, -0.999, 0.999)


def make_strategy(name: str, space: Space, budget: int):
    n = len(space.candidates)
    if name == "grid":
        return Grid(n, budget // n, 0)
    if name == "adaptive":
        return SuccessiveRejects(n, budget, 0)
    return GaussianProcessRejects(space.positions(), budget, 0)


def compare(name: str, space: Space, curve: list[float], make_backend: Callable[[int], object], repeats: int,
            reference: int, score_key: str | None = None) -> None:
    """Print every strategy's hit rate at every budget, and the budgets each needs to match the reference grid."""
    good = np.asarray(curve) >= max(curve) - 0.03 - 1e-9
    contenders = sorted(np.flatnonzero(good).tolist() + [int(np.argmax(np.where(good, -1.0, curve)))])
    oracle_space = Space(space.kind, [space.candidates[k] for k in contenders])
    budgets = [round(f * reference) for f in FRACTIONS]
    runnable = {(s, b) for s in SEARCHES for b in budgets if s == "grid" or b >= 2 * len(space.candidates)}
    hits = {(s, b): 0 for s in (*SEARCHES, "oracle") for b in budgets}
    used = dict.fromkeys(hits, 0)
    for rep in range(repeats):
        backend = make_backend(rep)  # one set of episodes for every strategy and budget
        for budget in budgets:
            for search in SEARCHES:
                if (search, budget) in runnable:
                    result = run_search(space, make_strategy(search, space, budget), backend, [], score_key)
                    hits[search, budget] += good[result.best]
                    used[search, budget] += len(result.selection)
            oracle = Grid(len(contenders), budget // len(contenders), 0)
            hits["oracle", budget] += good[contenders[run_search(oracle_space, oracle, backend, [], score_key).best]]
    rate = {key: value / repeats for key, value in hits.items()}
    print(f"\n{name}: {len(curve)} weights, true rates {[round(p, 3) for p in curve] if len(curve) < 20 else ''}")
    print(f"budget | grid hit % | adaptive hit % (episodes used) | gp hit % (episodes used) | oracle hit % "
          f"(grid over {contenders})")
    for b in budgets:
        cells = [f"{100 * rate[s, b]:.1f}" + (f" ({used[s, b] / repeats:.0f})" if s != "grid" else "")
                 if (s, b) in runnable else "-" for s in SEARCHES]
        print(f"{b:6d} | " + " | ".join(cells) + f" | {100 * rate['oracle', b]:.1f}")
    target = rate["grid", reference]
    print(f"the reference grid ({reference} episodes) hits {100 * target:.1f}%; to hit within 2 points of that,")
    for search in ("adaptive", "gp", "oracle"):
        enough = [b for b in budgets if rate[search, b] >= target - 0.02]
        print(f"  {search} needs " + (f"{enough[0]} ({enough[0] / reference:.2f} of the grid's episodes)" if enough
                                      else f"more than {reference}"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=400)
    parser.add_argument("--rho", type=float, default=0.5, help="correlation of one seed's outcomes across weights")
    parser.add_argument("--replay", help="an episode store holding a two-parent sweep (step 0.1) to replay")
    parser.add_argument("--score", default="coverage", help="replay: the tracked maximum that breaks ties")
    parser.add_argument("--simplex", action="store_true", help="three simulated parents instead of the line")
    args = parser.parse_args()
    began = time.perf_counter()
    print(f"{args.repeats} repetitions per cell; hit = chosen weight truly within 3 points of the best")
    if args.simplex:
        space = make_space("simplex", 3, 0.1)
        surface = simplex_surface(space)
        compare(f"simplex, rho={args.rho}", space, surface,
                lambda rep: SimulatedBandit(space, surface, args.rho, seed=rep), args.repeats, 100 * 66)
    elif args.replay:
        space = make_space("line", 2, 0.1)
        with EpisodeStore(args.replay, read_only=True) as store:  # the setup with the most episodes, if several
            episodes = max((store.episodes(setup) for setup in store.setups()), key=len)
        pool = ReplayBandit(space, episodes)
        outcomes = np.array([[row[c.label].success for c in space.candidates] for row in pool.pool], float)
        neighbours = [(k, k + 1) for k in range(len(space.candidates) - 1)]
        everyone = list(itertools.combinations(range(len(space.candidates)), 2))
        phi = [round(float(np.corrcoef(outcomes[:, i], outcomes[:, j])[0, 1]), 2) for i, j in neighbours]
        latent = [round(latent_correlation(outcomes[:, i], outcomes[:, j]), 2) for i, j in neighbours]
        overall = np.mean([latent_correlation(outcomes[:, i], outcomes[:, j]) for i, j in everyone])
        print(f"neighbouring weights' outcomes correlate {phi} as 0/1, {latent} as latent normals (rho's scale); "
              f"latent, averaged over all pairs: {overall:.2f}")
        compare(f"replay of {args.replay} ({len(pool.pool)} seeds)", space, pool.rates,
                lambda rep: ReplayBandit(space, episodes, seed=rep), args.repeats, 2200, args.score)
    else:
        space = make_space("line", 2, 0.1)
        print(f"simulated bandits, rho={args.rho}")
        for name, curve in CURVES.items():
            compare(name, space, curve, lambda rep: SimulatedBandit(space, curve, args.rho, seed=rep), args.repeats,
                    2200)
    print(f"\n{time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
