"""PushT variants for SGFD: relabelled demos carry a hint and an env label; the held-out hint is noise."""

import numpy as np
import pytest

pytest.importorskip("gym_pusht")

from gpc.policies.data.replay_buffer import read_replay_buffer, write_replay_buffer  # noqa: E402
from gpc.sims.pusht.variants import add_hints, make_variant_env  # noqa: E402


def test_add_hints_labels_episodes_and_tracks_actions_with_each_envs_noise(tmp_path):
    rng = np.random.default_rng(0)
    ends = np.array([300, 600, 900, 1200])
    action = rng.uniform(100, 400, (1200, 2)).astype(np.float32)
    write_replay_buffer(tmp_path / "src.zarr", {"action": action, "keypoint": np.zeros((1200, 20), np.float32)}, ends)
    summary = add_hints(tmp_path / "src.zarr", tmp_path / "out.zarr", noise_px=(5.0, 40.0))
    assert summary["per_env"] == [2, 2]
    out = read_replay_buffer(tmp_path / "out.zarr")
    np.testing.assert_array_equal(out.meta["env"], [0, 1, 0, 1])
    np.testing.assert_array_equal(out["action"], action)
    error = out["hint"] - action
    for env, noise in ((0, 5.0), (1, 40.0)):
        steps = np.concatenate([np.arange(s, e) for s, e, k in zip(np.r_[0, ends[:-1]], ends, out.meta["env"])
                                if k == env])
        assert abs(error[steps].std() - noise) < 0.15 * noise


def test_heldout_env_hint_is_seeded_noise_independent_of_the_task():
    env = make_variant_env(None, obs_keys=("keypoint",))
    obs, _ = env.reset(seed=3)
    assert set(obs) == {"keypoint", "hint"} and env.observation_space["hint"].contains(obs["hint"])
    again, _ = env.reset(seed=3)
    np.testing.assert_array_equal(obs["hint"], again["hint"])
    hints = [env.step(np.array([256.0, 256.0]))[0]["hint"] for _ in range(200)]
    assert 100 < np.mean(hints) < 400 and np.std(hints) > 100  # uniform over the table, not the action


def test_training_variant_hint_is_the_experts_action_plus_its_noise():
    env = make_variant_env(5.0, obs_keys=("keypoint",))
    obs, _ = env.reset(seed=0)
    errors = []
    for _ in range(50):
        action = env.expert(env.unwrapped)  # the expert is deterministic given the state
        errors.append(obs["hint"] - action)
        obs, *_ = env.step(action)
    assert 2.5 < np.std(errors) < 10
