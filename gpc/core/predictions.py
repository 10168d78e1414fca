"""Conversions between parameterizations (docs/composition.md, "One space for predictions").

At a fixed state `x = alpha * a + sigma * e`, every parameterization is an affine function of the pair
(predicted noise `e`, predicted clean action `a`). Each parent's raw output is turned into that pair in its
own frame (its own state and level), and the pair into the working sampler's quantity. Going through the
pair, rather than through `e` alone, keeps every conversion finite at the ends of the path (an epsilon
cannot give an action at pure noise; a velocity can).
"""

from __future__ import annotations

import torch

from gpc.core.paths import Level

DIFFUSION_PREDICTIONS = ("epsilon", "sample", "v_prediction")
FLOW_PREDICTIONS = ("velocity",)
WORKING_QUANTITIES = DIFFUSION_PREDICTIONS + FLOW_PREDICTIONS


def to_noise_and_action(output: torch.Tensor, prediction_type: str, x: torch.Tensor, level: Level,
                        velocity_sign: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(e, a) implied by a network output at state `x` on `level` (the parent's own frame)."""
    alpha, sigma = level.alpha, level.sigma
    if prediction_type == "epsilon":
        return output, (x - sigma * output) / alpha
    if prediction_type == "sample":
        return (x - alpha * output) / sigma, output
    if prediction_type == "v_prediction":  # VP only: alpha^2 + sigma^2 = 1
        return sigma * x + alpha * output, alpha * x - sigma * output
    if prediction_type == "velocity":  # linear path: u = e - a, x = (1 - s) a + s e
        u = output if velocity_sign == 1.0 else -output
        return x + alpha * u, x - sigma * u
    raise ValueError(f"unknown prediction_type {prediction_type!r}; expected one of {WORKING_QUANTITIES}")


def from_noise_and_action(e: torch.Tensor, a: torch.Tensor, quantity: str, level: Level) -> torch.Tensor:
    """The working sampler's `quantity` at `level` for a predicted pair (e, a)."""
    if quantity == "epsilon":
        return e
    if quantity == "sample":
        return a
    if quantity == "v_prediction":
        return level.alpha * e - level.sigma * a
    if quantity == "velocity":
        return e - a
    raise ValueError(f"unknown working quantity {quantity!r}; expected one of {WORKING_QUANTITIES}")

