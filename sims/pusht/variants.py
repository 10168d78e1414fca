"""PushT environments that differ by a planted shortcut, for training parents with SGFD and testing them.

Each variant adds a `hint` observation (2 floats, pixels): a sensor that reads the demonstrator's next
action with environment-specific noise. In the training environments it co-occurs with the right action
(tightly in env 0, loosely in env 1) without causing it; in the held-out environment it is pure noise, so a
policy that latched onto it fails there. The block, agent and physics are PushT's own in every variant.

    python -m gpc.sims.pusht.variants --source data/pusht/demos.zarr --out data/pusht/variants.zarr

writes the source demos (without images) with `data/hint` and `meta/env` (episode i in env i mod len(noise)). The hint does
not act on the world, so the expert's episodes are the same in every variant: they are relabelled, not rerun.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from gpc.policies.data.replay_buffer import read_replay_buffer, write_replay_buffer
from gpc.sims.pusht.env import make_env

TRAIN_NOISE_PX = (5.0, 40.0)  # hint noise (std, pixels) of training envs 0 and 1


def add_hints(source: str | Path, out: str | Path, noise_px=TRAIN_NOISE_PX, seed: int = 0) -> dict:
    """Copy a PushT replay buffer with a noisy-action `hint` per step and an env label per episode."""
    buffer = read_replay_buffer(source)
    rng = np.random.default_rng(seed)
    starts = np.r_[0, buffer.episode_ends[:-1]]
    env = np.arange(len(starts)) % len(noise_px)
    per_step_noise = np.repeat(np.asarray(noise_px, dtype=np.float32)[env], buffer.episode_ends - starts)
    action = np.asarray(buffer["action"], dtype=np.float32)
    hint = np.clip(action + rng.normal(size=action.shape).astype(np.float32) * per_step_noise[:, None], 0, 512)
    data = {key: np.asarray(buffer[key]) for key in buffer.keys if key != "img"} | {"hint": hint}
    write_replay_buffer(out, data, buffer.episode_ends, {**buffer.meta, "env": env.astype(np.int64)}, overwrite=True)
    return {"episodes": len(starts), "per_env": np.bincount(env).tolist(), "noise_px": list(noise_px)}


class NoiseHint(gym.ObservationWrapper):
    """The held-out variant: `hint` is uniform noise over the table, independent of everything else."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.observation_space = spaces.Dict({**env.observation_space.spaces,
                                              "hint": spaces.Box(0, 512, (2,), np.float32)})
        self.rng = np.random.default_rng()

    def reset(self, *, seed=None, options=None):
        if seed is not None:
            self.rng = np.random.default_rng([seed, 1])
        return super().reset(seed=seed, options=options)

    def observation(self, observation):
        return {**observation, "hint": self.rng.uniform(0, 512, 2).astype(np.float32)}


def make_heldout_env(obs_keys=("keypoint", "state"), image_size: int = 96, max_episode_steps: int = 300) -> gym.Env:
    """PushT in the held-out variant (the hint carries no information)."""
    return NoiseHint(make_env(obs_keys, image_size, max_episode_steps))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="data/pusht/demos.zarr")
    parser.add_argument("--out", default="data/pusht/variants.zarr")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(add_hints(args.source, args.out, seed=args.seed))


if __name__ == "__main__":
    main()
