"""The pieces under the robot adapter without a network: the e-stop's states, the guard's size limits, the
one-slot outbox, and one log line per episode of dropped messages."""

import logging

import numpy as np
import pytest
from omegaconf import OmegaConf

from gpc.app.cli import CONFIG_DIR
from gpc.hardware.receive import Drops, EstopMonitor
from gpc.hardware.robot_config import EstopConfig, robot_config
from gpc.hardware.safety import SafetyLayer
from gpc.hardware.send import Outbox

pytest.importorskip("roslibpy")


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_estop_engages_until_confirmed_latches_a_press_and_releases_faults_only_on_a_well_formed_false():
    clock = Clock()
    estop = EstopMonitor(EstopConfig("/estop", timeout_s=0.5, max_bytes=1024), clock)
    assert estop.engaged and estop.cause == "not confirmed"
    clock.now += 0.6
    assert estop.engaged and "subscription not confirmed" in estop.cause
    estop.on_message({"data": False})
    assert not estop.engaged
    for bad in ({}, {"data": None}, {"data": 0}, {"data": "false"}, [False], None, {"data": False, "x": 1}):
        estop.on_message(bad)
        assert estop.engaged and "malformed" in estop.cause, bad
        estop.on_message({"data": False})
        assert not estop.engaged
    clock.now += 0.4
    assert not estop.engaged  # within the timeout
    clock.now += 0.2
    assert estop.engaged and estop.cause == "no well-formed message for 0.5 s"
    clock.now += 10
    estop.on_message({"data": False})  # the heartbeat is back
    assert not estop.engaged
    estop.refused("no such type")
    assert estop.engaged and "refused" in estop.cause
    estop.on_message({"data": False})
    estop.on_message({"data": True})
    estop.on_message({"data": False})
    assert estop.engaged and estop.cause == "pressed"  # until restart


def test_dropped_messages_are_one_log_line_per_episode(caplog):
    caplog.set_level(logging.WARNING)
    drops = Drops()
    for cause in ["stale stamp"] * 50 + ["frozen"] * 3 + ["stale stamp"]:
        drops.drop("/joint_states", cause)
    drops.good("/joint_states")
    drops.drop("/joint_states", "stale stamp")
    assert len(caplog.records) == 4
    assert drops.counts == {"/joint_states: stale stamp": 52, "/joint_states: frozen": 3}


def test_the_guard_reads_a_topic_from_the_head_of_a_message_and_holds_others_to_the_control_limit():
    from gpc.hardware.bridge import CONTROL_LIMIT, Guard

    guard = Guard({"/joint_states": 65536, "/camera": 4 << 20}, lambda *a: None, lambda m: None)
    assert guard.limit(b'{"op": "publish", "topic": "/camera", "msg": {"data": "') == ("/camera", 4 << 20)
    assert guard.limit(b'{"op":"publish","topic":"/joint_states","msg":') == ("/joint_states", 65536)
    assert guard.limit(b'{"topic": "/camera", "op": "publish", "msg": {') == (None, CONTROL_LIMIT)  # order unknown
    assert guard.limit(b'{"op": "status", "level": "error"}') == (None, CONTROL_LIMIT)
    assert guard.limit(b'{"op": "publish", "topic": "/other", "msg": {') == ("/other", CONTROL_LIMIT)


class FakeProto:
    def __init__(self):
        self.frames = []

    def sendMessage(self, payload, isBinary):  # noqa: N802, N803 - autobahn's names
        self.frames.append(payload)


def test_the_outbox_keeps_one_command_writes_it_on_the_transport_thread_and_drops_it_if_late():
    config = robot_config(OmegaConf.load(CONFIG_DIR / "robot" / "sim_arm.yaml"), "sim_arm.yaml")
    clock, queued, proto = Clock(), [], FakeProto()
    outbox = Outbox(config, lambda function: queued.append(function) or True, clock)

    class Robot:  # a SafetyLayer is the only maker of SafeCommands
        connected, estop_engaged = True, False

        def latest_joint_positions(self):
            return np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785]), clock.now

        def claim(self):
            return None

        def publish(self, command):
            self.made = command
            return True

    robot, commands = Robot(), []
    layer = SafetyLayer(config.limits, robot, clock=clock)
    for k in range(3):
        layer.step(robot.latest_joint_positions()[0] + 0.001 * k)
        commands.append(robot.made)
    assert not outbox.put(commands[0])  # not connected: nothing kept
    outbox.attach(proto)
    assert outbox.put(commands[0]) and outbox.put(commands[1])  # the second replaces the first
    assert len(queued) == 1 and outbox.withdrawn == 1
    queued.pop()()
    assert len(proto.frames) == 1 and b"data" in proto.frames[0] and outbox.written == 1
    assert outbox.claim().positions.tolist() == commands[1].positions.tolist()
    outbox.put(commands[2])
    assert outbox.claim().positions.tolist() == commands[1].positions.tolist() and outbox.withdrawn == 2
    queued.pop()()  # the claim withdrew it: nothing to write
    assert len(proto.frames) == 1
    outbox.put(commands[2])
    clock.now += 2 * config.period  # the transport's thread got to it too late
    queued.pop()()
    assert len(proto.frames) == 1 and outbox.late == 1
