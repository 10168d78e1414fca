"""Every fast path gives the plain path's actions, within a stated tolerance."""

import copy
import shutil

import numpy as np
import pytest
import torch

from gpc.app.config import ConfigError, read_composition
from gpc.core.acceleration import FastPath, fusion_groups
from gpc.core.composer import Composer, make_generators
from gpc.core.normalizer import Normalizer
from gpc.core.samplers import SamplerConfig
from gpc.policies.configuration import load_policy_config
from gpc.policies.modeling import Policy

TINY = {"obs": [{"key": "state", "type": "low_dim", "shape": [4]}], "action_dim": 2, "horizon": 8,
        "n_obs_steps": 2, "n_action_steps": 4,
        "denoiser": {"type": "unet", "down_dims": [16, 32], "n_groups": 4, "time_embed_dim": 16}}
DIFFUSION = {"kind": "diffusion", "prediction_type": "epsilon", "num_train_timesteps": 100,
             "beta_schedule": "squaredcos_cap_v2", "num_inference_steps": 10}
FLOW = {"kind": "flow", "prediction_type": "velocity", "noise_at": 0, "velocity": "action_minus_noise", "num_inference_steps": 10}


def policy(name, objective, seed):
    config = load_policy_config({**TINY, "name": name, "objective": objective})
    torch.manual_seed(seed)
    limits = np.array([[-1.0] * 4, [1.0] * 4])
    return Policy(config, {"action": Normalizer.fit(limits[:, :2]), "state": Normalizer.fit(limits)}).eval()


def parents():
    # two diffusion U-Nets of one architecture (fused together) and a flow U-Net (its own group)
    return [policy("a", DIFFUSION, 0), policy("b", DIFFUSION, 1), policy("c", FLOW, 2)]


def actions(fast, weights, rows=3, n_candidates=1):
    ps = parents()
    composer = Composer(ps, SamplerConfig("ddim", 10, ps[0].spec.path), fast=fast)
    obs = {"state": torch.linspace(-1, 1, rows * 2 * 4).reshape(rows, 2, 4)}
    return composer.sample(composer.encode(obs), weights, make_generators(range(rows), n_candidates))


def test_fusion_groups_parents_by_architecture():
    ps = parents()
    assert fusion_groups(ps) == [[0, 1], [2]]
    assert fusion_groups([ps[0], copy.deepcopy(ps[2]), ps[1]]) == [[0, 2], [1]]


@pytest.mark.parametrize("weights", [[0.2, 0.5, 0.3], [[0.6, 0.4, 0.0], [0.0, 0.3, 0.7]]], ids=["one", "two"])
def test_fused_parents_give_the_plain_actions(weights):
    n = 1 if isinstance(weights[0], float) else len(weights)
    plain = actions(FastPath(), weights, n_candidates=n)
    fused = actions(FastPath(fuse=True), weights, n_candidates=n)
    # vmapped convolutions sum in a different order: equal to float32 rounding, not bit for bit
    torch.testing.assert_close(fused, plain, rtol=0, atol=1e-5)


def test_bfloat16_parents_stay_close_to_float32():
    plain = actions(FastPath(), [0.2, 0.5, 0.3])
    low = actions(FastPath(precision="bfloat16"), [0.2, 0.5, 0.3])
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, plain, rtol=0, atol=0.1)  # bfloat16 keeps 8 bits of mantissa


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("cc") is None,
                    reason="torch.compile's CPU backend needs a C++ compiler")
def test_compiled_parents_give_the_plain_actions():
    plain = actions(FastPath(), [0.2, 0.5, 0.3])
    compiled = actions(FastPath(compile=True), [0.2, 0.5, 0.3])
    torch.testing.assert_close(compiled, plain, rtol=0, atol=1e-5)


def test_fast_path_config_errors_name_the_field():
    def fast(value):
        return read_composition({"parents": [{"path": "p"}], "weights": [1.0], "fast": value}, "compose").fast

    assert read_composition({"parents": [{"path": "p"}], "weights": [1.0]}, "compose").fast == FastPath()
    with pytest.raises(ConfigError, match="compose: fast.precision: must be one of"):
        fast({"precision": "int8"})
    with pytest.raises(ConfigError, match="compose: fast.fused: unknown key; did you mean 'fuse'"):
        fast({"fused": True})
