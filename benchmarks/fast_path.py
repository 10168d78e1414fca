"""gpc's composed sampler and its fast paths against the published code's loop, in one run.

Reference loop (what the GPC paper's code does): every denoising step, each parent re-encodes the
observation and is called on its own at batch 1, then the predictions are mixed and diffusers' DDIM steps.
Measured against it: gpc's composer (encoders once per control step, one batched call per parent per step),
and each fast path of `gpc.core.acceleration` (fuse, compile, bfloat16). Parents: up to three diffusion U-Nets
of the shipped PushT architecture with different random weights (fusable), DDIM 10 steps. Configurations run
interleaved in one process (benchmarks/common.py: `interleaved`), their ratios taken round by round.

    python benchmarks/fast_path.py [--device cpu|cuda] [--threads N] [--rounds 7]
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import torch
from common import interleaved, pusht_obs, random_policy, ratio_text

from gpc.core.acceleration import FastPath
from gpc.core.composer import Composer, make_generators
from gpc.core.samplers import SamplerConfig

CONFIGS = {
    "reference": None,
    "gpc": FastPath(),
    "gpc fuse": FastPath(fuse=True),
    "gpc compile": FastPath(compile=True),
    "gpc bfloat16": FastPath(precision="bfloat16"),
}
STEPS = 10


def parents(n: int, device: str):
    out = []
    for k in range(n):
        policy = random_policy("pusht_state_diffusion", name=f"unet{k}")
        torch.manual_seed(k)
        for p in policy.parameters():  # distinct parents of one architecture
            p.data.add_(0.02 * torch.randn_like(p))
        out.append(policy.to(device))
    return out


def reference_chunk(ps, obs, weights, generator_seed: int, device: str) -> torch.Tensor:
    """One chunk the way the published code makes it: re-encode per step, parents one after the other."""
    from diffusers import DDIMScheduler

    spec = ps[0].spec
    scheduler = DDIMScheduler(**spec.path.scheduler_config(), prediction_type="epsilon", clip_sample=False)
    scheduler.set_timesteps(STEPS)
    g = torch.Generator(device=device).manual_seed(generator_seed)
    x = torch.randn((1, spec.horizon, spec.action_dim), generator=g, device=device)
    for t in scheduler.timesteps:
        eps = 0
        for w, p in zip(weights, ps):
            eps = eps + w * p.predict(x, torch.full((1,), float(t), device=device), p.encode(obs))
        x = scheduler.step(eps, t, x).prev_sample
    return x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = args.device
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    ps = parents(3, device)
    sampler = SamplerConfig.native(ps[0].spec.path, "epsilon", STEPS)
    obs1, obs20 = pusht_obs(1), pusht_obs(20)
    grid = [[w / 10, 1 - w / 10] for w in range(11)]
    composers = {(name, n): Composer(ps[:n], sampler, device=device, fast=fast)
                 for name, fast in CONFIGS.items() if fast is not None for n in (1, 2, 3)}

    def gpc_chunk(composer, obs, weights, rows, candidates):
        composer.sample(composer.encode(obs), weights, make_generators(range(rows), candidates, device=device))
        sync()

    def reference(n):
        reference_chunk(ps[:n], obs1, [1.0 / n] * n, 0, device)
        sync()

    where = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {args.threads} torch threads"
    print(f"{where}; DDIM {STEPS} steps; PushT U-Nets; {args.rounds} interleaved rounds; ratio = config time / "
          "baseline time, round by round: median [quartiles] (below 1 is faster)")
    with torch.no_grad():
        for n in (1, 2, 3):
            runs = {"reference": partial(reference, n)}
            runs |= {name: partial(gpc_chunk, composers[name, n], obs1, [1.0 / n] * n, 1, 1)
                     for name in CONFIGS if name != "reference"}
            print(f"batch 1, {n} parent{'s' * (n > 1)} (baseline: the published loop)")
            for name, row in interleaved(runs, args.rounds, "reference", warmup=2).items():
                print(f"  {name:13s} {1e3 * row['seconds']:8.1f} ms  {ratio_text(row)}")
        runs = {name: partial(gpc_chunk, composers[name, 2], obs20, grid, 20, 11) for name in CONFIGS
                if name != "reference"}
        runs["gpc, 1 candidate"] = partial(gpc_chunk, composers["gpc", 2], obs20, [[0.5, 0.5]], 20, 1)
        print("20 envs x 11 candidates, 2 parents, one call (baseline: gpc)")
        for name, row in interleaved(runs, args.rounds, "gpc", warmup=2).items():
            print(f"  {name:16s} {row['seconds']:8.2f} s  {ratio_text(row)}")
        start = time.perf_counter()  # the published loop: 220 rows one at a time, timed once (it is slow)
        for env in range(20):
            one = {k: v[env:env + 1] for k, v in obs20.items()}
            for w in grid:
                reference_chunk(ps[:2], one, w, env, device)
        sync()
        print(f"  the published loop, once: {time.perf_counter() - start:8.2f} s")


if __name__ == "__main__":
    main()
