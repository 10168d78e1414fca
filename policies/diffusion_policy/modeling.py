"""Diffusion Policy's low-dim U-Net policy with global conditioning, as a gpc parent.

`DiffusionUnetLowdimPolicy.predict_action` normalizes the observation as `x * scale + offset` (its
LinearNormalizer), flattens its first `n_obs_steps` frames into the global condition, denoises a (horizon,
action_dim) chunk with its diffusers scheduler, unnormalizes the action as `(x - offset) / scale` and executes
`n_action_steps` from `n_obs_steps - 1` (`oa_step_convention`) or `n_obs_steps`; with `pred_action_steps_only`
the chunk is the executed actions alone. gpc runs the same network (gpc.policies.nets.diffusion_policy_unet,
whose tensor names are Diffusion Policy's own) with the same normalizer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from gpc.core.contract import ObservationInput, ParentSpec
from gpc.core.normalizer import Normalizer
from gpc.core.samplers import SamplerConfig
from gpc.policies.nets.diffusion_policy_unet import DiffusionPolicyUnet1D

OBS_KEY = "obs"  # what DP's predict_action reads; map it onto the env's key in the composition (`observations`)


@dataclass(frozen=True)
class LowdimSettings:
    """What the checkpoint's config says about inference."""

    horizon: int
    n_obs_steps: int
    n_action_steps: int
    action_start: int
    obs_dim: int
    action_dim: int
    diffusion_step_embed_dim: int
    down_dims: tuple[int, ...]
    kernel_size: int
    n_groups: int
    cond_predict_scale: bool
    sampler: SamplerConfig


def linear_normalizer(scale: np.ndarray, offset: np.ndarray) -> Normalizer:
    """DP's `x * scale + offset` as gpc's `(x - o) / s`: s = 1 / scale, o = -offset / scale (float64, then float32)."""
    scale, offset = scale.astype(np.float64), offset.astype(np.float64)
    return Normalizer((-offset / scale).astype(np.float32), (1.0 / scale).astype(np.float32), "diffusion_policy")


class DiffusionPolicyLowdim(nn.Module):
    """A DP low-dim policy behind gpc's parent contract; reads one observation, `obs` (its own name)."""

    def __init__(self, settings: LowdimSettings, obs_normalizer: Normalizer, action_normalizer: Normalizer,
                 name: str):
        super().__init__()
        self.settings = settings
        self.model = DiffusionPolicyUnet1D(settings.action_dim, settings.obs_dim * settings.n_obs_steps,
                                           settings.diffusion_step_embed_dim, settings.down_dims,
                                           settings.kernel_size, settings.n_groups, settings.cond_predict_scale)
        self.normalizers = {OBS_KEY: obs_normalizer}
        inputs = (ObservationInput(OBS_KEY, "low_dim", (settings.obs_dim,), settings.n_obs_steps),)
        self.spec = ParentSpec(name, settings.sampler.schedule, settings.sampler.prediction_type, settings.action_dim,
                               settings.horizon, settings.n_obs_steps, settings.n_action_steps, action_normalizer,
                               action_start=settings.action_start, inputs=inputs, sampler=settings.sampler)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def encode(self, obs: Mapping[str, Any]) -> torch.Tensor:
        value = obs[OBS_KEY]
        x = torch.as_tensor(np.asarray(value) if not isinstance(value, torch.Tensor) else value)
        x = x[:, -self.settings.n_obs_steps:].to(self.device, torch.float32)
        return self.normalizers[OBS_KEY].normalize(x).flatten(1)

    def predict(self, sample: torch.Tensor, timestep: torch.Tensor, encoding: torch.Tensor) -> torch.Tensor:
        return self.model(sample, timestep, encoding)
