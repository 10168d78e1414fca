"""PushT with dict observations in the layouts Diffusion Policy checkpoints and datasets use.

Keys: "state" [agent_xy, block_xy, block_angle]; "keypoint" DP's low-dim vector (9 block keypoints,
then agent_xy: 20 floats); "environment_state" gym-pusht's own (the T's 8 corner keypoints, 16 floats: what
LeRobot's PushT policies read as `observation.environment_state`); "image" top-down RGB (uint8, HWC);
"agent_pos". Rendering costs ~3 ms a step, so "image" is drawn only when requested.

Start states: gym-pusht draws a seed's start state with gymnasium's generator, so seed 100000 is not
Diffusion Policy's test state 100000. `start_states="diffusion_policy"` draws DP's instead (its PushTEnv:
a legacy RandomState(seed)), for comparing with DP's 50 test seeds seed for seed.
"""

from __future__ import annotations

import functools

import gymnasium as gym
import numpy as np
import pygame
import pymunk
from gym_pusht.envs.pusht import PushTEnv, pymunk_to_shapely
from gym_pusht.envs.pymunk_override import DrawOptions
from gymnasium import spaces

OBS_KEYS = ("state", "keypoint", "environment_state", "image", "agent_pos")
START_STATES = ("gym_pusht", "diffusion_policy")


def diffusion_policy_start_state(seed: int) -> np.ndarray:
    """DP's start state for a seed: agent xy, block xy (integers), block angle."""
    rs = np.random.RandomState(seed)
    agent = [rs.randint(50, 450), rs.randint(50, 450)]
    block = [rs.randint(100, 400), rs.randint(100, 400)]
    return np.array([*agent, *block, rs.randn() * 2 * np.pi - np.pi], dtype=np.float64)


@functools.cache
def block_keypoints_local() -> np.ndarray:
    """DP's 9 block keypoints (9, 2) in the block frame.

    Diffusion Policy (`PymunkKeypointManager.create_from_pusht_env`, seed 0) farthest-point samples the
    pixels of the block drawn at (256, 300), angle 0, then adds U(0, 1) jitter. Replaying that recipe
    with gym-pusht's identical drawing code gives low-dim DP checkpoints the inputs they were trained on.
    """
    rng = np.random.default_rng(0)
    space = pymunk.Space()
    block, _ = PushTEnv.add_tee(space, (256, 300), 0)
    screen = pygame.Surface((512, 512))
    screen.fill(pygame.Color("white"))
    space.debug_draw(DrawOptions(screen))
    img = pygame.surfarray.array3d(screen).transpose(1, 0, 2)
    rows, cols = np.nonzero((img != 255).any(axis=-1))
    points = np.stack([cols, rows], axis=-1) - np.asarray(block.position)  # angle 0: frame = shift
    chosen = [points[rng.choice(len(points))]]
    for _ in range(8):
        dists = np.linalg.norm(points[:, None] - np.array(chosen)[None], axis=-1).min(axis=1)
        chosen.append(points[np.argmax(dists)])
    return np.array(chosen) + rng.uniform(0, 1, size=(9, 2))


def block_keypoints(position, angle: float) -> np.ndarray:
    """DP's block keypoints (9, 2) in the world frame for a block pose."""
    c, s = np.cos(angle), np.sin(angle)
    return block_keypoints_local() @ np.array([[c, s], [-s, c]]) + np.asarray(position)


def ordered_coverage(sim: PushTEnv) -> float:
    """gym-pusht's coverage (goal area covered by the block) with the block's shapes in a fixed order: its own
    iterates `block.shapes`, a set ordered by memory address, so a rerun's coverage differed in its last bits."""
    goal = pymunk_to_shapely(sim.get_goal_pose_body(sim.goal_pose), sim._block_shapes)
    block = pymunk_to_shapely(sim.block, sim._block_shapes)
    return goal.intersection(block).area / goal.area


@functools.cache
def tee_corners_local() -> np.ndarray:
    """The T's 8 corners (8, 2) in the block frame, in the order gym-pusht's `environment_state` lists them."""
    _, shapes = PushTEnv.add_tee(pymunk.Space(), (0, 0), 0)
    return PushTEnv.get_keypoints(shapes)


def block_pose(environment_state, tolerance: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Block position (..., 2) and angle in [0, 2 pi) (...,) from gym-pusht's `environment_state` (..., 16).

    The corners are a rigid motion of `tee_corners_local`, so the pose is their least-squares fit (2-D Procrustes);
    observations that are not such a T (off by more than `tolerance` px: another env, other units) raise ValueError
    rather than giving a parent a made-up pose.
    """
    corners = np.asarray(environment_state, dtype=np.float64)
    if corners.shape[-1] != 16:
        raise ValueError(f"environment_state: need gym-pusht's 16 corner coordinates, got shape {corners.shape}")
    if not np.all(np.isfinite(corners)):
        raise ValueError("environment_state: holds NaN or inf")
    world = corners.reshape(*corners.shape[:-1], 8, 2)
    local = tee_corners_local()
    w = world - world.mean(axis=-2, keepdims=True)
    u = local - local.mean(axis=0)
    dot = (u[:, 0] * w[..., 0] + u[:, 1] * w[..., 1]).sum(-1)
    cross = (u[:, 0] * w[..., 1] - u[:, 1] * w[..., 0]).sum(-1)
    angle = np.arctan2(cross, dot)
    c, s = np.cos(angle)[..., None], np.sin(angle)[..., None]
    rotated = np.stack([c * local[:, 0] - s * local[:, 1], s * local[:, 0] + c * local[:, 1]], axis=-1)
    position = (world - rotated).mean(axis=-2)
    error = np.abs(rotated + position[..., None, :] - world).max()
    if error > tolerance:
        raise ValueError(f"environment_state: not gym-pusht's T corners in pixels (a rigid T fits them only to "
                         f"{error:.1f} px)")
    return position, np.mod(angle, 2 * np.pi)


def derived_observations(environment_state, agent_pos) -> dict[str, np.ndarray]:
    """`state` and `keypoint` as `DictObs` gives them, from what LeRobot's gym-pusht gives (`environment_state`
    (..., 16) and `agent_pos` (..., 2)): so parents trained on gpc's PushT keys read the same quantities there."""
    agent = np.asarray(agent_pos, dtype=np.float64)
    position, angle = block_pose(environment_state)
    if agent.shape[-1] != 2 or agent.shape[:-1] != position.shape[:-1] or not np.all(np.isfinite(agent)):
        raise ValueError(f"agent_pos: need finite (..., 2) beside environment_state, got shape {agent.shape}")
    c, s = np.cos(angle)[..., None, None], np.sin(angle)[..., None, None]
    local = block_keypoints_local()  # block_keypoints, batched
    keypoints = np.concatenate([c * local[:, :1] - s * local[:, 1:], s * local[:, :1] + c * local[:, 1:]], axis=-1)
    keypoints = keypoints + position[..., None, :]
    state = np.concatenate([agent, position, angle[..., None]], axis=-1)
    keypoint = np.concatenate([keypoints.reshape(*keypoints.shape[:-2], 18), agent], axis=-1)
    return {"state": state.astype(np.float32), "keypoint": keypoint.astype(np.float32)}


class DictObs(gym.Wrapper):
    """Builds the requested observation keys from the simulator state. Info carries `coverage` and Diffusion
    Policy's per-step `score` (gym-pusht's reward, coverage / 0.95 clipped to 1) from the reset on; an
    episode's maximum score, averaged over episodes, is DP's PushT score, which is not a success rate."""

    def __init__(self, env: PushTEnv, obs_keys, image_size: int, start_states: str = "gym_pusht"):
        super().__init__(env)
        env._get_coverage = functools.partial(ordered_coverage, env)  # success and reward use it too
        if start_states not in START_STATES:
            raise ValueError(f"start_states: {start_states!r}; choose from {START_STATES}")
        self.start_states = start_states
        unknown = set(obs_keys) - set(OBS_KEYS)
        if unknown:
            raise ValueError(f"unknown PushT obs keys {sorted(unknown)}; choose from {OBS_KEYS}")
        all_spaces = {
            "state": spaces.Box(0, np.array([512, 512, 512, 512, 2 * np.pi], np.float32), dtype=np.float32),
            "keypoint": spaces.Box(0, 512, (20,), np.float32),
            "environment_state": spaces.Box(0, 512, (16,), np.float64),
            "image": spaces.Box(0, 255, (image_size, image_size, 3), np.uint8),
            "agent_pos": spaces.Box(0, 512, (2,), np.float32),
        }
        self.obs_keys = tuple(obs_keys)
        self.observation_space = spaces.Dict({k: all_spaces[k] for k in self.obs_keys})

    def _obs(self, inner_obs) -> dict[str, np.ndarray]:
        sim = self.env.unwrapped
        agent, block, angle = np.array(sim.agent.position), np.array(sim.block.position), sim.block.angle
        values = {
            "state": np.r_[agent, block, angle % (2 * np.pi)],
            "keypoint": np.r_[block_keypoints(block, angle).ravel(), agent],
            "environment_state": sim.get_keypoints(sim._block_shapes).ravel(),
            "image": inner_obs,  # drawn by the inner env only when it was built with obs_type="pixels"
            "agent_pos": agent,
        }
        return {k: values[k].astype(self.observation_space[k].dtype) for k in self.obs_keys}

    def reset(self, *, seed=None, options=None):
        options = dict(options or {})
        if self.start_states == "diffusion_policy" and seed is not None and options.get("reset_to_state") is None:
            options["reset_to_state"] = diffusion_policy_start_state(seed)
        obs, info = self.env.reset(seed=seed, options=options)
        sim = self.env.unwrapped
        info["coverage"] = sim._get_coverage()
        info["score"] = float(np.clip(info["coverage"] / sim.success_threshold, 0.0, 1.0))
        return self._obs(obs), info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        info["score"] = float(reward)
        return self._obs(obs), reward, terminated, truncated, info


def make_env(obs_keys=("state", "keypoint", "image", "agent_pos"), image_size: int = 96,
             max_episode_steps: int = 300, start_states: str = "gym_pusht") -> gym.Env:
    """One PushT env. Success (`info["is_success"]`) is coverage > 0.95, which also terminates."""
    sim = PushTEnv(obs_type="pixels" if "image" in obs_keys else "state", render_mode="rgb_array",
                   observation_width=image_size, observation_height=image_size)
    return gym.wrappers.TimeLimit(DictObs(sim, obs_keys, image_size, start_states), max_episode_steps)
