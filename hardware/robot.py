"""A robot arm behind a rosbridge server, through roslibpy: observations in, safety-approved commands out.

`RosRobot` ties one guarded connection (gpc.hardware.bridge) to what comes in (gpc.hardware.receive:
checked joint states, camera frames, the e-stop) and what goes out (gpc.hardware.send: the command slot and
the record of what was written). Topics, types, joints and limits come from the robot YAML
(gpc.hardware.robot_config). roslibpy queues a message published while disconnected and sends it on
reconnection; a stale command must never arrive late, so commands bypass that queue and are refused
unless connected.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from gpc.hardware.receive import Drops, Frame, JointState, Receiver
from gpc.hardware.robot_config import RobotConfig
from gpc.hardware.safety import SafeCommand, Sent
from gpc.hardware.send import Outbox

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class Observation:
    """What a policy sees: the last joint states (oldest first) and the latest frames of each camera."""

    joints: tuple[JointState, ...]
    frames: Mapping[str, tuple[Frame, ...]]

    @property
    def observed(self) -> float:
        """When the newest joint state arrived: the time an action chunk computed from it refers to."""
        return self.joints[-1].received


class RobotConnectionError(ConnectionError):
    """The rosbridge server could not be reached, or sent no usable joint state (or e-stop) in time."""


_open_lock = threading.Lock()
_open_robots = 0


class RosRobot:
    """One connection to a rosbridge server for one robot. `connect()` first; `close()` at the end.

    `read_only` (a dry run) never advertises the command topic, so nothing can be published. `drops` counts
    the messages dropped (by topic and cause).
    """

    def __init__(self, config: RobotConfig, host: str, port: int, history: int = 8, read_only: bool = False):
        self.config, self.host, self.port, self.read_only = config, host, port, read_only
        self.drops = Drops()
        self.receiver = Receiver(config, self.drops, history)
        self.outbox = Outbox(config, lambda function: self.ros is not None and self.ros.call_soon(function))
        self._lock = threading.Lock()
        self._connected = False
        self.disconnects = 0
        self.ros = None

    # -- lifecycle --------------------------------------------------------------------------------------------

    def connect(self, timeout: float = 5.0) -> None:
        """Connect and subscribe; RobotConnectionError if the server does not answer within `timeout`."""
        global _open_robots
        import roslibpy

        from gpc.hardware.bridge import Guard, GuardedFactory, GuardedRos

        GuardedFactory.set_initial_delay(self.config.reconnect_delay_s)
        guard = Guard(self.config.topic_limits(), self.receiver.reject, self.receiver.on_status)
        self.ros = GuardedRos(self.host, self.port, guard, self._on_ready, self._on_close)
        with _open_lock:
            _open_robots += 1
        try:
            self.ros.run(timeout)
        except Exception as err:  # noqa: BLE001 - roslibpy raises its own timeout type
            self.close()
            raise RobotConnectionError(f"no rosbridge server at ws://{self.host}:{self.port} "
                                       f"within {timeout} s") from err
        config, receiver = self.config, self.receiver
        roslibpy.Topic(self.ros, config.joint_states_topic, "sensor_msgs/JointState",
                       queue_length=1).subscribe(receiver.on_joint_state)
        for camera in config.cameras:
            roslibpy.Topic(self.ros, camera.topic, camera.type, queue_length=1).subscribe(
                lambda msg, camera=camera: receiver.on_image(camera, msg))
        if receiver.estop is None:
            LOG.warning("no e-stop topic (the robot YAML says topics.estop: no_estop_topic): only the arm's own "
                        "e-stop can stop it")
        else:
            roslibpy.Topic(self.ros, config.estop.topic, "std_msgs/Bool").subscribe(receiver.on_estop)
            receiver.estop.subscribed()
        if not self.read_only:
            roslibpy.Topic(self.ros, config.command_topic, config.command_type, queue_size=1).advertise()
        receiver.start()

    def wait_for_joint_state(self, timeout: float) -> JointState:
        """The first joint state naming all configured joints; RobotConnectionError after `timeout`."""
        with self.receiver.lock:
            if not self.receiver.lock.wait_for(lambda: self.receiver.joints, timeout):
                raise RobotConnectionError(f"no sensor_msgs/JointState with joints {list(self.config.joint_names)} "
                                           f"and a fresh stamp on {self.config.joint_states_topic} within {timeout} s")
            return self.receiver.joints[-1]

    def wait_for_estop(self, timeout: float) -> None:
        """Until the e-stop is released (confirmed by a well-formed `data: false`); RobotConnectionError if it
        is pressed, refused, or still engaged after `timeout`."""
        estop, deadline = self.receiver.estop, time.monotonic() + timeout
        while estop is not None and estop.engaged:
            cause = estop.cause
            if cause == "pressed" or cause.startswith("the bridge refused") or time.monotonic() > deadline:
                raise RobotConnectionError(f"the e-stop on {estop.config.topic} is engaged: {cause}")
            time.sleep(0.01)

    def close(self, timeout: float = 2.0) -> None:
        """Close the connection and, when it is the last one in the process, roslibpy's loop thread."""
        global _open_robots
        self.receiver.stop()
        if self.ros is None:
            return
        ros, self.ros = self.ros, None
        with self._lock:
            was_connected, self._connected = self._connected, False
        self.outbox.detach()
        with self.receiver.lock:
            self.receiver.lock.notify_all()
        if was_connected and ros.is_connected:
            closed = threading.Event()
            ros.on("close", lambda _proto: closed.set())
            ros.close()
            closed.wait(timeout)
        with _open_lock:
            _open_robots -= 1
            if _open_robots == 0:
                ros.terminate()

    def __enter__(self) -> "RosRobot":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- state ------------------------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        with self._lock:
            return self._connected

    @property
    def estop_engaged(self) -> bool:
        """See gpc.hardware.receive.EstopMonitor; always False with `no_estop_topic`."""
        return self.receiver.estop is not None and self.receiver.estop.engaged

    def latest_joint_positions(self) -> tuple[np.ndarray, float] | None:
        with self.receiver.lock:
            joints = self.receiver.joints
            return None if not joints else (joints[-1].positions, joints[-1].received)

    def observation(self, steps: int = 1) -> Observation | None:
        """The last `steps` joint states (fewer repeat the oldest) and frames; None before the first state."""
        with self.receiver.lock:
            if not self.receiver.joints:
                return None
            joints = list(self.receiver.joints)[-steps:]
            frames = {name: tuple(frames)[-steps:] for name, frames in self.receiver.frames.items()}
        joints = [joints[0]] * (steps - len(joints)) + joints
        return Observation(tuple(joints), frames)

    def wait_for_new_state(self, after: float, timeout: float) -> bool:
        """Block until a joint state received after monotonic time `after` arrives; False on timeout."""
        with self.receiver.lock:
            joints = self.receiver.joints
            return self.receiver.lock.wait_for(lambda: joints and joints[-1].received > after, timeout)

    # -- commands ---------------------------------------------------------------------------------------------

    def claim(self) -> Sent | None:
        """Withdraw the command not yet written, if any, and return the last one written."""
        return self.outbox.claim()

    def publish(self, command: SafeCommand) -> bool:
        """Hand a safety-approved command to the outbox; False (nothing kept) when not connected."""
        if not isinstance(command, SafeCommand):
            raise TypeError(f"RosRobot.publish takes a SafeCommand from the safety layer, got {type(command).__name__}")
        return not self.read_only and self.connected and self.outbox.put(command)

    # -- connection events (roslibpy's loop thread) -----------------------------------------------------------

    def _on_ready(self, proto) -> None:
        with self._lock:
            reconnected = not self._connected and self.disconnects > 0
            self._connected = True
        self.outbox.attach(proto)
        if reconnected:
            LOG.warning("reconnected to ws://%s:%d", self.host, self.port)

    def _on_close(self, _proto) -> None:
        self.outbox.detach()
        with self._lock:
            if self._connected:
                self.disconnects += 1
                LOG.warning("connection to ws://%s:%d lost", self.host, self.port)
            self._connected = False
        with self.receiver.lock:
            self.receiver.lock.notify_all()
