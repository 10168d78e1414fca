"""The shipped bimanual composition (RGB diffusion + point-cloud diffusion) loads from its YAML and acts on a
real transfer-cube observation, as RoboTwin's DP + DP3 pair would."""

import os

import numpy as np
import pytest

if not os.environ.get("DISPLAY"):
    os.environ.setdefault("MUJOCO_GL", "egl")
pytest.importorskip("gym_aloha")

from gpc.sims.aloha.env import make_env  # noqa: E402


def test_shipped_aloha_composition_acts_on_a_transfer_cube_observation(act_with_shipped):
    obs, _ = make_env("transfer_cube").reset(seed=100000)
    composer, actions = act_with_shipped("aloha_transfer_cube", obs, [[1.0, 0.0], [0.5, 0.5]])
    assert [p.spec.prediction_type for p in composer.parents] == ["epsilon", "sample"]
    assert actions.shape == (1, 2, composer.layout.n_action_steps, 14)
    assert np.isfinite(actions).all() and (np.abs(actions) < np.pi).all()
