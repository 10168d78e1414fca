"""Small transformer denoiser: an alternative to the U-Net with the same call signature.

Tokens are [time, condition, action_1 .. action_H]; pre-norm self-attention over all of them lets every
action step read the timestep and the observation. The attention is written with plain matmuls so the
network exports to ONNX with either torch exporter.
"""

from __future__ import annotations

import torch
from torch import nn

from .embedding import SinusoidalTimeEmbedding, broadcast_timestep


class SelfAttention(nn.Module):
    """Multi-head self-attention without a mask (every token sees every token)."""

    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} must be divisible by n_heads={n_heads}")
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, length, d = x.shape
        q, k, v = (self.qkv(x).reshape(n, length, 3, self.n_heads, self.head_dim)
                   .permute(2, 0, 3, 1, 4).unbind(0))  # each (N, heads, L, head_dim)
        weights = torch.softmax(q @ k.transpose(-2, -1) * self.head_dim ** -0.5, dim=-1)
        return self.proj((weights @ v).transpose(1, 2).reshape(n, length, d))


class PreNormBlock(nn.Module):
    def __init__(self, d_model: int, n_heads: int, mlp_ratio: int = 4):
        super().__init__()
        self.norm_attn = nn.LayerNorm(d_model)
        self.attn = SelfAttention(d_model, n_heads)
        self.norm_mlp = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, mlp_ratio * d_model), nn.GELU(),
                                 nn.Linear(mlp_ratio * d_model, d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm_attn(x))
        return x + self.mlp(self.norm_mlp(x))


class TransformerDenoiser(nn.Module):
    """Noise / velocity predictor `f(sample, timestep, global_cond) -> same shape as sample`.

    The horizon is fixed at construction (learned position embeddings); a sample of another length
    raises ValueError. `time_scale` multiplies the timestep before the sinusoidal embedding, as in
    `ConditionalUnet1D`.
    """

    def __init__(self, action_dim: int, cond_dim: int, horizon: int, d_model: int = 128,
                 n_heads: int = 4, n_layers: int = 4, time_scale: float = 1.0):
        super().__init__()
        self.action_dim = action_dim
        self.cond_dim = cond_dim
        self.horizon = horizon
        self.action_in = nn.Linear(action_dim, d_model)
        self.time_in = nn.Sequential(SinusoidalTimeEmbedding(d_model, time_scale),
                                     nn.Linear(d_model, 4 * d_model), nn.Mish(),
                                     nn.Linear(4 * d_model, d_model))
        self.cond_in = nn.Linear(cond_dim, d_model)
        # One position per token: time, condition, then the H action steps.
        self.pos = nn.Parameter(torch.randn(1, horizon + 2, d_model) * 0.02)
        self.blocks = nn.ModuleList([PreNormBlock(d_model, n_heads) for _ in range(n_layers)])
        self.norm_out = nn.LayerNorm(d_model)
        self.action_out = nn.Linear(d_model, action_dim)

    def forward(self, sample: torch.Tensor, timestep, global_cond: torch.Tensor) -> torch.Tensor:
        """(N, horizon, action_dim), (N,) or scalar timestep, (N, cond_dim) -> same shape as sample."""
        if sample.ndim != 3 or sample.shape[1:] != (self.horizon, self.action_dim):
            raise ValueError(f"sample must be (N, {self.horizon}, {self.action_dim}), "
                             f"got {tuple(sample.shape)}")
        if global_cond.shape != (sample.shape[0], self.cond_dim):
            raise ValueError(f"global_cond must be ({sample.shape[0]}, {self.cond_dim}), "
                             f"got {tuple(global_cond.shape)}")
        t = broadcast_timestep(timestep, sample.shape[0], sample)
        tokens = torch.cat([self.time_in(t)[:, None], self.cond_in(global_cond)[:, None],
                            self.action_in(sample)], dim=1) + self.pos
        for blk in self.blocks:
            tokens = blk(tokens)
        return self.action_out(self.norm_out(tokens[:, 2:]))
