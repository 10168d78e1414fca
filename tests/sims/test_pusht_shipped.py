"""The shipped PushT compositions load from their YAML and act on a real PushT observation."""

import numpy as np
import pytest

from gpc.sims.pusht.env import make_env
from gpc.sims.pusht.variants import make_variant_env


@pytest.mark.parametrize("name, keys", [("pusht", ("keypoint", "state")),
                                        ("pusht_image", ("keypoint", "state", "image", "agent_pos")),
                                        ("pusht_hint_plain", ("keypoint", "state")),
                                        ("pusht_hint_sgfd", ("keypoint", "state"))])
def test_shipped_composition_loads_and_acts_on_a_pusht_observation(name, keys, act_with_shipped):
    env = make_env(obs_keys=keys) if "hint" not in name else make_variant_env(None, obs_keys=keys)
    obs, _ = env.reset(seed=100000)
    composer, actions = act_with_shipped(name, obs)
    assert len({p.spec.kind for p in composer.parents}) == 2  # diffusion and flow parents together
    assert actions.shape == (1, 1, composer.layout.n_action_steps, 2)
    assert np.isfinite(actions).all() and (actions > -50).all() and (actions < 562).all()
