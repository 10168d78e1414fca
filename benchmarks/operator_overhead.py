"""Cost of AND / OR superposition relative to the convex operator, per action chunk, in the same run.

The shipped PushT pair's architectures (state diffusion U-Net + keypoint flow U-Net, random weights: timing
only), 20 envs, under a deterministic sampler (DDIM 10: AND / OR add a Hutchinson divergence probe, i.e. twice
the rows per parent call) and a stochastic one (DDPM 10: the Ito estimator needs no extra call).

    python benchmarks/operator_overhead.py [--threads N] [--envs 20]
"""

from __future__ import annotations

import argparse

import torch

from common import median_seconds, pusht_obs, random_policy
from gpc.composer import Composer, make_generators
from gpc.samplers import SamplerConfig
from gpc.operators import OperatorConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--envs", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    diffusion = random_policy("pusht_state_diffusion")
    flow = random_policy("pusht_keypoint_flow")
    obs = pusht_obs(args.envs)
    print(f"torch threads: {args.threads}; {args.envs} envs; 2 parents; median of 5 chunks")
    print("sampler | operator | ms/chunk | x convex")
    for name in ("ddim", "ddpm"):
        sampler = SamplerConfig(name, 10, diffusion.spec.path, "epsilon")
        base = None
        for operator in ("convex", "or", "and"):
            composer = Composer([diffusion, flow], sampler, operator=OperatorConfig(operator))
            encodings = composer.encode(obs)

            def chunk():
                composer.sample(encodings, [0.5, 0.5], make_generators(range(args.envs), 1))

            t = median_seconds(chunk)
            base = base or t
            print(f"{name:7s} | {operator:8s} | {1e3 * t:8.1f} | {t / base:.2f}")


if __name__ == "__main__":
    main()
