"""Noise paths: how actions are noised (for training and for sampling), and how levels align between parents.

Every parent noises actions along a path `x = alpha * a + sigma * e`:

* a variance-preserving (VP) diffusion schedule, indexed by a (possibly fractional) train timestep;
* a linear flow-matching path `x = (1 - s) a + s e`, indexed by flow time in either convention.

All paths share one family of states up to scale. The canonical coordinate used between parents is the
flow time `s = sigma / (alpha + sigma)` (0 = clean action, 1 = pure noise) with the canonical flow state
`x_s = x / (alpha + sigma)`. Two VP schedules at equal `s` have equal signal-to-noise ratio.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid")


@dataclass(frozen=True)
class Level:
    """A noise level on some path: the state is `alpha * action + sigma * noise`."""

    alpha: float
    sigma: float

    @property
    def s(self) -> float:
        """Canonical flow time of this level."""
        return self.sigma / (self.alpha + self.sigma)

    @property
    def to_flow_scale(self) -> float:
        """Multiply a state on this level by this to get the canonical flow state."""
        return 1.0 / (self.alpha + self.sigma)


@dataclass(frozen=True)
class VPSchedule:
    """A discrete variance-preserving schedule, as diffusers' DDPM/DDIM schedulers define it."""

    num_train_timesteps: int = 100
    beta_schedule: str = "squaredcos_cap_v2"
    beta_start: float = 0.0001
    beta_end: float = 0.02

    def __post_init__(self):
        if self.beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"beta_schedule must be one of {BETA_SCHEDULES}, got {self.beta_schedule!r}")
        if self.num_train_timesteps < 2:
            raise ValueError(f"num_train_timesteps must be >= 2, got {self.num_train_timesteps}")

    @property
    def kind(self) -> str:
        return "diffusion"

    def scheduler_config(self) -> dict:
        """Keyword arguments that build the same schedule in any diffusers VP scheduler."""
        return dict(num_train_timesteps=self.num_train_timesteps, beta_schedule=self.beta_schedule,
                    beta_start=self.beta_start, beta_end=self.beta_end)

    @cached_property
    def alphas_cumprod(self) -> np.ndarray:
        from diffusers import DDPMScheduler

        # Taken from diffusers itself so that our levels are bit-identical to its schedulers'.
        return DDPMScheduler(**self.scheduler_config()).alphas_cumprod.numpy().astype(np.float64)

    @cached_property
    def log_snr(self) -> np.ndarray:
        """log(alpha^2 / sigma^2) per train timestep, strictly decreasing."""
        acp = self.alphas_cumprod
        return np.log(acp) - np.log1p(-acp)

    def level(self, timestep: float) -> Level:
        """The level at a train timestep; fractional timesteps interpolate the log-SNR curve."""
        t = float(np.clip(timestep, 0, self.num_train_timesteps - 1))
        if t == int(t):
            acp = self.alphas_cumprod[int(t)]
        else:
            lam = np.interp(t, np.arange(self.num_train_timesteps), self.log_snr)
            acp = 1.0 / (1.0 + math.exp(-lam))
        return Level(math.sqrt(acp), math.sqrt(1.0 - acp))

    def timestep_at(self, s: float) -> float:
        """The (fractional) train timestep whose level has flow time `s`, clamped to the schedule's range."""
        if s <= 0.0:
            return 0.0
        if s >= 1.0:
            return float(self.num_train_timesteps - 1)
        lam = 2.0 * (math.log1p(-s) - math.log(s))
        # np.interp needs increasing x: the log-SNR decreases with t, so interpolate on the reversed curve.
        steps = np.arange(self.num_train_timesteps, dtype=np.float64)
        return float(np.interp(lam, self.log_snr[::-1], steps[::-1]))

    def native_state_scale(self, level: Level) -> float:
        return level.alpha + level.sigma

    def training_example(self, action: torch.Tensor, noise: torch.Tensor, prediction_type: str,
                         generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(noisy state, timestep, target) for one training step on chunks (rows, H, D): a train timestep drawn
        uniformly per row, the action noised to it, and what a network predicting `prediction_type` should
        output there (the pair (e, a) in that parameterization, gpc.core.predictions)."""
        acp = torch.as_tensor(self.alphas_cumprod, dtype=torch.float32, device=action.device)
        t = torch.randint(0, self.num_train_timesteps, (action.shape[0],), generator=generator, device=action.device)
        alpha, sigma = acp[t].sqrt()[:, None, None], (1 - acp[t]).sqrt()[:, None, None]
        target = {"epsilon": noise, "sample": action, "v_prediction": alpha * noise - sigma * action}[prediction_type]
        return alpha * action + sigma * noise, t.float(), target


@dataclass(frozen=True)
class FlowPath:
    """The linear (rectified) flow path `x = (1 - s) a + s e`, in the parent's own conventions.

    `noise_at`: the time at which the state is pure noise (1 for pi0 / LeRobot, 0 for others).
    `velocity`: what the network predicts: `noise_minus_action` (u = e - a) or `action_minus_noise`.
    """

    noise_at: int = 1
    velocity: str = "noise_minus_action"

    def __post_init__(self):
        if self.noise_at not in (0, 1):
            raise ValueError(f"flow noise_at must be 0 or 1, got {self.noise_at!r}")
        if self.velocity not in ("noise_minus_action", "action_minus_noise"):
            raise ValueError("flow velocity must be 'noise_minus_action' or 'action_minus_noise', "
                             f"got {self.velocity!r}")

    @property
    def kind(self) -> str:
        return "flow"

    def level(self, time: float) -> Level:
        s = float(time) if self.noise_at == 1 else 1.0 - float(time)
        return Level(1.0 - s, s)

    def timestep_at(self, s: float) -> float:
        return float(s) if self.noise_at == 1 else 1.0 - float(s)

    @property
    def velocity_sign(self) -> float:
        """+1 when the network's velocity is `e - a`, -1 when it is `a - e`."""
        return 1.0 if self.velocity == "noise_minus_action" else -1.0

    def native_state_scale(self, level: Level) -> float:
        return 1.0

    def training_example(self, action: torch.Tensor, noise: torch.Tensor, prediction_type: str = "velocity",
                         generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(noisy state, time in this path's convention, target velocity) for one training step: s uniform in
        [0, 1) per row (s = 1 is pure noise), x_s = (1 - s) a + s e, the velocity with this path's sign."""
        s = torch.rand((action.shape[0],), generator=generator, device=action.device)
        noisy = (1 - s)[:, None, None] * action + s[:, None, None] * noise
        return noisy, s if self.noise_at == 1 else 1 - s, self.velocity_sign * (noise - action)


NoisePath = VPSchedule | FlowPath


def align(level: Level, source: NoisePath, source_timestep: float, target: NoisePath
          ) -> tuple[float, float, Level]:
    """Where a parent on `target` must be queried for a state at `level` of the `source` path.

    Returns `(timestep, state_scale, target_level)`: query the target at `timestep` with
    `state * state_scale`. When both paths are the same, the source timestep passes through untouched,
    so a parent that shares the working sampler's path is queried exactly as by its own sampler.
    """
    if target == source:
        return source_timestep, 1.0, level
    timestep = target.timestep_at(level.s)
    target_level = target.level(timestep)
    return timestep, level.to_flow_scale * target.native_state_scale(target_level), target_level
