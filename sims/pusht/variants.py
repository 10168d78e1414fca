"""PushT environments that differ by a planted shortcut, for training parents with SGFD and testing them.

Each variant adds a `hint` observation (2 floats, pixels): a sensor that reads the demonstrator's next
action with environment-specific noise. In the training environments it co-occurs with the right action
(tightly in env 0, loosely in env 1) without causing it; in the held-out environment it is pure noise, so a
policy that latched onto it fails there. The block, agent and physics are PushT's own in every variant.

    python -m gpc.sims.pusht.variants --source data/pusht/demos.zarr --out data/pusht/variants.zarr

writes the source demos (without images) with `data/hint` and `meta/env` (episode i in env i mod len(noise)).
The hint does not act on the world, so the expert's episodes are the same in every variant: they are
relabelled, not rerun.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from gpc.policies.data.replay_buffer import read_replay_buffer, write_replay_buffer
from gpc.sims.pusht.env import make_env
from gpc.sims.pusht.expert import PushTExpert

TRAIN_NOISE_PX = (5.0, 40.0)  # hint noise (std, pixels) of training envs 0 and 1


def add_hints(source: str | Path, out: str | Path, noise_px=TRAIN_NOISE_PX, seed: int = 0) -> dict:
    """Copy a PushT replay buffer with a noisy-action `hint` per step and an env label per episode."""
    buffer = read_replay_buffer(source)
    rng = np.random.default_rng(seed)
    env = np.arange(buffer.n_episodes) % len(noise_px)
    per_step_noise = np.repeat(np.asarray(noise_px, dtype=np.float32)[env], buffer.episode_lengths)
    action = np.asarray(buffer["action"], dtype=np.float32)
    hint = np.clip(action + rng.normal(size=action.shape).astype(np.float32) * per_step_noise[:, None], 0, 512)
    data = {key: np.asarray(buffer[key]) for key in buffer.keys if key != "img"} | {"hint": hint}
    write_replay_buffer(out, data, buffer.episode_ends, {**buffer.meta, "env": env.astype(np.int64)}, overwrite=True)
    return {"episodes": buffer.n_episodes, "per_env": np.bincount(env).tolist(), "noise_px": list(noise_px)}


class Hint(gym.ObservationWrapper):
    """Adds `hint`: the scripted expert's action for the current state plus Gaussian noise of `noise_px`, as in
    the training variants, or (noise_px=None, the held-out variant) uniform noise over the table."""

    def __init__(self, env: gym.Env, noise_px: float | None):
        super().__init__(env)
        self.observation_space = spaces.Dict({**env.observation_space.spaces,
                                              "hint": spaces.Box(0, 512, (2,), np.float32)})
        self.noise_px = noise_px
        self.expert = None if noise_px is None else PushTExpert()
        self.rng = np.random.default_rng()

    def reset(self, *, seed=None, options=None):
        if seed is not None:
            self.rng = np.random.default_rng([seed, 1])
        if self.expert is not None:
            self.expert.reset()
        return super().reset(seed=seed, options=options)

    def observation(self, observation):
        if self.expert is None:
            hint = self.rng.uniform(0, 512, 2)
        else:
            hint = np.clip(self.expert(self.env.unwrapped) + self.rng.normal(size=2) * self.noise_px, 0, 512)
        return {**observation, "hint": hint.astype(np.float32)}


def make_variant_env(noise_px: float | None, obs_keys=("keypoint", "state"), image_size: int = 96,
                     max_episode_steps: int = 300) -> gym.Env:
    """PushT in one variant: `noise_px` 5.0 / 40.0 are training envs 0 / 1, None the held-out one."""
    return Hint(make_env(obs_keys, image_size, max_episode_steps), noise_px)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="data/pusht/demos.zarr")
    parser.add_argument("--out", default="data/pusht/variants.zarr")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(add_hints(args.source, args.out, seed=args.seed))


if __name__ == "__main__":
    main()
