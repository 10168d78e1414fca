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

from gpc.hardware.robot_config import robot_config

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


def motion_after(commands, start, end=float("inf")) -> bool:
    window = [c.positions for c in commands if start < c.received <= end]
    return len(window) > 1 and not all(np.array_equal(p, window[0]) for p in window)


@pytest.mark.parametrize("fault", ["malformed", "silent"])
def test_an_estop_that_cannot_be_trusted_stops_the_arm_until_a_well_formed_release(
        sim, deploy_config, start_deploy, assert_safe, caplog, fault):
    """A malformed e-stop message stops the arm at once, a silent e-stop topic after its timeout; nothing is
    sent meanwhile (hold_while_estopped: false), and the next well-formed data false releases it."""
    config, _, deployment = deploy_with_fault(sim, deploy_config, start_deploy, overrides=["duration_s=3.5"])
    timeout = robot_config(config.robot, SOURCE).estop.timeout_s
    stopped = time.monotonic()
    sim.estop_heartbeat(False)
    if fault == "malformed":
        sim.publish("/estop", {"data": None})
    time.sleep(1.0)
    released = time.monotonic()
    sim.estop_heartbeat(True)
    summary = deployment.join()
    detected = onset(summary, "estop")
    assert detected - stopped <= (PERIOD if fault == "malformed" else timeout + PERIOD) + SLACK
    commands = sim.commands()
    assert_safe(commands, robot_config(config.robot, SOURCE).limits)
    assert not [c for c in commands if detected + SLACK < c.received <= released]  # nothing went out
    assert motion_after(commands, released + 0.3), "the arm did not move again after the release"
    cause = "a malformed message" if fault == "malformed" else f"no well-formed message for {timeout} s"
    assert len([r for r in caplog.records if f"e-stop on /estop engaged: {cause}" in r.getMessage()]) == 1
    assert len([r for r in caplog.records if "released by a well-formed data: false" in r.getMessage()]) == 2


def test_a_refused_estop_subscription_stops_gpc_deploy_before_anything_is_sent(sim, deploy_config, capsys):
    from gpc.app.cli import main as gpc_main

    sim.refuse_subscription("/estop")
    config = deploy_config()
    assert gpc_main(["deploy", f"port={sim.port}", f"log_dir={config.log_dir}", "connect_timeout_s=3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{SOURCE}: robot.topics.estop: the e-stop on /estop is engaged: the bridge refused the " \
                              "subscription" in err[0], err
    assert sim.commands() == []


def test_without_an_estop_topic_the_robot_yaml_says_so(sim, deploy_config, start_deploy, caplog):
    summary = start_deploy(deploy_config("duration_s=1", "robot.topics.estop=no_estop_topic")).join()
    assert summary["commands_published"] > 20
    assert "no e-stop topic (the robot YAML says topics.estop: no_estop_topic)" in caplog.text


def test_the_watchdog_holds_on_its_own_clock_while_the_control_loop_is_stalled(
        sim, deploy_config, start_deploy, assert_safe, monkeypatch):
    """The control loop stalls for half a second just as the joint states stop: the watchdog thread detects
    the stale observation on time and holds (before, nothing happened until the loop resumed)."""
    from gpc.hardware.control_loop import ActionSchedule

    stall, action_at = threading.Event(), ActionSchedule.action_at

    def stalling(self, now):
        if stall.is_set():
            stall.clear()
            time.sleep(0.5)
        return action_at(self, now)

    monkeypatch.setattr(ActionSchedule, "action_at", stalling)
    config, _, deployment = deploy_with_fault(sim, deploy_config, start_deploy)
    limits = robot_config(config.robot, SOURCE).limits
    stopped = time.monotonic()
    stall.set()
    sim.stall(True)
    time.sleep(0.6)
    sim.stall(False)
    summary = deployment.join()
    detected = onset(summary, "stale_observation")
    assert detected - stopped <= limits.watchdog_timeout + 2 * PERIOD + SLACK
    assert summary["watchdog_holds"] > 5
    commands = sim.commands()
    assert_safe(commands, limits)
    during = [c for c in commands if detected + SLACK < c.received <= stopped + 0.45]  # the loop is still stuck
    assert len(during) > 5, "no holds while the control loop was stalled"
    assert_holds(commands, detected + SLACK, stopped + 0.45)


def test_a_frozen_joint_state_stream_holds_the_arm(sim, deploy_config, start_deploy, assert_safe):
    config, _, deployment = deploy_with_fault(sim, deploy_config, start_deploy)
    limits = robot_config(config.robot, SOURCE).limits
    frozen = time.monotonic()
    sim.joint_state_fault("freeze")
    time.sleep(0.6)
    resumed = time.monotonic()
    sim.joint_state_fault(None)
    summary = deployment.join()
    detected = onset(summary, "stale_observation")
    assert detected - frozen <= limits.watchdog_timeout + PERIOD + SLACK
    assert summary["dropped_messages"]["/joint_states: frozen"] >= 2
    commands = sim.commands()
    assert_safe(commands, limits)
    assert_holds(commands, detected + SLACK, resumed)
    assert motion_after(commands, resumed + 0.5), "motion did not resume"


CAMERA = {"camera": "raw", "camera_size": "148x108", "camera_scale": 4, "camera_rate": 30,  # 1 MB messages
          "camera_still": True}


@pytest.mark.parametrize("sim", [CAMERA], indirect=True)
def test_large_frames_neither_stall_the_loop_nor_bunch_the_commands(sim, deploy_config, start_deploy, assert_safe):
    """A 1 MB camera at 30 Hz, 16 MB frames on the joint states, an oversized camera frame and a binary frame,
    while a fast policy rides the velocity limit: the large frames are dropped unparsed, the connection
    stays, and the commands arrive on time and within the limits."""
    camera = "[{name:front,topic:/camera/image,type:sensor_msgs/Image,max_bytes:2097152}]"
    config, _, deployment = deploy_with_fault(sim, deploy_config, start_deploy, overrides=[
        f"robot.topics.cameras={camera}", "policy.speed=2.0", "policy.time_constant_s=0.1"])
    start = time.monotonic()
    for _ in range(2):
        sim.send_binary(1_000_000)
        sim.send_large("/joint_states", 16_000_000)
        time.sleep(0.3)
        sim.send_large("/camera/image", 4_000_000)
        time.sleep(0.3)
    end = time.monotonic()
    summary = deployment.join()
    assert summary["disconnects"] == 0
    assert {"/joint_states: too large", "/camera/image: too large", "bridge: binary frame"} <= set(
        summary["dropped_messages"])
    commands = sim.commands()
    assert_safe(commands, robot_config(config.robot, SOURCE).limits)
    received = np.array([c.received for c in commands if start < c.received <= end + 0.1])
    assert np.diff(received).max() < 0.1, f"a {np.diff(received).max() * 1e3:.0f} ms gap between commands"
    assert "stale_observation" not in summary["safety_events"]
