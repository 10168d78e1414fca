"""Robomimic's robosuite tasks as gymnasium envs with dict observations in robomimic's layout.

Keys (robomimic names): "object" (robosuite's `object-state`), "robot0_eef_pos", "robot0_eef_quat" (xyzw),
"robot0_gripper_qpos", any other per-robot low-dim observable robosuite offers ("robot0_joint_pos", ...),
images "<camera>_image" (HWC uint8, turned upright as robomimic's `EnvRobosuite` does), and "instruction",
the task's sentence (`INSTRUCTIONS`), for language-conditioned parents. Only the
requested cameras are rendered, and no offscreen renderer exists unless an image key or
render_mode="rgb_array" asks for one. A caller that reads images only on some steps (an evaluator whose
policy replans every few steps) sets `render_images = False` before the others: robosuite then skips
rendering and the image keys hold zeros, while the images it does render equal those of an env that
renders every step.

Control is robomimic's: Panda, OSC_POSE delta actions (3 position + 3 axis-angle deltas in [-1, 1], then
the gripper, -1 open / +1 closed), 20 Hz. `info["is_success"]` is the task's `_check_success()`, which also
terminates the episode. `reset(seed=s)` places the objects and the robot's initial-joint noise from `s` alone.

`env_from_metadata` builds the env a robomimic dataset was recorded in from its `data.attrs["env_args"]`,
converting robosuite <= 1.4 controller configs (`{"type": "OSC_POSE", ...}`) to robosuite 1.5's
composite format; `env_from_dataset` reads that metadata from a dataset file (env=robomimic_dataset).
"""

from __future__ import annotations

import copy
import json
import string

import gymnasium as gym
import numpy as np
import robosuite
from gymnasium import spaces
from robosuite import macros
from robosuite.controllers.composite.composite_controller_factory import (
    is_part_controller_config,
    load_composite_controller_config,
    refactor_composite_controller_config,
)
from robosuite.utils.observables import sensor

TASKS = ("Lift", "PickPlaceCan", "NutAssemblySquare")
# Evaluation rollout horizons of robomimic's proficient-human (ph) datasets: `register_all_links` in
# robomimic/__init__.py gives lift/can/square 400 steps (multi-human datasets use 500).
HORIZONS = {"Lift": 400, "PickPlaceCan": 400, "NutAssemblySquare": 400}
LOW_DIM_KEYS = ("object", "robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos")
CAMERAS = ("agentview", "robot0_eye_in_hand")
INSTRUCTION_KEY = "instruction"
# One instruction per task, what a language-conditioned (VLA) parent trained on all three tasks reads.
INSTRUCTIONS = {
    "Lift": "lift the red cube",
    "PickPlaceCan": "pick up the can and place it in its bin",
    "NutAssemblySquare": "put the square nut on the square peg",
}
ROBOSUITE_ENV_TYPE = 1  # robomimic's EnvType.ROBOSUITE_TYPE, the "type" field of its env metadata

# Keyword arguments that this module sets itself; values found in dataset metadata are dropped.
_OWNED_KWARGS = (
    "has_renderer", "has_offscreen_renderer", "use_camera_obs", "use_object_obs", "ignore_done",
    "camera_names", "camera_heights", "camera_widths", "camera_depths", "camera_segmentations",
    "render_gpu_device_id", "env_name", "render", "render_offscreen", "use_image_obs", "use_depth_obs",
    "lang", "seed", "renderer",
)


def convert_controller_config(config, robot: str = "Panda") -> dict:
    """A robosuite 1.5 composite controller config from a config of any robosuite version.

    robosuite <= 1.4 part configs (`{"type": "OSC_POSE", ...}`, as in robomimic's older datasets) are
    renamed where 1.5 renamed a field (`control_delta` -> `input_type`, `damping` -> `damping_ratio`,
    `damping_limits` -> `damping_ratio_limits`; 1.5 silently ignores the old names) and then wrapped with
    robosuite's `refactor_composite_controller_config`. None gives the robot's default (OSC_POSE for Panda).
    """
    if config is None:
        return load_composite_controller_config(robot=robot)
    if isinstance(config, str):
        return load_composite_controller_config(controller=config)
    config = copy.deepcopy(dict(config))
    if not is_part_controller_config(config):
        return config
    if "control_delta" in config:
        config["input_type"] = "delta" if config.pop("control_delta") else "absolute"
    for old, new in (("damping", "damping_ratio"), ("damping_limits", "damping_ratio_limits")):
        if old in config:
            config.setdefault(new, config.pop(old))
    # Old datasets' OSC took deltas in the world frame; 1.5's default is the robot base frame.
    config.setdefault("input_ref_frame", "world")
    return refactor_composite_controller_config(config, robot, ["right"])


class RobomimicEnv(gym.Env):
    """One robosuite task; see the module docstring for observations, actions and success."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(self, env_name: str = "Lift", env_kwargs: dict | None = None, obs_keys=LOW_DIM_KEYS,
                 image_size: int = 84, cameras=CAMERAS, render_mode: str | None = None,
                 render_camera: str = "agentview", render_size: int = 256):
        kwargs = {k: v for k, v in copy.deepcopy(env_kwargs or {}).items() if k not in _OWNED_KWARGS}
        robots = kwargs.setdefault("robots", "Panda")
        robot = robots if isinstance(robots, str) else robots[0]
        kwargs["controller_configs"] = convert_controller_config(kwargs.get("controller_configs"), robot)
        kwargs.setdefault("control_freq", 20)
        kwargs.setdefault("reward_shaping", False)

        self.obs_keys = tuple(obs_keys)
        image_keys = [k for k in self.obs_keys if k.endswith("_image")]
        unknown_cams = [k for k in image_keys if k[: -len("_image")] not in cameras]
        if unknown_cams:
            raise ValueError(f"image keys {unknown_cams} need their camera in cameras={tuple(cameras)}")
        self.cameras = tuple(c for c in cameras if f"{c}_image" in image_keys)
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.render_mode, self.render_camera, self.render_size = render_mode, render_camera, render_size
        self.image_size = image_size
        self.env_name = env_name
        kwargs.update(
            has_renderer=False,
            has_offscreen_renderer=bool(self.cameras) or render_mode == "rgb_array",
            use_camera_obs=bool(self.cameras),
            use_object_obs=True,
            ignore_done=True,  # episode ends come from success and the TimeLimit wrapper
            # Only with this renderer does a hard reset free the old sim and its GL context at once; with
            # robosuite's default the garbage collector frees them later, inside another env's context.
            renderer="mujoco",
        )
        if self.cameras:
            kwargs.update(camera_names=list(self.cameras), camera_heights=image_size, camera_widths=image_size,
                          camera_depths=False)
        self.robosuite_kwargs = kwargs
        self.render_images = True
        self.robosuite_env = robosuite.make(env_name, **kwargs)
        self._make_cameras_skippable()
        # robosuite draws images bottom-up (OpenGL convention) unless its macro says otherwise.
        self._flip = macros.IMAGE_CONVENTION == "opengl"

        raw = self.robosuite_env._get_observations(force_update=True)
        available = {"object", INSTRUCTION_KEY} | {f"{c}_image" for c in self.cameras} | {
            k for k in raw if k.startswith("robot0_") and not k.endswith("-state") and not k.endswith("_image")}
        unknown = [k for k in self.obs_keys if k not in available]
        if unknown:
            raise ValueError(f"unknown {env_name} obs keys {unknown}; choose from {sorted(available)}")
        if INSTRUCTION_KEY in self.obs_keys and env_name not in INSTRUCTIONS:
            raise ValueError(f"obs key {INSTRUCTION_KEY!r}: no instruction for {env_name}; "
                             f"tasks with one: {sorted(INSTRUCTIONS)}")
        first = self._obs(raw)
        self.observation_space = spaces.Dict({
            k: spaces.Text(max_length=256, charset=string.printable) if k == INSTRUCTION_KEY
            else spaces.Box(0, 255, v.shape, np.uint8) if k.endswith("_image")
            else spaces.Box(-np.inf, np.inf, v.shape, np.float32)
            for k, v in first.items()})
        low, high = self.robosuite_env.action_spec
        self.action_space = spaces.Box(low.astype(np.float32), high.astype(np.float32), dtype=np.float32)

    @property
    def sim(self):
        return self.robosuite_env.sim

    def _obs(self, raw: dict) -> dict:
        out = {}
        for key in self.obs_keys:
            if key == INSTRUCTION_KEY:
                out[key] = INSTRUCTIONS[self.env_name]
            elif key.endswith("_image"):
                image = raw[key][::-1] if self._flip else raw[key]
                out[key] = np.ascontiguousarray(image, dtype=np.uint8)
            elif key == "object":
                out[key] = np.asarray(raw["object-state"], dtype=np.float32)
            else:
                out[key] = np.asarray(raw[key], dtype=np.float32)
        return out

    def _use_own_gl_context(self):
        """Makes this env's GL context current. robosuite draws with (and a hard reset frees GL objects in)
        whichever context is current, the one created last: with several envs in one process, an env would
        otherwise draw garbage and leak its own GL objects at every reset."""
        context = getattr(self.robosuite_env.sim, "_render_context_offscreen", None)
        if context is not None:
            context.gl_ctx.make_current()

    def is_success(self) -> bool:
        return bool(self.robosuite_env._check_success())

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            # The placement samplers and robot-noise draws hold this very Generator: reseed it in place.
            self.robosuite_env.rng.bit_generator.state = np.random.default_rng(seed).bit_generator.state
        self.render_images = True  # a reset always renders: its frame pads the observation history
        self._use_own_gl_context()  # a hard reset frees this env's GL objects: in this env's context
        raw = self.robosuite_env.reset()
        self._make_cameras_skippable()
        return self._obs(raw), {"is_success": self.is_success()}

    def _make_cameras_skippable(self):
        """Wraps each camera's robosuite sensor (rebuilt by a hard reset) so that it renders only while
        `render_images` is set. The observable's sampling clock is untouched, so a rendered frame is taken
        at the same physics substep as it would be by an env rendering every step."""
        blank = np.zeros((self.image_size, self.image_size, 3), dtype=np.uint8)
        for camera in self.cameras:
            observable = self.robosuite_env._observables[f"{camera}_image"]
            render = observable._sensor
            if getattr(render, "skippable", False):  # kept across a soft reset
                continue

            @sensor(modality=render.__modality__)
            def camera_or_blank(obs_cache, render=render):
                if not self.render_images:
                    return blank
                self._use_own_gl_context()
                return render(obs_cache)

            camera_or_blank.skippable = True
            self.render_images = False  # robosuite's sensor check calls it once: skip that frame
            observable.set_sensor(camera_or_blank)
            self.render_images = True

    def step(self, action):
        action = np.asarray(action, dtype=np.float64).reshape(self.action_space.shape)
        raw, reward, _, _ = self.robosuite_env.step(action)
        success = self.is_success()
        return self._obs(raw), float(reward), success, False, {"is_success": success}

    def get_state(self) -> np.ndarray:
        """The flattened MuJoCo state (robomimic's `states` rows)."""
        return np.array(self.sim.get_state().flatten())

    def reset_to_state(self, state: np.ndarray) -> dict[str, np.ndarray]:
        """Sets a flattened MuJoCo state (as robomimic datasets store) and returns its observation."""
        self.sim.set_state_from_flattened(np.asarray(state, dtype=np.float64))
        self.sim.forward()
        self.render_images = True
        return self._obs(self.robosuite_env._get_observations(force_update=True))

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        self._use_own_gl_context()
        image = self.sim.render(camera_name=self.render_camera, height=self.render_size, width=self.render_size)
        return np.ascontiguousarray(image[::-1] if self._flip else image)

    def close(self):
        self._use_own_gl_context()
        self.robosuite_env.close()


def make_env(task: str = "Lift", obs_keys=LOW_DIM_KEYS, image_size: int = 84, cameras=CAMERAS,
             max_episode_steps: int | None = None, render_mode: str | None = None, controller_config=None,
             **robosuite_kwargs) -> gym.Env:
    """One robomimic task (Panda, OSC_POSE, 20 Hz) limited to `max_episode_steps` (robomimic's horizon)."""
    env_kwargs = dict(robosuite_kwargs, controller_configs=controller_config)
    env = RobomimicEnv(task, env_kwargs, obs_keys, image_size, cameras, render_mode)
    return gym.wrappers.TimeLimit(env, max_episode_steps or HORIZONS.get(task, 400))


def _version_below_1_5(version) -> bool:
    try:
        major, minor = (int(x) for x in str(version).split(".")[:2])
    except ValueError:
        return False
    return (major, minor) < (1, 5)


def env_from_metadata(env_meta: dict | str, obs_keys=None, image_size: int | None = None, cameras=None,
                      max_episode_steps: int | None = None, render_mode: str | None = None) -> gym.Env:
    """The env a robomimic dataset was recorded in, from its metadata (`data.attrs["env_args"]`).

    Defaults come from the metadata: cameras and image size from `camera_names` / `camera_heights`, and
    image keys are observed when the dataset used camera observations. A dataset recorded with robosuite
    <= 1.4 (old controller config or `env_version`) runs with `lite_physics=False`, robosuite's setting
    for matching those versions' physics, unless the metadata says otherwise.
    """
    meta = json.loads(env_meta) if isinstance(env_meta, str) else copy.deepcopy(env_meta)
    if meta.get("type", ROBOSUITE_ENV_TYPE) != ROBOSUITE_ENV_TYPE:
        raise ValueError(f"env metadata type {meta.get('type')} is not robosuite ({ROBOSUITE_ENV_TYPE})")
    name = meta["env_name"]
    kwargs = dict(meta.get("env_kwargs", {}))
    camera_names = kwargs.get("camera_names") or list(CAMERAS)
    camera_names = [camera_names] if isinstance(camera_names, str) else list(camera_names)
    if cameras is None:
        cameras = camera_names
    if image_size is None:
        height = kwargs.get("camera_heights", 84)
        image_size = int(height[0] if isinstance(height, (list, tuple)) else height)
    if obs_keys is None:
        obs_keys = LOW_DIM_KEYS
        if kwargs.get("use_camera_obs"):
            obs_keys += tuple(f"{c}_image" for c in cameras)
    controller = kwargs.get("controller_configs")
    old = (isinstance(controller, dict) and is_part_controller_config(controller)) or _version_below_1_5(
        meta.get("env_version"))
    if old:
        kwargs.setdefault("lite_physics", False)
    env = RobomimicEnv(name, kwargs, obs_keys, image_size, cameras, render_mode)
    return gym.wrappers.TimeLimit(env, max_episode_steps or HORIZONS.get(name, 400))


def env_from_dataset(path: str, obs_keys=None, image_size: int | None = None, cameras=None,
                     max_episode_steps: int | None = None, render_mode: str | None = None) -> gym.Env:
    """The env a dataset was recorded in, as robomimic evaluates: from the `env_args` of a robomimic HDF5
    file (`data.attrs`) or of a zarr store written by `make_demos` or `import_hdf5` (root attrs)."""
    from gpc.app.config import first_line, resolve_path

    source = resolve_path(path)
    if not source.exists():
        raise ValueError(f"path: {path} does not exist")
    try:
        env_args = _stored_env_args(source)
        env_args = json.loads(env_args) if isinstance(env_args, str) else env_args
    except Exception as err:  # noqa: BLE001 - h5py, zarr and json each raise their own
        raise ValueError(f"{path}: env_args: cannot read it as a robomimic HDF5 file or a zarr store "
                         f"({first_line(err)})") from None
    if env_args is None:
        raise ValueError(f"{path}: env_args: missing (robomimic datasets keep it in data.attrs; gpc's zarr "
                         "stores from make_demos or import_hdf5 in their root attrs)")
    return env_from_metadata(env_args, obs_keys, image_size, cameras, max_episode_steps, render_mode)


def _stored_env_args(source):
    if source.suffix in (".hdf5", ".h5", ".hdf"):
        import h5py

        with h5py.File(source, "r") as f:
            env_args = f["data"].attrs.get("env_args") if "data" in f else None
        return env_args.decode() if isinstance(env_args, bytes) else env_args
    import zarr

    return zarr.open_group(str(source), mode="r").attrs.get("env_args")
