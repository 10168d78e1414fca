"""Typed configuration of a parent policy: its inputs, networks and training objective.

Checked by gpc.app.schema at load time (unknown keys, types, ranges and the objective's kind named by field), so
a wrong or missing field is named in the error. A checkpoint's config is read with every field required:
it never falls back to a default objective or schedule.
"""

from __future__ import annotations

import difflib
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from gpc.app.schema import check, doc
from gpc.core.normalizer import MODES
from gpc.core.paths import BETA_SCHEDULES, FlowPath, NoisePath, VPSchedule
from gpc.core.predictions import DIFFUSION_PREDICTIONS, FLOW_PREDICTIONS

ObsType = Literal["low_dim", "rgb", "pointcloud", "language"]
OBS_TYPES = typing.get_args(ObsType)
DENOISERS = ("unet", "transformer")
# Per-frame shape rank of each observation type: (D,) low-dim, (C, H, W) rgb, (N, C) point cloud, (D,) language.
SHAPE_RANK = {"low_dim": 1, "rgb": 3, "pointcloud": 2, "language": 1}


@dataclass
class ObsFeature:
    """One observation input, named as the env names it."""

    key: str = field(default="state", metadata=doc("the observation's name, as the env and the dataset name it"))
    type: ObsType = field(default="low_dim", metadata=doc("which encoder reads it"))
    shape: list[int] = field(default_factory=lambda: [5], metadata=doc(
        "per frame: (D,) low_dim, (C, H, W) rgb, (N, C) pointcloud, (D,) language embedding", minimum=1))
    # Where training data finds it when the dataset names it differently (Diffusion Policy's PushT zarr
    # stores `img`, and the agent position as the first two dims of `state`).
    dataset_key: Optional[str] = field(default=None, metadata=doc("the training store's `data/` array, if not `key`"))
    dataset_dims: Optional[list[int]] = field(default=None, metadata=doc(
        "[start, stop) of the dataset array's last axis", minimum=0))

    def __post_init__(self):
        if len(self.shape) != SHAPE_RANK[self.type]:
            raise ValueError(f"shape: {self.type} inputs have {SHAPE_RANK[self.type]} dims per frame, "
                             f"got {self.shape}")
        if self.dataset_dims is not None:
            if len(self.dataset_dims) != 2 or self.dataset_dims[0] >= self.dataset_dims[1]:
                raise ValueError(f"dataset_dims: need [start, stop) with start < stop, got {self.dataset_dims}")
            width = self.dataset_dims[1] - self.dataset_dims[0]
            if self.type in ("low_dim", "pointcloud") and width != self.shape[-1]:
                raise ValueError(f"dataset_dims: {self.dataset_dims} selects {width} dims, but shape says "
                                 f"{self.shape[-1]}")


@dataclass
class ObjectiveConfig:
    """Diffusion (a VP schedule, diffusers-style) or flow matching (linear path)."""

    kind: Literal["diffusion", "flow"] = field(metadata=doc("what the denoiser is trained for"))
    prediction_type: Literal["epsilon", "sample", "v_prediction", "velocity"] = field(default="epsilon", metadata=doc(
        "the denoiser's output: epsilon, sample or v_prediction for diffusion, velocity for flow"))
    num_train_timesteps: int = field(default=100, metadata=doc("diffusion: steps of the VP schedule", minimum=2))
    beta_schedule: Literal[BETA_SCHEDULES] = field(default="squaredcos_cap_v2", metadata=doc(
        "diffusion: diffusers' beta schedule"))
    beta_start: float = field(default=0.0001, metadata=doc("diffusion: first beta (linear schedules)",
                                                           positive=True, maximum=1))
    beta_end: float = field(default=0.02, metadata=doc("diffusion: last beta (linear schedules)",
                                                       positive=True, maximum=1))
    noise_at: Literal[0, 1] = field(default=1, metadata=doc("flow: the time at which the path is pure noise"))
    velocity: Literal["noise_minus_action", "action_minus_noise"] = field(default="noise_minus_action", metadata=doc(
        "flow: the velocity's sign convention"))
    num_inference_steps: int = field(default=10, metadata=doc("steps of the native sampler", minimum=1))

    def __post_init__(self):
        allowed = DIFFUSION_PREDICTIONS if self.kind == "diffusion" else FLOW_PREDICTIONS
        if self.prediction_type not in allowed:
            raise ValueError(f"prediction_type: a {self.kind} objective predicts "
                             f"{' or '.join(map(repr, allowed))}, got {self.prediction_type!r}")

    def path(self) -> NoisePath:
        if self.kind == "diffusion":
            return VPSchedule(self.num_train_timesteps, self.beta_schedule, self.beta_start, self.beta_end)
        return FlowPath(self.noise_at, self.velocity)


@dataclass
class PolicyConfig:
    name: str = field(default="policy", metadata=doc("the parent's name in tables and logs"))
    obs: list[ObsFeature] = field(default_factory=lambda: [ObsFeature()], metadata=doc("the observation inputs"))
    action_dim: int = field(default=2, metadata=doc("dimensions of one action", minimum=1))
    horizon: int = field(default=16, metadata=doc("steps of the predicted action chunk", minimum=1))
    n_obs_steps: int = field(default=2, metadata=doc("observation frames the policy conditions on", minimum=1))
    n_action_steps: int = field(default=8, metadata=doc("actions executed per chunk", minimum=1))
    encoders: dict[str, dict[str, Any]] = field(default_factory=dict, metadata=doc(
        "keyword arguments of each encoder class, by observation type (see gpc.policies.encoders)"))
    denoiser: dict[str, Any] = field(default_factory=lambda: {"type": "unet"}, metadata=doc(
        "`type`: unet or transformer, plus keyword arguments of that network (see gpc.policies.nets)"))
    objective: ObjectiveConfig = field(default_factory=lambda: ObjectiveConfig("diffusion"),
                                       metadata=doc("the training objective and its noise path"))
    normalization: dict[str, Literal[MODES]] = field(default_factory=lambda: {"action": "limits"}, metadata=doc(
        "normalizer mode (limits or gaussian) per low-dim observation key and for `action`"))
    # A `meta/` key of the training store (one value per episode, e.g. `task` of a multi-task store): action
    # statistics are then fit per value and saved as `action@<value>`, and a parent names the one it acts with
    # (`action_stats`), as multi-dataset VLAs unnormalize with one dataset's statistics. A parent composed with
    # a single-task parent so shares that parent's normalized action space exactly. Checkpoints written before
    # it existed lack it.
    action_stats_by: Optional[str] = field(default=None, metadata=doc(
        "a meta/ key of the training store: fit action statistics per value of it", optional=True))

    def __post_init__(self):
        if not self.obs:
            raise ValueError("obs: need at least one observation input")
        keys = [f.key for f in self.obs]
        if len(set(keys)) != len(keys):
            raise ValueError(f"obs: a key is named twice: {keys}")
        if self.n_obs_steps - 1 + self.n_action_steps > self.horizon:
            raise ValueError(f"horizon: {self.horizon} is too short to execute {self.n_action_steps} actions after "
                             f"{self.n_obs_steps} observations: need >= {self.n_obs_steps - 1 + self.n_action_steps}")
        for kind in self.encoders:
            if kind not in OBS_TYPES:
                raise ValueError(f"encoders: {kind!r} is not an observation type{_did_you_mean(kind, OBS_TYPES)}")
        if self.denoiser.get("type", "unet") not in DENOISERS:
            raise ValueError(f"denoiser: type must be one of {', '.join(DENOISERS)}, got {self.denoiser['type']!r}")
        for key in self.normalization:
            if key != "action" and not key.startswith("action@") and key not in keys:
                raise ValueError(f"normalization: {key!r} is neither 'action' nor an observation key"
                                 f"{_did_you_mean(key, ['action', *keys])}")


def _did_you_mean(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(choices)}"


def load_policy_config(raw: Any, where: str = "policy", field: str = "", require_all: bool = False) -> PolicyConfig:
    """A checked PolicyConfig from a dict / DictConfig; errors name `where` and the field (under `field`).
    `require_all`: every field must be given (a checkpoint's config is never completed from defaults)."""
    return check(PolicyConfig, raw, where, field, require_all=require_all)
