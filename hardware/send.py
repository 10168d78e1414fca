"""Commands out: one slot, written on the transport's thread, and a record of what the arm was actually sent.

The safety layer bounds each step by the time since the last command that actually went out, so it must
know when that was. A command handed over is written later, on roslibpy's loop thread; several handed over
while that thread was busy used to go out back to back, full steps well under a millisecond apart. Here a
command waits in a single slot, a newer one replaces it, and `claim()` (the safety layer, before it decides)
withdraws whatever still waits and returns the last command written, with its write time. A waiting motion
command that is more than one control period old when the thread gets to it is dropped: it was decided on
an observation that is now old. Nothing is queued while disconnected.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, Callable

import numpy as np

from gpc.hardware.robot_config import RobotConfig
from gpc.hardware.safety import SafeCommand, Sent

LOG = logging.getLogger(__name__)


def command_message(command: SafeCommand, config: RobotConfig) -> dict[str, Any]:
    """The command as the robot's command type: a Float64MultiArray, or a one-point JointTrajectory."""
    positions = [float(q) for q in command.positions]
    if config.command_type == "std_msgs/Float64MultiArray":
        return {"layout": {"dim": [{"label": "joints", "size": len(positions), "stride": len(positions)}],
                           "data_offset": 0}, "data": positions}
    period, now = config.period, time.time()
    return {"header": {"stamp": {"sec": int(now), "nanosec": int(now % 1 * 1e9)}, "frame_id": ""},
            "joint_names": list(config.joint_names),
            "points": [{"positions": positions, "velocities": [], "accelerations": [], "effort": [],
                        "time_from_start": {"sec": int(period), "nanosec": int(period % 1 * 1e9)}}]}


class Outbox:
    """The command slot of one connection. `call_soon(f)` runs f on the transport's thread (False when it
    cannot); `attach(proto)` / `detach()` follow the connection."""

    def __init__(self, config: RobotConfig, call_soon: Callable[[Callable[[], None]], bool],
                 clock: Callable[[], float] = time.monotonic):
        self.config, self.call_soon, self.clock = config, call_soon, clock
        self._lock = threading.Lock()
        self._proto = None
        self._waiting: tuple[SafeCommand, bytes] | None = None
        self._scheduled = False
        self._last: Sent | None = None
        self._last_started = 0.0
        self.written = 0  # commands written to the bridge
        self.withdrawn = 0  # replaced or withdrawn before the transport's thread got to them
        self.late = 0  # motion commands dropped for being older than a period when it did

    def attach(self, proto) -> None:
        with self._lock:
            self._proto = proto

    def detach(self) -> None:
        with self._lock:
            self._proto, self._waiting = None, None

    def claim(self) -> Sent | None:
        """Withdraw the command still waiting, if any, and return the last one written."""
        with self._lock:
            if self._waiting is not None:
                self._waiting = None
                self.withdrawn += 1
            return self._last

    def put(self, command: SafeCommand) -> bool:
        """Hand over a command (replacing one still waiting); False when not connected (nothing is kept)."""
        payload = json.dumps({"op": "publish", "topic": self.config.command_topic,
                              "msg": command_message(command, self.config)}).encode()
        with self._lock:
            if self._proto is None:
                return False
            if self._waiting is not None:
                self.withdrawn += 1
            self._waiting = (command, payload)
            schedule, self._scheduled = not self._scheduled, True
        if schedule and not self.call_soon(self._flush):
            with self._lock:
                self._waiting, self._scheduled = None, False
            return False
        return True

    def _flush(self) -> None:
        """On the transport's thread: write the waiting command and record it."""
        with self._lock:
            self._scheduled = False
            waiting, self._waiting, proto = self._waiting, None, self._proto
            if waiting is None or proto is None:
                return
            command, payload = waiting
            if not command.held and self.clock() - command.issued > self.config.period:
                self.late += 1
                return
            started = self.clock()
            try:
                proto.sendMessage(payload, isBinary=False)
            except Exception as err:  # noqa: BLE001 - autobahn raises its own types on a closing connection
                LOG.warning("command not written: %s: %s", type(err).__name__, err)
                return
            written, last = self.clock(), self._last
            # The write happened between `started` and `written`: the step's velocity over the longest time it
            # can have taken is the least the arm saw (the safety layer accelerates from it).
            velocity = (np.zeros(len(command.positions)) if last is None
                        else (command.positions - last.positions) / (written - self._last_started))
            self._last, self._last_started = Sent(command.positions, written, velocity), started
            self.written += 1
