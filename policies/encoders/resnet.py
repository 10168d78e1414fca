"""The ResNet-18 convolutional trunk, laid out as torchvision's `resnet18().children()[:-2]`.

LeRobot's (and robomimic's) image encoders keep that trunk, with every BatchNorm swapped for a GroupNorm of
`channels // 16` groups, so their checkpoints name its tensors `0.weight` (conv1), `1.weight` (norm),
`4.0.conv1.weight` (layer1, block 0), `5.0.downsample.0.weight`, ... This module builds the same layout without
torchvision (whose wheels do not import beside the CPU torch gpc installs), so those weights load by name.
"""

from __future__ import annotations

from torch import nn

STAGES = {"resnet18": (2, 2, 2, 2)}  # the backbone LeRobot and robomimic default to; the one tested here


def _norm(channels: int, group_norm: bool) -> nn.Module:
    return nn.GroupNorm(channels // 16, channels) if group_norm else nn.BatchNorm2d(channels)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual; a strided 1x1 projection where the shape changes."""

    def __init__(self, in_channels: int, channels: int, stride: int, group_norm: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = _norm(channels, group_norm)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = _norm(channels, group_norm)
        self.downsample = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride, bias=False),
                                            _norm(channels, group_norm))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


def resnet_trunk(name: str = "resnet18", group_norm: bool = True) -> nn.Sequential:
    """conv1, norm, relu, maxpool, layer1..layer4: (B, 3, H, W) -> (B, 512, H/32, W/32)."""
    if name not in STAGES:
        raise ValueError(f"vision backbone {name!r} is not supported; supported: {', '.join(STAGES)}")
    layers = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), _norm(64, group_norm), nn.ReLU(inplace=True),
              nn.MaxPool2d(3, 2, 1)]
    in_channels = 64
    for stage, (channels, blocks) in enumerate(zip((64, 128, 256, 512), STAGES[name])):
        stride = 1 if stage == 0 else 2
        layers.append(nn.Sequential(*[BasicBlock(in_channels if b == 0 else channels, channels,
                                                 stride if b == 0 else 1, group_norm) for b in range(blocks)]))
        in_channels = channels
    return nn.Sequential(*layers)
