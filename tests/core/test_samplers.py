"""The working sampler warns where an unclipped epsilon step would amplify a parent's error by > 300x."""

import warnings

import pytest
import torch

from gpc.core.paths import VPSchedule
from gpc.core.samplers import SamplerConfig, WorkingSampler

COSINE_100 = VPSchedule(100, "squaredcos_cap_v2")  # Diffusion Policy's schedule: alpha_bar(99) = 2.4e-7


@pytest.mark.parametrize("config", [
    SamplerConfig("ddim", 100, COSINE_100, "epsilon"),
    SamplerConfig("ddim", 10, COSINE_100, "epsilon", timestep_spacing="trailing"),
    SamplerConfig("ddpm", 100, COSINE_100, "epsilon"),
], ids=["ddim100", "ddim10-trailing", "ddpm100"])
def test_unclipped_epsilon_sampler_starting_at_the_cosine_endpoint_warns(config):
    with pytest.warns(UserWarning, match="alpha_bar = 2.4e-07.*clip_sample"):
        WorkingSampler(config)


@pytest.mark.parametrize("config", [
    SamplerConfig("ddim", 10, COSINE_100, "epsilon"),  # 'leading' starts at t = 90, alpha_bar 0.02
    SamplerConfig("ddpm", 100, COSINE_100, "epsilon", clip_sample=True),
    SamplerConfig("ddim", 100, COSINE_100, "v_prediction"),  # x0 = alpha x - sigma v: nothing amplified
    SamplerConfig("ddim", 100, VPSchedule(1000, "linear"), "epsilon", timestep_spacing="trailing"),
    SamplerConfig("flow_euler", 10),
], ids=["ddim10-leading", "ddpm100-clipped", "v-prediction", "linear1000", "flow"])
def test_safe_samplers_do_not_warn(config):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        WorkingSampler(config)


@pytest.mark.parametrize("kwargs, message", [
    (dict(name="ddpm", num_inference_steps=200), "num_inference_steps: 200 exceeds the schedule's num_train_timesteps"),
    (dict(name="ddim", num_inference_steps=200), "num_inference_steps: 200 exceeds the schedule's num_train_timesteps"),
    (dict(name="ddpm", timestep_spacing="middle"), "timestep_spacing: must be one of"),
    (dict(name="ddim", timestep_spacing="middle"), "timestep_spacing: must be one of"),
    (dict(name="ddim", eta=-0.5), "eta: must be >= 0"),
    (dict(name="ddim", num_inference_steps="ten"), "num_inference_steps: must be an integer >= 1, got 'ten'"),
])
def test_settings_diffusers_would_refuse_mid_rollout_are_refused_at_config_time(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SamplerConfig(schedule=COSINE_100, **kwargs)


@pytest.mark.parametrize("config", [
    SamplerConfig("ddim", 10, COSINE_100, "epsilon"),
    SamplerConfig("ddim", 10, COSINE_100, "epsilon", timestep_spacing="linspace"),  # 99 -> 89, next query at 88
    SamplerConfig("ddim", 3, COSINE_100, "epsilon", timestep_spacing="trailing"),  # 66 -> 33, next query at 32
    SamplerConfig("flow_euler", 10),
], ids=["ddim-leading", "ddim-linspace", "ddim-trailing", "flow"])
def test_every_step_lands_where_landing_level_says(config):
    """A state alpha a + sigma e stepped with the exact prediction of e lands on alpha' a + sigma' e (to
    diffusers' float32 near alpha_bar = 2.4e-7; the next step's level instead is off by ~1e-2)."""
    sampler = WorkingSampler(config)
    action, noise = torch.randn(4, 2, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64)
    for n, step in enumerate(sampler.steps()):
        x = step.level.alpha * action + step.level.sigma * noise
        exact = noise if config.name == "ddim" else noise - action  # flow velocity on the canonical path
        landed = sampler.landing_level(n)
        torch.testing.assert_close(sampler.step(exact, step, x, None), landed.alpha * action + landed.sigma * noise,
                                   atol=1e-4, rtol=1e-4)
