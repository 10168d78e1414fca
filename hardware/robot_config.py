"""One robot's YAML (configs/robot/*.yaml) parsed and checked at load time into a `RobotConfig`.

Every field is checked before anything connects; a bad one is a one-line error `{source}: {prefix}.field:
reason`. The e-stop must be declared: a topic, or the string `no_estop_topic` for a setup without one, so
running without an e-stop is never what a missing line means.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
from omegaconf import DictConfig, ListConfig, OmegaConf

from gpc.config import ConfigError
from gpc.hardware.safety import SafetyLimits

COMMAND_TYPES = ("std_msgs/Float64MultiArray", "trajectory_msgs/JointTrajectory")
IMAGE_TYPES = ("sensor_msgs/CompressedImage", "sensor_msgs/Image")
NO_ESTOP = "no_estop_topic"


@dataclass(frozen=True)
class CameraConfig:
    name: str
    topic: str
    type: str
    max_bytes: int


@dataclass(frozen=True)
class EstopConfig:
    """A std_msgs/Bool e-stop topic; silence longer than `timeout_s` engages the stop (e-stops send heartbeats)."""

    topic: str
    timeout_s: float
    max_bytes: int


@dataclass(frozen=True)
class RobotConfig:
    """One robot's topics, message types, joints and safety limits (radians, seconds, bytes)."""

    name: str
    joint_names: tuple[str, ...]
    limits: SafetyLimits
    control_rate_hz: float
    joint_states_topic: str
    command_topic: str
    command_type: str
    estop: EstopConfig | None  # None only when the YAML says no_estop_topic
    hold_while_estopped: bool
    joint_states_max_bytes: int
    max_stamp_age_s: float
    max_stamp_lead_s: float
    cameras: tuple[CameraConfig, ...] = ()
    reconnect_delay_s: float = 0.5
    resume_after_reconnect: bool = False

    @property
    def dof(self) -> int:
        return len(self.joint_names)

    @property
    def period(self) -> float:
        return 1.0 / self.control_rate_hz

    @property
    def estop_topic(self) -> str | None:
        return None if self.estop is None else self.estop.topic

    def topic_limits(self) -> dict[str, int]:
        """The largest message (bytes) accepted on each subscribed topic."""
        limits = {self.joint_states_topic: self.joint_states_max_bytes}
        limits.update({c.topic: c.max_bytes for c in self.cameras})
        if self.estop is not None:
            limits[self.estop.topic] = self.estop.max_bytes
        return limits


def robot_config(value: Any, source: str, prefix: str = "robot") -> RobotConfig:
    """Parse a robot YAML; errors read `{source}: {prefix}.field: ...`."""
    raw = OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: {prefix}: need a robot mapping (configs/robot/*.yaml), got {raw!r}")

    def fail(field: str, message: str):
        raise ConfigError(f"{source}: {prefix}.{field}: {message}")

    def get(field: str):
        node: Any = raw
        for part in field.split("."):
            if not isinstance(node, Mapping) or part not in node:
                fail(field, "missing")
            node = node[part]
        return node

    def text(field: str) -> str:
        value = get(field)
        if not isinstance(value, str) or not value:
            fail(field, f"need a non-empty string, got {value!r}")
        return value

    def number(field: str, finite: bool = True) -> float:
        value = get(field)
        if (isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0
                or (finite and not np.isfinite(value))):
            fail(field, f"need a positive number, got {value!r}")
        return float(value)

    def byte_count(field: str, value: Any = None) -> int:
        value = get(field) if value is None else value
        if isinstance(value, bool) or not isinstance(value, int) or value < 64:
            fail(field, f"need a whole number of bytes >= 64, got {value!r}")
        return value

    def flag(field: str) -> bool:
        value = get(field)
        if not isinstance(value, bool):
            fail(field, f"need true or false, got {value!r}")
        return value

    names = get("joint_names")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        fail("joint_names", f"need a list of joint names, got {names!r}")
    if len(set(names)) != len(names):
        fail("joint_names", f"duplicate names in {names}")

    def per_joint(field: str) -> np.ndarray:
        value = get(field)
        values = value if isinstance(value, list) else [value] * len(names)
        if len(values) != len(names) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                for v in values):
            fail(field, f"need a number or {len(names)} numbers (one per joint), got {value!r}")
        return np.asarray(values, dtype=np.float64)

    rate = number("control_rate_hz")
    interval = number("min_command_interval_s")
    if interval >= 1.0 / rate:
        fail("min_command_interval_s", f"must be shorter than one control period ({1.0 / rate:g} s), got {interval}")
    per_joint_limits = [per_joint(field) for field in ("joint_limits.lower", "joint_limits.upper", "velocity_limit",
                                                       "acceleration_limit", "max_jump")]
    watchdog = number("watchdog_timeout_s", finite=False)  # SafetyLimits says why it must be finite
    try:
        limits = SafetyLimits(*per_joint_limits, 1.0 / rate, watchdog, interval)
    except ValueError as err:
        field = str(err).split(":")[0]
        field = {"lower": "joint_limits.lower", "upper": "joint_limits.upper", "velocity": "velocity_limit",
                 "acceleration": "acceleration_limit", "watchdog_timeout": "watchdog_timeout_s"}.get(field, field)
        fail(field, str(err).split(": ", 1)[-1])
    command_type = text("topics.command.type")
    if command_type not in COMMAND_TYPES:
        fail("topics.command.type", f"need one of {', '.join(COMMAND_TYPES)}, got {command_type!r}")
    if text("topics.joint_states.type") != "sensor_msgs/JointState":
        fail("topics.joint_states.type", "only sensor_msgs/JointState is supported")
    estop = get("topics.estop")
    if estop != NO_ESTOP and (not isinstance(estop, Mapping) or estop.get("type") != "std_msgs/Bool"
                              or not isinstance(estop.get("topic"), str) or not estop["topic"]):
        fail("topics.estop", f"need {{topic: ..., type: std_msgs/Bool, timeout_s: ..., max_bytes: ...}}, or "
                             f"{NO_ESTOP} to run without an e-stop topic, got {estop!r}")
    estop = None if estop == NO_ESTOP else EstopConfig(estop["topic"], number("topics.estop.timeout_s"),
                                                       byte_count("topics.estop.max_bytes"))
    cameras = []
    for i, camera in enumerate(raw.get("topics", {}).get("cameras") or []):
        field = f"topics.cameras[{i}]"
        if not isinstance(camera, Mapping) or not all(isinstance(camera.get(k), str)
                                                       for k in ("name", "topic", "type")):
            fail(field, f"need {{name, topic, type, max_bytes}}, got {camera!r}")
        if camera["type"] == "sensor_msgs/PointCloud2":
            fail(f"{field}.type", "point clouds are not supported; use sensor_msgs/CompressedImage or "
                                  "sensor_msgs/Image")
        if camera["type"] not in IMAGE_TYPES:
            fail(f"{field}.type", f"need one of {', '.join(IMAGE_TYPES)}, got {camera['type']!r}")
        if "max_bytes" not in camera:
            fail(f"{field}.max_bytes", "missing")
        cameras.append(CameraConfig(camera["name"], camera["topic"], camera["type"],
                                    byte_count(f"{field}.max_bytes", camera["max_bytes"])))
    transport = raw.get("transport", "asyncio")
    if transport != "asyncio":
        fail("transport", f"only asyncio is supported (gpc's guards run on its loop), got {transport!r}")
    return RobotConfig(
        str(raw.get("name", "robot")), tuple(names), limits, rate, text("topics.joint_states.topic"),
        text("topics.command.topic"), command_type, estop, flag("hold_while_estopped"),
        byte_count("topics.joint_states.max_bytes"), number("topics.joint_states.max_stamp_age_s"),
        number("topics.joint_states.max_stamp_lead_s"), tuple(cameras),
        number("reconnect_delay_s") if "reconnect_delay_s" in raw else 0.5,
        flag("resume_after_reconnect") if "resume_after_reconnect" in raw else False)
