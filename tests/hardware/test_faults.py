"""Faults during a deployment on the simulated arm: no unsafe command ever reaches the arm, and it holds fast.

Each test deploys the composed rehearsal policy, lets it move the arm, injects one fault (through a policy
wrapper or the simulator's hooks), and then checks every command the arm received against the joint limits,
the velocity limit and the maximum jump. "Holds within one control period" is checked on the safety layer's
own event log (onset no later than one period, plus an allowance for loopback and scheduling on a loaded
2-core machine, after the fault became observable) and on the arm (nothing but the held command after it).
"""

import json
import threading
import time

import numpy as np
import pytest

from gpc.hardware.robot import robot_config

pytest.importorskip("roslibpy")
pytest.importorskip("pybullet")

SOURCE = "configs/deploy.yaml"
SLACK = 0.05  # s, on top of one control period
PERIOD = 0.02
WARM = 25  # commands (half a second) of normal motion before the fault


class FaultyPolicy:
    """Wraps the deployed policy (pass `wrap` as `wrap_policy`): once `fault` is set, `corrupt(actions,
    observation)` replaces its chunks; `first_fault` is when the first corrupt chunk was handed back."""

    def __init__(self, corrupt):
        self.corrupt = corrupt
        self.fault = threading.Event()
        self.first_fault = None

    def wrap(self, policy):
        self.policy, self.n_obs_steps = policy, policy.n_obs_steps
        return self

    def __call__(self, observation):
        actions = self.policy(observation)
        if not self.fault.is_set():
            return actions
        actions = self.corrupt(actions.copy(), observation)
        if self.first_fault is None:
            self.first_fault = time.monotonic()
        return actions


def onset(summary, kind) -> float:
    for line in open(f"{summary['log_dir']}/safety_events.jsonl"):
        event = json.loads(line)
        if event["kind"] == kind:
            return event["monotonic"]
    raise AssertionError(f"no {kind} event; events: {summary['safety_events']}")


def assert_holds(commands, start, end=float("inf")):
    """Every command received in (start, end] repeats the last one received before `start`."""
    before = [c for c in commands if c.received <= start]
    during = [c for c in commands if start < c.received <= end]
    assert before and during, "no commands around the fault"
    moving = [c for c in during if not np.array_equal(c.positions, before[-1].positions)]
    assert not moving, f"{len(moving)} of {len(during)} commands moved the arm after the fault"


def deploy_with_fault(sim, deploy_config, start_deploy, corrupt=None, overrides=()):
    config = deploy_config("duration_s=3", *overrides)
    faulty = FaultyPolicy(corrupt) if corrupt is not None else None
    deployment = start_deploy(config, faulty.wrap if faulty is not None else None)
    assert sim.wait_for_commands(WARM, 30), "the arm got no commands before the fault"
    return config, faulty, deployment


def corrupt_and_expect_hold(sim, deploy_config, start_deploy, assert_safe, corrupt, kind):
    """Deploy, corrupt the policy's chunks, and check that the `kind` hold came within one control period,
    that every command was safe and that the arm held after it; returns the commands the arm received."""
    config, faulty, deployment = deploy_with_fault(sim, deploy_config, start_deploy, corrupt)
    faulty.fault.set()
    summary = deployment.join()
    detected = onset(summary, kind)
    assert detected - faulty.first_fault <= PERIOD + SLACK
    commands = sim.commands()
    assert_safe(commands, robot_config(config.robot, SOURCE).limits)
    assert_holds(commands, detected + SLACK)
    return commands


def test_a_nan_action_holds_the_arm(sim, deploy_config, start_deploy, assert_safe):
    def nan(actions, observation):
        actions[:, 1] = np.nan
        return actions

    commands = corrupt_and_expect_hold(sim, deploy_config, start_deploy, assert_safe, nan, "non_finite")
    assert not any(np.isnan(c.positions).any() for c in commands)


def test_an_action_beyond_the_joint_limits_is_clamped_to_the_limit(sim, deploy_config, start_deploy, assert_safe):
    upper = [0.6, 1.7326, 2.8671, -0.1, 2.8671, 3.7223, 2.8671]

    def beyond(actions, observation):
        actions[:, 0] = observation.joints[-1].positions[0] + 0.25  # keeps pushing joint 1 past 0.6
        return actions

    config, faulty, deployment = deploy_with_fault(sim, deploy_config, start_deploy, beyond,
                                                   [f"robot.joint_limits.upper={upper}"])
    faulty.fault.set()
    summary = deployment.join()
    limits = robot_config(config.robot, SOURCE).limits
    commands = sim.commands()
    assert_safe(commands, limits)
    joint1 = np.array([c.positions[0] for c in commands])
    assert joint1.max() == pytest.approx(0.6) and commands[-1].positions[0] == pytest.approx(0.6)
    assert sim.joint_positions()[0] <= 0.6 + 0.01
    assert summary["safety_events"].get("position_limit", 0) >= 1 and "jump" not in summary["safety_events"]


def test_a_huge_jump_holds_the_arm(sim, deploy_config, start_deploy, assert_safe):
    def far(actions, observation):
        actions[:, 2] = observation.joints[-1].positions[2] + 1.0
        return actions

    corrupt_and_expect_hold(sim, deploy_config, start_deploy, assert_safe, far, "jump")


@pytest.mark.parametrize("hold_while_estopped", [False, True])
def test_the_estop_stops_the_arm_until_restart(sim, deploy_config, start_deploy, assert_safe, hold_while_estopped):
    config, _, deployment = deploy_with_fault(sim, deploy_config, start_deploy, overrides=[
        f"robot.hold_while_estopped={str(hold_while_estopped).lower()}"])
    pressed = time.monotonic()
    sim.publish("/estop", {"data": True}, latch=True)
    time.sleep(0.3)
    sim.publish("/estop", {"data": False}, latch=True)  # released: still stopped (a press latches until restart)
    summary = deployment.join()
    limits = robot_config(config.robot, SOURCE).limits
    detected = onset(summary, "estop")
    assert detected - pressed <= PERIOD + SLACK
    commands = sim.commands()
    assert_safe(commands, limits)
    assert summary["safety_events"]["estop"] == 1
    if hold_while_estopped:
        assert_holds(commands, detected + SLACK)
    else:  # nothing at all goes out
        assert not [c for c in commands if c.received > detected + SLACK]


def test_a_stalled_observation_stream_holds_the_arm_until_it_resumes(sim, deploy_config, start_deploy, assert_safe):
    config, _, deployment = deploy_with_fault(sim, deploy_config, start_deploy)
    limits = robot_config(config.robot, SOURCE).limits
    stalled = time.monotonic()
    sim.stall(True)
    time.sleep(0.6)
    resumed = time.monotonic()
    sim.stall(False)
    summary = deployment.join()
    detected = onset(summary, "stale_observation")
    assert detected - stalled <= limits.watchdog_timeout + PERIOD + SLACK
    commands = sim.commands()
    assert_safe(commands, limits)
    assert_holds(commands, detected + SLACK, resumed)
    after = [c for c in commands if c.received > resumed + 0.5]
    assert after and not np.array_equal(after[-1].positions, after[0].positions), "motion did not resume"


@pytest.mark.parametrize("resume", [False, True])
def test_a_dropped_connection_holds_the_arm_until_restart_or_resumes_safely_if_allowed(
        sim, deploy_config, start_deploy, assert_safe, resume):
    config, _, deployment = deploy_with_fault(sim, deploy_config, start_deploy, overrides=[
        "duration_s=4.5", f"robot.resume_after_reconnect={str(resume).lower()}"])
    limits = robot_config(config.robot, SOURCE).limits
    dropped = sim.drop_connections()
    summary = deployment.join()
    assert onset(summary, "connection_lost") - dropped <= PERIOD + SLACK
    assert summary["disconnects"] == 1
    commands = sim.commands()
    assert_safe(commands, limits)
    before = [c for c in commands if c.received <= dropped]
    after = [c for c in commands if c.received > dropped]
    assert after, "no command after reconnecting"
    # While disconnected the arm kept the last command: it is there when the first command after arrives,
    assert np.abs(after[0].measured - before[-1].positions).max() < 0.02
    # and the first command after holds the last one written (within a step: it may be lost with the
    # connection), or starts from it at rest.
    step = limits.velocity * limits.period + limits.acceleration * limits.period ** 2
    assert np.all(np.abs(after[0].positions - before[-1].positions) <= step + 1e-9)
    moved = not all(np.array_equal(c.positions, before[-1].positions) for c in after)
    assert moved == resume  # by default the arm holds until restart: an e-stop may have been lost meanwhile
