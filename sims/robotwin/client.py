"""RoboTwin's side of its client/server mode: `eval` and `reset_model` for `script/eval_policy_client.py`.

That script runs the simulator in RoboTwin's environment and hands `eval` its `ModelClient` (connected to
`gpc.sims.robotwin.server`, which holds the composition in gpc's own environment) as the model. This file imports
nothing of gpc: `gpc.sims.robotwin.install` copies it into the policy folder as `gpc_client.py`, so RoboTwin's
environment needs only numpy. Each observation sent holds only what the parents read (the server says which).
"""

import numpy as np


def is_client(model) -> bool:
    """RoboTwin's ModelClient (a socket and `call`), not a policy loaded in this process."""
    return callable(getattr(model, "call", None)) and hasattr(model, "sock")


def call(model, cmd: str, obs=None):
    """`ModelClient.call`, but a refusal raises the server's one-line reason instead of a KeyError on 'res'."""
    response = model._send_recv({"cmd": cmd, "obs": obs})
    if "error" in response:
        raise RuntimeError(f"gpc policy server: {response['error']}")
    return response["res"]


def inputs(model, observation) -> dict:
    """What the parents read, asked once per connection; the arm lengths let the server refuse an embodiment
    whose joint vector is not the composition's action before any step is taken."""
    if getattr(model, "gpc_inputs", None) is None:
        joints = observation.get("joint_action") or {}
        arms = {side: len(joints[side]) if side in joints else None for side in ("left_arm", "right_arm")}
        model.gpc_inputs = call(model, "inputs", {"left_arm_dim": arms["left_arm"], "right_arm_dim": arms["right_arm"]})
    return model.gpc_inputs


def trimmed(model, observation) -> dict:
    """The joint vector, the cameras' rgb and the point cloud that the parents read, nothing else."""
    wanted = inputs(model, observation)
    cameras = observation.get("observation") or {}
    sent = {"joint_action": {"vector": np.asarray((observation.get("joint_action") or {}).get("vector", []))},
            "observation": {c: {"rgb": np.asarray(cameras[c]["rgb"])} for c in wanted["cameras"]
                            if "rgb" in cameras.get(c, {})}}
    if wanted["pointcloud"]:
        sent["pointcloud"] = np.asarray(observation.get("pointcloud", []), dtype=np.float32)
    return sent


def eval(TASK_ENV, model, observation) -> None:  # noqa: A001 - RoboTwin's name
    """One chunk, as the in-process `eval` does: predict, then execute action by action, observing after each."""
    actions = call(model, "get_action", {"observation": trimmed(model, observation),
                                         "instruction": TASK_ENV.get_instruction()})
    for action in actions:
        if getattr(TASK_ENV, "eval_success", False) or TASK_ENV.take_action_cnt >= TASK_ENV.step_lim:
            return
        TASK_ENV.take_action(action, action_type="qpos")
        call(model, "update_obs", trimmed(model, TASK_ENV.get_obs()))


def reset_model(model) -> None:
    call(model, "reset_model")
