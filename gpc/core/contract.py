"""The parent contract: what a policy declares, and the two calls the composer makes on it."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Protocol, Union, runtime_checkable

import torch

from gpc.core.normalizer import Normalizer
from gpc.core.paths import FlowPath, NoisePath, VPSchedule
from gpc.core.predictions import DIFFUSION_PREDICTIONS, FLOW_PREDICTIONS
from gpc.core.samplers import SamplerConfig

Encoding = Union[torch.Tensor, Mapping[str, torch.Tensor]]
INPUT_KINDS = ("low_dim", "rgb", "pointcloud", "language")


@dataclass(frozen=True)
class ObservationInput:
    """One observation a parent reads, so that a missing or mis-shaped input is refused at load time.

    `key` is the observation key as the parent reads it (after any mapping from the env's names); `shape` is
    one frame's shape: (D,) low-dim, (3, H, W) rgb (envs may give uint8 (H, W, 3)), (N, C) point cloud, ()
    language; `frames` is how many of the latest frames the parent reads.
    """

    key: str
    kind: str
    shape: tuple[int, ...]
    frames: int = 1

    def __post_init__(self):
        if self.kind not in INPUT_KINDS:
            raise ValueError(f"input {self.key!r}: kind {self.kind!r}; expected one of {INPUT_KINDS}")
        object.__setattr__(self, "shape", tuple(int(n) for n in self.shape))

    def accepts(self, frame_shape: tuple[int, ...]) -> bool:
        """Whether an env frame of this shape is this input (an rgb input also takes channels-last frames;
        a point cloud may carry extra channels after the ones the parent reads)."""
        frame_shape = tuple(frame_shape)
        if self.kind == "rgb" and len(self.shape) == 3:
            return frame_shape in (self.shape, (*self.shape[1:], self.shape[0]))
        if self.kind == "pointcloud":  # any point count: the encoder pools over points
            return len(frame_shape) == len(self.shape) and frame_shape[-1] >= self.shape[-1]
        if self.kind == "language":
            return True
        return frame_shape == self.shape


@dataclass(frozen=True)
class ParentSpec:
    """Everything the composer must know about a parent, and nothing about its network.

    The action chunk has `horizon` steps; the step at index `action_start` is the current control step
    (Diffusion Policy predicts from the oldest observed step, so its default is `n_obs_steps - 1`), and
    `n_action_steps` actions from there are executed. `inputs` are the observations it reads; `sampler` is the
    sampler its own codebase runs it with (`sampler: native`, and its "alone" rows), by default DDIM 10 steps
    on its schedule or flow Euler 10 steps.
    """

    name: str
    path: NoisePath
    prediction_type: str
    action_dim: int
    horizon: int
    n_obs_steps: int
    n_action_steps: int
    normalizer: Normalizer = field(compare=False, repr=False)
    action_start: int = -1
    inputs: tuple[ObservationInput, ...] = ()
    sampler: SamplerConfig | None = None

    def __post_init__(self):
        allowed = DIFFUSION_PREDICTIONS if isinstance(self.path, VPSchedule) else FLOW_PREDICTIONS
        if not isinstance(self.path, (VPSchedule, FlowPath)):
            raise ValueError(f"parent {self.name!r}: path must be a VPSchedule or FlowPath")
        if self.prediction_type not in allowed:
            raise ValueError(f"parent {self.name!r}: prediction_type {self.prediction_type!r} is not valid for a "
                             f"{self.path.kind} parent; expected one of {allowed}")
        for key in ("action_dim", "horizon", "n_obs_steps", "n_action_steps"):
            if int(getattr(self, key)) < 1:
                raise ValueError(f"parent {self.name!r}: {key} must be >= 1, got {getattr(self, key)}")
        if self.action_start < 0:
            object.__setattr__(self, "action_start", self.n_obs_steps - 1)
        if self.action_start + self.n_action_steps > self.horizon:
            raise ValueError(f"parent {self.name!r}: action_start + n_action_steps "
                             f"({self.action_start} + {self.n_action_steps}) exceeds horizon {self.horizon}")
        if self.normalizer.dim != self.action_dim:
            raise ValueError(f"parent {self.name!r}: action normalizer has {self.normalizer.dim} dims, "
                             f"action_dim is {self.action_dim}")
        if self.sampler is None:
            object.__setattr__(self, "sampler", SamplerConfig.native(self.path, self.prediction_type, 10))
        elif self.sampler.path != self.path and not (self.kind == self.sampler.path.kind == "flow"):
            raise ValueError(f"parent {self.name!r}: its native sampler runs on {self.sampler.path}, not on its own "
                             f"path {self.path}")
        keys = [i.key for i in self.inputs]
        if len(set(keys)) != len(keys):
            raise ValueError(f"parent {self.name!r}: inputs name a key twice: {keys}")

    @property
    def kind(self) -> str:
        return self.path.kind


@runtime_checkable
class Parent(Protocol):
    """A pretrained policy the composer can query.

    `encode` runs once per control step on a batch of observations (rows = environments); the composer
    repeats the encoding for every weight candidate. `predict` runs once per denoising step on
    `sample` (rows, horizon, action_dim) in the parent's own normalized action space and noise frame, at
    `timestep` (rows,) in the parent's own units: a (possibly fractional) train timestep for diffusion
    parents, flow time in the parent's own convention for flow parents.
    """

    spec: ParentSpec

    def encode(self, obs: Mapping[str, Any]) -> Encoding: ...

    def predict(self, sample: torch.Tensor, timestep: torch.Tensor, encoding: Encoding) -> torch.Tensor: ...


def repeat_rows(encoding: Encoding, repeats: int) -> Encoding:
    """Repeat each row `repeats` times in place (row b becomes rows b*repeats ... b*repeats+repeats-1)."""
    if repeats == 1:
        return encoding
    if isinstance(encoding, torch.Tensor):
        return encoding.repeat_interleave(repeats, dim=0)
    return {key: value.repeat_interleave(repeats, dim=0) for key, value in encoding.items()}


def concat_rows(first: Encoding, second: Encoding) -> Encoding:
    """The rows of `first`, then those of `second`."""
    if isinstance(first, torch.Tensor):
        return torch.cat([first, second])
    return {key: torch.cat([value, second[key]]) for key, value in first.items()}


class ParentView:
    """A parent as its composition entry presents it: under another display name, and reading the env's
    observation keys where the parent's own differ (`observations`: {parent key: env key}). Everything else
    is the parent's own (its networks stay reachable, for the fast paths)."""

    def __init__(self, parent: Parent, name: str | None = None, observations: Mapping[str, str] | None = None):
        self.parent = parent
        self.observations = dict(observations or {})
        own = {i.key for i in parent.spec.inputs}
        unknown = sorted(set(self.observations) - own)
        if unknown:
            raise ValueError(f"observations: {unknown} are not inputs of parent {parent.spec.name!r}; its inputs are "
                             f"{sorted(own)}")
        inputs = tuple(replace(i, key=self.observations.get(i.key, i.key)) for i in parent.spec.inputs)
        self.spec = replace(parent.spec, name=name or parent.spec.name, inputs=inputs)

    def encode(self, obs: Mapping[str, Any]) -> Encoding:
        if not self.observations:
            return self.parent.encode(obs)
        return self.parent.encode({**obs, **{own: obs[env] for own, env in self.observations.items()}})

    def predict(self, sample: torch.Tensor, timestep: torch.Tensor, encoding: Encoding) -> torch.Tensor:
        return self.parent.predict(sample, timestep, encoding)

    def __getattr__(self, name: str):
        if name == "parent":  # not set yet (copying): no recursion
            raise AttributeError(name)
        return getattr(self.parent, name)


def first_non_finite(parent: Parent) -> str | None:
    """What in a loaded parent holds NaN or inf (its action normalizer, another normalizer, a weight), if anything:
    such a parent would act blind or produce NaN chunks, so it is refused at load time."""
    import numpy as np

    normalizers = {"action normalizer": parent.spec.normalizer}
    normalizers.update({f"{key} normalizer": n for key, n in (getattr(parent, "normalizers", None) or {}).items()})
    for name, normalizer in normalizers.items():
        if not (np.all(np.isfinite(normalizer.offset)) and np.all(np.isfinite(normalizer.scale))):
            return name
    state = parent.state_dict() if isinstance(parent, torch.nn.Module) else {}
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return f"weight {name}"
    return None
