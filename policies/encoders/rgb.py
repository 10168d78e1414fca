"""Image encoder: a small GroupNorm ResNet with a spatial-softmax keypoint head.

Spatial softmax (Levine et al. 2016; robomimic; Diffusion Policy) turns each feature map into the
expected image coordinate of its activation, which keeps *where* things are - what manipulation
needs - and is far smaller than flattening. GroupNorm instead of BatchNorm: Chi et al. report that
BatchNorm's running statistics break down with the EMA weights diffusion policies are evaluated with.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F


class ResidualBlock2D(nn.Module):
    """Two 3x3 convs with GroupNorm; a strided 1x1 conv on the shortcut when the shape changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, n_groups: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.norm1 = nn.GroupNorm(n_groups, out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = nn.GroupNorm(n_groups, out_channels)
        self.shortcut = (nn.Identity() if stride == 1 and in_channels == out_channels else
                         nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride,
                                                 bias=False),
                                       nn.GroupNorm(n_groups, out_channels)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.norm1(self.conv1(x)))
        return F.relu(self.norm2(self.conv2(h)) + self.shortcut(x))


class SpatialSoftmax(nn.Module):
    """(B, C, h, w) feature maps -> (B, 2 * num_keypoints) expected (x, y) in [-1, 1]."""

    def __init__(self, in_channels: int, height: int, width: int, num_keypoints: int):
        super().__init__()
        self.keypoints = nn.Conv2d(in_channels, num_keypoints, 1)
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width),
                                indexing="ij")
        self.register_buffer("grid", torch.stack([xs.flatten(), ys.flatten()], dim=-1),
                             persistent=False)  # (h*w, 2)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        attention = torch.softmax(self.keypoints(features).flatten(2), dim=-1)  # (B, K, h*w)
        return (attention @ self.grid).flatten(1)


class RGBEncoder(nn.Module):
    """(B, n_obs_steps, channels, H, W) float images in [0, 1] -> (B, n_obs_steps * feature_dim).

    Channel-first float input, as `gpc.policies.data.SequenceDataset` returns it. One CNN is shared
    by all frames; the per-frame features are concatenated in time order. Each stage after the first
    halves the resolution; the stem halves it too.
    """

    def __init__(self, image_size: int | tuple[int, int], n_obs_steps: int, channels: int = 3,
                 widths: Sequence[int] = (32, 64, 128), num_keypoints: int = 32,
                 feature_dim: int = 64, n_groups: int = 8, downsample: int = 1):
        super().__init__()
        # Average-pooling the input by `downsample` first cuts the CNN's cost by downsample^2: on a
        # CPU, 96x96 PushT frames train ~4x faster at 48x48 with little loss of the block's pose.
        self.downsample = downsample
        self.image_size = ((image_size, image_size) if isinstance(image_size, int)
                           else tuple(image_size))
        self.n_obs_steps = n_obs_steps
        self.channels = channels
        widths = tuple(widths)
        stages = [nn.Conv2d(channels, widths[0], 3, stride=2, padding=1, bias=False),
                  nn.GroupNorm(n_groups, widths[0]), nn.ReLU()]
        for i, width in enumerate(widths):
            stages.append(ResidualBlock2D(widths[max(i - 1, 0)], width, 1 if i == 0 else 2,
                                          n_groups))
        self.backbone = nn.Sequential(*stages)
        h, w = self.image_size[0] // downsample, self.image_size[1] // downsample
        for _ in range(len(widths)):  # stem + every stage but the first halve (rounding up)
            h, w = (h + 1) // 2, (w + 1) // 2
        self.pool = SpatialSoftmax(widths[-1], h, w, num_keypoints)
        self.project = nn.Linear(2 * num_keypoints, feature_dim)
        self.feature_dim = feature_dim
        self.output_dim = n_obs_steps * feature_dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        expected = (self.n_obs_steps, self.channels, *self.image_size)
        if images.ndim != 5 or tuple(images.shape[1:]) != expected:
            raise ValueError(f"images must be (B, {', '.join(map(str, expected))}) float in [0, 1], "
                             f"got {tuple(images.shape)}")
        frames = images.flatten(0, 1)  # (B * To, C, H, W): one CNN pass for every frame
        if self.downsample > 1:
            frames = F.avg_pool2d(frames, self.downsample)
        features = self.project(self.pool(self.backbone(frames)))
        return features.reshape(images.shape[0], self.output_dim)
