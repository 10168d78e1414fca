"""A hostile or broken bridge against the real roslibpy client (RosRobot) and the safety layer, with the
simulated arm in a process of its own stamping every command it receives: what the arm gets, and when."""

import logging
import threading
import time

import numpy as np
import pytest

from gpc.hardware.robot import RobotConnectionError, RosRobot
from gpc.hardware.safety import SafetyLayer

from .conftest import JITTER, check_arrivals
from .helpers import sim_arm

pytest.importorskip("roslibpy")
pytest.importorskip("pybullet")


@pytest.fixture
def robot(sim):
    """A RosRobot on the simulated arm, its first joint state in and its e-stop released."""
    with RosRobot(sim_arm(), "127.0.0.1", sim.port) as connected:
        connected.connect(5)
        connected.wait_for_joint_state(5)
        connected.wait_for_estop(5)
        yield connected


def no_traceback(caplog) -> None:
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    assert "Traceback" not in caplog.text


def test_late_ticks_and_bunched_sends_stay_within_the_limits_as_the_arm_receives_them(sim, robot, assert_arrivals):
    """Drive joint 1 at the velocity limit while ticks come late, twice in a row, and while roslibpy's loop
    thread (which writes the commands) is blocked for 100 ms: before this, the commands queued behind it
    went out back to back, full steps well under a millisecond apart."""
    limits, period = robot.config.limits, robot.config.period
    layer = SafetyLayer(limits, robot)
    first = len(sim.commands())
    direction, now = 1.0, time.monotonic()
    for k in range(150):
        if k % 40 == 0:
            direction = -direction
        if k in (30, 70, 110):
            robot.ros.call_soon(lambda: time.sleep(0.1))  # the transport's thread is busy (a large frame)
        delay = {45: 0.019, 85: 0.015}.get(k, 0.0)  # late ticks; the next one comes on time, 1 or 5 ms later
        now += period
        time.sleep(max(now + delay - time.monotonic(), 0.0))
        measured = robot.latest_joint_positions()[0]
        target = measured + direction * np.eye(robot.config.dof)[0] * 0.25
        layer.step(target)
        if k in (50, 90):
            layer.step(target)  # a bunched tick, 0.1 ms after the last
    commands = sim.commands(first)
    assert_arrivals(commands, limits)
    received = np.array([c.received for c in commands])
    steps = np.abs(np.diff([c.positions[0] for c in commands]))
    gaps = np.diff(received)
    assert (steps / np.maximum(gaps, 1e-3)).max() > 0.7 * limits.velocity[0]  # it did move fast
    assert gaps.min() >= limits.min_interval - 0.002  # nothing closer than min_command_interval_s (2 ms jitter)
    # the stalls and bunched ticks replaced waiting commands; the ticks 1 and 5 ms after a late one sent nothing
    assert robot.outbox.withdrawn >= 3 and layer.too_soon >= 2


def test_a_command_read_late_carries_the_stall_it_waited_through(sim, robot):
    """The arm's receive times are the measurement: when its loop is held, a command written meanwhile is
    read late, and the stall the arm reports covers that lateness."""
    layer = SafetyLayer(robot.config.limits, robot)
    first = len(sim.commands())
    layer.step(robot.latest_joint_positions()[0])
    assert sim.wait_for_commands(first + 1, 5)
    holding = threading.Thread(target=sim.hold_loop, args=(0.06,))
    holding.start()
    time.sleep(0.02)
    time.sleep(max(robot.claim().written + robot.config.period - time.monotonic(), 0.0))
    layer.step(robot.latest_joint_positions()[0])
    holding.join()
    assert sim.wait_for_commands(first + 2, 5)
    written, late = robot.claim().written, sim.commands(first + 1)[0]
    assert late.received - written > 0.02  # it was read late ...
    assert late.received - written <= late.stall + JITTER[sim.realtime]  # ... and the arm says by up to how much
    assert late.stall >= 0.03


def test_bunched_arrivals_fail_the_check_unless_the_arm_was_stalled():
    """check_arrivals, on commands made up here: two full velocity steps 1 ms apart break the limit as
    received; the same receive times pass when the arm reports that its loop was stalled before the second."""
    from gpc.hardware.rosbridge_sim import ReceivedCommand

    limits = sim_arm().limits
    step = limits.velocity * limits.period

    def arrivals(stall):
        times, positions = [0.0, 0.02, 0.021], [np.zeros(limits.dof), step / 2, step * 1.5]
        return [ReceivedCommand(t, q, q, "std_msgs/Float64MultiArray", True, s)
                for t, q, s in zip(times, positions, [0.0, stall, 0.0])]

    with pytest.raises(AssertionError, match="faster than the velocity limit"):
        check_arrivals(arrivals(0.0), limits, JITTER[True])
    check_arrivals(arrivals(0.02), limits, JITTER[True])


def test_no_message_a_bridge_sends_raises_or_drops_the_connection(sim, robot, caplog):
    caplog.set_level(logging.INFO)
    for text in ("{not json", "[1, 2, 3]", '{"op": 5}', '{"op": "publish"}', '{"op": "call_service"}',
                 '{"op": "status", "level": "error", "msg": "no such topic", "id": "subscribe:/other:9"}'):
        sim.send_text(text)
    sim.send_binary(1000)  # a binary frame used to drop the connection
    sim.send_binary(1000, text_frame=True)  # a text frame that is not UTF-8
    for msg in ([0.1, 0.2], {"name": "panda_joint1"}, {"name": ["a"], "position": ["x"]},
                {"name": list(sim.joint_names), "position": [10 ** 400] * 7}, "a string", None):
        sim.publish("/joint_states", msg)
    sim.send_large("/joint_states", 200_000)  # over its 64 KiB limit
    sim.send_large("/tf", 5_000_000)  # a topic nobody subscribed to
    time.sleep(0.3)
    after = time.monotonic()
    assert robot.wait_for_new_state(after, 1.0)  # still connected, still taking joint states
    assert robot.connected and robot.disconnects == 0 and sim.wait_for_clients(1, 1)
    no_traceback(caplog)
    assert {"bridge: not JSON", "bridge: not a publish or status message", "bridge: status error",
            "bridge: binary frame", "/joint_states: malformed", "/joint_states: too large",
            "/tf: too large"} <= set(robot.drops.counts)
    assert robot.drops.counts["/joint_states: malformed"] == 6 and robot.drops.counts["bridge: not JSON"] == 2


@pytest.mark.parametrize("fault, value, cause", [
    ("freeze", 0.0, "frozen"),
    ("backwards", 0.0, "stamp not increasing"),
    ("stamp_offset", -0.5, "stale stamp"),
    ("stamp_offset", 0.5, "future stamp"),
    ("list", 0.0, "malformed"),
])
def test_joint_states_with_bad_stamps_or_shapes_do_not_count(sim, robot, caplog, fault, value, cause):
    caplog.set_level(logging.INFO)
    sim.joint_state_fault(fault, value)
    time.sleep(0.05)
    since = time.monotonic()
    time.sleep(0.4)  # 20 joint states
    assert robot.latest_joint_positions()[1] < since  # none was taken: the observation ages (watchdog: hold)
    dropped = sum(n for key, n in robot.drops.counts.items() if key.startswith("/joint_states: "))
    assert dropped >= 15 and robot.drops.counts[f"/joint_states: {cause}"] >= 2  # (soon stale as well)
    lines = [r for r in caplog.records if f"/joint_states: {cause}" in r.getMessage()]
    assert len(lines) == 1  # one line for the episode
    no_traceback(caplog)
    sim.joint_state_fault(None)
    assert robot.wait_for_new_state(time.monotonic(), 1.0)  # good ones count again


def test_a_refused_estop_subscription_engages_the_stop(sim):
    sim.refuse_subscription("/estop")
    with RosRobot(sim_arm(), "127.0.0.1", sim.port) as robot:
        robot.connect(5)
        robot.wait_for_joint_state(5)
        with pytest.raises(RobotConnectionError, match="the bridge refused the subscription"):
            robot.wait_for_estop(2)
        assert robot.estop_engaged


@pytest.mark.parametrize("msg", [{}, {"data": None}, [True], {"data": 1}, {"data": False, "extra": 0}])
def test_an_estop_message_of_the_wrong_shape_engages_the_stop_until_a_well_formed_release(sim, robot, msg, caplog):
    sim.estop_heartbeat(False)
    sim.publish("/estop", msg)
    deadline = time.monotonic() + 0.2  # well before the 0.5 s silence timeout
    while not robot.estop_engaged:
        assert time.monotonic() < deadline, "a malformed e-stop message was ignored"
        time.sleep(0.005)
    assert "malformed" in robot.receiver.estop.cause
    assert len([r for r in caplog.records if "e-stop on /estop engaged" in r.getMessage()]) == 1
    sim.publish("/estop", {"data": False})  # the explicit release
    deadline = time.monotonic() + 1.0
    while robot.estop_engaged:
        assert time.monotonic() < deadline, "a well-formed release did not release"
        time.sleep(0.005)
    no_traceback(caplog)


def test_an_oversized_estop_message_engages_the_stop(sim, robot):
    sim.estop_heartbeat(False)
    sim.send_large("/estop", 5000)  # over the e-stop's 1 KiB limit: dropped unread
    time.sleep(0.1)
    assert robot.estop_engaged and "dropped unread (too large)" in robot.receiver.estop.cause
