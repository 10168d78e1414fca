"""Timestep embedding shared by the denoising networks."""

from __future__ import annotations

import math

import torch
from torch import nn


class SinusoidalTimeEmbedding(nn.Module):
    """Transformer-style sin/cos features of a continuous timestep.

    The timestep is multiplied by `time_scale` first, so one network class serves diffusion (integer
    steps in [0, T), scale 1) and flow matching (t in [0, 1], scale ~100-1000): the embedding only
    separates timesteps that differ by O(1) after scaling.
    """

    def __init__(self, dim: int, time_scale: float = 1.0, max_period: float = 10_000.0):
        super().__init__()
        if dim % 2 or dim < 4:
            raise ValueError(f"time embedding dim must be even and >= 4, got {dim}")
        self.dim = dim
        self.time_scale = float(time_scale)
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / (half - 1))
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, timestep: torch.Tensor) -> torch.Tensor:
        """(N,) float timesteps -> (N, dim)."""
        angles = (timestep.to(self.freqs.dtype) * self.time_scale)[:, None] * self.freqs[None, :]
        return torch.cat([angles.sin(), angles.cos()], dim=-1)


def broadcast_timestep(timestep, batch: int, like: torch.Tensor) -> torch.Tensor:
    """Accept a python number, a 0-d tensor or an (N,) tensor (int or float); return float (N,).

    Diffusers schedulers hand out 0-d int64 timesteps, flow solvers python floats; both are common.
    """
    t = torch.as_tensor(timestep, device=like.device)
    if t.ndim == 0:
        t = t.expand(batch)
    if t.shape != (batch,):
        raise ValueError(f"timestep must be a scalar or shape ({batch},), got {tuple(t.shape)}")
    return t.to(like.dtype if like.is_floating_point() else torch.float32)
