"""Camera rendering in evaluation: a robomimic env that renders only the frames the policy reads (the
evaluator's default) vs one that renders every step, same shipped camera policy, same episodes.

    MUJOCO_GL=egl python benchmarks/camera_rendering.py [--task Lift] [--episodes 4] [--max-steps 120]
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
from omegaconf import OmegaConf

from gpc.app.config import load_composer
from gpc.core.operators import WeightSchedule
from gpc.runtime.rollout import RolloutSettings, rollout
from gpc.sims.robomimic.env import LOW_DIM_KEYS, make_env


class RenderEveryStep(gym.Wrapper):
    """Hides `render_images` from the evaluator, so every step is rendered: the baseline."""

    def has_wrapper_attr(self, name: str) -> bool:
        return name != "render_images" and super().has_wrapper_attr(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="Lift", choices=["Lift", "PickPlaceCan", "NutAssemblySquare"])
    parser.add_argument("--episodes", type=int, default=4)
    parser.add_argument("--max-steps", type=int, default=120)
    args = parser.parse_args()
    folder = {"Lift": "lift", "PickPlaceCan": "can", "NutAssemblySquare": "square"}[args.task]
    composition = {"parents": [{"path": f"checkpoints/robomimic/{folder}_image_flow/policy"}], "sampler": "native"}
    composer = load_composer(OmegaConf.create(composition), "benchmark")
    keys = LOW_DIM_KEYS + ("agentview_image",)
    seeds = list(range(100000, 100000 + args.episodes))
    candidates = [WeightSchedule.constant([1.0])]

    def lazy():
        return make_env(args.task, obs_keys=keys, max_episode_steps=args.max_steps)

    def every():
        return RenderEveryStep(lazy())

    results = {}
    for label, factory in (("render every step", every), ("render what is read", lazy)):
        start = time.perf_counter()
        episodes = rollout(composer, factory, candidates, seeds, RolloutSettings(args.episodes, args.max_steps,
                                                                                 progress=False))
        seconds = time.perf_counter() - start
        steps = sum(e.length for e in episodes)
        results[label] = (seconds, episodes)
        print(f"  {label:20s} {steps:5d} env steps in {seconds:6.1f} s = {steps / seconds:6.1f} steps/s")
    (every_s, every_episodes), (lazy_s, lazy_episodes) = results.values()
    same = "same episodes" if every_episodes == lazy_episodes else "EPISODES DIFFER"
    print(f"{args.task}, {composer.n_obs_steps} observation steps, {composer.layout.n_action_steps}-step chunks: "
          f"every-step / read-only wall time {every_s / lazy_s:.2f} x ({same})")


if __name__ == "__main__":
    main()
