"""Cost of AND / OR superposition relative to the convex operator, per action chunk, in the same run.

The shipped PushT pair's architectures (state diffusion U-Net + keypoint flow U-Net, random weights: timing
only), 20 envs, under a deterministic sampler (DDIM 10: AND / OR add a Hutchinson divergence probe, i.e. twice
the rows per parent call) and a stochastic one (DDPM 10: the Ito estimator needs no extra call).

    python benchmarks/operator_overhead.py [--threads N] [--envs 20] [--rounds 9]
"""

from __future__ import annotations

import argparse
from functools import partial

import torch
from common import interleaved, pusht_obs, random_policy, ratio_text

from gpc.core.composer import Composer, make_generators
from gpc.core.operators import OperatorConfig
from gpc.core.samplers import SamplerConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--envs", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    diffusion = random_policy("pusht_state_diffusion")
    flow = random_policy("pusht_keypoint_flow")
    obs = pusht_obs(args.envs)
    print(f"torch threads: {args.threads}; {args.envs} envs; 2 parents; {args.rounds} interleaved rounds; ratio to "
          "convex round by round: median [quartiles]")
    print("sampler | operator | ms/chunk | x convex")
    for name in ("ddim", "ddpm"):
        sampler = SamplerConfig(name, 10, diffusion.spec.path, "epsilon")
        runs = {}
        for operator in ("convex", "or", "and"):
            composer = Composer([diffusion, flow], sampler, operator=OperatorConfig(operator))
            encodings = composer.encode(obs)
            runs[operator] = partial(composer.sample, encodings, [0.5, 0.5], make_generators(range(args.envs), 1))
        for operator, row in interleaved(runs, args.rounds, "convex").items():
            print(f"{name:7s} | {operator:8s} | {1e3 * row['seconds']:8.1f} | {ratio_text(row)}")

if __name__ == "__main__":
    main()
