"""ALOHA tasks in RoboTwin's conventions: env, point cloud, joint/gripper convention, success wiring,
scripted experts and the demo writer (CPU rendering; small images and few points to stay fast)."""

import json
import os

import numpy as np
import pytest

if not os.environ.get("DISPLAY"):
    os.environ.setdefault("MUJOCO_GL", "egl")
pytest.importorskip("gym_aloha")

import zarr  # noqa: E402
from dm_control.rl import control  # noqa: E402

from gpc.sims.aloha.env import WORKSPACE, farthest_point_sampling, make_env, sample_point_cloud  # noqa: E402
from gpc.sims.aloha.expert import ScriptedExpert  # noqa: E402
from gpc.sims.aloha.make_demos import make_demos, round_mantissa  # noqa: E402

TASKS = ("transfer_cube", "insertion")
SMALL = {"image_size": (60, 80), "n_points": 256}


def hold(obs):
    """The current joints as a 14-dim target (grippers as observed)."""
    return obs["agent_pos"].copy()


@pytest.mark.parametrize("task", TASKS)
def test_reset_is_seeded_and_observations_match_the_space(task):
    env = make_env(task, **SMALL)
    first, info = env.reset(seed=3)
    again, _ = env.reset(seed=3)
    other, _ = env.reset(seed=4)
    assert env.observation_space.contains(first)
    assert first["head_camera"].shape == (60, 80, 3) and first["head_camera"].dtype == np.uint8
    assert first["point_cloud"].shape == (256, 6) and first["point_cloud"].dtype == np.float32
    assert first["agent_pos"].shape == (14,) and first["agent_pos"].dtype == np.float32
    for key in first:
        np.testing.assert_array_equal(first[key], again[key])
    assert not np.array_equal(first["point_cloud"], other["point_cloud"])  # objects moved
    assert info == {"is_success": False, "progress": 0.0}
    assert env.action_space.shape == (14,)


@pytest.mark.parametrize("task", TASKS)
def test_step_renders_image_and_world_frame_point_cloud(task):
    env = make_env(task, **SMALL)
    obs, _ = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(hold(obs))
    assert not terminated and not truncated and set(info) == {"is_success", "progress"}
    image = obs["head_camera"]
    assert image.std() > 10 and len(np.unique(image.reshape(-1, 3), axis=0)) > 10
    cloud = obs["point_cloud"]
    assert np.isfinite(cloud).all()
    real = np.abs(cloud).sum(axis=1) > 0
    assert real.sum() > 200
    xyz, rgb = cloud[real, :3], cloud[real, 3:]
    assert np.all((xyz >= WORKSPACE[:, 0]) & (xyz <= WORKSPACE[:, 1]))
    assert rgb.min() >= 0 and rgb.max() <= 1
    # Red points (the cube or the peg) sit on that object's body in the world frame: checks the
    # depth back-projection, the camera pose and the colour pairing at once.
    red = (rgb[:, 0] > 0.6) & (rgb[:, 1] < 0.25) & (rgb[:, 2] < 0.25)
    assert red.sum() >= 2
    # (Insertion's socket holds a red pin too.)
    bodies = {"box": 0.02} if task == "transfer_cube" else {"peg": 0.06, "socket": 0.06}
    xpos = env.unwrapped.physics.named.data.xpos
    near = [np.linalg.norm(xyz[red] - xpos[b], axis=1) <= r + 0.015 for b, r in bodies.items()]
    assert np.all(np.any(near, axis=0))
    assert near[0].any()


def test_agent_pos_follows_a_held_joint_target_in_robotwin_order():
    env = make_env("transfer_cube", obs_keys=("agent_pos",))
    obs, _ = env.reset(seed=0)
    target = hold(obs)
    target[0] += 0.3  # left waist
    target[9] -= 0.2  # right elbow
    target[6], target[13] = 1.0, 0.0  # left gripper open, right closed
    for _ in range(60):
        obs, *_ = env.step(target)
    pos = obs["agent_pos"]
    np.testing.assert_allclose(pos[[0, 1, 2, 3, 4, 7, 8, 9, 10, 11]], target[[0, 1, 2, 3, 4, 7, 8, 9, 10, 11]],
                               atol=0.05)
    qpos = env.unwrapped.physics.named.data.qpos
    assert pos[0] == pytest.approx(qpos["vx300s_left/waist"], abs=1e-6)
    assert pos[9] == pytest.approx(qpos["vx300s_right/elbow"], abs=1e-6)
    assert pos[6] > 0.95 and pos[13] < 0.05  # 1 = open
    assert qpos["vx300s_left/left_finger"] > 0.055 and qpos["vx300s_right/left_finger"] < 0.023


@pytest.mark.parametrize("task", TASKS)
def test_expert_succeeds_and_success_is_reported(task):
    env = make_env(task, obs_keys=("agent_pos",), max_episode_steps=400)
    expert = ScriptedExpert(task)
    env.reset(seed=0)
    expert.reset(env)
    progress = []
    for _ in range(400):
        obs, reward, terminated, truncated, info = env.step(expert(env))
        progress.append(info["progress"])
        assert info["is_success"] == (reward == 4) == terminated
        assert info["progress"] == reward / 4
        if terminated or truncated:
            break
    assert info["is_success"] and terminated and len(progress) < 400
    assert progress[0] == 0 and max(progress[:-1]) < 1


def test_doing_nothing_is_not_success():
    env = make_env("transfer_cube", obs_keys=("agent_pos",), max_episode_steps=20)
    obs, _ = env.reset(seed=0)
    target = hold(obs)
    for _ in range(20):
        obs, reward, terminated, truncated, info = env.step(target)
    assert truncated and not terminated and not info["is_success"] and info["progress"] == 0


def test_a_physics_blow_up_ends_the_episode_as_a_failure_not_a_crash(monkeypatch):
    env = make_env("transfer_cube", obs_keys=("agent_pos",), max_episode_steps=20)
    obs, _ = env.reset(seed=0)

    def unstable(action):
        raise control.PhysicsError("Physics state is invalid. Warning(s) raised: mjWARN_BADQACC")

    monkeypatch.setattr(env.unwrapped._env, "step", unstable)
    after, reward, terminated, truncated, info = env.step(hold(obs))
    assert truncated and not terminated and reward == 0 and info["physics_error"] and not info["is_success"]
    np.testing.assert_array_equal(after["agent_pos"], obs["agent_pos"])


def test_point_cloud_sampling_crops_pads_and_is_deterministic():
    rng = np.random.default_rng(0)
    xyz = np.concatenate([rng.uniform(-0.1, 0.1, (500, 3)) + [0, 0.5, 0.3], [[0, 0.5, -0.5], [5, 5, 5]]])
    rgb = rng.integers(0, 256, (len(xyz), 3)).astype(np.uint8)
    cloud = sample_point_cloud(xyz, rgb, 64)
    assert cloud.shape == (64, 6) and np.array_equal(cloud, sample_point_cloud(xyz, rgb, 64))
    assert np.all(cloud[:, 2] > 0) and cloud[:, 3:].max() <= 1  # out-of-box points dropped
    padded = sample_point_cloud(xyz[:10], rgb[:10], 64)
    assert np.all(padded[10:] == 0) and np.all(np.abs(padded[:10]).sum(axis=1) > 0)
    # Farthest-point sampling takes both far-apart clusters' points before a second one from a cluster.
    two = np.array([[0, 0, 0], [0.001, 0, 0], [1, 0, 0], [1.001, 0, 0]], dtype=np.float32)
    assert sorted(farthest_point_sampling(two, 2)) in ([0, 2], [0, 3])


def test_round_mantissa_keeps_submillimetre_precision():
    x = np.random.default_rng(0).uniform(-1.2, 1.2, 10_000).astype(np.float32)
    rounded = round_mantissa(x, 10)  # make_demos' default
    assert rounded.dtype == np.float32 and np.abs(rounded - x).max() <= 2.0**-11
    assert np.all(rounded.view(np.uint32) & np.uint32(0x1FFF) == 0)


def test_make_demos_writes_the_replay_buffer_layout(tmp_path):
    out = tmp_path / "tc.zarr"
    summary = make_demos("transfer_cube", out, attempts=2, seed=0, max_demos=1, image_size=(24, 32),
                         n_points=64)
    assert summary["successes"] == 2 and summary["demos"] == 1
    root = zarr.open_group(out, mode="r")
    n = int(root["meta/episode_ends"][-1])
    assert root["data/head_camera"].shape == (n, 24, 32, 3) and root["data/head_camera"].dtype == np.uint8
    assert root["data/point_cloud"].shape == (n, 64, 6) and root["data/point_cloud"].dtype == np.float32
    assert root["data/agent_pos"].shape == root["data/action"].shape == (n, 14)
    assert list(root["meta/episode_seeds"][:]) == [0]
    # Replaying the recorded actions reproduces the episode and its success.
    env = make_env("transfer_cube", obs_keys=("agent_pos",), max_episode_steps=400)
    obs, _ = env.reset(seed=0)
    actions = root["data/action"][:]
    for t, action in enumerate(actions):
        np.testing.assert_allclose(obs["agent_pos"], root["data/agent_pos"][t], atol=1e-6)
        obs, reward, terminated, truncated, info = env.step(action)
    assert terminated and info["is_success"]
    written = json.loads(out.with_suffix(".json").read_text())
    assert written["attempts"] == 2 and written["success_rate_ci95"][1] == 1.0
    assert not (tmp_path / "tc.zarr.tmp").exists()
