"""Adaptive search vs the paper's grid where the true success rates are known.

Each curve gives the true success rate of the 11 weights w = 0, 0.1, ..., 1: four simulated bandits
(outcomes of one seed correlated across weights with `rho`), or, with `--replay STORE`, a real sweep whose
seeds are drawn with replacement (true rates: the stored means). The shipped PushT sweep,
`docs/results/pusht_sweep_episodes.sqlite`, is `gpc eval sweep=0.1 episodes=200 env.n_envs=55
output_dir=outputs/sweep_pusht`'s store. A search "finds" the best weight when the one it
chooses is truly within 3 points of the best. For each budget (selection episodes in all), both strategies
run on the same episodes (common seeds), many times; the grid spends budget / 11 on each weight, the
paper's grid is 200 per weight (2200 episodes).
An oracle grid runs only the contenders (the weights truly within 3 points of the best, and the best of
the rest): no strategy can run it without knowing the answer, so its needs show how much of the adaptive
search's cost goes to ruling out the other weights.

    python benchmarks/search_bandit.py [--repeats 400] [--rho 0.5] [--replay docs/results/pusht_sweep_episodes.sqlite]
"""

from __future__ import annotations

import argparse
import time
from typing import Callable

import numpy as np

from gpc.episode_store import EpisodeStore
from gpc.search import Grid, ReplayBandit, SimulatedBandit, Space, SuccessiveRejects, make_space, run_search

CURVES = {  # shapes like the paper's sweeps: a peak inside, a sharp peak, a plateau, the best at a parent alone
    "smooth": [0.55, 0.60, 0.64, 0.68, 0.72, 0.74, 0.75, 0.73, 0.70, 0.66, 0.62],
    "sharp": [0.50, 0.52, 0.55, 0.58, 0.62, 0.66, 0.78, 0.70, 0.64, 0.60, 0.58],
    "plateau": [0.40, 0.50, 0.58, 0.64, 0.68, 0.70, 0.71, 0.70, 0.69, 0.66, 0.30],
    "edge": [0.80, 0.78, 0.75, 0.72, 0.68, 0.64, 0.60, 0.55, 0.50, 0.45, 0.40],
}
BUDGETS = [138, 275, 412, 495, 550, 605, 688, 825, 1100, 1650, 2200]
PAPER_GRID = 2200


def compare(name: str, space: Space, curve: list[float], make_backend: Callable[[int], object], repeats: int,
            score_key: str | None = None) -> None:
    """Print hit rates of grid, adaptive and oracle at every budget, and the budgets adaptive and oracle need."""
    n = len(space.candidates)
    good = np.asarray(curve) >= max(curve) - 0.03 - 1e-9
    contenders = sorted(np.flatnonzero(good).tolist() + [int(np.argmax(np.where(good, -1.0, curve)))])
    oracle_space = Space(space.kind, [space.candidates[k] for k in contenders])
    hits = {(strategy, b): 0 for strategy in ("grid", "adaptive", "oracle") for b in BUDGETS}
    used = {b: 0 for b in BUDGETS}
    for rep in range(repeats):
        backend = make_backend(rep)  # one set of episodes for every strategy and budget
        for budget in BUDGETS:
            hits["grid", budget] += good[run_search(space, Grid(n, budget // n, 0), backend, [], score_key).best]
            result = run_search(space, SuccessiveRejects(n, budget, 0), backend, [], score_key)
            hits["adaptive", budget] += good[result.best]
            used[budget] += len(result.selection)
            oracle = Grid(len(contenders), budget // len(contenders), 0)
            hits["oracle", budget] += good[contenders[run_search(oracle_space, oracle, backend, [], score_key).best]]
    rate = {key: value / repeats for key, value in hits.items()}
    print(f"\n{name}: true rates {[round(p, 3) for p in curve]}")
    print(f"budget   | grid hit % | adaptive hit % | adaptive episodes used (mean) | oracle hit % (grid over "
          f"{contenders})")
    for budget in BUDGETS:
        print(f"{budget:8d} | {100 * rate['grid', budget]:10.1f} | {100 * rate['adaptive', budget]:14.1f} | "
              f"{used[budget] / repeats:29.0f} | {100 * rate['oracle', budget]:.1f}")
    target = rate["grid", PAPER_GRID]
    print(f"paper's grid ({PAPER_GRID} episodes) hits {100 * target:.1f}%; to hit within 2 points of that,")
    for strategy in ("adaptive", "oracle"):
        enough = [b for b in BUDGETS if rate[strategy, b] >= target - 0.02]
        print(f"  {strategy} needs " + (f"{enough[0]} ({enough[0] / PAPER_GRID:.2f} of the grid's episodes)" if enough
                                        else f"more than {PAPER_GRID}"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=400)
    parser.add_argument("--rho", type=float, default=0.5, help="correlation of one seed's outcomes across weights")
    parser.add_argument("--replay", help="an episode store holding a two-parent sweep (step 0.1) to replay")
    parser.add_argument("--score", default="coverage", help="replay: the tracked maximum that breaks ties")
    args = parser.parse_args()
    space = make_space("line", 2, 0.1)
    began = time.perf_counter()
    print(f"{args.repeats} repetitions per cell; hit = chosen weight truly within 3 points of the best")
    if args.replay:
        with EpisodeStore(args.replay, read_only=True) as store:  # the setup with the most episodes, if several
            episodes = max((store.episodes(setup) for setup in store.setups()), key=len)
        pool = ReplayBandit(space, episodes)
        compare(f"replay of {args.replay} ({len(pool.pool)} seeds)", space, pool.rates,
                lambda rep: ReplayBandit(space, episodes, seed=rep), args.repeats, args.score)
    else:
        print(f"simulated bandits, rho={args.rho}")
        for name, curve in CURVES.items():
            compare(name, space, curve, lambda rep: SimulatedBandit(space, curve, args.rho, seed=rep), args.repeats)
    print(f"\n{time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
