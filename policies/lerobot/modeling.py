"""LeRobot's DiffusionPolicy as a gpc parent, run by gpc's own networks with LeRobot's weights.

The network is Diffusion Policy's U-Net (gpc.policies.nets.diffusion_policy_unet: LeRobot keeps its layout and
renames its tensors) and, for images, LeRobot's encoder: a ResNet-18 trunk with GroupNorm, a spatial softmax
over its feature map, a linear layer and a ReLU, after a center crop (LeRobot crops at random only in training).
The global condition is, for each of the `n_obs_steps` frames, [state, image features per camera, environment
state], each normalized as the checkpoint says (gpc.policies.lerobot.processing), flattened frame-major.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from gpc.core.contract import ObservationInput, ParentSpec
from gpc.core.normalizer import Normalizer
from gpc.core.paths import VPSchedule
from gpc.core.samplers import SamplerConfig
from gpc.policies.encoders.resnet import resnet_trunk
from gpc.policies.lerobot.configuration import ACTION, DiffusionConfig, read_config
from gpc.policies.lerobot.processing import Affine, read_normalization
from gpc.policies.nets.diffusion_policy_unet import DiffusionPolicyUnet1D
from gpc.policies.tensor_files import load_matching, load_tensors

WEIGHTS_FILE = "model.safetensors"
KIND = {"STATE": "low_dim", "ENV": "low_dim", "VISUAL": "rgb"}


class SpatialSoftmax(nn.Module):
    """Expected image coordinates of each keypoint channel: softmax over the map, then the mean of a [-1, 1] grid
    (the grid is a buffer of the checkpoint)."""

    def __init__(self, channels: int, height: int, width: int, num_kp: int | None):
        super().__init__()
        self.nets = nn.Conv2d(channels, num_kp, kernel_size=1) if num_kp is not None else None
        self.out_channels = num_kp if num_kp is not None else channels
        self.register_buffer("pos_grid", torch.zeros(height * width, 2))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.nets is not None:
            features = self.nets(features)
        attention = torch.softmax(features.flatten(2).reshape(-1, features.shape[-2] * features.shape[-1]), dim=-1)
        return (attention @ self.pos_grid).view(-1, self.out_channels, 2)


class RgbEncoder(nn.Module):
    """One camera frame (B, 3, H, W) in [0, 1], normalized -> (B, 2 * num_keypoints)."""

    def __init__(self, config: DiffusionConfig, image_shape: tuple[int, int, int]):
        super().__init__()
        self.crop = config.crop_shape
        self.backbone = resnet_trunk(config.vision_backbone, config.use_group_norm)
        height, width = self.crop or image_shape[1:]
        with torch.no_grad():
            feature_map = self.backbone(torch.zeros(1, image_shape[0], height, width)).shape[1:]
        keypoints = config.spatial_softmax_num_keypoints
        self.pool = SpatialSoftmax(*feature_map, keypoints)
        self.out = nn.Linear(keypoints * 2, keypoints * 2)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.crop is not None:  # torchvision's CenterCrop offsets
            top = int(round((x.shape[-2] - self.crop[0]) / 2.0))
            left = int(round((x.shape[-1] - self.crop[1]) / 2.0))
            x = x[..., top:top + self.crop[0], left:left + self.crop[1]]
        return self.relu(self.out(self.pool(self.backbone(x)).flatten(1)))


class LeRobotDiffusionPolicy(nn.Module):
    """A LeRobot DiffusionPolicy checkpoint behind gpc's parent contract (`spec`, `encode`, `predict`)."""

    def __init__(self, config: DiffusionConfig, normalization: Mapping[str, Affine | None], name: str):
        super().__init__()
        self.config = config
        self.images = config.images
        cond_per_frame = config.state.shape[0] + (config.env_state.shape[0] if config.env_state else 0)
        if self.images:
            shape = self.images[0].shape
            if config.use_separate_rgb_encoder_per_camera:
                self.rgb_encoder = nn.ModuleList([RgbEncoder(config, shape) for _ in self.images])
            else:
                self.rgb_encoder = RgbEncoder(config, shape)
            cond_per_frame += 2 * config.spatial_softmax_num_keypoints * len(self.images)
        self.unet = DiffusionPolicyUnet1D(config.action.shape[0], cond_per_frame * config.n_obs_steps,
                                          config.diffusion_step_embed_dim, config.down_dims, config.kernel_size,
                                          config.n_groups, config.use_film_scale_modulation)
        for key, affine in normalization.items():
            if affine is not None and key != ACTION:
                self.register_buffer(_buffer_name(key, "offset"), torch.as_tensor(affine[0], dtype=torch.float32))
                self.register_buffer(_buffer_name(key, "scale"), torch.as_tensor(affine[1], dtype=torch.float32))
        self.normalized = {key for key, affine in normalization.items() if affine is not None and key != ACTION}
        action = normalization[ACTION]
        if action is None:
            raise ValueError(f"{name}: the action is not normalized; gpc composes in a normalized action space")
        path = VPSchedule(config.num_train_timesteps, config.beta_schedule, config.beta_start, config.beta_end)
        sampler = SamplerConfig("ddpm" if config.noise_scheduler_type == "DDPM" else "ddim",
                                config.num_inference_steps, path, config.prediction_type,
                                clip_sample=config.clip_sample, clip_sample_range=config.clip_sample_range)
        inputs = tuple(ObservationInput(f.key, KIND[f.type], f.shape, config.n_obs_steps) for f in config.inputs)
        self.spec = ParentSpec(name, path, config.prediction_type, config.action.shape[0], config.horizon,
                               config.n_obs_steps, config.n_action_steps,
                               Normalizer(action[0].astype(np.float32), action[1].astype(np.float32), "lerobot"),
                               inputs=inputs, sampler=sampler)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def _normalize(self, key: str, x: torch.Tensor) -> torch.Tensor:
        if key not in self.normalized:
            return x
        return (x - getattr(self, _buffer_name(key, "offset"))) / getattr(self, _buffer_name(key, "scale"))

    def _frames(self, obs: Mapping[str, Any], key: str) -> torch.Tensor:
        """The last n_obs_steps frames of an input, float on this device: (B, T, ...)."""
        value = obs[key]
        x = torch.as_tensor(np.asarray(value) if not isinstance(value, torch.Tensor) else value)
        x = x[:, -self.config.n_obs_steps:].to(self.device)
        if x.dtype == torch.uint8:  # env frames (B, T, H, W, 3) -> (B, T, 3, H, W) in [0, 1], as lerobot-eval does
            x = x.permute(0, 1, 4, 2, 3).float() / 255.0
        return x.float()

    def encode(self, obs: Mapping[str, Any]) -> torch.Tensor:
        config = self.config
        parts = [self._normalize(config.state.key, self._frames(obs, config.state.key))]
        batch, frames = parts[0].shape[:2]
        if self.images:
            images = [self._normalize(f.key, self._frames(obs, f.key)).flatten(0, 1) for f in self.images]
            if isinstance(self.rgb_encoder, nn.ModuleList):
                features = [encoder(x) for encoder, x in zip(self.rgb_encoder, images)]
            else:
                features = self.rgb_encoder(torch.stack(images, dim=1).flatten(0, 1)).unflatten(0, (-1, len(images)))
                features = list(features.unbind(1))
            parts += [f.reshape(batch, frames, -1) for f in features]
        if config.env_state is not None:
            parts.append(self._normalize(config.env_state.key, self._frames(obs, config.env_state.key)))
        return torch.cat(parts, dim=-1).flatten(1)

    def predict(self, sample: torch.Tensor, timestep: torch.Tensor, encoding: torch.Tensor) -> torch.Tensor:
        return self.unet(sample, timestep, encoding)


def _buffer_name(key: str, stat: str) -> str:
    return f"norm_{key.replace('.', '_')}_{stat}"


def lerobot_state_dict(weights: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """LeRobot's tensor names as gpc's: `diffusion.unet.*` (conv1/conv2 -> blocks.0/1, resampling convs under
    `.conv`) and `diffusion.rgb_encoder.*`; normalization buffers of older folders are dropped."""
    state = {}
    for key, value in weights.items():
        if key.startswith("diffusion.unet."):
            key = key[len("diffusion."):]
            key = re.sub(r"\.conv([12])\.", lambda m: f".blocks.{int(m.group(1)) - 1}.", key)
            key = re.sub(r"^unet\.(down|up)_modules\.(\d+)\.2\.", r"unet.\1_modules.\2.2.conv.", key)
        elif key.startswith("diffusion.rgb_encoder."):
            key = key[len("diffusion."):]
        elif key.startswith(("normalize_inputs.", "normalize_targets.", "unnormalize_outputs.")):
            continue
        state[key] = torch.from_numpy(np.ascontiguousarray(value))
    return state


def load_lerobot(path: str | Path, device: str | torch.device = "cpu") -> LeRobotDiffusionPolicy:
    """A LeRobot DiffusionPolicy folder as a parent in eval mode; errors name the file and field."""
    folder = Path(path)
    config = read_config(folder)
    weights_file = folder / WEIGHTS_FILE
    if not weights_file.is_file():
        raise ValueError(f"{weights_file}: missing: a LeRobot folder keeps its weights there")
    weights = load_tensors(str(weights_file), "numpy")
    normalization = read_normalization(folder, config, weights)
    policy = LeRobotDiffusionPolicy(config, normalization, folder.name)
    state = lerobot_state_dict(weights)
    load_matching(policy, state, str(weights_file), "config.json's network", optional=("norm_",))
    return policy.to(device).eval()
