"""A Diffusion Policy `.ckpt` made by Diffusion Policy's own code (scripts/fixtures/diffusion_policy.sh) loads
without running its pickle and reproduces DP's own predict_action from the same noise."""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gpc.core.composer import Composer, make_generators
from gpc.policies.diffusion_policy.checkpoint import load_diffusion_policy, read_checkpoint

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "diffusion_policy" / "pusht_lowdim"
CKPT = FIXTURE / "latest.ckpt"


@pytest.fixture(scope="module")
def golden():
    return load_file(str(FIXTURE / "golden.safetensors"))


@pytest.fixture(scope="module")
def policy():
    return load_diffusion_policy(CKPT)


@pytest.mark.parametrize("run", ["ddpm", "ddim10"])
def test_weight_one_under_the_native_sampler_reproduces_diffusion_policys_chunks(policy, golden, run):
    """DDPM 100 (the checkpoint's own sampler) and DDIM 10, six held-out observation histories, each from
    `torch.manual_seed(seed)` as DP draws its noise: the chunk to 1e-5 in the normalized action space, the
    executed actions to 1e-5 of the action range."""
    sampler = policy.spec.sampler if run == "ddpm" else replace(policy.spec.sampler, name="ddim",
                                                                 num_inference_steps=10, step_coefficients="cumprod")
    composer = Composer([policy], sampler)
    normalizer, scale = composer.normalizer, torch.as_tensor(composer.normalizer.scale)
    for i in range(golden["obs"].shape[0]):
        chunk = composer.sample(composer.encode({"obs": golden["obs"][i]}), [[1.0]],
                                make_generators([int(golden["seed"][i])], 1))
        expected = golden[f"{run}.action_pred"][i]
        torch.testing.assert_close(chunk, normalizer.normalize(expected), rtol=0, atol=1e-5)
        assert torch.all((normalizer.unnormalize(chunk) - expected).abs() <= 1e-5 * scale)
        assert torch.all((composer.executable(chunk) - golden[f"{run}.action"][i]).abs() <= 1e-5 * scale)


def test_the_network_matches_diffusion_policys_to_float_rounding(policy, golden):
    """Every U-Net output to 1e-5 (outputs are of order 1): bit equality held on the CPU that recorded the golden,
    not on every CPU (kernels sum in other orders; 1.4e-6 measured on another)."""
    for i in range(golden["obs"].shape[0]):
        torch.testing.assert_close(policy.encode({"obs": golden["obs"][i]}), golden["global_cond"][i], rtol=0,
                                   atol=1e-6)
        for j, t in enumerate(golden["unet.timesteps"]):
            out = policy.predict(golden["noise"][i], torch.tensor([float(t)]), golden["global_cond"][i])
            torch.testing.assert_close(out, golden["unet.eps"][i, j], rtol=0, atol=1e-5)


def test_the_checkpoint_is_read_without_dill_and_uses_the_ema_weights(monkeypatch):
    monkeypatch.setitem(sys.modules, "dill", None)  # `import dill` fails
    payload = read_checkpoint(CKPT)
    assert payload["cfg"]["training"]["use_ema"] is True
    policy = load_diffusion_policy(CKPT)
    ema = payload["state_dicts"]["ema_model"]["model.final_conv.1.weight"]
    raw = payload["state_dicts"]["model"]["model.final_conv.1.weight"]
    assert not torch.equal(ema, raw)
    assert torch.equal(policy.model.final_conv[1].weight, ema)
    assert policy.spec.sampler.name == "ddpm" and policy.spec.sampler.num_inference_steps == 100
    assert policy.spec.sampler.clip_sample and policy.spec.action_start == 1


class _Remover:
    """Pickles as a call that would delete a file: the call must never happen."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.remove, (str(self.path),))


def test_a_pickle_naming_code_is_refused_without_trust_and_nothing_runs(tmp_path):
    sentinel = tmp_path / "keep"
    sentinel.write_text("")
    evil = tmp_path / "evil.ckpt"
    torch.save({"cfg": None, "state_dicts": {}, "x": _Remover(sentinel)}, evil)
    with pytest.raises(ValueError, match=r"evil.ckpt: this checkpoint is a pickle, and it names posix.remove, .*"
                                         r"set `trust: true`"):
        load_diffusion_policy(evil)
    assert sentinel.exists()


def test_trust_unpickles_globals_beyond_the_allowlist(tmp_path):
    payload = torch.load(CKPT, weights_only=False, pickle_module=_stand_in_pickle())
    payload["fraction"] = __import__("fractions").Fraction(1, 3)  # a global outside the allowlist
    path = tmp_path / "latest.ckpt"
    torch.save(payload, path)
    with pytest.raises(ValueError, match="names fractions.Fraction"):
        load_diffusion_policy(path)
    policy = load_diffusion_policy(path, trust=True)
    assert policy.spec.horizon == 16


def _stand_in_pickle():
    from gpc.policies.diffusion_policy.checkpoint import _TRUSTING

    return _TRUSTING


def test_unsupported_diffusion_policy_checkpoints_are_refused_by_name(tmp_path):
    payload = read_checkpoint(CKPT)
    payload["cfg"].policy.obs_as_global_cond = False
    path = tmp_path / "inpainting.ckpt"
    torch.save(payload, path)
    with pytest.raises(ValueError, match="obs_as_global_cond: only global conditioning .* inpainting"):
        load_diffusion_policy(path)
    payload["cfg"].policy._target_ = "diffusion_policy.policy.diffusion_transformer_lowdim_policy.X"
    torch.save(payload, path)
    with pytest.raises(ValueError, match="policy._target_: .*transformer_lowdim_policy.X is not supported"):
        load_diffusion_policy(path)
