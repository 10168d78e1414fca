"""Joint-space "reach a configuration" parents with closed-form denoisers, to rehearse deployment on CPU.

Each parent is gpc.core.reference.GaussianParent whose mean follows the observation: a chunk that approaches its
own target joint configuration at a first-order rate, capped at a joint speed. Because that approach is
memoryless, replanning from any measured state continues the same motion. One parent is a diffusion parent
(DDIM / epsilon), the other a flow-matching parent (velocity), so the composition crosses model kinds as a
real pair would; with equal covariances, convex weights reach the weighted mean of the targets. A chunk costs
milliseconds.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch

from gpc.core.composer import Composer
from gpc.core.normalizer import Normalizer
from gpc.core.paths import FlowPath, VPSchedule
from gpc.core.reference import GaussianParent
from gpc.core.samplers import SamplerConfig


def reach_chunk(positions: np.ndarray, target: np.ndarray, steps: int, period: float, time_constant: float,
                speed: float) -> np.ndarray:
    """(rows, steps, dof): step k is where the joints should be at k control periods from now, closing
    1 - exp(-period / time_constant) of the remaining distance per step, at most `speed` rad/s per joint."""
    rate = 1.0 - np.exp(-period / time_constant)
    x = np.asarray(positions, dtype=np.float64)
    out = np.empty((x.shape[0], steps, x.shape[1]))
    for k in range(steps):
        out[:, k] = x
        x = x + np.clip(rate * (target - x), -speed * period, speed * period)
    return out


class JointReachParent(GaussianParent):
    """A Gaussian over the chunk around `reach_chunk` toward `target` (radians), in the normalized action
    space of `normalizer`; reads `obs["joint_positions"]` (rows, T, dof), the last step being now."""

    def __init__(self, name: str, path, prediction_type: str, target: Sequence[float], normalizer: Normalizer,
                 horizon: int, n_action_steps: int, period: float, time_constant: float, speed: float,
                 noise_std: float):
        dof = len(target)
        std = np.tile(noise_std / np.asarray(normalizer.scale, dtype=np.float64), horizon)
        super().__init__(name, path, prediction_type, np.zeros((horizon, dof)), np.diag(std ** 2),
                         n_action_steps=n_action_steps, normalizer=normalizer)
        self.target = np.asarray(target, dtype=np.float64)
        self.period, self.time_constant, self.speed = period, time_constant, speed

    def encode(self, obs: Mapping[str, Any]) -> torch.Tensor:
        positions = np.asarray(obs["joint_positions"], dtype=np.float64)[:, -1]
        chunk = reach_chunk(positions, self.target, self.spec.horizon, self.period, self.time_constant, self.speed)
        normalized = self.spec.normalizer.normalize(torch.as_tensor(chunk))
        return normalized.flatten(1).to(torch.float64)


def joint_reach_composer(targets: Sequence[Sequence[float]], lower: np.ndarray, upper: np.ndarray, period: float,
                         horizon: int = 16, n_action_steps: int = 8, time_constant: float = 0.5,
                         speed: float = 0.5, noise_std: float = 0.002, num_inference_steps: int = 10) -> Composer:
    """Two (or more) reach parents, alternately diffusion and flow, actions normalized to the joint limits."""
    normalizer = Normalizer.fit(np.stack([lower, upper]))
    kinds = [(VPSchedule(), "epsilon"), (FlowPath(), "velocity")]
    parents = [JointReachParent(f"reach_{i}", *kinds[i % 2], target, normalizer, horizon, n_action_steps, period,
                                time_constant, speed, noise_std) for i, target in enumerate(targets)]
    sampler = SamplerConfig.native(parents[0].spec.path, parents[0].spec.prediction_type, num_inference_steps)
    return Composer(parents, sampler, n_action_steps)
