"""RoboTwin 2.0 adapter: a composed RGB + point-cloud pair answers RoboTwin-shaped observations through
RoboTwin's deploy_policy interface, the installer writes a folder RoboTwin can import, and collected
episodes import to zarr with the arrays RoboTwin's own DP / DP3 converters would produce.

The observation dict is built as RoboTwin 2.0's `TASK_ENV.get_obs()` documents it (envs/_base_task.py):
head camera rgb (240, 320, 3) uint8, `pointcloud` (1024, 6) float32 xyz + rgb, `joint_action.vector` (14,)
float64; the episode files as `envs/utils/pkl2hdf5.py` writes them (rgb as OpenCV JPEG bytes).
"""

from __future__ import annotations

import importlib
import sys

import numpy as np
import pytest
import torch
import yaml

from gpc.core.normalizer import Normalizer
from gpc.policies.checkpoint import save_policy
from gpc.policies.configuration import load_policy_config
from gpc.policies.modeling import Policy
from gpc.sims.robotwin import policy as robotwin
from gpc.sims.robotwin.import_data import import_episodes
from gpc.sims.robotwin.install import install

cv2 = pytest.importorskip("cv2")
h5py = pytest.importorskip("h5py")

JOINTS = 14


def save_parent(path, name, obs, kind):
    config = load_policy_config({
        "name": name, "obs": obs, "action_dim": JOINTS, "horizon": 8, "n_obs_steps": 2, "n_action_steps": 6,
        "encoders": {"rgb": {"widths": [8, 8], "num_keypoints": 4, "feature_dim": 8},
                     "pointcloud": {"hidden_dims": [16, 32], "feature_dim": 16}},
        "denoiser": {"type": "unet", "down_dims": [16, 32], "n_groups": 4, "time_embed_dim": 16},
        "objective": {"kind": kind, "prediction_type": "epsilon" if kind == "diffusion" else "velocity",
                      "num_inference_steps": 4},
        "normalization": {"action": "limits", "agent_pos": "limits"},
    })
    torch.manual_seed(len(name))
    limits = np.stack([-np.ones(JOINTS), np.ones(JOINTS)]).astype(np.float32)
    policy = Policy(config, {"action": Normalizer.fit(limits), "agent_pos": Normalizer.fit(limits)})
    return save_policy(policy, path / name)


@pytest.fixture(scope="module")
def composition(tmp_path_factory):
    """An RGB diffusion parent and a point-cloud flow parent (untrained), composed 0.5 / 0.5."""
    root = tmp_path_factory.mktemp("robotwin")
    state = {"key": "agent_pos", "type": "low_dim", "shape": [JOINTS]}
    rgb = save_parent(root, "rgb_dp", [{"key": "head_camera", "type": "rgb", "shape": [3, 48, 64]}, state],
                      "diffusion")
    cloud = save_parent(root, "cloud_dp3", [{"key": "cloud", "type": "pointcloud", "shape": [1024, 6]}, state],
                        "flow")
    path = root / "compose.yaml"
    path.write_text(yaml.safe_dump({"parents": [{"path": str(rgb)}, {"path": str(cloud)}], "weights": [0.5, 0.5],
                                    "device": "cpu"}))
    return path


def robotwin_observation(rng):
    return {
        "observation": {"head_camera": {"rgb": rng.integers(0, 256, (240, 320, 3), dtype=np.uint8),
                                        "intrinsic_cv": np.eye(3), "extrinsic_cv": np.zeros((3, 4)),
                                        "cam2world_gl": np.eye(4)}},
        "pointcloud": rng.uniform(-0.5, 0.5, (1024, 6)).astype(np.float32),
        "joint_action": {"vector": rng.uniform(-0.5, 0.5, JOINTS), "left_arm": [0.0] * 6, "left_gripper": 1.0,
                         "right_arm": [0.0] * 6, "right_gripper": 1.0},
        "endpose": {},
    }


class FakeTaskEnv:
    """The parts of RoboTwin's TASK_ENV a policy touches: get_obs, take_action, the step counter and limit."""

    def __init__(self, seed=0, step_lim=20):
        self.rng = np.random.default_rng(seed)
        self.take_action_cnt, self.step_lim, self.eval_success = 0, step_lim, False
        self.actions = []

    def get_obs(self):
        return robotwin_observation(self.rng)

    def get_instruction(self):
        return "Pick up the hammer and beat the block."

    def take_action(self, action, action_type="qpos"):
        assert action_type == "qpos"
        self.actions.append(np.array(action))
        self.take_action_cnt += 1


def run_episode(model, seed):
    """RoboTwin's loop: reset_model, then eval until the step limit."""
    env = FakeTaskEnv(seed)
    robotwin.reset_model(model)
    while env.take_action_cnt < env.step_lim:
        robotwin.eval(env, model, env.get_obs())
    return np.stack(env.actions)


def test_composed_policy_answers_a_robotwin_observation_with_a_finite_joint_chunk(composition):
    model = robotwin.get_model({"compose": str(composition), "seed": 0, "task_name": "beat_block_hammer"})
    model.update_obs(robotwin_observation(np.random.default_rng(0)))
    chunk = model.get_action("beat the block")
    assert chunk.shape == (6, JOINTS) and chunk.dtype == np.float64 and np.isfinite(chunk).all()
    actions = run_episode(model, seed=1)
    assert actions.shape == (20, JOINTS) and np.isfinite(actions).all()  # stops exactly at the step limit


def test_reset_model_starts_a_clean_episode(composition):
    model = robotwin.get_model({"compose": str(composition), "seed": 0})
    first = run_episode(model, seed=1)
    assert len(model.frames) == model.composer.n_obs_steps
    again = robotwin.get_model({"compose": str(composition), "seed": 0})
    run_episode(again, seed=5)  # another episode first: history and chunk counter must not leak
    model.episode = again.episode = 0  # same episode index, so the same noise
    np.testing.assert_array_equal(run_episode(again, seed=1), first)
    model.reset()
    assert model.frames == [] and model.chunk == 0


def test_bad_inputs_name_the_field(composition, tmp_path):
    with pytest.raises(ValueError, match="compose"):
        robotwin.get_model({"seed": 0})
    model = robotwin.get_model({"compose": str(composition), "seed": 0})
    observation = robotwin_observation(np.random.default_rng(0))
    observation["pointcloud"] = []  # RoboTwin's value when data_type.pointcloud is off
    with pytest.raises(ValueError, match="data_type.pointcloud"):
        model.update_obs(observation)
    with pytest.raises(ValueError, match="one weight vector"):
        robotwin.get_model({"compose": str(composition), "weights": [[1, 0], [0, 1]]})


def test_installed_folder_is_importable_the_way_robotwin_imports_it(composition, tmp_path, monkeypatch):
    (tmp_path / "script").mkdir()
    (tmp_path / "script" / "eval_policy.py").write_text("")
    folder = install(tmp_path, composition, name="GPCTest")
    config = yaml.safe_load((folder / "deploy_policy.yml").read_text())
    assert config["policy_name"] == "GPCTest" and config["compose"] == str(composition.resolve())
    monkeypatch.syspath_prepend(str(tmp_path / "policy"))  # eval_policy.py: sys.path.append("./policy")
    module = importlib.import_module("GPCTest")
    try:
        assert all(callable(getattr(module, name)) for name in ("get_model", "eval", "reset_model"))
        model = module.get_model({**config, "seed": 0})
        assert model.composer.action_dim == JOINTS
    finally:
        sys.modules.pop("GPCTest", None)
        sys.modules.pop("GPCTest.deploy_policy", None)
    with pytest.raises(FileNotFoundError, match="not a RoboTwin 2.0 checkout"):
        install(tmp_path / "policy", composition)


def write_robotwin_episode(path, frames, rng):
    """An episode file laid out as RoboTwin's pkl2hdf5 writes it."""
    vector = rng.uniform(-1, 1, (frames, JOINTS))
    images = rng.integers(0, 256, (frames, 24, 32, 3), dtype=np.uint8)
    images[0] = 0
    images[0, ..., 0] = 255  # a pure red first frame: decoding must not swap red and blue
    encoded = [cv2.imencode(".jpg", image)[1].tobytes() for image in images]
    points = rng.uniform(-1, 1, (frames, 1024, 6)).astype(np.float32)
    with h5py.File(path, "w") as f:
        f["joint_action/vector"] = vector
        f["joint_action/left_gripper"] = vector[:, 6]
        f.create_dataset("observation/head_camera/rgb", data=np.array(encoded, dtype=f"S{max(map(len, encoded))}"))
        f["observation/head_camera/intrinsic_cv"] = np.tile(np.eye(3), (frames, 1, 1))
        f["pointcloud"] = points
    return vector, encoded, points


def test_collected_episodes_import_to_zarr_like_robotwins_converters(tmp_path):
    import zarr

    rng = np.random.default_rng(0)
    (tmp_path / "demo_clean" / "data").mkdir(parents=True)
    episodes = [write_robotwin_episode(tmp_path / "demo_clean" / "data" / f"episode{i}.hdf5", frames, rng)
                for i, frames in enumerate((5, 7, 4, 3, 3, 3, 3, 3, 3, 3, 6))]  # episode10 sorts after episode9
    out = tmp_path / "task.zarr"
    summary = import_episodes(tmp_path / "demo_clean", out, ["head_camera"], with_point_cloud=True)
    root = zarr.open_group(out, mode="r")
    lengths = [len(v) - 1 for v, _, _ in episodes]
    assert summary["episodes"] == 11 and list(root["meta/episode_ends"][:]) == list(np.cumsum(lengths))
    vector = np.concatenate([v[:-1] for v, _, _ in episodes]).astype(np.float32)
    action = np.concatenate([v[1:] for v, _, _ in episodes]).astype(np.float32)
    images = np.concatenate([[cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR) for b in e[:-1]]
                             for _, e, _ in episodes])
    np.testing.assert_array_equal(root["data/agent_pos"][:], vector)
    np.testing.assert_array_equal(root["data/action"][:], action)  # action at t = joint vector at t + 1
    np.testing.assert_array_equal(root["data/head_camera"][:], images)
    np.testing.assert_array_equal(root["data/point_cloud"][:], np.concatenate([p[:-1] for _, _, p in episodes]))
    red = root["data/head_camera"][0].astype(int)
    assert red[..., 0].min() > 200 and red[..., 2].max() < 60  # still red, not blue
    assert not (tmp_path / "task.zarr.tmp").exists()


def test_import_refuses_missing_data_and_leaves_no_partial_output(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "cfg" / "data").mkdir(parents=True)
    write_robotwin_episode(tmp_path / "cfg" / "data" / "episode0.hdf5", 4, rng)
    with pytest.raises(KeyError, match="observation/left_camera/rgb is missing"):
        import_episodes(tmp_path / "cfg", tmp_path / "out.zarr", ["left_camera"], with_point_cloud=False)
    assert not (tmp_path / "out.zarr").exists() and not (tmp_path / "out.zarr.tmp").exists()
