"""Evaluating 11 weight candidates: all in one batched rollout vs one candidate after another.

Same composition, same PushT seeds, same episode length, measured in the same run. Both vectorize over
seeds; "batched" also puts every candidate of a seed in the same wave of env slots, so each control step
is one composer call for all (seed, candidate) rows. Uses the shipped pair of configs/compose/pusht.yaml
when its checkpoints exist, else two random policies of the shipped state-diffusion shape.

    python benchmarks/search_batched.py [--seeds 4] [--max-steps 64]
"""

from __future__ import annotations

import argparse
import time

import torch
from common import random_policy

from gpc.app.cli import compose
from gpc.app.config import ConfigError, load_composer
from gpc.core.composer import Composer
from gpc.core.samplers import SamplerConfig
from gpc.runtime.rollout import RolloutSettings, rollout
from gpc.runtime.search.spaces import make_space
from gpc.sims.pusht.env import make_env


def composition():
    config = compose("search", [])
    try:
        return load_composer(config.compose, "compose"), tuple(config.env.factory.obs_keys), \
            "shipped pair: " + ", ".join(str(p.path) for p in config.compose.parents)
    except ConfigError:
        policies = [random_policy("pusht_state_diffusion", name) for name in ("a", "b")]
        sampler = SamplerConfig.native(policies[0].spec.path, policies[0].spec.prediction_type, 10)
        return Composer(policies, sampler), ("keypoint",), "random state-diffusion policies"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--max-steps", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(1)
    composer, obs_keys, what = composition()
    candidates = make_space("line", 2, 0.1).candidates
    seeds = list(range(100000, 100000 + args.seeds))

    def env():
        return make_env(obs_keys=obs_keys, max_episode_steps=args.max_steps)

    print(f"{what}; {len(candidates)} candidates x {len(seeds)} seeds, {args.max_steps} steps max, 1 torch thread")
    # warm up: lazy imports, first calls
    rollout(composer, env, candidates[:1], seeds[:1], RolloutSettings(1, 8, progress=False))
    start = time.perf_counter()
    batched = rollout(composer, env, candidates, seeds,
                      RolloutSettings(len(candidates) * len(seeds), args.max_steps, ("coverage",), False))
    t_batched = time.perf_counter() - start
    start = time.perf_counter()
    sequential = [e for c in candidates
                  for e in rollout(composer, env, [c], seeds,
                                   RolloutSettings(len(seeds), args.max_steps, ("coverage",), False))]
    t_sequential = time.perf_counter() - start
    for label, episodes, seconds in [("batched, one rollout", batched, t_batched),
                                     ("one candidate after another", sequential, t_sequential)]:
        steps = sum(e.length for e in episodes)
        successes = sum(e.success for e in episodes)
        print(f"  {label:28s} {len(episodes)} episodes, {steps} env steps, {successes} successes: {seconds:6.1f} s")
    key = {(e.candidate, e.seed): e for e in sequential}
    same = sum(e == key[e.candidate, e.seed] for e in batched)
    print(f"batched speed-up: {t_sequential / t_batched:.2f} x; {same}/{len(batched)} episodes identical "
          "(the rest differ by floating-point batching effects)")


if __name__ == "__main__":
    main()
