"""Shared by the shipped-composition tests: load a composition YAML from configs/compose and act once."""

import numpy as np
import pytest
from omegaconf import OmegaConf

from gpc.app.config import PROJECT_ROOT, load_composition


@pytest.fixture
def act_with_shipped():
    """`act(name, obs, weights=None) -> (composer, actions)`: one chunk for a single env observation, seen
    as two identical frames; `weights` defaults to the composition's own."""

    def act(name, obs, weights=None):
        source = PROJECT_ROOT / "configs" / "compose" / f"{name}.yaml"
        composer, default = load_composition(OmegaConf.load(source), str(source))
        history = {k: np.stack([v, v])[None] for k, v in obs.items()}  # (1 env, 2 frames, ...)
        return composer, composer.act(history, default if weights is None else weights, seeds=[0]).numpy()

    return act
