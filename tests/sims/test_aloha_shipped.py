"""The shipped bimanual composition (RGB diffusion + point-cloud diffusion) loads from its YAML and acts on a
real transfer-cube observation, as RoboTwin's DP + DP3 pair would."""

import os

import numpy as np
import pytest
from omegaconf import OmegaConf

if not os.environ.get("DISPLAY"):
    os.environ.setdefault("MUJOCO_GL", "egl")
pytest.importorskip("gym_aloha")

from gpc.config import PROJECT_ROOT, load_composition  # noqa: E402
from gpc.sims.aloha.env import make_env  # noqa: E402


def test_shipped_aloha_composition_acts_on_a_transfer_cube_observation():
    source = PROJECT_ROOT / "configs" / "compose" / "aloha_transfer_cube.yaml"
    composer, weights = load_composition(OmegaConf.load(source), str(source))
    assert [p.spec.prediction_type for p in composer.parents] == ["epsilon", "sample"]
    obs, _ = make_env("transfer_cube").reset(seed=100000)
    history = {k: np.stack([v, v])[None] for k, v in obs.items()}  # (1 env, 2 frames, ...)
    actions = composer.act(history, [[1.0, 0.0], *weights], seeds=[0]).numpy()
    assert actions.shape == (1, 2, composer.layout.n_action_steps, 14)
    assert np.isfinite(actions).all() and (np.abs(actions) < np.pi).all()
