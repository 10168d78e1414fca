"""Typed configuration of a parent policy: its inputs, networks and training objective.

Validated by OmegaConf at load time, so a wrong or missing field is named in the error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import OmegaConf

from gpc.noise import FlowPath, NoisePath, VPSchedule

OBS_TYPES = ("low_dim", "rgb", "pointcloud", "language")


@dataclass
class ObsFeature:
    """One observation input, named as the env names it. `shape` is per frame: (D,) low-dim, (3, H, W) rgb,
    (N, C) point cloud."""

    key: str = "state"
    type: str = "low_dim"
    shape: list[int] = field(default_factory=lambda: [5])
    # Where training data finds it when the dataset names it differently (Diffusion Policy's PushT zarr
    # stores `img`, and the agent position as the first two dims of `state`).
    dataset_key: Optional[str] = None
    dataset_dims: Optional[list[int]] = None  # [start, stop) of the dataset array's last axis


@dataclass
class ObjectiveConfig:
    """Diffusion (a VP schedule, diffusers-style) or flow matching (linear path)."""

    kind: str = "diffusion"
    prediction_type: str = "epsilon"
    num_train_timesteps: int = 100
    beta_schedule: str = "squaredcos_cap_v2"
    beta_start: float = 0.0001
    beta_end: float = 0.02
    noise_at: int = 1
    velocity: str = "noise_minus_action"
    num_inference_steps: int = 10

    def path(self) -> NoisePath:
        if self.kind == "diffusion":
            return VPSchedule(self.num_train_timesteps, self.beta_schedule, self.beta_start, self.beta_end)
        if self.kind == "flow":
            return FlowPath(self.noise_at, self.velocity)
        raise ValueError(f"objective.kind must be 'diffusion' or 'flow', got {self.kind!r}")


@dataclass
class PolicyConfig:
    name: str = "policy"
    obs: list[ObsFeature] = field(default_factory=lambda: [ObsFeature()])
    action_dim: int = 2
    horizon: int = 16
    n_obs_steps: int = 2
    n_action_steps: int = 8
    # Keyword arguments of each encoder class, by observation type (see gpc.policies.encoders).
    encoders: dict[str, Any] = field(default_factory=dict)
    # `type`: unet or transformer, plus keyword arguments of that network (see gpc.policies.nets).
    denoiser: dict[str, Any] = field(default_factory=lambda: {"type": "unet"})
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    # Normalizer modes, per observation key and for "action".
    normalization: dict[str, str] = field(default_factory=lambda: {"action": "limits"})
    # A `meta/` key of the training store (one value per episode, e.g. `task` of a multi-task store): action
    # statistics are then fit per value and saved as `action@<value>`, and a parent names the one it acts with
    # (`action_stats`), as multi-dataset VLAs unnormalize with one dataset's statistics. A parent composed with
    # a single-task parent so shares that parent's normalized action space exactly.
    action_stats_by: Optional[str] = None


def load_policy_config(raw: Any, where: str = "policy") -> PolicyConfig:
    """A validated PolicyConfig from a dict / DictConfig; errors name `where` and the field."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(PolicyConfig), raw)
        config: PolicyConfig = OmegaConf.to_object(merged)
    except Exception as err:  # OmegaConf's errors already name the key
        raise ValueError(f"{where}: {err}".splitlines()[0]) from None
    for feature in config.obs:
        if feature.type not in OBS_TYPES:
            raise ValueError(f"{where}: obs {feature.key!r} has type {feature.type!r}; expected one of {OBS_TYPES}")
    config.objective.path()  # validates kind / schedule / flow convention
    return config
