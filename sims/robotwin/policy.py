"""A composed gpc policy behind RoboTwin 2.0's policy interface (`policy/<Name>/deploy_policy.py`).

RoboTwin's `script/eval_policy.py` calls `get_model(usr_args)` once, `reset_model(model)` before every
episode and `eval(TASK_ENV, model, observation)` once per action chunk; `eval` must execute the chunk
itself with `TASK_ENV.take_action(action, action_type="qpos")`. Observations follow `TASK_ENV.get_obs()`:
`observation[camera]["rgb"]` (H, W, 3) uint8, `pointcloud` (N, 6) xyz + rgb, `joint_action["vector"]` (14,)
for aloha-agilex: [left arm 6 joints, left gripper, right arm 6, right gripper], grippers 1 = open. A parent
reads them by its observation keys: an rgb key names a camera (`head_camera`, `left_camera`,
`right_camera`, `front_camera`), a pointcloud key reads `pointcloud`, `agent_pos` reads the joint vector and
a language key the task's instruction.

The same policy answers RoboTwin's client/server mode (`script/eval_policy_client.py`) from gpc's own environment:
`gpc.sims.robotwin.server` holds it and `gpc.sims.robotwin.client` (copied into the policy folder) calls it.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from gpc.app.config import load_composer, resolve_path, weight_candidates

CAMERAS = ("head_camera", "left_camera", "right_camera", "front_camera")


class RoboTwinPolicy:
    """The composer, one weight candidate, and the observation history it needs (padded at the start of an
    episode by repeating the first frame, Diffusion Policy's rule). Noise is seeded by (seed, episode, chunk),
    so a rerun of the same evaluation draws the same samples."""

    def __init__(self, composer, weights, seed: int = 0):
        self.composer, self.weights, self.seed = composer, weights, int(seed)
        self.features = list({f.key: f for parent in composer.parents for f in parent.spec.inputs}.values())
        for f in self.features:
            if f.kind == "rgb" and f.key not in CAMERAS:
                raise ValueError(f"parent input {f.key!r}: an rgb input must name a RoboTwin camera {CAMERAS}")
            if f.kind == "low_dim" and f.key != "agent_pos":
                raise ValueError(f"parent input {f.key!r}: the only state RoboTwin gives is 'agent_pos' "
                                 "(joint_action vector)")
        self.frames: list[dict[str, np.ndarray]] = []
        self.episode, self.chunk = 0, 0  # episode counts reset_model calls

    def check_arms(self, left_arm_dim: Any, right_arm_dim: Any, source: str) -> None:
        """Refuse an embodiment whose joint vector (left arm, left gripper, right arm, right gripper) is not the
        composition's action: RoboTwin would fail mid-episode, indexing past the chunk's last joint."""
        try:
            left, right = int(left_arm_dim), int(right_arm_dim)
        except (TypeError, ValueError):
            raise ValueError(f"{source}: left_arm_dim, right_arm_dim: need two integers, got "
                             f"{left_arm_dim!r}, {right_arm_dim!r}") from None
        if left + right + 2 != self.composer.action_dim:
            raise ValueError(f"{source}: the composition's actions have {self.composer.action_dim} dims, but this "
                             f"embodiment's joint vector has left_arm_dim + right_arm_dim + 2 = {left} + {right} + 2 "
                             f"= {left + right + 2}: its parents were trained for another embodiment")

    def inputs(self) -> dict[str, Any]:
        """What of RoboTwin's observation the parents read, so that a remote client sends only that."""
        return {"cameras": [f.key for f in self.features if f.kind == "rgb"],
                "pointcloud": any(f.kind == "pointcloud" for f in self.features),
                "action_dim": self.composer.action_dim}

    def reset(self) -> None:
        self.frames, self.episode, self.chunk = [], self.episode + 1, 0

    def encode_obs(self, observation: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """One frame of every input the parents read, shaped as they were trained."""
        joints = joint_vector(observation, self.composer.action_dim)
        frame = {}
        for f in self.features:
            if f.kind == "rgb":
                frame[f.key] = camera_image(observation, f.key, tuple(f.shape[1:]))
            elif f.kind == "pointcloud":
                frame[f.key] = point_cloud(observation, tuple(f.shape))
            elif f.kind == "low_dim":
                frame[f.key] = joints
        return frame

    def update_obs(self, observation: Mapping[str, Any]) -> None:
        frame = self.encode_obs(observation)
        self.frames = self.frames[1:] + [frame] if self.frames else [frame] * self.composer.n_obs_steps

    def get_action(self, instruction: str | None = None) -> np.ndarray:
        """(n_action_steps, action_dim) float64 joint targets from the frames seen so far."""
        if not self.frames:
            raise RuntimeError("get_action before any observation: call update_obs first")
        batch: dict[str, Any] = {k: np.stack([frame[k] for frame in self.frames])[None] for k in self.frames[0]}
        for f in self.features:
            if f.kind == "language":
                batch[f.key] = [instruction or ""]
        noise_seed = int(np.random.SeedSequence([self.seed, self.episode, self.chunk]).generate_state(1)[0])
        self.chunk += 1
        actions = self.composer.act(batch, self.weights, [noise_seed])[0, 0].double().cpu().numpy()
        if not np.isfinite(actions).all():  # never executed: RoboTwin would drive the arms to NaN
            raise FloatingPointError(f"the composition's action chunk {self.episode}/{self.chunk - 1} holds NaN or "
                                     "inf; check the parents' checkpoints and normalizers")
        return actions


def joint_vector(observation: Mapping[str, Any], action_dim: int) -> np.ndarray:
    """`joint_action.vector`, checked: the actions are joint targets of the same length."""
    try:
        vector = np.asarray(observation["joint_action"]["vector"], dtype=np.float32)
    except (KeyError, TypeError):
        raise KeyError("observation['joint_action']['vector'] is missing: set data_type.qpos: true in the "
                       "RoboTwin task config") from None
    if vector.shape != (action_dim,):
        raise ValueError(f"observation['joint_action']['vector'] has shape {vector.shape}; the composition's "
                         f"actions have {action_dim} dims: its parents were trained for another embodiment")
    if not np.isfinite(vector).all():
        raise ValueError("observation['joint_action']['vector'] holds NaN or inf")
    return vector


def camera_image(observation: Mapping[str, Any], camera: str, size: tuple[int, int]) -> np.ndarray:
    try:
        rgb = np.asarray(observation["observation"][camera]["rgb"])
    except KeyError:
        raise KeyError(f"observation['observation'][{camera!r}]['rgb'] is missing: enable that camera's rgb "
                       "in the RoboTwin task config") from None
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"observation['observation'][{camera!r}]['rgb'] has shape {rgb.shape}; expected (H, W, 3)")
    if rgb.shape[:2] != size:  # torch's area resize (OpenCV's INTER_AREA when shrinking): no OpenCV needed here
        image = torch.from_numpy(np.array(rgb, dtype=np.float32)).permute(2, 0, 1)[None]
        rgb = F.interpolate(image, size=size, mode="area").round().clamp(0, 255)[0].permute(1, 2, 0).numpy()
    return rgb.astype(np.uint8)


def point_cloud(observation: Mapping[str, Any], shape: tuple[int, int]) -> np.ndarray:
    points = np.asarray(observation.get("pointcloud", []), dtype=np.float32)
    if points.ndim != 2 or points.shape[0] != shape[0] or points.shape[1] < shape[1]:
        raise ValueError(f"observation['pointcloud'] has shape {points.shape}; the parent reads {shape}: set "
                         "data_type.pointcloud: true and pcd_down_sample_num in the RoboTwin task config")
    if not np.isfinite(points[:, :shape[1]]).all():
        raise ValueError("observation['pointcloud'] holds NaN or inf")
    return points[:, :shape[1]]


def get_model(usr_args: Mapping[str, Any]) -> RoboTwinPolicy:
    """`usr_args` (deploy_policy.yml plus overrides): `compose` (a gpc composition YAML), optional `weights`
    (one vector; default the composition's), `device` (default the composition's), RoboTwin's `seed`, and the
    `left_arm_dim` / `right_arm_dim` that `eval_policy.py` adds from the embodiment (checked against the
    composition's action; its server mode does not add them, so the server checks the first observation)."""
    source = str(usr_args.get("compose") or "")
    if not source:
        raise ValueError("deploy_policy.yml: compose: name a gpc composition YAML")
    path = resolve_path(source)
    if not path.is_file():
        raise ValueError(f"deploy_policy.yml: compose: {source} does not exist")
    config = OmegaConf.load(path)
    if usr_args.get("device"):
        config.device = str(usr_args["device"])
    weights = weight_candidates(usr_args.get("weights") or config.get("weights"), len(config.parents), source)
    if len(weights) != 1:
        raise ValueError(f"{source}: weights: RoboTwin evaluates one weight vector, got {len(weights)}")
    model = RoboTwinPolicy(load_composer(config, source, path.parent), weights, int(usr_args.get("seed") or 0))
    if "left_arm_dim" in usr_args or "right_arm_dim" in usr_args:
        model.check_arms(usr_args.get("left_arm_dim"), usr_args.get("right_arm_dim"), source)
    return model


def encode_obs(observation: Mapping[str, Any]) -> Mapping[str, Any]:
    """RoboTwin's hook; the model picks what it needs from the raw observation."""
    return observation


def eval(TASK_ENV, model: RoboTwinPolicy, observation: Mapping[str, Any]) -> None:  # noqa: A001 - RoboTwin's name
    """One chunk: predict from the history, then execute it action by action, observing after each."""
    if not model.frames:
        model.update_obs(encode_obs(observation))
    for action in model.get_action(TASK_ENV.get_instruction()):
        if getattr(TASK_ENV, "eval_success", False) or TASK_ENV.take_action_cnt >= TASK_ENV.step_lim:
            return
        TASK_ENV.take_action(action, action_type="qpos")
        model.update_obs(encode_obs(TASK_ENV.get_obs()))


def reset_model(model: RoboTwinPolicy) -> None:
    model.reset()
