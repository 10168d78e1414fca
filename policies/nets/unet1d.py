"""1-D temporal U-Net denoiser, the network of Diffusion Policy (Chi et al., RSS 2023).

Convolutions run along the action horizon, so the network sees a whole action chunk at once and
produces temporally smooth noise / velocity predictions. Observation features and the timestep enter
every residual block through FiLM (a per-channel scale and bias).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .embedding import SinusoidalTimeEmbedding, broadcast_timestep


class Conv1dBlock(nn.Module):
    """Conv1d -> GroupNorm -> Mish, length preserving."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, n_groups: int):
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv1d(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
            nn.GroupNorm(n_groups, out_channels),
            nn.Mish(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class FiLMResidualBlock1D(nn.Module):
    """Two conv blocks; the conditioning vector scales and shifts the features between them."""

    def __init__(self, in_channels: int, out_channels: int, cond_dim: int, kernel_size: int,
                 n_groups: int):
        super().__init__()
        self.conv_in = Conv1dBlock(in_channels, out_channels, kernel_size, n_groups)
        self.conv_out = Conv1dBlock(out_channels, out_channels, kernel_size, n_groups)
        self.film = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, 2 * out_channels))
        self.skip = (nn.Conv1d(in_channels, out_channels, 1) if in_channels != out_channels
                     else nn.Identity())

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        scale, bias = self.film(cond).unsqueeze(-1).chunk(2, dim=1)
        h = self.conv_out(scale * h + bias)
        return h + self.skip(x)


class ConditionalUnet1D(nn.Module):
    """Noise / velocity predictor `f(sample, timestep, global_cond) -> same shape as sample`.

    Each of the `len(down_dims) - 1` downsampling stages halves the horizon, so the horizon H must
    be divisible by `2 ** (len(down_dims) - 1)` (4 for the default three levels: H = 8, 12, 16 work).
    Every entry of `down_dims` must be divisible by `n_groups` (GroupNorm). Each level's skip joins
    the up path at the same length (Diffusion Policy's own code leaves the top-level skip unused, so
    checkpoints are not interchangeable with it).

    `time_scale` multiplies the timestep before the sinusoidal embedding: keep 1.0 for diffusers
    timesteps in [0, T); use e.g. 100 to 1000 for flow-matching time in [0, 1].
    """

    def __init__(self, action_dim: int, cond_dim: int, down_dims: Sequence[int] = (64, 128, 256),
                 kernel_size: int = 5, n_groups: int = 8, time_embed_dim: int = 64,
                 time_scale: float = 1.0):
        super().__init__()
        down_dims = tuple(int(d) for d in down_dims)
        if not down_dims:
            raise ValueError("down_dims must name at least one level")
        if any(d % n_groups for d in down_dims):
            raise ValueError(f"every down_dims entry must be divisible by n_groups={n_groups}, "
                             f"got {down_dims}")
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd to preserve the horizon, got {kernel_size}")
        self.action_dim = action_dim
        self.cond_dim = cond_dim
        self.horizon_multiple = 2 ** (len(down_dims) - 1)

        self.time_mlp = nn.Sequential(
            SinusoidalTimeEmbedding(time_embed_dim, time_scale),
            nn.Linear(time_embed_dim, 4 * time_embed_dim),
            nn.Mish(),
            nn.Linear(4 * time_embed_dim, time_embed_dim),
        )
        film_dim = time_embed_dim + cond_dim

        def block(c_in: int, c_out: int) -> FiLMResidualBlock1D:
            return FiLMResidualBlock1D(c_in, c_out, film_dim, kernel_size, n_groups)

        channels = (action_dim,) + down_dims
        self.down = nn.ModuleList([nn.ModuleList([block(c_in, c_out), block(c_out, c_out)])
                                   for c_in, c_out in zip(channels[:-1], channels[1:])])
        # Stride-2 convs between levels; the deepest level is not downsampled.
        self.downsample = nn.ModuleList([nn.Conv1d(c, c, 3, stride=2, padding=1)
                                         for c in down_dims[:-1]])
        self.mid = nn.ModuleList([block(down_dims[-1], down_dims[-1]),
                                  block(down_dims[-1], down_dims[-1])])
        self.up = nn.ModuleList()
        # Back up the levels: upsample the deeper features, concatenate the skip of the same length.
        for c_skip, c_deep in zip(reversed(down_dims[:-1]), reversed(down_dims[1:])):
            self.up.append(nn.ModuleList([
                nn.ConvTranspose1d(c_deep, c_deep, 4, stride=2, padding=1),
                block(c_deep + c_skip, c_skip),
                block(c_skip, c_skip),
            ]))
        self.head = nn.Sequential(Conv1dBlock(down_dims[0], down_dims[0], kernel_size, n_groups),
                                  nn.Conv1d(down_dims[0], action_dim, 1))

    def forward(self, sample: torch.Tensor, timestep, global_cond: torch.Tensor) -> torch.Tensor:
        """(N, H, action_dim), (N,) or scalar timestep, (N, cond_dim) -> (N, H, action_dim)."""
        if sample.ndim != 3 or sample.shape[-1] != self.action_dim:
            raise ValueError(f"sample must be (N, H, {self.action_dim}), got {tuple(sample.shape)}")
        horizon = sample.shape[1]
        if horizon % self.horizon_multiple:
            raise ValueError(f"horizon {horizon} is not divisible by {self.horizon_multiple} "
                             f"(= 2 ** (len(down_dims) - 1)); pick a horizon that is, or fewer levels")
        if global_cond.shape != (sample.shape[0], self.cond_dim):
            raise ValueError(f"global_cond must be ({sample.shape[0]}, {self.cond_dim}), "
                             f"got {tuple(global_cond.shape)}")
        t = broadcast_timestep(timestep, sample.shape[0], sample)
        cond = torch.cat([self.time_mlp(t), global_cond], dim=-1)

        x = sample.transpose(1, 2)  # (N, action_dim, H): channels first for Conv1d
        skips = []
        for level, (block_a, block_b) in enumerate(self.down):
            x = block_b(block_a(x, cond), cond)
            if level < len(self.downsample):
                skips.append(x)
                x = self.downsample[level](x)
        for blk in self.mid:
            x = blk(x, cond)
        for upsample, block_a, block_b in self.up:
            x = torch.cat([upsample(x), skips.pop()], dim=1)
            x = block_b(block_a(x, cond), cond)
        return self.head(x).transpose(1, 2)
