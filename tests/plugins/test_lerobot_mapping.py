"""The LeRobot plugin's observation mapping (plugins/lerobot_policy_gpc), which imports without LeRobot: LeRobot's
pusht batch (`observation.state`, `observation.environment_state`, float32 tensors) must reach the parents as the
keys and units gpc's own PushT env gives."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugins" / "lerobot_policy_gpc"))
from lerobot_policy_gpc.mapping import DEFAULT_KEYS, check_inputs, gpc_observation  # noqa: E402

from gpc.core.contract import ObservationInput  # noqa: E402
from gpc.sims.pusht.env import make_env  # noqa: E402


def _lerobot_and_gpc(n=4):
    """A LeRobot-style batch of n PushT states (what its pusht env sends) and gpc's env observations of them."""
    env = make_env(obs_keys=("environment_state", "agent_pos", "state", "keypoint"))
    rows = []
    for seed in range(n):
        obs, _ = env.reset(seed=seed)
        rows.append(obs)
    env.close()
    gpc = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
    lerobot = {"observation.state": torch.from_numpy(gpc["agent_pos"]).float(),
               "observation.environment_state": torch.from_numpy(gpc["environment_state"]).float(), "task": [""] * n}
    return lerobot, gpc


def test_pusht_batch_maps_to_gpc_keys_and_units():
    lerobot, gpc = _lerobot_and_gpc()
    mapped = gpc_observation(lerobot, DEFAULT_KEYS, derive="pusht")
    assert set(mapped) == {"agent_pos", "environment_state", "state", "keypoint"}
    np.testing.assert_allclose(mapped["agent_pos"], gpc["agent_pos"], atol=1e-4)
    np.testing.assert_allclose(mapped["keypoint"], gpc["keypoint"], atol=1e-3)
    np.testing.assert_allclose(mapped["state"][:, :4], gpc["state"][:, :4], atol=1e-3)
    np.testing.assert_allclose(np.angle(np.exp(1j * (mapped["state"][:, 4] - gpc["state"][:, 4]))), 0, atol=1e-4)


def test_without_derive_only_renamed_keys():
    lerobot, _ = _lerobot_and_gpc(1)
    assert set(gpc_observation(lerobot, DEFAULT_KEYS)) == {"agent_pos", "environment_state"}
    assert set(gpc_observation(lerobot, {"observation.state": "pos"})) == {"pos"}


def test_bad_observations_are_refused_naming_the_lerobot_key():
    lerobot, _ = _lerobot_and_gpc(1)
    with pytest.raises(ValueError, match=r"observation.environment_state: holds NaN"):
        gpc_observation({**lerobot, "observation.environment_state": lerobot["observation.environment_state"] * np.nan},
                        DEFAULT_KEYS, derive="pusht")
    with pytest.raises(ValueError, match=r"observation.environment_state: environment_state: not gym-pusht's T"):
        gpc_observation({**lerobot, "observation.environment_state": lerobot["observation.environment_state"] / 512},
                        DEFAULT_KEYS, derive="pusht")
    with pytest.raises(ValueError, match=r"derive=pusht needs \['observation.environment_state'\]"):
        gpc_observation({"observation.state": lerobot["observation.state"]}, DEFAULT_KEYS, derive="pusht")
    with pytest.raises(ValueError, match="derive: 'aloha'"):
        gpc_observation(lerobot, DEFAULT_KEYS, derive="aloha")


def test_parent_inputs_are_checked_against_the_mapped_batch():
    lerobot, _ = _lerobot_and_gpc(2)
    mapped = gpc_observation(lerobot, DEFAULT_KEYS)
    check_inputs([ObservationInput("agent_pos", "low_dim", (2,))], mapped)
    with pytest.raises(ValueError, match=r"reads 'keypoint'.*--policy.derive=pusht"):
        check_inputs([ObservationInput("keypoint", "low_dim", (20,))], mapped)
    with pytest.raises(ValueError, match=r"reads 'agent_pos' as low_dim of shape \(3,\); LeRobot gives shape \(2,\)"):
        check_inputs([ObservationInput("agent_pos", "low_dim", (3,))], mapped)
