"""Training steps/s and inference time per action chunk for each parent kind (random data, CPU or GPU).

    python benchmarks/train_speed.py [--batch-size 64] [--steps 10]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from common import median_seconds, random_policy

from gpc.core.composer import Composer, make_generators
from gpc.core.samplers import SamplerConfig

UNET = {"type": "unet", "down_dims": [32, 64, 128], "n_groups": 8, "time_embed_dim": 32}
RGB = {"widths": [16, 32, 64], "num_keypoints": 16, "feature_dim": 32, "downsample": 2}
KINDS = {
    "state / diffusion U-Net": dict(obs=[{"key": "state", "type": "low_dim", "shape": [20]}], denoiser=UNET,
                                    objective={"kind": "diffusion", "prediction_type": "epsilon"}),
    "rgb / flow U-Net": dict(obs=[{"key": "image", "type": "rgb", "shape": [3, 96, 96]}], encoders={"rgb": RGB},
                             denoiser=UNET, objective={"kind": "flow", "prediction_type": "velocity"}),
    "point cloud / diffusion transformer": dict(
        obs=[{"key": "points", "type": "pointcloud", "shape": [512, 3]}],
        denoiser={"type": "transformer", "d_model": 128, "n_heads": 4, "n_layers": 4},
        objective={"kind": "diffusion", "prediction_type": "epsilon"}),
}


def batch(rows: int, horizon: int = 16) -> dict:
    rng = np.random.default_rng(0)
    return {"obs": {"state": torch.as_tensor(rng.normal(size=(rows, 2, 20)), dtype=torch.float32),
                    "image": torch.rand(rows, 2, 3, 96, 96),
                    "points": torch.as_tensor(rng.normal(size=(rows, 2, 512, 3)), dtype=torch.float32)},
            "action": torch.as_tensor(rng.uniform(0, 512, (rows, horizon, 2)), dtype=torch.float32)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    data, obs = batch(args.batch_size), {k: v[:1].numpy() for k, v in batch(1)["obs"].items()}
    print(f"{'parent kind':38s} {'params':>9s} {'train steps/s':>14s} {'ms/chunk (10 steps)':>20s}")
    for name, spec in KINDS.items():
        policy = random_policy({"name": name, "action_dim": 2, **spec})
        optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-4)

        def train_step():
            loss = policy.compute_loss(data).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        policy.train()
        step = median_seconds(train_step, repeats=args.steps)
        policy.eval()
        composer = Composer([policy], SamplerConfig.native(policy.spec.path, policy.spec.prediction_type, 10))
        infer = median_seconds(lambda: composer.sample(composer.encode(obs), [1.0], make_generators([0], 1)))
        params = sum(p.numel() for p in policy.parameters())
        print(f"{name:38s} {params:9,d} {1 / step:14.2f} {1e3 * infer:20.1f}")


if __name__ == "__main__":
    main()
