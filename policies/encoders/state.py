"""Encoder for low-dimensional observations (joint states, object poses, keypoints)."""

from __future__ import annotations

import torch
from torch import nn


class StateEncoder(nn.Module):
    """(B, n_obs_steps, obs_dim) -> (B, output_dim).

    With `output_dim=None` the history is only flattened (no parameters), as Diffusion Policy's
    low-dimensional policies do: the denoiser's FiLM layers are expressive enough on their own. With
    an integer `output_dim` a two-hidden-layer MLP compresses the history first.
    """

    def __init__(self, obs_dim: int, n_obs_steps: int, hidden: int = 256,
                 output_dim: int | None = None):
        super().__init__()
        self.obs_dim = obs_dim
        self.n_obs_steps = n_obs_steps
        flat_dim = obs_dim * n_obs_steps
        if output_dim is None:
            self.net = nn.Identity()
            self.output_dim = flat_dim
        else:
            self.net = nn.Sequential(nn.Linear(flat_dim, hidden), nn.Mish(),
                                     nn.Linear(hidden, hidden), nn.Mish(),
                                     nn.Linear(hidden, output_dim))
            self.output_dim = output_dim

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if obs.ndim != 3 or obs.shape[1:] != (self.n_obs_steps, self.obs_dim):
            raise ValueError(f"state obs must be (B, {self.n_obs_steps}, {self.obs_dim}), "
                             f"got {tuple(obs.shape)}")
        return self.net(obs.flatten(1))
