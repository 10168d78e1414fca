"""gpc's composed sampler and its fast paths against the published code's loop, in one run.

Reference loop (what the GPC paper's code does): every denoising step, each parent re-encodes the
observation and is called on its own at batch 1, then the predictions are mixed and diffusers' DDIM steps.
Measured against it: gpc's composer (encoders once per control step, one batched call per parent per step),
and each fast path of `gpc.acceleration` (fuse, compile, bfloat16). Parents: up to three diffusion U-Nets
of the shipped PushT architecture with different random weights (fusable), DDIM 10 steps.
Each configuration runs in its own process so that its peak memory can be read.

    python benchmarks/fast_path.py [--device cpu|cuda] [--threads N] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

import torch

from common import median_seconds, pusht_obs, random_policy
from gpc.acceleration import FastPath
from gpc.composer import Composer, make_generators
from gpc.samplers import SamplerConfig

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


def run_config(name: str, device: str, repeats: int) -> dict:
    """Times for this configuration: batch-1 chunks for 1, 2, 3 parents and 20 envs x 11 candidates."""
    fast = CONFIGS[name]
    ps = parents(3, device)
    sampler = SamplerConfig.native(ps[0].spec.path, "epsilon", STEPS)
    obs1, obs20 = pusht_obs(1), pusht_obs(20)
    grid = [[w / 10, 1 - w / 10] for w in range(11)]
    result = {"config": name}
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    with torch.no_grad():
        for n in (1, 2, 3):
            weights = [1.0 / n] * n
            if fast is None:
                def chunk():
                    reference_chunk(ps[:n], obs1, weights, 0, device)
                    sync()
            else:
                composer = Composer(ps[:n], sampler, device=device, fast=fast)

                def chunk():
                    composer.sample(composer.encode(obs1), weights, make_generators([0], 1, device=device))
                    sync()
            result[f"batch1_{n}"] = median_seconds(chunk, repeats, warmup=2)
        if fast is None:  # 220 rows one at a time, as the published loop would evaluate them
            def throughput():
                for env in range(20):
                    one = {k: v[env:env + 1] for k, v in obs20.items()}
                    for w in grid:
                        reference_chunk(ps[:2], one, w, env, device)
                sync()
            result["grid_20x11"] = median_seconds(throughput, 1, warmup=0)
        else:
            composer = Composer(ps[:2], sampler, device=device, fast=fast)

            def throughput():
                composer.sample(composer.encode(obs20), grid, make_generators(range(20), 11, device=device))
                sync()
            result["grid_20x11"] = median_seconds(throughput, repeats, warmup=2)
            k1 = median_seconds(lambda: (composer.sample(composer.encode(obs20), [[0.5, 0.5]],
                                                         make_generators(range(20), 1, device=device)), sync()),
                                repeats, warmup=1)
            result["grid_20x1"] = k1
    result["peak_mb"] = (torch.cuda.max_memory_allocated() / 2 ** 20 if device == "cuda"
                         else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", help=argparse.SUPPRESS)  # one configuration, in a child process
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.only:
        print(json.dumps(run_config(args.only, args.device, args.repeats)))
        return
    rows = {}
    for name in CONFIGS:
        out = subprocess.run([sys.executable, __file__, "--only", name, "--device", args.device, "--threads",
                              str(args.threads), "--repeats", str(args.repeats)], capture_output=True, text=True)
        if out.returncode:
            print(f"{name}: failed: {out.stderr.strip().splitlines()[-1]}")
            continue
        rows[name] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"  measured {name}", file=sys.stderr)
    ref = rows["reference"]
    device = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {args.threads} torch threads"
    print(f"{device}; DDIM {STEPS} steps; PushT U-Nets; ratio = reference time / config time (higher is faster)")
    print("config        | 1 parent ms (x ref) | 2 parents ms (x ref) | 3 parents ms (x ref) | "
          "20 envs x 11 cand. s (x ref) | 11 cand. / 1 cand. | peak MB")
    for name, r in rows.items():
        cells = [f"{1e3 * r[f'batch1_{n}']:8.1f} ({ref[f'batch1_{n}'] / r[f'batch1_{n}']:5.2f}x)" for n in (1, 2, 3)]
        grid = f"{r['grid_20x11']:8.2f} ({ref['grid_20x11'] / r['grid_20x11']:6.1f}x)"
        k = f"{r['grid_20x11'] / r['grid_20x1']:.2f}" if "grid_20x1" in r else "-"
        print(f"{name:13s} | {cells[0]:19s} | {cells[1]:20s} | {cells[2]:20s} | {grid:28s} | {k:18s} | "
              f"{r['peak_mb']:7.0f}")
    plain = rows.get("gpc")
    if plain:
        overhead = plain["batch1_2"] / (2 * plain["batch1_1"])
        print(f"gpc composition overhead at batch 1: 2 parents = {overhead:.3f} x the sum of the parents alone")


if __name__ == "__main__":
    main()
