"""Conversions between parameterizations, on their own: every quantity is an affine function of the pair
(noise, action) at a fixed state, so each round-trips, and convex weights give one composite in any of them."""

import numpy as np
import pytest
import torch

from gpc.core.paths import FlowPath, Level, VPSchedule
from gpc.core.predictions import WORKING_QUANTITIES, from_noise_and_action, to_noise_and_action

RNG = torch.Generator().manual_seed(0)
LEVELS = {"vp_noisy": VPSchedule().level(80), "vp_clean": VPSchedule().level(3), "flow_mid": FlowPath().level(0.4),
          "flow_near_noise": FlowPath().level(0.97)}


def _pair(level: Level):
    e, a = torch.randn(5, 4, 2, generator=RNG, dtype=torch.float64), torch.randn(5, 4, 2, generator=RNG,
                                                                                   dtype=torch.float64)
    return e, a, level.alpha * a + level.sigma * e


def _quantities(level_name: str):
    """v is defined on VP levels (alpha^2 + sigma^2 = 1), the velocity on the linear path (alpha + sigma = 1)."""
    return [q for q in WORKING_QUANTITIES if q != ("velocity" if level_name.startswith("vp") else "v_prediction")]


@pytest.mark.parametrize("level_name", LEVELS)
def test_every_quantity_round_trips_through_the_pair(level_name):
    level = LEVELS[level_name]
    e, a, x = _pair(level)
    for quantity in _quantities(level_name):
        q = from_noise_and_action(e, a, quantity, level)
        e2, a2 = to_noise_and_action(q, quantity, x, level)
        torch.testing.assert_close(e2, e, rtol=0, atol=1e-9)
        torch.testing.assert_close(a2, a, rtol=0, atol=1e-9)


def test_a_velocity_of_the_other_sign_is_read_as_such():
    level = LEVELS["flow_mid"]
    e, a, x = _pair(level)
    e2, a2 = to_noise_and_action(-(e - a), "velocity", x, level, velocity_sign=-1.0)
    torch.testing.assert_close((e2, a2), (e, a), rtol=0, atol=1e-12)


@pytest.mark.parametrize("level_name", LEVELS)
def test_convex_weights_give_one_composite_whatever_quantity_is_combined(level_name):
    """Weights that sum to 1 commute with any affine map of the pair: combining epsilons, actions, v or
    velocities and reading the pair back gives the same pair."""
    level = LEVELS[level_name]
    e1, a1, x = _pair(level)
    a2 = torch.randn(5, 4, 2, generator=RNG, dtype=torch.float64)
    e2 = (x - level.alpha * a2) / level.sigma  # a second parent's pair at the same state
    w = 0.3
    expected = (w * e1 + (1 - w) * e2, w * a1 + (1 - w) * a2)
    for quantity in _quantities(level_name):
        mixed = w * from_noise_and_action(e1, a1, quantity, level) + (1 - w) * from_noise_and_action(e2, a2, quantity,
                                                                                                       level)
        got = to_noise_and_action(mixed, quantity, x, level)
        np.testing.assert_allclose(got[0].numpy(), expected[0].numpy(), atol=1e-9)
        np.testing.assert_allclose(got[1].numpy(), expected[1].numpy(), atol=1e-9)


def test_an_unknown_quantity_is_named():
    level = LEVELS["vp_clean"]
    with pytest.raises(ValueError, match="unknown prediction_type 'score'"):
        to_noise_and_action(torch.zeros(1), "score", torch.zeros(1), level)
    with pytest.raises(ValueError, match="unknown working quantity 'score'"):
        from_noise_and_action(torch.zeros(1), torch.zeros(1), "score", level)
