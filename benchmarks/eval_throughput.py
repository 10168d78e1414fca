"""Evaluation throughput: the vectorized evaluator (N envs, one batched composer call per control step)
vs a one-env-at-a-time loop, same policy, same episodes.

    python benchmarks/eval_throughput.py [--episodes 10] [--n-envs 10] [--max-steps 100]
"""

from __future__ import annotations

import argparse
import time

from common import random_policy

from gpc.core.composer import Composer
from gpc.core.operators import WeightSchedule
from gpc.core.samplers import SamplerConfig
from gpc.runtime.rollout import RolloutSettings, rollout
from gpc.sims.pusht.env import make_env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--n-envs", type=int, default=10)
    parser.add_argument("--max-steps", type=int, default=100)
    args = parser.parse_args()
    policy = random_policy("pusht_state_diffusion")
    composer = Composer([policy], SamplerConfig.native(policy.spec.path, "epsilon", 10))
    seeds = list(range(100000, 100000 + args.episodes))
    candidates = [WeightSchedule.constant([1.0])]

    def env():
        return make_env(obs_keys=("keypoint",), max_episode_steps=args.max_steps)

    results = {}
    for label, n_envs in [("one env at a time", 1), (f"vectorized, {args.n_envs} envs", args.n_envs)]:
        start = time.perf_counter()
        episodes = rollout(composer, env, candidates, seeds, RolloutSettings(n_envs, args.max_steps, progress=False))
        seconds = time.perf_counter() - start
        steps = sum(e.length for e in episodes)
        results[label] = steps / seconds
        print(f"  {label:24s} {steps:6d} env steps in {seconds:6.1f} s = {steps / seconds:7.1f} steps/s")
    one, many = results.values()
    print(f"vectorized / one-at-a-time throughput: {many / one:.2f} x")


if __name__ == "__main__":
    main()
