"""A composed gpc policy behind RoboTwin 2.0's policy interface (`policy/<Name>/deploy_policy.py`).

RoboTwin's `script/eval_policy.py` calls `get_model(usr_args)` once, `reset_model(model)` before every
episode and `eval(TASK_ENV, model, observation)` once per action chunk; `eval` must execute the chunk
itself with `TASK_ENV.take_action(action, action_type="qpos")`. Observations follow `TASK_ENV.get_obs()`:
`observation[camera]["rgb"]` (H, W, 3) uint8, `pointcloud` (N, 6) xyz + rgb, `joint_action["vector"]` (14,)
for aloha-agilex: [left arm 6 joints, left gripper, right arm 6, right gripper], grippers 1 = open. A parent
reads them by its observation keys: an rgb key names a camera (`head_camera`, `left_camera`,
`right_camera`, `front_camera`), a pointcloud key reads `pointcloud`, `agent_pos` reads the joint vector and
a language key the task's instruction.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
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

    def reset(self) -> None:
        self.frames, self.episode, self.chunk = [], self.episode + 1, 0

    def encode_obs(self, observation: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """One frame of every input the parents read, shaped as they were trained."""
        frame = {}
        for f in self.features:
            if f.kind == "rgb":
                frame[f.key] = camera_image(observation, f.key, tuple(f.shape[1:]))
            elif f.kind == "pointcloud":
                frame[f.key] = point_cloud(observation, tuple(f.shape))
            elif f.kind == "low_dim":
                frame[f.key] = np.asarray(observation["joint_action"]["vector"], dtype=np.float32)
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
        actions = self.composer.act(batch, self.weights, [noise_seed])
        return actions[0, 0].double().cpu().numpy()


def camera_image(observation: Mapping[str, Any], camera: str, size: tuple[int, int]) -> np.ndarray:
    try:
        rgb = np.asarray(observation["observation"][camera]["rgb"])
    except KeyError:
        raise KeyError(f"observation['observation'][{camera!r}]['rgb'] is missing: enable that camera's rgb "
                       "in the RoboTwin task config") from None
    if rgb.shape[:2] != size:
        import cv2

        rgb = cv2.resize(rgb, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    return rgb.astype(np.uint8)


def point_cloud(observation: Mapping[str, Any], shape: tuple[int, int]) -> np.ndarray:
    points = np.asarray(observation.get("pointcloud", []), dtype=np.float32)
    if points.ndim != 2 or points.shape[0] != shape[0] or points.shape[1] < shape[1]:
        raise ValueError(f"observation['pointcloud'] has shape {points.shape}; the parent reads {shape}: set "
                         "data_type.pointcloud: true and pcd_down_sample_num in the RoboTwin task config")
    return points[:, :shape[1]]


def get_model(usr_args: Mapping[str, Any]) -> RoboTwinPolicy:
    """`usr_args` (deploy_policy.yml plus overrides): `compose` (a gpc composition YAML), optional `weights`
    (one vector; default the composition's), `device` (default the composition's) and RoboTwin's `seed`."""
    source = str(usr_args.get("compose") or "")
    if not source:
        raise ValueError("deploy_policy.yml: compose: name a gpc composition YAML")
    config = OmegaConf.load(resolve_path(source))
    if usr_args.get("device"):
        config.device = str(usr_args["device"])
    weights = weight_candidates(usr_args.get("weights") or config.get("weights"), len(config.parents), source)
    if len(weights) != 1:
        raise ValueError(f"{source}: weights: RoboTwin evaluates one weight vector, got {len(weights)}")
    return RoboTwinPolicy(load_composer(config, source), weights, int(usr_args.get("seed") or 0))


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
