"""One parent's view of the working state, and its prediction brought back into the working sampler's quantity.

At a working step with level (alpha, sigma), a parent is queried at its own equivalent timestep with the state
rescaled into its own path (gpc.core.paths.align), mapped into its own action space when its normalizer differs
(gpc.core.action_spaces); its raw output becomes the pair (noise, action) in its own frame, and the pair the working
quantity (gpc.core.predictions). docs/composition.md derives each step.
"""

from __future__ import annotations

import torch

from gpc.core.action_spaces import ActionMap
from gpc.core.paths import Level, align
from gpc.core.predictions import from_noise_and_action, to_noise_and_action
from gpc.core.samplers import SamplerConfig


class Alignment:
    """Parent `spec` on the composite chunk of `length` steps, its chunk starting at `start`."""

    def __init__(self, spec, start: int, length: int, action_map: ActionMap | None, sampler: SamplerConfig):
        self.spec, self.start, self.length, self.action_map, self.sampler = spec, start, length, action_map, sampler
        # same quantity on the same path and action space: the output is used as it is, so weight 1 is bit-exact
        self.passthrough = (action_map is None and spec.prediction_type == sampler.prediction_type
                            and spec.path == sampler.path)

    def network_input(self, x: torch.Tensor, step) -> tuple[torch.Tensor, torch.Tensor, Level, Level]:
        """(state in the parent's own frame, its timestep per row, its level, the working level as it sees it)."""
        x_own = x[:, self.start:self.start + self.spec.horizon]
        if self.action_map is None:
            seen = step.level
            timestep, scale, level = align(seen, self.sampler.path, step.timestep, self.spec.path)
            if scale != 1.0:
                x_own = x_own * scale
        else:  # the offset rides on the parent's own signal level (the working one, rescaled, unless clamped)
            seen = Level(step.level.alpha, self.action_map.noise_scale * step.level.sigma)
            timestep, scale, level = align(seen, None, None, self.spec.path)
            x_own = self.action_map.to_parent(x_own * scale, level.alpha)
        return x_own, torch.full((x.shape[0],), timestep, dtype=x.dtype, device=x.device), level, seen

    def to_working(self, output: torch.Tensor, x_own: torch.Tensor, x: torch.Tensor, step, level: Level,
                   seen: Level) -> torch.Tensor:
        """The parent's raw output as the working sampler's quantity on the composite chunk (zeros where the
        parent's chunk does not reach)."""
        if self.passthrough:
            q = output
        else:
            sign = getattr(self.spec.path, "velocity_sign", 1.0)
            e, a = to_noise_and_action(output, self.spec.prediction_type, x_own, level, sign)
            x_sub = x[:, self.start:self.start + self.spec.horizon]
            if self.action_map is not None:
                a = self.action_map.action_to_working(a)
            if self.action_map is not None and not self.action_map.exact:
                e, a = through_velocity(e, a, x_sub, step.level)
            else:
                e, a = consistent_with_state(e, a, x_sub, step.level, level, seen)
            q = from_noise_and_action(e, a, self.sampler.prediction_type, step.level)
        if self.spec.horizon == self.length:
            return q
        padded = torch.zeros_like(x)
        padded[:, self.start:self.start + self.spec.horizon] = q
        return padded


def consistent_with_state(e: torch.Tensor, a: torch.Tensor, x: torch.Tensor, level: Level, parent_level: Level,
                          seen: Level):
    """Make a clamped parent's (e, a) consistent with the working state.

    A parent whose schedule does not reach the level it was asked for (`seen`: the working level, in its action
    space; e.g. a VP schedule's smallest noise above the sampler's last step) was queried at its nearest level.
    Near the clean end its action estimate is the reliable half of the pair, near the noise end its noise
    estimate; the other half is re-derived from `x = alpha a + sigma e` so that every working quantity gives the
    same composite.
    """
    if abs(parent_level.s - seen.s) < 1e-9 or level.alpha == 0.0:  # at pure noise no action is implied
        return e, a
    if parent_level.s > seen.s:
        return (x - level.alpha * a) / level.sigma, a
    return e, (x - level.sigma * e) / level.alpha


def through_velocity(e: torch.Tensor, a: torch.Tensor, x: torch.Tensor, level: Level):
    """A pair from a parent queried at an approximate level (gpc.core.action_spaces), made consistent with the working
    state through its velocity e - a: of four rules measured on Gaussian parents (keep e, keep a, keep the half
    reliable at that level, keep e - a), this one strays least (benchmarks/normalizer_mismatch.py)."""
    u = e - a
    total = level.alpha + level.sigma
    return (x + level.alpha * u) / total, (x - level.sigma * u) / total
