"""What comes in from the robot, checked before anything acts on it: joint states, camera frames, the e-stop.

Callbacks run on roslibpy's loop thread (the one that also writes commands), so they only check a message's
shape and store it: a malformed message is one log line (per episode) and a count, never an exception.
Camera frames are decoded on a thread of their own, from a one-slot mailbox per camera that keeps the
newest frame. A joint state counts only if its header stamp is fresh (within the robot YAML's tolerances of
this host's clock) and later than the last one; a repeat of the same positions and stamp is a frozen driver.
The e-stop fails closed (`EstopMonitor`). `Drops` counts every dropped message (here and in
gpc.hardware.bridge) and logs one line per episode.
"""

from __future__ import annotations

import base64
import io
import logging
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from gpc.hardware.robot_config import CameraConfig, EstopConfig, RobotConfig

LOG = logging.getLogger(__name__)

RAW_ENCODINGS = {"rgb8": (3, [0, 1, 2]), "bgr8": (3, [2, 1, 0]), "rgba8": (4, [0, 1, 2]), "bgra8": (4, [2, 1, 0]),
                 "mono8": (1, [0, 0, 0])}
MAX_PIXELS = 4096 * 4096  # a small compressed image can claim a huge size: refuse before decoding it


@dataclass(frozen=True)
class JointState:
    """Joint positions and velocities in the configured joint order; `received` is time.monotonic()."""

    positions: np.ndarray
    velocities: np.ndarray
    received: float


@dataclass(frozen=True)
class Frame:
    """One camera image (height, width, 3) uint8 RGB; `received` is time.monotonic()."""

    rgb: np.ndarray
    received: float


class Drops:
    """Dropped messages counted by `where: cause`; one log line when a cause starts (after a good message
    or another cause on the same `where`), so a flood of bad messages is one line, not thousands."""

    def __init__(self):
        self.counts: Counter[str] = Counter()
        self._current: dict[str, str] = {}
        self._lock = threading.Lock()

    def drop(self, where: str, cause: str, detail: str = "") -> None:
        with self._lock:
            self.counts[f"{where}: {cause}"] += 1
            start = self._current.get(where) != cause
            self._current[where] = cause
        if start:
            LOG.warning("dropped a message on %s: %s%s", where, cause, f" ({detail})" if detail else "")

    def good(self, where: str) -> None:
        with self._lock:
            self._current.pop(where, None)


class Malformed(ValueError):
    """A message whose shape is not the declared type's."""


def _numbers(value: Any, field: str, length: int) -> list:
    if not isinstance(value, list) or len(value) != length or not all(type(x) in (int, float) for x in value):
        raise Malformed(f"{field} is not a list of {length} numbers")
    return value


def stamp_seconds(header: Any) -> float:
    """Seconds since the epoch from a std_msgs/Header (ROS 2 `sec`/`nanosec` or ROS 1 `secs`/`nsecs`)."""
    stamp = header.get("stamp") if isinstance(header, dict) else None
    if isinstance(stamp, dict):
        for sec, nsec in (("sec", "nanosec"), ("secs", "nsecs")):
            if type(stamp.get(sec)) is int and type(stamp.get(nsec)) is int:
                return stamp[sec] + stamp[nsec] * 1e-9
    raise Malformed("header.stamp is not {sec, nanosec} (or {secs, nsecs})")


def parse_joint_state(msg: Any, joint_names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, float]:
    """(positions, velocities, stamp) in `joint_names` order from a sensor_msgs/JointState; Malformed if not one."""
    if not isinstance(msg, dict):
        raise Malformed(f"a {type(msg).__name__}, not a mapping")
    names = msg.get("name")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise Malformed("name is not a list of strings")
    missing = [n for n in joint_names if n not in names]
    if missing:
        raise Malformed(f"joints {missing} missing (got {names[:12]})")
    position = _numbers(msg.get("position"), "position", len(names))
    velocity = msg.get("velocity") or []
    if velocity:
        _numbers(velocity, "velocity", len(names))
    where = [names.index(n) for n in joint_names]
    positions = np.array([position[i] for i in where], dtype=np.float64)
    velocities = np.array([velocity[i] for i in where], dtype=np.float64) if velocity else np.zeros(len(where))
    return positions, velocities, stamp_seconds(msg.get("header"))


def decode_image(msg: Any, message_type: str) -> np.ndarray:
    """RGB (height, width, 3) uint8 from a sensor_msgs/CompressedImage or sensor_msgs/Image message."""
    if not isinstance(msg, dict) or not isinstance(msg.get("data"), (str, list)):
        raise Malformed("not an image message with data")
    data = base64.b64decode(msg["data"], validate=True) if isinstance(msg["data"], str) else bytes(msg["data"])
    if message_type == "sensor_msgs/CompressedImage":
        from PIL import Image

        image = Image.open(io.BytesIO(data))
        if image.width * image.height > MAX_PIXELS:
            raise Malformed(f"{image.width}x{image.height} pixels is more than {MAX_PIXELS}")
        return np.asarray(image.convert("RGB"))
    encoding = msg.get("encoding", "rgb8")
    if encoding not in RAW_ENCODINGS:
        raise Malformed(f"image encoding {encoding!r} is not supported ({', '.join(RAW_ENCODINGS)})")
    if not all(type(msg.get(k)) is int and msg[k] > 0 for k in ("height", "width", "step")):
        raise Malformed("height, width and step must be positive integers")
    channels, order = RAW_ENCODINGS[encoding]
    height, width, step = msg["height"], msg["width"], msg["step"]
    if step < width * channels or len(data) != height * step:
        raise Malformed(f"{len(data)} bytes do not make {height} rows of {step} bytes")
    rows = np.frombuffer(data, dtype=np.uint8).reshape(height, step)[:, :width * channels]
    return np.ascontiguousarray(rows.reshape(height, width, channels)[..., order])


class EstopMonitor:
    """The e-stop, failing closed. Engaged until the first well-formed `{data: false}`; after `{data: true}`
    (pressed) until restart; and, until the next well-formed `{data: false}`, after any of: no well-formed
    message for `timeout_s` (a silent or unconfirmed topic), a message that is not exactly `{data: <bool>}`
    or could not be read at all, or the bridge refusing the subscription. Each cause is logged when it
    engages the stop."""

    def __init__(self, config: EstopConfig, clock: Callable[[], float] = time.monotonic):
        self.config, self.clock = config, clock
        self._lock = threading.Lock()
        self._pressed = False
        self._fault: str | None = "not confirmed"
        self._last_good: float | None = None
        self._subscribed = clock()

    def subscribed(self) -> None:
        with self._lock:
            self._subscribed = self.clock()

    def on_message(self, msg: Any) -> None:
        if not (isinstance(msg, dict) and msg.keys() == {"data"} and isinstance(msg["data"], bool)):
            self._engage(f"a malformed message {str(msg)[:80]!r} (need exactly {{data: true or false}})")
        elif msg["data"]:
            with self._lock:
                pressed, self._pressed = self._pressed, True
            if not pressed:
                LOG.error("e-stop pressed on %s: holding until restart", self.config.topic)
        else:
            with self._lock:
                self._last_good = self.clock()
                fault, self._fault = self._fault, None
                pressed = self._pressed
            if fault is not None and not pressed:
                LOG.warning("e-stop on %s released by a well-formed data: false (was: %s)", self.config.topic, fault)

    def refused(self, reason: str) -> None:
        self._engage(f"the bridge refused the subscription: {reason}")

    def reject(self, cause: str) -> None:
        self._engage(f"a message dropped unread ({cause})")

    @property
    def engaged(self) -> bool:
        now, timeout = self.clock(), self.config.timeout_s
        with self._lock:
            if self._pressed:
                return True
            before = self._fault
            if before is None and now - self._last_good > timeout:
                self._fault = f"no well-formed message for {timeout} s"
            elif before == "not confirmed" and now - self._subscribed > timeout:
                self._fault = f"no well-formed message within {timeout} s of subscribing (subscription not confirmed)"
            fault = self._fault
        if fault != before:
            LOG.error("e-stop on %s engaged: %s", self.config.topic, fault)
        return fault is not None

    @property
    def cause(self) -> str | None:
        with self._lock:
            return "pressed" if self._pressed else self._fault

    def _engage(self, cause: str) -> None:
        with self._lock:
            fault, self._fault = self._fault, cause
        if fault != cause:
            LOG.error("e-stop on %s engaged: %s", self.config.topic, cause)


class Receiver:
    """Checked joint states (the last `history`), camera frames and the e-stop of one robot.

    `lock` is a Condition notified on every accepted joint state. Dropped messages are counted in `drops`;
    camera frames replaced in the mailbox before they were decoded in `superseded`.
    """

    def __init__(self, config: RobotConfig, drops: Drops, history: int = 8, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time):
        self.config, self.drops, self.clock, self.wall = config, drops, clock, wall
        self.lock = threading.Condition()
        self.joints: deque[JointState] = deque(maxlen=history)
        self.frames: dict[str, deque[Frame]] = {c.name: deque(maxlen=history) for c in config.cameras}
        self.estop = None if config.estop is None else EstopMonitor(config.estop, clock)
        self.superseded: Counter[str] = Counter()
        self._last_stamp: float | None = None
        self._mail = threading.Condition()
        self._mailbox: dict[str, tuple[CameraConfig, Any, float]] = {}
        self._decoder: threading.Thread | None = None
        self._stopping = False

    # -- roslibpy's loop thread ------------------------------------------------------------------------------

    def on_joint_state(self, msg: Any) -> None:
        received, topic = self.clock(), self.config.joint_states_topic
        try:
            positions, velocities, stamp = parse_joint_state(msg, self.config.joint_names)
        except (ValueError, OverflowError) as err:  # Malformed, or numbers too large for a float
            self.drops.drop(topic, "malformed", str(err))
            return
        lag = self.wall() - stamp
        with self.lock:
            last_stamp, last = self._last_stamp, (self.joints[-1] if self.joints else None)
        if lag > self.config.max_stamp_age_s:
            self.drops.drop(topic, "stale stamp", f"{lag:.3f} s old, max_stamp_age_s {self.config.max_stamp_age_s}")
        elif -lag > self.config.max_stamp_lead_s:
            self.drops.drop(topic, "future stamp",
                            f"{-lag:.3f} s ahead of this host, max_stamp_lead_s {self.config.max_stamp_lead_s}")
        elif last_stamp is not None and stamp <= last_stamp:
            if stamp == last_stamp and last is not None and np.array_equal(positions, last.positions):
                self.drops.drop(topic, "frozen", "the same positions and stamp again")
            else:
                self.drops.drop(topic, "stamp not increasing", f"{stamp:.6f} after {last_stamp:.6f}")
        else:
            self.drops.good(topic)
            with self.lock:
                self._last_stamp = stamp
                self.joints.append(JointState(positions, velocities, received))
                self.lock.notify_all()

    def on_image(self, camera: CameraConfig, msg: Any) -> None:
        with self._mail:
            if camera.name in self._mailbox:
                self.superseded[camera.name] += 1
            self._mailbox[camera.name] = (camera, msg, self.clock())
            self._mail.notify()

    def on_estop(self, msg: Any) -> None:
        self.estop.on_message(msg)

    def reject(self, where: str, cause: str, detail: str = "") -> None:
        """A message dropped before its callback (gpc.hardware.bridge): counted, and on the e-stop topic it
        engages the stop (a message that cannot be read is not a release)."""
        self.drops.drop(where, cause, detail)
        if self.estop is not None and where == self.config.estop.topic:
            self.estop.reject(cause)

    def on_status(self, message: Mapping[str, Any]) -> None:
        """A rosbridge `status` message: an error on the e-stop's subscription engages the stop."""
        level, text, ident = message.get("level"), str(message.get("msg"))[:200], message.get("id")
        if (self.estop is not None and level in ("error", "warning") and isinstance(ident, str)
                and ident.startswith(f"subscribe:{self.config.estop.topic}:")):
            self.estop.refused(text)
        else:
            self.drops.drop("bridge", f"status {level}", text)

    # -- the decoder thread ----------------------------------------------------------------------------------

    def start(self) -> None:
        if self.config.cameras and self._decoder is None:
            self._stopping = False
            self._decoder = threading.Thread(target=self._decode_forever, name="gpc-decode", daemon=True)
            self._decoder.start()

    def stop(self) -> None:
        if self._decoder is not None:
            with self._mail:
                self._stopping = True
                self._mail.notify()
            self._decoder.join()
            self._decoder = None

    def _decode_forever(self) -> None:
        while True:
            with self._mail:
                self._mail.wait_for(lambda: self._mailbox or self._stopping)
                if self._stopping:
                    return
                camera, msg, received = self._mailbox.pop(next(iter(self._mailbox)))
            try:
                rgb = decode_image(msg, camera.type)
            except Exception as err:  # noqa: BLE001 - PIL has many error types; a bad image must not end the thread
                self.drops.drop(camera.topic, "cannot decode", f"{type(err).__name__}: {str(err)[:120]}")
                continue
            self.drops.good(camera.topic)
            with self.lock:
                self.frames[camera.name].append(Frame(rgb, received))
