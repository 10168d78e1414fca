"""LeRobot's gym-pusht observations (`environment_state`, `agent_pos`) mapped onto gpc's PushT keys (`state`,
`keypoint`): the mapping must give what gpc's own env gives for the same simulator state, or parents would act
on quantities they were not trained on."""

import numpy as np
import pytest

from gpc.sims.pusht.env import block_pose, derived_observations, make_env


def _states(n_seeds=6, steps=25):
    """(environment_state, agent_pos, state, keypoint) from gpc's env over random pushes, float32 as LeRobot sends."""
    env = make_env(obs_keys=("environment_state", "agent_pos", "state", "keypoint"))
    rng = np.random.default_rng(0)
    rows = []
    for seed in range(n_seeds):
        obs, _ = env.reset(seed=seed)
        for _ in range(steps):
            rows.append({k: v.astype(np.float32) for k, v in obs.items()})
            obs, *_ = env.step(rng.uniform(50, 450, size=2))
    env.close()
    return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


def test_derived_state_and_keypoint_match_gpc_env():
    obs = _states()
    derived = derived_observations(obs["environment_state"], obs["agent_pos"])
    np.testing.assert_allclose(derived["keypoint"], obs["keypoint"], atol=1e-3)
    np.testing.assert_allclose(derived["state"][:, :4], obs["state"][:, :4], atol=1e-3)
    turn = np.angle(np.exp(1j * (derived["state"][:, 4] - obs["state"][:, 4])))  # angles compared on the circle
    np.testing.assert_allclose(turn, 0, atol=1e-4)
    assert np.all((derived["state"][:, 4] >= 0) & (derived["state"][:, 4] < 2 * np.pi))


def test_batch_and_frame_axes_are_kept():
    obs = _states(n_seeds=2, steps=3)
    env_state = obs["environment_state"].reshape(2, 3, 16)
    derived = derived_observations(env_state, obs["agent_pos"].reshape(2, 3, 2))
    assert derived["keypoint"].shape == (2, 3, 20) and derived["state"].shape == (2, 3, 5)
    np.testing.assert_allclose(derived["keypoint"].reshape(6, 20), obs["keypoint"], atol=1e-3)


@pytest.mark.parametrize("bad, message", [
    (lambda e: e / 512, "not gym-pusht's T corners"),  # normalized units
    (lambda e: e[..., ::-1].copy(), "not gym-pusht's T corners"),  # another order
    (lambda e: e[..., :14], "16 corner coordinates"),
    (lambda e: np.where(np.arange(16) == 3, np.nan, e), "NaN or inf"),
])
def test_what_is_not_a_pusht_t_is_refused(bad, message):
    env_state = _states(n_seeds=1, steps=1)["environment_state"]
    with pytest.raises(ValueError, match=message):
        block_pose(bad(env_state))


def test_agent_pos_must_fit_environment_state():
    obs = _states(n_seeds=1, steps=2)
    with pytest.raises(ValueError, match="agent_pos"):
        derived_observations(obs["environment_state"], obs["agent_pos"][:1])
    with pytest.raises(ValueError, match="agent_pos"):
        derived_observations(obs["environment_state"], np.full_like(obs["agent_pos"], np.inf))
