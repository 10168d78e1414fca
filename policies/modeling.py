"""A diffusion or flow-matching action-chunk policy that is, as it stands, a `gpc` parent.

Observation encoders (one per input) feed a denoiser (1-D U-Net or transformer) through a global
condition; the objective decides what the denoiser learns to predict. `encode` / `predict` are the two
calls of the parent contract; `compute_loss` trains it.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from gpc.core.contract import ObservationInput, ParentSpec
from gpc.core.normalizer import Normalizer
from gpc.core.samplers import SamplerConfig
from gpc.policies.configuration import ObsFeature, PolicyConfig

# Flow time lives in [0, 1]; the sinusoidal embedding wants a range like diffusion timesteps'.
FLOW_TIME_SCALE = 100.0


def build_encoder(feature, n_obs_steps: int, kwargs: Mapping[str, Any]) -> nn.Module:
    if feature.type == "low_dim":
        from gpc.policies.encoders.state import StateEncoder

        return _built(StateEncoder, "encoders.low_dim", feature.shape[0], n_obs_steps, **kwargs)
    if feature.type == "rgb":
        from gpc.policies.encoders.rgb import RGBEncoder

        return _built(RGBEncoder, "encoders.rgb", tuple(feature.shape[1:]), n_obs_steps, feature.shape[0], **kwargs)
    if feature.type == "pointcloud":
        from gpc.policies.encoders.pointcloud import PointCloudEncoder

        return _built(PointCloudEncoder, "encoders.pointcloud", n_obs_steps, feature.shape[-1], **kwargs)
    if feature.type == "language":
        from gpc.policies.encoders.language import LanguageEncoder

        return _built(LanguageEncoder, "encoders.language", **kwargs)
    raise ValueError(f"unknown observation type {feature.type!r}")


def _built(cls, field: str, *args, **kwargs) -> nn.Module:
    """`cls(*args, **kwargs)`, with a misnamed or mistyped option reported as the config field it came from."""
    try:
        return cls(*args, **kwargs)
    except TypeError as err:
        raise ValueError(f"policy.{field}: {err}") from None


def build_denoiser(config: PolicyConfig, cond_dim: int) -> nn.Module:
    kwargs = dict(config.denoiser)
    kind = kwargs.pop("type", "unet")
    time_scale = FLOW_TIME_SCALE if config.objective.kind == "flow" else 1.0
    if kind == "unet":
        from gpc.policies.nets.unet1d import ConditionalUnet1D

        return _built(ConditionalUnet1D, "denoiser", config.action_dim, cond_dim, time_scale=time_scale, **kwargs)
    if kind == "transformer":
        from gpc.policies.nets.transformer import TransformerDenoiser

        return _built(TransformerDenoiser, "denoiser", config.action_dim, cond_dim, config.horizon,
                      time_scale=time_scale, **kwargs)
    raise ValueError(f"denoiser.type must be 'unet' or 'transformer', got {kind!r}")


def observation_tensor(feature: ObsFeature, value: Any, n_obs_steps: int) -> torch.Tensor:
    """An env observation as its encoder's float input: the last `n_obs_steps` frames; uint8 images
    (B, To, H, W, 3) become (B, To, 3, H, W) in [0, 1]; point clouds keep their configured channels, xyz
    first, so an env's extra rgb channels go unused (DP3 without color)."""
    x = torch.as_tensor(np.asarray(value) if not isinstance(value, torch.Tensor) else value)[:, -n_obs_steps:]
    if feature.type == "rgb" and x.dtype == torch.uint8:
        return x.permute(0, 1, 4, 2, 3).float() / 255.0
    if feature.type == "pointcloud":
        x = x[..., :feature.shape[-1]]
    return x.float()


def instruction_texts(value: Any) -> list[str]:
    """One instruction per row: a list of strings as given, or the latest frame of each row where a rollout
    stacked an env's per-step instruction into (B, To) frames."""
    array = np.asarray(value)
    if array.ndim == 2:
        array = array[:, -1]
    return [str(text) for text in array]


def policy_spec(config: PolicyConfig, action_normalizer: Normalizer) -> ParentSpec:
    """The parent contract of a gpc policy config, whatever runs its networks (torch or ONNX Runtime)."""
    path = config.objective.path()
    inputs = tuple(ObservationInput(f.key, f.type, tuple(f.shape) if f.type != "language" else (), config.n_obs_steps)
                   for f in config.obs)
    sampler = SamplerConfig.native(path, config.objective.prediction_type, config.objective.num_inference_steps)
    return ParentSpec(config.name, path, config.objective.prediction_type, config.action_dim, config.horizon,
                      config.n_obs_steps, config.n_action_steps, action_normalizer, inputs=inputs, sampler=sampler)


class Policy(nn.Module):
    def __init__(self, config: PolicyConfig, normalizers: Mapping[str, Normalizer]):
        super().__init__()
        self.config = config
        self.normalizers = dict(normalizers)
        missing = [k for k in ["action"] + [f.key for f in config.obs if f.type == "low_dim"]
                   if k not in self.normalizers]
        if missing:
            raise ValueError(f"policy {config.name!r}: missing normalizer for {missing}; a policy without its "
                             "normalizer would act blind")
        self.encoders = nn.ModuleDict({f.key: build_encoder(f, config.n_obs_steps, config.encoders.get(f.type, {}))
                                       for f in config.obs})
        cond_dim = sum(encoder.output_dim for encoder in self.encoders.values())
        self.denoiser = build_denoiser(config, cond_dim)
        self.path = config.objective.path()
        self.spec = policy_spec(config, self.normalizers["action"])

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def encode(self, obs: Mapping[str, Any]) -> torch.Tensor:
        """Encode the last `n_obs_steps` frames of each input: (B, cond_dim)."""
        features = []
        for feature in self.config.obs:
            value = obs[feature.key]
            if feature.type == "language":
                features.append(self.encoders[feature.key](instruction_texts(value)).to(self.device))
                continue
            x = observation_tensor(feature, value, self.config.n_obs_steps).to(self.device)
            if feature.type != "rgb" and feature.key in self.normalizers:
                x = self.normalizers[feature.key].normalize(x)
            features.append(self.encoders[feature.key](x))
        return torch.cat(features, dim=-1)

    def predict(self, sample: torch.Tensor, timestep: torch.Tensor, encoding: torch.Tensor) -> torch.Tensor:
        return self.denoiser(sample, timestep, encoding)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, encoding: torch.Tensor) -> torch.Tensor:
        return self.predict(sample, timestep, encoding)

    def compute_loss(self, batch: Mapping[str, Any], generator: torch.Generator | None = None) -> torch.Tensor:
        """Per-sample denoising loss (B,), mean squared error over the chunk, so callers may reweight samples."""
        return self.loss_and_encoding(batch, generator)[0]

    def loss_and_encoding(self, batch: Mapping[str, Any], generator: torch.Generator | None = None
                          ) -> tuple[torch.Tensor, torch.Tensor]:
        """The per-sample loss and the observation encoding it was conditioned on (SGFD reweights by it)."""
        action = self.normalizers["action"].normalize(batch["action"].to(self.device).float())
        encoding = self.encode(batch["obs"])
        noise = torch.randn(action.shape, generator=generator, device=self.device)
        noisy, timestep, target = self.path.training_example(action, noise, self.config.objective.prediction_type,
                                                             generator)
        prediction = self.predict(noisy, timestep, encoding)
        return ((prediction - target) ** 2).mean(dim=(1, 2)), encoding
