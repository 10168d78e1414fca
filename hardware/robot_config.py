"""One robot's YAML (configs/robot/*.yaml) parsed and checked at load time into a `RobotConfig`.

Every field is checked before anything connects; a bad one is a one-line error `{source}: {prefix}.field:
reason`. The e-stop must be declared: a topic, or the string `no_estop_topic` for a setup without one, so
running without an e-stop is never what a missing line means.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Union

import numpy as np

from gpc.app.schema import ConfigError, check, doc
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


@dataclass(frozen=True)
class JointStatesTopic:
    topic: str = field(metadata=doc("the arm's joint states"))
    type: Literal["sensor_msgs/JointState"] = field(metadata=doc("only sensor_msgs/JointState"))
    max_bytes: int = field(metadata=doc("larger messages are dropped unparsed (logged)", minimum=64))
    max_stamp_age_s: float = field(metadata=doc("older header stamps (by this host's clock) count as stale",
                                                positive=True))
    max_stamp_lead_s: float = field(metadata=doc("stamps this far in the future count as stale too", positive=True))


@dataclass(frozen=True)
class CommandTopic:
    topic: str = field(metadata=doc("where joint position commands go"))
    type: Literal[COMMAND_TYPES] = field(metadata=doc(
        "std_msgs/Float64MultiArray (positional: joint_names must follow the controller's order) or "
        "trajectory_msgs/JointTrajectory (ROS 2 time fields)"))


@dataclass(frozen=True)
class EstopTopic:
    topic: str = field(metadata=doc("a std_msgs/Bool heartbeat: data false = run, data true latches the stop"))
    type: Literal["std_msgs/Bool"] = field(metadata=doc("only std_msgs/Bool"))
    timeout_s: float = field(metadata=doc("no well-formed message for this long engages the stop", positive=True))
    max_bytes: int = field(metadata=doc("larger messages engage the stop", minimum=64))


@dataclass(frozen=True)
class CameraTopic:
    name: str = field(metadata=doc("the observation key parents read"))
    topic: str = field(metadata=doc("the image topic"))
    type: Literal[IMAGE_TYPES] = field(metadata=doc("sensor_msgs/CompressedImage or sensor_msgs/Image"))
    max_bytes: int = field(metadata=doc("larger frames are dropped unparsed", minimum=64))


@dataclass(frozen=True)
class Topics:
    joint_states: JointStatesTopic = field(metadata=doc("the joint state subscription"))
    command: CommandTopic = field(metadata=doc("the command publication"))
    estop: Union[Literal["no_estop_topic"], EstopTopic] = field(metadata=doc(
        f"the e-stop subscription, or `{NO_ESTOP}` for a setup without one (never the default)"))
    cameras: list[CameraTopic] = field(default_factory=list, metadata=doc("image topics parents read"))


@dataclass(frozen=True)
class JointLimits:
    lower: Union[float, list[float]] = field(metadata=doc("radians, one per joint (or one for all)"))
    upper: Union[float, list[float]] = field(metadata=doc("radians, one per joint (or one for all)"))


PerJoint = Union[float, list[float]]


@dataclass(frozen=True)
class RobotFile:
    """configs/robot/<name>.yaml as written."""

    joint_names: list[str] = field(metadata=doc("the arm's joints, in its controller's order"))
    control_rate_hz: float = field(metadata=doc("commands per second", positive=True))
    min_command_interval_s: float = field(metadata=doc(
        "never send two commands closer than this (less than one period)", positive=True))
    joint_limits: JointLimits = field(metadata=doc("commands are clamped inside these"))
    velocity_limit: PerJoint = field(metadata=doc("rad/s per joint, bounded by the time since the last command"))
    acceleration_limit: PerJoint = field(metadata=doc("rad/s^2 per joint"))
    max_jump: PerJoint = field(metadata=doc("rad: a target farther than this from the measured position holds"))
    watchdog_timeout_s: float = field(metadata=doc("an older observation stops the arm", positive=True))
    hold_while_estopped: bool = field(metadata=doc(
        "true: keep re-sending the held position while the e-stop is engaged; false: send nothing"))
    topics: Topics = field(metadata=doc("what to subscribe to and publish"))
    name: str = field(default="robot", metadata=doc("shown in logs and the summary"))
    transport: Literal["asyncio"] = field(default="asyncio", metadata=doc("roslibpy's asyncio transport"))
    reconnect_delay_s: float = field(default=0.5, metadata=doc("first reconnection attempt after a drop",
                                                               positive=True))
    resume_after_reconnect: bool = field(default=False, metadata=doc(
        "true: move again after a reconnection; false: hold until restart"))


def robot_config(value: Any, source: str, prefix: str = "robot") -> RobotConfig:
    """Parse a robot YAML (gpc.app.schema: unknown keys refused, every field typed); errors read
    `{source}: {prefix}.field: ...`."""
    robot = check(RobotFile, value, source, prefix)

    def fail(field: str, message: str):
        raise ConfigError(f"{source}: {prefix}.{field}: {message}")

    names = robot.joint_names
    if not names or len(set(names)) != len(names):
        fail("joint_names", f"need distinct joint names, got {names!r}")

    def per_joint(field: str, value: PerJoint) -> np.ndarray:
        values = value if isinstance(value, list) else [value] * len(names)
        if len(values) != len(names):
            fail(field, f"need a number or {len(names)} numbers (one per joint), got {value!r}")
        return np.asarray(values, dtype=np.float64)

    if robot.min_command_interval_s >= 1.0 / robot.control_rate_hz:
        fail("min_command_interval_s", f"must be shorter than one control period ({1.0 / robot.control_rate_hz:g} "
                                       f"s), got {robot.min_command_interval_s}")
    per_joint_limits = [per_joint("joint_limits.lower", robot.joint_limits.lower),
                        per_joint("joint_limits.upper", robot.joint_limits.upper),
                        per_joint("velocity_limit", robot.velocity_limit),
                        per_joint("acceleration_limit", robot.acceleration_limit),
                        per_joint("max_jump", robot.max_jump)]
    try:
        limits = SafetyLimits(*per_joint_limits, 1.0 / robot.control_rate_hz, robot.watchdog_timeout_s,
                              robot.min_command_interval_s)
    except ValueError as err:
        field = str(err).split(":")[0]
        field = {"lower": "joint_limits.lower", "upper": "joint_limits.upper", "velocity": "velocity_limit",
                 "acceleration": "acceleration_limit", "watchdog_timeout": "watchdog_timeout_s"}.get(field, field)
        fail(field, str(err).split(": ", 1)[-1])
    topics = robot.topics
    estop = None if topics.estop == NO_ESTOP else EstopConfig(topics.estop.topic, topics.estop.timeout_s,
                                                              topics.estop.max_bytes)
    cameras = tuple(CameraConfig(c.name, c.topic, c.type, c.max_bytes) for c in topics.cameras)
    return RobotConfig(robot.name, tuple(names), limits, robot.control_rate_hz, topics.joint_states.topic,
                       topics.command.topic, topics.command.type, estop, robot.hold_while_estopped,
                       topics.joint_states.max_bytes, topics.joint_states.max_stamp_age_s,
                       topics.joint_states.max_stamp_lead_s, cameras, robot.reconnect_delay_s,
                       robot.resume_after_reconnect)
