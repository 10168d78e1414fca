"""A LeRobot policy's `config.json`, read into the fields that decide its predictions.

LeRobot writes every field of its config class; fields that only matter for training (optimizer, loss masks,
`drop_n_last_frames`, ...) are ignored here. Inference fields that gpc does not reproduce are refused by name,
never silently dropped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONFIG_FILE = "config.json"
SUPPORTED_TYPES = ("diffusion",)
OBS_STATE, OBS_ENV_STATE, ACTION = "observation.state", "observation.environment_state", "action"
FEATURE_TYPES = ("STATE", "ENV", "VISUAL", "ACTION")


@dataclass(frozen=True)
class Feature:
    key: str
    type: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class DiffusionConfig:
    """LeRobot's DiffusionConfig, the inference half."""

    n_obs_steps: int
    horizon: int
    n_action_steps: int
    inputs: tuple[Feature, ...]
    action: Feature
    normalization_mapping: dict
    vision_backbone: str
    crop_shape: tuple[int, int] | None
    use_group_norm: bool
    spatial_softmax_num_keypoints: int
    use_separate_rgb_encoder_per_camera: bool
    down_dims: tuple[int, ...]
    kernel_size: int
    n_groups: int
    diffusion_step_embed_dim: int
    use_film_scale_modulation: bool
    noise_scheduler_type: str
    num_train_timesteps: int
    beta_schedule: str
    beta_start: float
    beta_end: float
    prediction_type: str
    clip_sample: bool
    clip_sample_range: float
    num_inference_steps: int

    @property
    def state(self) -> Feature | None:
        return next((f for f in self.inputs if f.type == "STATE" and f.key == OBS_STATE), None)

    @property
    def env_state(self) -> Feature | None:
        return next((f for f in self.inputs if f.type == "ENV"), None)

    @property
    def images(self) -> tuple[Feature, ...]:
        return tuple(f for f in self.inputs if f.type == "VISUAL")


def is_lerobot_folder(path: Path) -> bool:
    """A folder LeRobot's `save_pretrained` wrote: a `config.json` that names a policy `type`."""
    file = path / CONFIG_FILE
    if not file.is_file():
        return False
    try:
        return "type" in json.loads(file.read_text())
    except (ValueError, UnicodeDecodeError):
        return False


def read_config(folder: Path) -> DiffusionConfig:
    """The folder's config; errors start with `<folder>/config.json: <field>:`."""
    file = folder / CONFIG_FILE
    try:
        raw = json.loads(file.read_text())
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{file}: not a readable JSON file ({err})") from None
    where = str(file)
    kind = raw.get("type")
    if kind not in SUPPORTED_TYPES:
        raise ValueError(f"{where}: type: LeRobot policy type {kind!r} is not supported; gpc loads "
                         f"{', '.join(SUPPORTED_TYPES)} (the flow VLAs pi0, pi05 and smolvla need hub files this "
                         "loader cannot fetch: see docs/checkpoints.md)")
    get = _Getter(raw, where)
    inputs = tuple(_features(raw, "input_features", where))
    outputs = {f.key: f for f in _features(raw, "output_features", where)}
    if ACTION not in outputs or outputs[ACTION].type != "ACTION" or len(outputs[ACTION].shape) != 1:
        raise ValueError(f"{where}: output_features: need an 'action' feature of type ACTION and shape (D,)")
    if raw.get("resize_shape") is not None:
        raise ValueError(f"{where}: resize_shape: {raw['resize_shape']} is not supported (no checkpoint with a "
                         "resize has been checked against LeRobot here)")
    config = DiffusionConfig(
        n_obs_steps=get.integer("n_obs_steps"), horizon=get.integer("horizon"),
        n_action_steps=get.integer("n_action_steps"), inputs=inputs, action=outputs[ACTION],
        normalization_mapping=dict(get.value("normalization_mapping", dict)),
        vision_backbone=get.value("vision_backbone", str, "resnet18"),
        crop_shape=_pair(raw.get("crop_shape"), where, "crop_shape"),
        use_group_norm=get.value("use_group_norm", bool, True),
        spatial_softmax_num_keypoints=get.integer("spatial_softmax_num_keypoints", 32),
        use_separate_rgb_encoder_per_camera=get.value("use_separate_rgb_encoder_per_camera", bool, False),
        down_dims=tuple(get.value("down_dims", list)), kernel_size=get.integer("kernel_size"),
        n_groups=get.integer("n_groups"), diffusion_step_embed_dim=get.integer("diffusion_step_embed_dim"),
        use_film_scale_modulation=get.value("use_film_scale_modulation", bool),
        noise_scheduler_type=get.value("noise_scheduler_type", str),
        num_train_timesteps=get.integer("num_train_timesteps"), beta_schedule=get.value("beta_schedule", str),
        beta_start=get.number("beta_start"), beta_end=get.number("beta_end"),
        prediction_type=get.value("prediction_type", str), clip_sample=get.value("clip_sample", bool),
        clip_sample_range=get.number("clip_sample_range", 1.0),
        num_inference_steps=(get.integer("num_inference_steps") if raw.get("num_inference_steps") is not None
                             else get.integer("num_train_timesteps")))
    _check(config, raw, where)
    return config


def _check(config: DiffusionConfig, raw: dict, where: str) -> None:
    if config.state is None:
        raise ValueError(f"{where}: input_features: a diffusion policy needs '{OBS_STATE}' of type STATE")
    if not config.images and config.env_state is None:
        raise ValueError(f"{where}: input_features: a diffusion policy needs an image or an environment state")
    if config.noise_scheduler_type not in ("DDPM", "DDIM"):
        raise ValueError(f"{where}: noise_scheduler_type: {config.noise_scheduler_type!r}; expected DDPM or DDIM")
    if config.prediction_type not in ("epsilon", "sample"):
        raise ValueError(f"{where}: prediction_type: {config.prediction_type!r}; expected epsilon or sample")
    if config.images:
        if raw.get("pretrained_backbone_weights") and config.use_group_norm:
            raise ValueError(f"{where}: pretrained_backbone_weights with use_group_norm cannot have been trained")
        shapes = {f.shape for f in config.images}
        if len(shapes) != 1 or len(next(iter(shapes))) != 3:
            raise ValueError(f"{where}: input_features: images must all be (C, H, W) of one shape, got {shapes}")
    for key in ("n_obs_steps", "horizon", "n_action_steps"):
        if getattr(config, key) < 1:
            raise ValueError(f"{where}: {key}: must be >= 1, got {getattr(config, key)}")


def _features(raw: dict, field: str, where: str) -> list[Feature]:
    value = raw.get(field)
    if not isinstance(value, dict) or not value:
        older = "input_shapes" in raw or "output_shapes" in raw
        raise ValueError(f"{where}: {field}: missing or empty" + (
            "; this folder is in an older LeRobot format (input_shapes / output_shapes), and gpc reads the "
            "input_features format current LeRobot writes" if older else ""))
    features = []
    for key, spec in value.items():
        if (not isinstance(spec, dict) or spec.get("type") not in FEATURE_TYPES
                or not isinstance(spec.get("shape"), list) or not all(isinstance(n, int) for n in spec["shape"])):
            raise ValueError(f"{where}: {field}.{key}: need {{type: one of {FEATURE_TYPES}, shape: [ints]}}, "
                             f"got {spec!r}")
        features.append(Feature(key, spec["type"], tuple(spec["shape"])))
    return features


def _pair(value: Any, where: str, field: str) -> tuple[int, int] | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != 2 or not all(isinstance(n, int) and n > 0 for n in value):
        raise ValueError(f"{where}: {field}: need two positive integers, got {value!r}")
    return (value[0], value[1])


class _Getter:
    """Typed reads of config fields, each error naming the field."""

    def __init__(self, raw: dict, where: str):
        self.raw, self.where = raw, where

    def value(self, key: str, kind: type, default: Any = ...) -> Any:
        if key not in self.raw:
            if default is ...:
                raise ValueError(f"{self.where}: {key}: missing")
            return default
        value = self.raw[key]
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise ValueError(f"{self.where}: {key}: need {kind.__name__}, got {value!r}")
        return value

    def integer(self, key: str, default: Any = ...) -> int:
        return self.value(key, int, default)

    def number(self, key: str, default: Any = ...) -> float:
        value = self.raw.get(key, default)
        if value is ...:
            raise ValueError(f"{self.where}: {key}: missing")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{self.where}: {key}: need a number, got {value!r}")
        return float(value)
