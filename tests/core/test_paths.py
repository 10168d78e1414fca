"""Noise-level alignment: equal SNR between VP schedules, s = sigma/(alpha+sigma) to the flow path."""

import math

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler

from gpc.core.paths import FlowPath, Level, VPSchedule, align
from gpc.core.predictions import WORKING_QUANTITIES, from_noise_and_action, to_noise_and_action

SCHEDULES = [VPSchedule(100, "squaredcos_cap_v2"), VPSchedule(1000, "linear"),
             VPSchedule(1000, "scaled_linear", 0.00085, 0.012), VPSchedule(50, "sigmoid")]


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_vp_levels_at_integer_timesteps_equal_diffusers_alphas_cumprod(schedule):
    acp = DDPMScheduler(**schedule.scheduler_config()).alphas_cumprod.double().numpy()
    for t in [0, 1, schedule.num_train_timesteps // 2, schedule.num_train_timesteps - 1]:
        level = schedule.level(t)
        assert level.alpha ** 2 == pytest.approx(acp[t], rel=1e-12)
        assert level.alpha ** 2 + level.sigma ** 2 == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_vp_timestep_at_inverts_level_including_fractional_timesteps(schedule):
    for t in np.linspace(0.3, schedule.num_train_timesteps - 1.3, 17):
        assert schedule.timestep_at(schedule.level(t).s) == pytest.approx(t, abs=1e-6)


def test_alignment_between_vp_schedules_preserves_snr_and_state():
    source, target = VPSchedule(1000, "linear"), VPSchedule(100, "squaredcos_cap_v2")
    for t in [100, 400, 700]:
        level = source.level(t)
        timestep, scale, target_level = align(level, source, float(t), target)
        assert target_level.alpha / target_level.sigma == pytest.approx(level.alpha / level.sigma, rel=1e-9)
        # both VP with unit norm at equal SNR: the state vector is the same
        assert scale == pytest.approx(1.0, abs=1e-12)
        assert timestep != int(timestep)  # a fractional timestep is needed here


def test_alignment_vp_to_flow_uses_s_equal_sigma_over_alpha_plus_sigma():
    source = VPSchedule(100, "squaredcos_cap_v2")
    level = source.level(40)
    for path, expected_time in [(FlowPath(1), level.s), (FlowPath(0, "action_minus_noise"), 1 - level.s)]:
        timestep, scale, target_level = align(level, source, 40.0, path)
        assert timestep == pytest.approx(expected_time, abs=1e-12)
        assert scale == pytest.approx(1 / (level.alpha + level.sigma), rel=1e-12)
        assert target_level.s == pytest.approx(level.s, abs=1e-12)


def test_alignment_to_the_same_path_passes_the_timestep_through_untouched():
    schedule = VPSchedule()
    level = schedule.level(37)
    assert align(level, schedule, 37.0, VPSchedule()) == (37.0, 1.0, level)


def test_flow_state_and_vp_state_are_the_same_up_to_scale():
    a, e = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    level = VPSchedule(1000, "linear").level(321)
    x_vp = level.alpha * a + level.sigma * e
    s = level.s
    torch.testing.assert_close(x_vp * level.to_flow_scale, (1 - s) * a + s * e)


@pytest.mark.parametrize("level", [Level(0.8, 0.6), Level(0.3, 0.7), Level(math.sqrt(0.999), math.sqrt(0.001))])
@pytest.mark.parametrize("quantity", WORKING_QUANTITIES)
def test_every_parameterization_round_trips_through_the_noise_action_pair(level, quantity):
    if quantity == "velocity":
        level = Level(1 - level.s, level.s)  # velocities live on the linear path
    elif quantity == "v_prediction":
        norm = math.hypot(level.alpha, level.sigma)
        level = Level(level.alpha / norm, level.sigma / norm)
    a, e = torch.randn(4, 6, dtype=torch.float64), torch.randn(4, 6, dtype=torch.float64)
    x = level.alpha * a + level.sigma * e
    output = from_noise_and_action(e, a, quantity, level)
    e2, a2 = to_noise_and_action(output, quantity, x, level)
    torch.testing.assert_close(e2, e)
    torch.testing.assert_close(a2, a)
