"""Point-cloud encoder in the style of DP3 (Ze et al., 2024): a light PointNet.

A shared per-point MLP followed by a max over points is invariant to point order and count, and DP3
found this small LayerNorm variant works better for policies than deeper point backbones.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class PointCloudEncoder(nn.Module):
    """(B, n_obs_steps, n_points, in_channels) -> (B, n_obs_steps * feature_dim).

    Channels are xyz (in_channels=3) or xyz plus extras such as rgb (in_channels=6). Any number of
    points works; every frame of every sample must have the same count (pad by repeating a point).
    """

    def __init__(self, n_obs_steps: int, in_channels: int = 3,
                 hidden_dims: Sequence[int] = (64, 128, 256), feature_dim: int = 64):
        super().__init__()
        self.n_obs_steps = n_obs_steps
        self.in_channels = in_channels
        layers: list[nn.Module] = []
        for c_in, c_out in zip((in_channels, *hidden_dims[:-1]), hidden_dims):
            layers += [nn.Linear(c_in, c_out), nn.LayerNorm(c_out), nn.ReLU()]
        self.point_mlp = nn.Sequential(*layers)
        self.project = nn.Sequential(nn.Linear(hidden_dims[-1], feature_dim),
                                     nn.LayerNorm(feature_dim))
        self.feature_dim = feature_dim
        self.output_dim = n_obs_steps * feature_dim

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        if (points.ndim != 4 or points.shape[1] != self.n_obs_steps
                or points.shape[-1] != self.in_channels):
            raise ValueError(f"points must be (B, {self.n_obs_steps}, n_points, {self.in_channels}), "
                             f"got {tuple(points.shape)}")
        per_point = self.point_mlp(points)              # (B, To, Np, hidden)
        per_frame = self.project(per_point.amax(dim=2))  # max over points: order invariant
        return per_frame.flatten(1)
