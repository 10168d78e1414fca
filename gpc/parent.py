"""The parent contract: what a policy declares, and the two calls the composer makes on it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol, Union, runtime_checkable

import torch

from gpc.noise import FlowPath, NoisePath, VPSchedule
from gpc.normalizer import Normalizer
from gpc.predictions import DIFFUSION_PREDICTIONS, FLOW_PREDICTIONS

Encoding = Union[torch.Tensor, Mapping[str, torch.Tensor]]


@dataclass(frozen=True)
class ParentSpec:
    """Everything the composer must know about a parent, and nothing about its network.

    The action chunk has `horizon` steps; the step at index `action_start` is the current control step
    (Diffusion Policy predicts from the oldest observed step, so its default is `n_obs_steps - 1`), and
    `n_action_steps` actions from there are executed.
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
