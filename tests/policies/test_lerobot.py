"""LeRobot DiffusionPolicy folders made by LeRobot's own code (scripts/fixtures/lerobot.sh) load into gpc's own
networks and reproduce LeRobot's sampled chunks and executed actions from the same noise; LeRobot itself is not
installed here."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from gpc.core.composer import Composer, make_generators
from gpc.policies.lerobot.modeling import load_lerobot

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "lerobot"
FOLDERS = {
    "pusht_keypoints": ROOT / "checkpoints" / "lerobot" / "pusht_keypoints",  # state + env state, ENV normalized
    "pusht_keypoints_rawenv": FIXTURES / "pusht_keypoints_rawenv",  # LeRobot's default map: env state raw
    "pusht_image": FIXTURES / "pusht_image",  # ResNet-18 + spatial softmax, DDIM 10
    "pusht_keypoints_legacy": FIXTURES / "pusht_keypoints_legacy",  # statistics as buffers (LeRobot 0.3)
}


def golden(name: str):
    return (load_file(str(FIXTURES / name / "golden.safetensors")),
            json.loads((FIXTURES / name / "golden.json").read_text()))


def case_obs(tensors, policy, i: int, frames=slice(None)) -> dict:
    """Case i's raw observation history (1, 2, ...), images as the env gives them (uint8 HWC)."""
    obs = {}
    for inp in policy.spec.inputs:
        key = f"case{i}.raw.{inp.key}"
        value = tensors.get(f"{key}.uint8", tensors[key])
        obs[inp.key] = value[frames][None]
    return obs


@pytest.mark.parametrize("name", FOLDERS)
def test_weight_one_under_the_native_sampler_reproduces_lerobots_chunks(name):
    """The chunk LeRobot's conditional_sample drew after torch.manual_seed(seed), to 1e-5 normalized; the
    unnormalized chunk and the executed slice to 1e-5 of the action range."""
    policy = load_lerobot(FOLDERS[name])
    tensors, meta = golden(name)
    composer = Composer([policy], policy.spec.sampler)
    scale = torch.as_tensor(composer.normalizer.scale)
    assert policy.spec.sampler.num_inference_steps == meta["num_inference_steps"]
    for i, case in enumerate(meta["cases"]):
        encodings = composer.encode(case_obs(tensors, policy, i))
        torch.testing.assert_close(encodings[0], tensors[f"case{i}.global_cond"], rtol=0, atol=1e-5)
        chunk = composer.sample(encodings, [[1.0]], make_generators([case["seed"]], 1))
        torch.testing.assert_close(chunk, tensors[f"case{i}.chunk.normalized"], rtol=0, atol=1e-5)
        assert torch.all((composer.normalizer.unnormalize(chunk) - tensors[f"case{i}.chunk.action"]).abs()
                         <= 1e-5 * scale)
        assert torch.all((composer.executable(chunk) - tensors[f"case{i}.chunk.executed"]).abs() <= 1e-5 * scale)


@pytest.mark.parametrize("name", ["pusht_keypoints", "pusht_image"])
def test_executed_actions_match_lerobots_select_action(name):
    """lerobot-eval's path: reset, then select_action on one frame (its queues start as copies of that frame)."""
    policy = load_lerobot(FOLDERS[name])
    tensors, meta = golden(name)
    composer = Composer([policy], policy.spec.sampler)
    scale = torch.as_tensor(composer.normalizer.scale)
    for i, case in enumerate(meta["cases"]):
        obs = {k: torch.cat([v[:, -1:]] * policy.spec.n_obs_steps, dim=1)
               for k, v in case_obs(tensors, policy, i).items()}
        chunk = composer.sample(composer.encode(obs), [[1.0]], make_generators([case["seed"]], 1))
        assert torch.all((composer.executable(chunk)[0] - tensors[f"case{i}.select_action"]).abs() <= 1e-5 * scale)


def test_the_parent_declares_lerobots_inputs_and_sampler():
    spec = load_lerobot(FOLDERS["pusht_image"]).spec
    assert [(i.key, i.kind, i.shape, i.frames) for i in spec.inputs] == [
        ("observation.image", "rgb", (3, 96, 96), 2), ("observation.state", "low_dim", (2,), 2)]
    assert (spec.sampler.name, spec.sampler.num_inference_steps, spec.sampler.clip_sample) == ("ddim", 10, True)
    assert spec.action_start == 1 and spec.n_action_steps == 8
    raw = load_lerobot(FOLDERS["pusht_keypoints_rawenv"])
    assert raw.normalized == {"observation.state"}  # LeRobot's default map has no ENV entry: fed raw
    assert load_lerobot(FOLDERS["pusht_keypoints"]).normalized == {"observation.state",
                                                                   "observation.environment_state"}


def _copy(name: str, tmp_path: Path) -> Path:
    folder = tmp_path / name
    shutil.copytree(FOLDERS[name], folder)
    return folder


def test_a_folder_without_its_processor_statistics_is_refused(tmp_path):
    folder = _copy("pusht_keypoints_rawenv", tmp_path)
    (folder / "policy_preprocessor_step_3_normalizer_processor.safetensors").unlink()
    with pytest.raises(ValueError, match=r"policy_preprocessor.json: steps.normalizer_processor.state_file: the "
                                         r"normalization statistics .* are missing"):
        load_lerobot(folder)


def test_a_policy_type_gpc_does_not_load_is_named(tmp_path):
    folder = _copy("pusht_keypoints_rawenv", tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["type"] = "act"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"config.json: type: LeRobot policy type 'act' is not supported; gpc loads "
                                         r"diffusion"):
        load_lerobot(folder)


def test_non_finite_statistics_are_refused(tmp_path):
    from safetensors.numpy import load_file as load_np
    from safetensors.numpy import save_file

    folder = _copy("pusht_keypoints_rawenv", tmp_path)
    stats_file = folder / "policy_postprocessor_step_0_unnormalizer_processor.safetensors"
    stats = load_np(str(stats_file))
    stats["action.max"] = np.full_like(stats["action.max"], np.nan)
    save_file(stats, str(stats_file))
    with pytest.raises(ValueError, match="action: MIN_MAX statistics are not finite"):
        load_lerobot(folder)
