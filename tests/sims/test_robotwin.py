"""RoboTwin 2.0 adapter: a composed RGB + point-cloud pair answers RoboTwin-shaped observations through
RoboTwin's deploy_policy interface, the installer writes a folder that RoboTwin's own `script/eval_policy.py`
drives (emulated here: its argument parsing, `--key value` overrides, arm dimensions and loop), a wrong arm
dimension is refused before any step, the adapter runs without zarr or gymnasium, and collected episodes import
to zarr with the arrays RoboTwin's own DP / DP3 converters would produce.

The observation dict is built as RoboTwin 2.0's `TASK_ENV.get_obs()` documents it (envs/_base_task.py):
head camera rgb (240, 320, 3) uint8, `pointcloud` (1024, 6) float32 xyz + rgb, `joint_action.vector` (14,)
float64; the episode files as `envs/utils/pkl2hdf5.py` writes them (rgb as OpenCV JPEG bytes).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from gpc.core.normalizer import Normalizer
from gpc.policies.checkpoint import save_policy
from gpc.policies.configuration import load_policy_config
from gpc.policies.modeling import Policy
from gpc.sims.robotwin import client as robotwin_client
from gpc.sims.robotwin import policy as robotwin
from gpc.sims.robotwin.import_data import import_episodes
from gpc.sims.robotwin.install import install
from gpc.sims.robotwin.server import PolicyServer

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
    cv2, h5py = pytest.importorskip("cv2"), pytest.importorskip("h5py")
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
    cv2, zarr = pytest.importorskip("cv2"), pytest.importorskip("zarr", minversion="3")

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
    pytest.importorskip("zarr", minversion="3")
    rng = np.random.default_rng(0)
    (tmp_path / "cfg" / "data").mkdir(parents=True)
    write_robotwin_episode(tmp_path / "cfg" / "data" / "episode0.hdf5", 4, rng)
    with pytest.raises(KeyError, match="observation/left_camera/rgb is missing"):
        import_episodes(tmp_path / "cfg", tmp_path / "out.zarr", ["left_camera"], with_point_cloud=False)
    assert not (tmp_path / "out.zarr").exists() and not (tmp_path / "out.zarr.tmp").exists()


# What RoboTwin 2.0 (branch stable_2.0) does around a policy, for the tests below: script/eval_policy.py and
# script/eval_policy_client.py parse --config and --overrides the same way, add left_arm_dim / right_arm_dim from
# the embodiment's arm_joints_name, make eval_result/<task>/<policy>/<task_config>/<ckpt_setting>/<time>/ and loop
# reset_model, then eval until the step limit; the client passes a ModelClient (its wire: 4-byte big-endian length,
# JSON, arrays as base64) instead of get_model's model. The simulator checks each action as RoboTwin's take_action
# splits it: left arm, left gripper, right arm, right gripper.
FAKE_ROBOTWIN = r'''
import argparse, ast, base64, importlib, json, socket, sys
from datetime import datetime
from pathlib import Path

import numpy as np
import yaml


class TaskEnv:
    def __init__(self, left, right, seed, step_lim=20):
        self.left, self.right, self.step_lim = left, right, step_lim
        self.rng = np.random.default_rng(seed)
        self.take_action_cnt, self.eval_success, self.actions = 0, False, []

    def get_instruction(self):
        return "Pick up the hammer and beat the block."

    def get_obs(self):
        rng = self.rng
        left, right = list(rng.uniform(-0.5, 0.5, self.left + 1)), list(rng.uniform(-0.5, 0.5, self.right + 1))
        return {"observation": {"head_camera": {"rgb": rng.integers(0, 256, (240, 320, 3), dtype=np.uint8),
                                                "intrinsic_cv": np.eye(3), "extrinsic_cv": np.zeros((3, 4))}},
                "pointcloud": rng.uniform(-0.5, 0.5, (1024, 6)).astype(np.float32),
                "joint_action": {"left_arm": left[:-1], "left_gripper": left[-1], "right_arm": right[:-1],
                                 "right_gripper": right[-1], "vector": np.array(left + right)},
                "endpose": {}}

    def take_action(self, action, action_type="qpos"):
        assert action_type == "qpos"
        if self.take_action_cnt == self.step_lim or self.eval_success:
            return
        action, l, r = np.asarray(action), self.left, self.right
        action[:l], action[l], action[l + 1:l + 1 + r], action[l + 1 + r]  # an IndexError if too short
        assert action.shape == (l + r + 2,) and np.isfinite(action).all(), action
        self.take_action_cnt += 1
        self.actions.append(action)


def encode(obj):
    if isinstance(obj, np.ndarray):
        return {"__numpy_array__": True, "data": base64.b64encode(obj.tobytes()).decode("ascii"),
                "dtype": str(obj.dtype), "shape": obj.shape}
    if isinstance(obj, np.integer):
        return int(obj)
    raise TypeError(type(obj))


def decode(d):
    if "__numpy_array__" in d:
        return np.frombuffer(base64.b64decode(d["data"]), dtype=d["dtype"]).reshape(d["shape"])
    return d


class ModelClient:
    def __init__(self, port):
        self.sock = socket.create_connection(("localhost", port), timeout=30)

    def _recv(self, n):
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        return data

    def _send_recv(self, data):
        body = json.dumps(data, default=encode).encode()
        self.sock.sendall(len(body).to_bytes(4, "big") + body)
        return json.loads(self._recv(int.from_bytes(self._recv(4), "big")), object_hook=decode)

    def call(self, func_name=None, obs=None):
        return self._send_recv({"cmd": func_name, "obs": obs})["res"]


def parse_args_and_config(client):
    parser = argparse.ArgumentParser()
    if client:
        parser.add_argument("--port", type=int)
    parser.add_argument("--config", type=str, required=True)
    parser.add_argument("--overrides", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    with open(args.config, "r", encoding="utf-8") as f:
        config = yaml.safe_load(f)
    if client:
        config["port"] = args.port
    pairs = args.overrides or []
    for i in range(0, len(pairs), 2):
        value = pairs[i + 1]
        try:
            value = ast.literal_eval(value)  # RoboTwin: eval(value), keeping the string where that fails
        except (ValueError, SyntaxError):
            pass
        config[pairs[i].lstrip("--")] = value
    return config


def main(client):
    usr_args = parse_args_and_config(client)
    sys.path.append("./")
    sys.path.append("./policy")
    policy = importlib.import_module(usr_args["policy_name"])
    arms = yaml.safe_load(Path("embodiment.yml").read_text())["arm_joints_name"]
    save_dir = Path(f"eval_result/{usr_args['task_name']}/{usr_args['policy_name']}/{usr_args['task_config']}/"
                    f"{usr_args['ckpt_setting']}/{datetime.now().strftime('%Y-%m-%d %H:%M:%S')}")
    save_dir.mkdir(parents=True, exist_ok=True)
    usr_args["left_arm_dim"], usr_args["right_arm_dim"] = len(arms[0]), len(arms[1])
    model = ModelClient(usr_args["port"]) if client else policy.get_model(usr_args)
    runs = []
    for episode in range(2):
        env = TaskEnv(len(arms[0]), len(arms[1]), seed=100000 * (1 + usr_args["seed"]) + episode)
        model.call(func_name="reset_model") if client else policy.reset_model(model)
        while env.take_action_cnt < env.step_lim:
            policy.eval(env, model, env.get_obs())
            if env.eval_success:
                break
        runs.append(np.stack(env.actions))
    np.save(save_dir / "actions.npy", np.stack(runs))
    (save_dir / "usr_args.json").write_text(json.dumps({k: usr_args[k] for k in ("seed", "ckpt_setting",
                                                        "left_arm_dim", "right_arm_dim")}))
    (save_dir / "_result.txt").write_text("0.0")
    if client:
        assert not [m for m in sys.modules if m == "gpc" or m.startswith("gpc.")], "gpc imported in RoboTwin's env"
'''

BLOCK_GPC = '''
import sys


class NoGpc:  # RoboTwin's environment, where gpc is not installed
    def find_spec(self, name, path=None, target=None):
        if name == "gpc" or name.startswith("gpc."):
            raise ImportError(f"no {name} in RoboTwin's environment")


sys.meta_path.insert(0, NoGpc())
'''


def fake_robotwin(root: Path, arms=(6, 6)) -> Path:
    """A RoboTwin checkout as far as a policy sees it: script/eval_policy.py, script/eval_policy_client.py."""
    (root / "script").mkdir(parents=True)
    (root / "script" / "fake_robotwin.py").write_text(FAKE_ROBOTWIN)
    (root / "script" / "eval_policy.py").write_text("from fake_robotwin import main\n\nmain(client=False)\n")
    (root / "script" / "eval_policy_client.py").write_text(BLOCK_GPC + "from fake_robotwin import main\n\n"
                                                           "main(client=True)\n")
    (root / "embodiment.yml").write_text(yaml.safe_dump({"arm_joints_name": [[f"l{i}" for i in range(arms[0])],
                                                                            [f"r{i}" for i in range(arms[1])]]}))
    return root


def run_script(folder: Path, *args: str, robotwin_python: str = sys.executable) -> subprocess.CompletedProcess:
    """The policy folder's script, with `robotwin_python` as RoboTwin's `python` (default this interpreter)."""
    env = {**os.environ, "PATH": f"{Path(robotwin_python).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(["bash", *args], cwd=folder, env=env, capture_output=True, text=True, timeout=300)


def result_folder(root: Path, policy: str = "GPC") -> Path:
    runs = list((root / "eval_result" / "beat_block_hammer" / policy / "demo_clean" / "my_pair").iterdir())
    assert len(runs) == 1
    return runs[0]


@pytest.fixture()
def awkward_composition(composition, tmp_path):
    """The composition under a path that string-formatted YAML would break."""
    folder = tmp_path / "my: pair #1"
    folder.mkdir()
    (folder / "compose.yaml").write_text(composition.read_text())
    return folder / "compose.yaml"


def test_robotwins_eval_script_drives_the_installed_policy(awkward_composition, tmp_path):
    root = fake_robotwin(tmp_path / "RoboTwin")
    folder = install(root, awkward_composition)
    assert yaml.safe_load((folder / "deploy_policy.yml").read_text())["compose"] == str(awkward_composition)
    done = run_script(folder, "eval.sh", "beat_block_hammer", "demo_clean", "my_pair", "0", "0")
    assert done.returncode == 0, done.stderr[-3000:]
    result = result_folder(root)
    assert json.loads((result / "usr_args.json").read_text()) == {"seed": 0, "ckpt_setting": "my_pair",
                                                                   "left_arm_dim": 6, "right_arm_dim": 6}
    actions = np.load(result / "actions.npy")
    assert actions.shape == (2, 20, JOINTS) and np.isfinite(actions).all()
    assert not np.array_equal(actions[0], actions[1])  # two episodes, two seeds


def test_a_wrong_arm_dimension_is_refused_before_any_step(composition, tmp_path):
    with pytest.raises(ValueError, match=r"left_arm_dim \+ right_arm_dim \+ 2 = 7 \+ 7 \+ 2 = 16"):
        robotwin.get_model({"compose": str(composition), "seed": 0, "left_arm_dim": 7, "right_arm_dim": 7})
    with pytest.raises(ValueError, match="left_arm_dim, right_arm_dim: need two integers"):
        robotwin.get_model({"compose": str(composition), "seed": 0, "left_arm_dim": 6})
    model = robotwin.get_model({"compose": str(composition), "seed": 0, "left_arm_dim": 6, "right_arm_dim": 6})
    observation = robotwin_observation(np.random.default_rng(0))
    observation["joint_action"]["vector"] = np.zeros(16)  # a 7-DoF robot's joints, with no arm dims given
    with pytest.raises(ValueError, match=r"has shape \(16,\); the composition's actions have 14 dims"):
        model.update_obs(observation)
    root = fake_robotwin(tmp_path / "RoboTwin", arms=(7, 7))  # through RoboTwin's script: no IndexError mid-run
    folder = install(root, composition)
    done = run_script(folder, "eval.sh", "beat_block_hammer", "demo_clean", "my_pair", "0", "0")
    assert done.returncode != 0
    assert "the composition's actions have 14 dims, but this embodiment's joint vector has left_arm_dim + " \
           "right_arm_dim + 2 = 7 + 7 + 2 = 16" in done.stderr.strip().splitlines()[-1]
    assert "IndexError" not in done.stderr and not (result_folder(root) / "actions.npy").exists()


def test_non_finite_observations_and_chunks_are_refused(composition):
    model = robotwin.get_model({"compose": str(composition), "seed": 0})
    observation = robotwin_observation(np.random.default_rng(0))
    observation["joint_action"]["vector"][3] = np.nan
    with pytest.raises(ValueError, match=r"\['vector'\] holds NaN"):
        model.update_obs(observation)
    model.update_obs(robotwin_observation(np.random.default_rng(0)))
    normalizer = model.composer.normalizer  # an inf scale: the chunk comes out non-finite
    model.composer.normalizer = dataclasses.replace(normalizer, scale=normalizer.scale * np.inf)
    with pytest.raises(FloatingPointError, match="holds NaN or inf"):
        model.get_action("beat the block")


def test_the_adapter_runs_without_zarr_or_gymnasium(composition):
    """The core's dependencies (Python 3.10, RoboTwin's environment) lack both; scripts/check_py310.sh resolves them."""
    script = f'''
import sys
class Without:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("zarr", "gymnasium", "cv2", "h5py"):
            raise ImportError(name)
sys.meta_path.insert(0, Without())
import numpy as np
from gpc.sims.robotwin import policy, server
model = policy.get_model({{"compose": {str(composition)!r}, "seed": 0, "left_arm_dim": 6, "right_arm_dim": 6}})
rng = np.random.default_rng(0)
model.update_obs({{"observation": {{"head_camera": {{"rgb": rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)}}}},
                  "pointcloud": rng.uniform(-1, 1, (1024, 6)), "joint_action": {{"vector": np.zeros(14)}}}})
print(model.get_action("go").shape)
'''
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "(6, 14)", done.stderr[-3000:]


def robotwin_side():
    """RoboTwin's side of the wire as the fake above speaks it (its ModelClient, its simulator)."""
    namespace = {}
    exec(compile(FAKE_ROBOTWIN, "fake_robotwin", "exec"), namespace)
    return namespace["ModelClient"], namespace["TaskEnv"]


@pytest.fixture()
def served(composition):
    server = PolicyServer(robotwin.get_model({"compose": str(composition), "seed": 0}), port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def episode(env_class, step, reset, seed):
    env = env_class(6, 6, seed=seed)
    reset()
    while env.take_action_cnt < env.step_lim:
        step(env, env.get_obs())
    return np.stack(env.actions)


def test_server_answers_robotwins_client_with_the_in_process_chunks(composition, served):
    ModelClient, TaskEnv = robotwin_side()
    assert served.server_address[0] == "127.0.0.1"  # loopback unless told otherwise
    local = robotwin.get_model({"compose": str(composition), "seed": 0})
    remote = ModelClient(served.port)
    for seed in (1, 2):
        here = episode(TaskEnv, lambda env, obs: robotwin.eval(env, local, obs), lambda: robotwin.reset_model(local),
                       seed)
        there = episode(TaskEnv, lambda env, obs: robotwin_client.eval(env, remote, obs),
                        lambda: remote.call(func_name="reset_model"), seed)
        np.testing.assert_array_equal(there, here)
    assert remote.gpc_inputs == {"cameras": ["head_camera"], "pointcloud": True, "action_dim": JOINTS}
    seven = ModelClient(served.port)  # a 7-DoF embodiment is refused at its first observation
    with pytest.raises(RuntimeError, match=r"gpc policy server: .*left_arm_dim \+ right_arm_dim \+ 2 = 7 \+ 7 \+ 2"):
        robotwin_client.eval(TaskEnv(7, 7, seed=0), seven, TaskEnv(7, 7, seed=0).get_obs())
    assert len(ModelClient(served.port).call(func_name="get_action", obs={
        "observation": robotwin_observation(np.random.default_rng(0)), "instruction": "go"})) == 6  # still serving


def framed(obj) -> bytes:
    body = json.dumps(obj).encode() if not isinstance(obj, bytes) else obj
    return len(body).to_bytes(4, "big") + body


@pytest.mark.parametrize("payload, error", [
    ((2 ** 31).to_bytes(4, "big"), "over the bound"),
    (framed(b"\xff not json"), "not UTF-8 JSON"),
    (framed([1, 2]), "answered are"),
    (framed({"cmd": "__class__", "obs": None}), "cmd '__class__': answered are"),
    (framed({"cmd": "update_obs", "obs": {"joint_action": {"vector": {
        "__numpy_array__": True, "data": "AAAAAAAAAAA=", "dtype": "object", "shape": [1]}}}}), "array dtype 'object'"),
    (framed({"cmd": "update_obs", "obs": {"joint_action": {"vector": {
        "__numpy_array__": True, "data": "AAAAAAAAAAA=", "dtype": "float64", "shape": [14]}}}}), "needs 112 bytes"),
    (framed({"cmd": "update_obs", "obs": {"joint_action": {}}}), "set data_type.qpos"),
    (framed({"cmd": "get_action", "obs": "go"}), "obs must be {observation, instruction}"),
    ((100).to_bytes(4, "big") + b"{}", "connection closed after 2 of 100 bytes"),
])
def test_server_survives_malformed_clients(served, payload, error):
    ModelClient, _ = robotwin_side()
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(1 << 16):  # the answer, then the server closes this connection
            data += chunk
    answer = json.loads(data[4:])
    assert int.from_bytes(data[:4], "big") == len(data) - 4 and error in answer["error"] and "res" not in answer
    assert ModelClient(served.port).call(func_name="reset_model") is None  # and it goes on serving


# RoboTwin's side in another environment: scripts/check_py310.sh sets ROBOTWIN_PYTHON to a Python 3.10 with only
# numpy and pyyaml, as RoboTwin's own environment would be without gpc
OTHER_PYTHON = [os.environ["ROBOTWIN_PYTHON"]] if os.environ.get("ROBOTWIN_PYTHON") else []


@pytest.mark.parametrize("robotwin_python", [sys.executable, *OTHER_PYTHON])
def test_eval_server_script_runs_robotwins_client_against_gpcs_server(awkward_composition, tmp_path, robotwin_python):
    root = fake_robotwin(tmp_path / "RoboTwin")
    folder = install(root, awkward_composition)
    done = run_script(folder, "eval_server.sh", "beat_block_hammer", "demo_clean", "my_pair", "0", "0", sys.executable,
                      robotwin_python=robotwin_python)
    assert done.returncode == 0, done.stderr[-3000:]  # the client also asserts it never imported gpc
    actions = np.load(result_folder(root) / "actions.npy")
    assert actions.shape == (2, 20, JOINTS) and np.isfinite(actions).all()
    bad = subprocess.run([sys.executable, "-m", "gpc.sims.robotwin.server", "--port", "0", "--config",
                          str(folder / "deploy_policy.yml"), "--overrides", "--seed"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip() == "gpc.sims.robotwin.server: --overrides: --seed has no " \
                                                         "value (give --key value pairs)"
