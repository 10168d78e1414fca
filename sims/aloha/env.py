"""gym-aloha's bimanual MuJoCo tasks with RoboTwin's observation and action conventions.

Why RoboTwin's conventions: the parents `gpc` composes (DP, DP3 and friends trained on RoboTwin's
aloha-agilex tasks) read `head_camera` (HWC uint8 RGB), `point_cloud` ((n_points, 6): world xyz + rgb
in [0, 1], cropped to the workspace, farthest-point sampled, zero-padded) and `agent_pos`, and they emit
14-dim absolute joint targets. Keeping those names, shapes, orders and gripper ranges here means a
policy trained on these tasks' demos and one trained on RoboTwin data read and write the same vectors,
so they can be composed without adapters.

Vectors (`agent_pos` and the action), both float32 (14,):
    [left arm 6 joints (rad), left gripper, right arm 6 joints (rad), right gripper]
with each gripper normalised over its finger joint's range to [0, 1], 1 = open, 0 = closed. gym-aloha's
own gripper scale (its "puppet" range, slightly wider than the joint's) is converted to internally.

The scene, the seeded object placement (`gym_aloha.utils.sample_box_pose` / `sample_insertion_pose`,
so seed s places the objects as `gym_aloha/Aloha*-v0` reset with seed s does), the 50 Hz control step
and the task rewards (0..4; 4 = success) are gym-aloha's. What differs: only the requested observation
keys are computed (gym-aloha renders three 480x640 cameras every step), and the top camera renders
without shadows or multisampling, about 10x faster on a CPU renderer (software EGL/OSMesa), so images are
a little flatter than gym-aloha's. `info["progress"]` = reward / 4, also in the reset info;
`info["is_success"]` = reward 4, which terminates the episode. A step that makes the physics invalid
(mjWARN_BADQACC under a wild command) truncates the episode as a failure with `info["physics_error"]`.
"""

from __future__ import annotations

import os

# dm_control picks its OpenGL backend on import; without a display, GLFW cannot open a context.
if "MUJOCO_GL" not in os.environ and not os.environ.get("DISPLAY"):
    os.environ["MUJOCO_GL"] = "egl"

import gymnasium as gym  # noqa: E402
import mujoco as mj  # noqa: E402
import numpy as np  # noqa: E402
from dm_control import mujoco  # noqa: E402
from dm_control.mujoco.engine import Camera  # noqa: E402
from dm_control.rl import control  # noqa: E402
from dm_control.suite import base  # noqa: E402
from gym_aloha.constants import ASSETS_DIR, DT, START_ARM_POSE, normalize_puppet_gripper_position  # noqa: E402
from gym_aloha.tasks.sim import InsertionTask, TransferCubeTask  # noqa: E402
from gym_aloha.utils import sample_box_pose, sample_insertion_pose  # noqa: E402
from gymnasium import spaces  # noqa: E402

OBS_KEYS = ("head_camera", "point_cloud", "agent_pos")
TASKS = ("transfer_cube", "insertion")
CAMERA = "top"
# Finger slide-joint range (both arms, both fingers mirror it): closed and open ends.
FINGER_CLOSED, FINGER_OPEN = 0.021, 0.057
# Workspace crop for the point cloud, world frame (m): the table top is z = 0, so z > 5 mm drops it and
# keeps the arms and the objects; x/y cover both arm bases and the table under the top camera.
WORKSPACE = np.array([[-0.6, 0.6], [0.0, 1.2], [0.005, 0.8]])
MAX_REWARD = 4
ARM = (slice(0, 6), slice(8, 14))  # arm joints of each arm in qpos[:16]
FINGER = (6, 14)  # each arm's left-finger joint in qpos[:16] (the right finger mirrors it)


def gripper_to_finger(g):
    """Normalised gripper (1 = open) -> finger joint position (m)."""
    return FINGER_CLOSED + np.clip(g, 0.0, 1.0) * (FINGER_OPEN - FINGER_CLOSED)


def finger_to_gripper(q):
    return np.clip((np.asarray(q) - FINGER_CLOSED) / (FINGER_OPEN - FINGER_CLOSED), 0.0, 1.0)


def qpos_to_vector(qpos) -> np.ndarray:
    """The 16 robot joints of qpos (two fingers per arm) -> the 14-dim RoboTwin vector."""
    qpos = np.asarray(qpos)
    return np.concatenate([qpos[ARM[0]], [finger_to_gripper(qpos[FINGER[0]])],
                           qpos[ARM[1]], [finger_to_gripper(qpos[FINGER[1]])]]).astype(np.float32)


def vector_to_aloha(action) -> np.ndarray:
    """14-dim RoboTwin action -> gym-aloha's joint action (same order; its own gripper normalisation)."""
    out = np.asarray(action, dtype=np.float64).copy()
    out[[6, 13]] = normalize_puppet_gripper_position(gripper_to_finger(out[[6, 13]]))
    return out


def farthest_point_sampling(points: np.ndarray, n: int) -> np.ndarray:
    """Indices of n farthest-point samples of (N, 3) points (N >= n), starting from index 0 (deterministic,
    as pytorch3d's `sample_farthest_points` without a random start, which RoboTwin uses)."""
    x, y, z = (np.ascontiguousarray(points[:, i], dtype=np.float32) for i in range(3))
    dist = np.full(len(x), np.inf, dtype=np.float32)
    tmp, acc = np.empty_like(dist), np.empty_like(dist)
    chosen = np.empty(n, dtype=np.int64)
    i = 0
    for k in range(n):
        chosen[k] = i
        np.subtract(x, x[i], out=acc)
        np.multiply(acc, acc, out=acc)
        np.subtract(y, y[i], out=tmp)
        np.multiply(tmp, tmp, out=tmp)
        acc += tmp
        np.subtract(z, z[i], out=tmp)
        np.multiply(tmp, tmp, out=tmp)
        acc += tmp
        np.minimum(dist, acc, out=dist)
        i = int(dist.argmax())
    return chosen


def sample_point_cloud(xyz: np.ndarray, rgb: np.ndarray, n_points: int, box=WORKSPACE,
                       max_candidates: int | None = None) -> np.ndarray:
    """(n_points, 6) float32 [xyz, rgb in 0..1] from per-pixel (M, 3) xyz and (M, 3) uint8 rgb: crop to
    `box`, keep at most `max_candidates` (evenly strided, default 3 * n_points) to bound the cost,
    farthest-point sample n_points, zero-pad when fewer points survive the crop."""
    keep = np.all((xyz >= box[:, 0]) & (xyz <= box[:, 1]), axis=1)
    xyz, rgb = xyz[keep], rgb[keep]
    limit = max_candidates or 3 * n_points
    if len(xyz) > limit:
        stride = np.linspace(0, len(xyz) - 1, limit).round().astype(np.int64)
        xyz, rgb = xyz[stride], rgb[stride]
    out = np.zeros((n_points, 6), dtype=np.float32)
    if len(xyz) > n_points:
        idx = farthest_point_sampling(xyz, n_points)
        xyz, rgb = xyz[idx], rgb[idx]
    out[:len(xyz), :3] = xyz
    out[:len(xyz), 3:] = rgb / 255.0
    return out


class _RGBDCamera(Camera):
    """dm_control camera that draws the scene once and reads RGB and depth from the same frame."""

    def _draw_and_read(self):
        ctx = self._physics.contexts.mujoco.ptr
        mj.mjr_render(self._rect, self._scene.ptr, ctx)
        mj.mjr_readPixels(self._rgb_buffer, self._depth_buffer, self._rect, ctx)

    def rgbd(self, depth: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        self.update()
        with self._physics.contexts.gl.make_current() as gl:
            gl.call(self._draw_and_read)
        rgb = self._rgb_buffer[::-1].copy()  # OpenGL's first row is the image's bottom row
        if not depth:
            return rgb, None
        extent = self._physics.model.stat.extent
        near, far = self._physics.model.vis.map.znear * extent, self._physics.model.vis.map.zfar * extent
        return rgb, near / (1 - self._depth_buffer[::-1] * (1 - near / far))  # metres along the optical axis


class _Scene:
    """gym-aloha task with our seeded object pose and no per-step observation rendering."""

    object_pose: np.ndarray

    def initialize_episode(self, physics):
        physics.named.data.qpos[:16] = START_ARM_POSE
        np.copyto(physics.data.ctrl, START_ARM_POSE)
        physics.data.qpos[16:] = self.object_pose
        base.Task.initialize_episode(self, physics)

    def get_observation(self, physics):
        return {}


class _TransferCube(_Scene, TransferCubeTask):
    pass


class _Insertion(_Scene, InsertionTask):
    pass


SCENES = {
    "transfer_cube": ("bimanual_viperx_transfer_cube.xml", _TransferCube, lambda seed: sample_box_pose(seed)),
    "insertion": ("bimanual_viperx_insertion.xml", _Insertion,
                  lambda seed: np.concatenate(sample_insertion_pose(seed))),
}


class AlohaEnv(gym.Env):
    """One gym-aloha task with RoboTwin-style dict observations and 14-dim joint-target actions."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": round(1 / DT)}

    def __init__(self, task: str = "transfer_cube", obs_keys=OBS_KEYS, image_size=(120, 160),
                 n_points: int = 1024, workspace=WORKSPACE):
        if task not in SCENES:
            raise ValueError(f"unknown ALOHA task {task!r}; choose from {TASKS}")
        unknown = set(obs_keys) - set(OBS_KEYS)
        if unknown:
            raise ValueError(f"unknown ALOHA obs keys {sorted(unknown)}; choose from {OBS_KEYS}")
        self.task, self.obs_keys, self.n_points = task, tuple(obs_keys), int(n_points)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.workspace = np.asarray(workspace, dtype=np.float64)
        self.render_mode = "rgb_array"
        xml, scene_cls, self._sample_pose = SCENES[task]
        physics = mujoco.Physics.from_xml_path(str(ASSETS_DIR / xml))
        height, width = self.image_size
        physics.model.light_castshadow[:] = 0  # shadow maps dominate software rendering time
        physics.model.vis.quality.offsamples = 0
        physics.model.vis.global_.offwidth, physics.model.vis.global_.offheight = width, height
        self._scene = scene_cls()
        self._env = control.Environment(physics, self._scene, time_limit=float("inf"), control_timestep=DT,
                                        n_sub_steps=None, flat_observation=False)
        self._camera: _RGBDCamera | None = None
        self._rays = self._camera_rays()
        self.seed_used: int | None = None

        model = physics.model
        arm_ids = [model.name2id(f"vx300s_{side}/{j}", "joint") for side in ("left", "right")
                   for j in ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate")]
        lo, hi = np.zeros(14, np.float32), np.ones(14, np.float32)
        arm_slots = [0, 1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 12]
        lo[arm_slots], hi[arm_slots] = model.jnt_range[arm_ids, 0], model.jnt_range[arm_ids, 1]
        self.action_space = spaces.Box(lo, hi, dtype=np.float32)
        all_spaces = {
            "head_camera": spaces.Box(0, 255, (height, width, 3), np.uint8),
            "point_cloud": spaces.Box(-np.inf, np.inf, (self.n_points, 6), np.float32),
            "agent_pos": spaces.Box(lo, hi, dtype=np.float32),
        }
        self.observation_space = spaces.Dict({k: all_spaces[k] for k in self.obs_keys})

    @property
    def physics(self) -> mujoco.Physics:
        return self._env.physics

    def _camera_rays(self) -> np.ndarray:
        """(H*W, 3) camera-frame directions with unit depth (MuJoCo cameras look down their -z axis)."""
        height, width = self.image_size
        fovy = self.physics.model.cam_fovy[self.physics.model.name2id(CAMERA, "camera")]
        focal = 0.5 * height / np.tan(np.deg2rad(fovy) / 2)
        rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
        rays = np.stack([(cols - (width - 1) / 2) / focal, -(rows - (height - 1) / 2) / focal,
                         -np.ones_like(rows)], axis=-1)
        return rays.reshape(-1, 3)

    def _render(self, depth: bool):
        if self._camera is None:
            self._camera = _RGBDCamera(self.physics, *self.image_size, camera_id=CAMERA)
        return self._camera.rgbd(depth)

    def render(self) -> np.ndarray:
        return self._render(depth=False)[0]

    def point_cloud_from(self, rgb: np.ndarray, depth: np.ndarray) -> np.ndarray:
        cam = self.physics.model.name2id(CAMERA, "camera")
        pos, rot = self.physics.data.cam_xpos[cam], self.physics.data.cam_xmat[cam].reshape(3, 3)
        xyz = (self._rays * depth.reshape(-1, 1)) @ rot.T + pos
        return sample_point_cloud(xyz, rgb.reshape(-1, 3), self.n_points, self.workspace)

    def _obs(self) -> dict[str, np.ndarray]:
        obs = {}
        if "head_camera" in self.obs_keys or "point_cloud" in self.obs_keys:
            rgb, depth = self._render(depth="point_cloud" in self.obs_keys)
            if "head_camera" in self.obs_keys:
                obs["head_camera"] = rgb
            if "point_cloud" in self.obs_keys:
                obs["point_cloud"] = self.point_cloud_from(rgb, depth)
        if "agent_pos" in self.obs_keys:
            obs["agent_pos"] = qpos_to_vector(self.physics.data.qpos[:16])
        return {k: obs[k] for k in self.obs_keys}

    def _info(self, reward: float) -> dict:
        return {"is_success": bool(reward >= MAX_REWARD), "progress": float(reward) / MAX_REWARD}

    def reset(self, *, seed: int | None = None, options=None):
        super().reset(seed=seed)
        if seed is None:  # an unseeded reset still follows the env's seeded generator
            seed = int(self.np_random.integers(2**31 - 1))
        self.seed_used = int(seed)
        self._scene.object_pose = self._sample_pose(seed)
        self._env.reset()
        self._last_obs = self._obs()
        return self._last_obs, self._info(self._scene.get_reward(self.physics))

    def step(self, action):
        action = np.asarray(action, dtype=np.float64).reshape(14)
        try:
            timestep = self._env.step(vector_to_aloha(action))
        except control.PhysicsError:  # a policy drove the sim unstable: a failed episode, not a crashed run
            return self._last_obs, 0.0, False, True, {**self._info(0.0), "physics_error": True}
        reward = float(timestep.reward)
        info = self._info(reward)
        self._last_obs = self._obs()
        return self._last_obs, reward, info["is_success"], False, info


def make_env(task: str = "transfer_cube", obs_keys=OBS_KEYS, image_size=(120, 160), n_points: int = 1024,
             max_episode_steps: int = 400) -> gym.Env:
    """One ALOHA env (`task` = "transfer_cube" or "insertion"); episodes end on success or after
    `max_episode_steps` (truncated)."""
    return gym.wrappers.TimeLimit(AlohaEnv(task, obs_keys, tuple(image_size), n_points), max_episode_steps)
