"""Diffusion Policy's own 1-D U-Net layout (Chi et al., RSS 2023), so its checkpoints load as they are.

gpc's `ConditionalUnet1D` joins every level's skip at the matching length; Diffusion Policy's network (and
LeRobot's copy of it) has another skip layout: every down level, the deepest included, pushes a skip, the up
path pops from the deepest, and every up level upsamples. Checkpoints of one cannot be held by the other, so
this module reproduces that layout exactly, op for op, with Diffusion Policy's parameter names
(`down_modules.0.0.blocks.0.block.0.weight`, ...). LeRobot names the same tensors differently; its loader
renames them (`gpc.policies.lerobot`).

Details that decide the numbers: the timestep embedding's frequencies are computed as Diffusion Policy computes
them; the final conv block uses 8 groups whatever `n_groups` is; FiLM either adds a bias or, with
`cond_predict_scale`, scales and shifts.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn


class TimestepEmbedding(nn.Module):
    """sin/cos features of the (possibly fractional) diffusion timestep, frequencies exp(-i log(1e4) / (h - 1))."""

    def __init__(self, dim: int):
        super().__init__()
        half = dim // 2
        self.register_buffer("freqs", torch.exp(torch.arange(half) * -(math.log(10000) / (half - 1))),
                             persistent=False)

    def forward(self, timestep: torch.Tensor) -> torch.Tensor:
        angles = timestep[:, None] * self.freqs[None, :]
        return torch.cat((angles.sin(), angles.cos()), dim=-1)


class ConvBlock(nn.Module):
    """Conv1d -> GroupNorm -> Mish, length preserving."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, n_groups: int = 8):
        super().__init__()
        self.block = nn.Sequential(nn.Conv1d(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
                                   nn.GroupNorm(n_groups, out_channels), nn.Mish())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class ResidualBlock(nn.Module):
    """Two conv blocks with FiLM conditioning between them, plus a 1x1 residual where channels change."""

    def __init__(self, in_channels: int, out_channels: int, cond_dim: int, kernel_size: int, n_groups: int,
                 cond_predict_scale: bool):
        super().__init__()
        self.blocks = nn.ModuleList([ConvBlock(in_channels, out_channels, kernel_size, n_groups),
                                     ConvBlock(out_channels, out_channels, kernel_size, n_groups)])
        self.out_channels = out_channels
        self.cond_predict_scale = cond_predict_scale
        self.cond_encoder = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, out_channels * (2 if cond_predict_scale
                                                                                        else 1)))
        self.residual_conv = (nn.Conv1d(in_channels, out_channels, 1) if in_channels != out_channels
                              else nn.Identity())

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        out = self.blocks[0](x)
        embed = self.cond_encoder(cond)[:, :, None]
        if self.cond_predict_scale:
            scale, bias = embed[:, :self.out_channels], embed[:, self.out_channels:]
            out = scale * out + bias
        else:
            out = out + embed
        return self.blocks[1](out) + self.residual_conv(x)


class Resample(nn.Module):
    """A stride-2 conv (down) or transposed conv (up), named as Diffusion Policy names it (`.conv`)."""

    def __init__(self, channels: int, up: bool):
        super().__init__()
        self.conv = (nn.ConvTranspose1d(channels, channels, 4, 2, 1) if up
                     else nn.Conv1d(channels, channels, 3, 2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class DiffusionPolicyUnet1D(nn.Module):
    """`f(sample (N, H, D), timestep (N,), global_cond (N, C)) -> (N, H, D)`, Diffusion Policy's global-cond U-Net."""

    def __init__(self, input_dim: int, global_cond_dim: int, diffusion_step_embed_dim: int = 256,
                 down_dims: Sequence[int] = (256, 512, 1024), kernel_size: int = 5, n_groups: int = 8,
                 cond_predict_scale: bool = False):
        super().__init__()
        dims = [int(input_dim), *map(int, down_dims)]
        in_out = list(zip(dims[:-1], dims[1:]))
        self.input_dim, self.global_cond_dim = int(input_dim), int(global_cond_dim)
        step = int(diffusion_step_embed_dim)
        self.diffusion_step_encoder = nn.Sequential(TimestepEmbedding(step), nn.Linear(step, step * 4), nn.Mish(),
                                                    nn.Linear(step * 4, step))
        cond_dim = step + self.global_cond_dim

        def block(c_in: int, c_out: int) -> ResidualBlock:
            return ResidualBlock(c_in, c_out, cond_dim, kernel_size, n_groups, cond_predict_scale)

        last = len(in_out) - 1
        self.down_modules = nn.ModuleList([
            nn.ModuleList([block(c_in, c_out), block(c_out, c_out),
                           Resample(c_out, up=False) if i < last else nn.Identity()])
            for i, (c_in, c_out) in enumerate(in_out)])
        self.mid_modules = nn.ModuleList([block(dims[-1], dims[-1]), block(dims[-1], dims[-1])])
        self.up_modules = nn.ModuleList([
            nn.ModuleList([block(c_out * 2, c_in), block(c_in, c_in), Resample(c_in, up=True)])
            for c_in, c_out in reversed(in_out[1:])])
        self.final_conv = nn.Sequential(ConvBlock(dims[1], dims[1], kernel_size),
                                        nn.Conv1d(dims[1], self.input_dim, 1))

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, global_cond: torch.Tensor) -> torch.Tensor:
        if sample.ndim != 3 or sample.shape[-1] != self.input_dim:
            raise ValueError(f"sample must be (N, H, {self.input_dim}), got {tuple(sample.shape)}")
        if global_cond.shape != (sample.shape[0], self.global_cond_dim):
            raise ValueError(f"global_cond must be ({sample.shape[0]}, {self.global_cond_dim}), "
                             f"got {tuple(global_cond.shape)}")
        timestep = torch.as_tensor(timestep, device=sample.device)
        cond = torch.cat([self.diffusion_step_encoder(timestep.expand(sample.shape[0])), global_cond], dim=-1)
        x = sample.transpose(1, 2)
        skips = []
        for first, second, downsample in self.down_modules:
            x = second(first(x, cond), cond)
            skips.append(x)
            x = downsample(x)
        for mid in self.mid_modules:
            x = mid(x, cond)
        for first, second, upsample in self.up_modules:
            x = upsample(second(first(torch.cat((x, skips.pop()), dim=1), cond), cond))
        return self.final_conv(x).transpose(1, 2)
