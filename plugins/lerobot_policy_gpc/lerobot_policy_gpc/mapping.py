"""LeRobot's observation keys and units mapped onto the keys gpc's parents read; no LeRobot needed.

LeRobot's env loop sends `observation.state`, `observation.environment_state`, `observation.image` (float, (B, 3, H,
W) in [0, 1]) and so on; a gpc parent reads its own keys (`agent_pos`, `keypoint`, ...). `keys` renames one to the
other; `derive="pusht"` adds `state` and `keypoint` computed from gym-pusht's `environment_state` and `agent_pos`
(gpc.sims.pusht.env.derived_observations), so parents trained on gpc's PushT env see the same quantities in the
same units in LeRobot's pusht env.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

PREFIX = "observation.gpc."  # the mapped keys inside LeRobot's observation dict, between processor and policy
DEFAULT_KEYS = {"observation.state": "agent_pos", "observation.environment_state": "environment_state",
                "observation.image": "image"}
DERIVATIONS = ("pusht",)


def as_array(value: Any) -> np.ndarray:
    """A tensor or array as a numpy array on the CPU."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def gpc_observation(observation: Mapping[str, Any], keys: Mapping[str, str], derive: str | None = None
                    ) -> dict[str, np.ndarray]:
    """gpc's observation batch from a LeRobot one (batch first, one frame): the renamed keys present, plus the
    derived ones; ValueError names the LeRobot key that is missing or holds NaN or inf."""
    if derive is not None and derive not in DERIVATIONS:
        raise ValueError(f"derive: {derive!r}; choose from {list(DERIVATIONS)} or leave it unset")
    out = {}
    for lerobot_key, gpc_key in keys.items():
        if lerobot_key not in observation:
            continue
        value = as_array(observation[lerobot_key])
        if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
            raise ValueError(f"{lerobot_key}: holds NaN or inf")
        out[gpc_key] = value
    if derive == "pusht":
        from gpc.sims.pusht.env import derived_observations

        lerobot_key = {gpc_key: key for key, gpc_key in keys.items()}
        missing = [lerobot_key.get(k, k) for k in ("environment_state", "agent_pos") if k not in out]
        if missing:
            raise ValueError(f"derive=pusht needs {missing} (LeRobot's pusht env with "
                             "obs_type=environment_state_agent_pos gives them)")
        try:
            out.update(derived_observations(out["environment_state"], out["agent_pos"]))
        except ValueError as err:
            raise ValueError(f"{lerobot_key['environment_state']}: {err}") from None
    return out


def check_inputs(inputs, observation: Mapping[str, np.ndarray]) -> None:
    """Every parent input (gpc.core.contract.ObservationInput) must be in the mapped batch with one frame of the
    shape it reads; ValueError says which is not and how to map it."""
    for inp in inputs:
        if inp.key not in observation:
            raise ValueError(f"a parent reads {inp.key!r}, which the mapped observation does not hold (it holds "
                             f"{sorted(observation)}); map a LeRobot key to it with --policy.observation_keys, or "
                             "set --policy.derive=pusht for gpc's PushT keys (state, keypoint)")
        frame = tuple(np.shape(observation[inp.key])[1:])
        if inp.kind != "language" and not inp.accepts(frame):
            raise ValueError(f"a parent reads {inp.key!r} as {inp.kind} of shape {inp.shape}; LeRobot gives "
                             f"shape {frame}")
