"""The vectorized evaluator on a dummy env whose episodes end at known steps."""

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from gpc.composer import Composer
from gpc.evaluate import rollout
from gpc.noise import VPSchedule
from gpc.operators import WeightSchedule
from gpc.reference import GaussianParent
from gpc.samplers import SamplerConfig


class CountdownEnv(gym.Env):
    """Succeeds after (seed % 5) + 1 steps if the actions stay positive; `progress` tracks the best action."""

    observation_space = spaces.Dict({"shift": spaces.Box(-10, 10, (4, 1), np.float32)})
    action_space = spaces.Box(-10, 10, (1,), np.float32)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None:  # an idle slot is reset without a seed
            self.target = seed % 5 + 1
        self.t, self.best = 0, -np.inf
        return {"shift": np.zeros((4, 1), np.float32)}, {"is_success": False, "progress": 0.0}

    def step(self, action):
        self.t += 1
        self.best = max(self.best, float(action[0]))
        success = self.t >= self.target and self.best > 0
        return ({"shift": np.zeros((4, 1), np.float32)}, 0.0, success, False,
                {"is_success": success, "progress": self.best})


def composer():
    parents = [GaussianParent("plus", VPSchedule(), "epsilon", np.full((4, 1), 2.0), 0.01 * np.eye(4)),
               GaussianParent("minus", VPSchedule(), "epsilon", np.full((4, 1), -2.0), 0.01 * np.eye(4))]
    return Composer(parents, SamplerConfig("ddim", 5, VPSchedule()))


def test_rollout_runs_every_candidate_on_every_seed_with_episodes_ending_at_different_steps():
    candidates = [WeightSchedule.constant(w) for w in ([1.0, 0.0], [0.0, 1.0])]
    seeds = list(range(7))
    episodes = rollout(composer(), CountdownEnv, candidates, seeds, n_envs=5, max_steps=6, track_max=["progress"],
                       progress=False)
    assert sorted((e.candidate, e.seed) for e in episodes) == sorted(
        (label, s) for label in ("w=1,0", "w=0,1") for s in seeds)
    for e in episodes:
        if e.candidate == "w=1,0":  # actions near +2: succeeds exactly at its countdown
            assert e.success and e.length == e.seed % 5 + 1 and abs(e.maxima["progress"] - 2) < 0.5
        else:  # actions near -2: never succeeds, runs to the step limit
            assert not e.success and e.length == 6


def test_rollout_is_deterministic_for_the_same_seeds():
    candidates = [WeightSchedule.constant([0.5, 0.5])]
    runs = [rollout(composer(), CountdownEnv, candidates, [3, 4], 2, 6, ["progress"], progress=False)
            for _ in range(2)]
    assert runs[0] == runs[1]
