"""Time per action chunk: each PushT parent alone vs their composition (batch 1), and 11 weight
candidates vs 1 for 20 envs. Parents have the shipped architectures (random weights: timing only).

    python benchmarks/composer_latency.py [--threads N]
"""

from __future__ import annotations

import argparse

import torch
from common import median_seconds, pusht_obs, random_policy

from gpc.core.composer import Composer, make_generators
from gpc.core.samplers import SamplerConfig


def chunk_time(composer: Composer, obs, weights, envs: int) -> float:
    n_candidates = len(weights) if isinstance(weights[0], list) else 1

    def one_chunk():
        composer.sample(composer.encode(obs), weights, make_generators(range(envs), n_candidates))

    return median_seconds(one_chunk, repeats=5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    state, image = random_policy("pusht_state_diffusion"), random_policy("pusht_image_flow")
    sampler = SamplerConfig.native(state.spec.path, "epsilon", 10)  # DDIM 10 steps, as in the paper
    obs1 = pusht_obs(1)
    t_state = chunk_time(Composer([state], sampler), obs1, [1.0], 1)
    t_image = chunk_time(Composer([image], sampler), obs1, [1.0], 1)
    both = Composer([state, image], sampler)
    t_both = chunk_time(both, obs1, [0.5, 0.5], 1)
    print(f"torch threads: {args.threads}; DDIM 10 steps; batch 1")
    print(f"  state diffusion alone      {1e3 * t_state:8.1f} ms/chunk")
    print(f"  image flow alone           {1e3 * t_image:8.1f} ms/chunk")
    print(f"  composed (2 parents)       {1e3 * t_both:8.1f} ms/chunk   "
          f"= {t_both / (t_state + t_image):.3f} x the sum of the parents, "
          f"{t_both / max(t_state, t_image):.3f} x the slower parent")
    obs20 = pusht_obs(20)
    k1 = chunk_time(both, obs20, [[0.5, 0.5]], 20)
    grid = [[w / 10, 1 - w / 10] for w in range(11)]
    k11 = chunk_time(both, obs20, grid, 20)
    print("20 envs, composed:")
    print(f"  K=1 candidate              {1e3 * k1:8.1f} ms/chunk")
    print(f"  K=11 candidates            {1e3 * k11:8.1f} ms/chunk   = {k11 / k1:.2f} x K=1 "
          f"({k1 * 11 / k11:.2f} x faster than 11 separate calls)")


if __name__ == "__main__":
    main()
