"""The safety layer between the policy and the robot: no command reaches the arm without passing it.

Structural guarantee: the robot adapter publishes only `SafeCommand`s, and only `SafetyLayer` can make one
(its constructor demands a module-private token), so a policy, a test or a later refactor cannot hand the
adapter raw positions.

Every control tick, `evaluate` checks the policy's target against the limits and the robot's state. Never
send an unsafe command: a check either holds (re-sends the last safe command, or sends nothing if none was
sent yet) or clamps into a command that respects the limits, which is itself safe:

| check                        | on violation | why                                                             |
|------------------------------|--------------|-----------------------------------------------------------------|
| e-stop engaged               | hold, or     | an operator said stop, or the e-stop cannot be trusted (silent, |
|                              | send nothing | malformed, refused: gpc.hardware.receive.EstopMonitor); nothing |
|                              |              | goes out unless the robot YAML says the arm needs holds         |
| connection lost              | hold         | nothing can be sent, and an e-stop sent meanwhile may be lost:  |
|                              |              | latched like the e-stop unless `resume_after_reconnect`         |
| stale observation (watchdog) | hold         | acting on an old state is acting blind                          |
| NaN / wrong shape measured   | hold         | a broken sensor reading says nothing about where the arm is     |
| no action available          | hold         | the policy has not delivered a chunk for this moment            |
| NaN / inf, or a wrong shape  | hold         | a broken policy output has no nearby safe meaning               |
| jump from measured > max     | hold         | a far target means a policy or state error, not a motion        |
| beyond joint limits          | clamp        | the nearest in-limit position is what the policy meant          |
| velocity / acceleration      | clamp        | the same path, slower: the arm gets there a little later, and   |
|                              |              | brakes so that it stops at a target rather than past it         |
| command far from measured    | hold         | the arm is not following (blocked or pushed): do not run away   |
| arm starts outside limits    | hold         | reaching the limits would be a leap; an operator must move it   |

Steps are bounded by the time that actually elapsed since the last command went out (its write time, from
the robot's outbox), at most one period: a late tick does not catch up, and commands that bunch on the way
out cannot add up to more than the velocity limit as the arm receives them. A tick sooner than
`min_interval` after the last command sends nothing. Position limits win over velocity, velocity over
acceleration; the velocity bound also keeps the arm able to
brake before a joint limit (its last step into the limit may brake harder, by less than one step of the
acceleration limit) and before the target, relative to the target's own motion, so a target step is reached
without overshoot (beyond a fraction of one step of acceleration, a dt^2) while a moving target is followed
at its speed. A hold is an immediate stop at the last
safe command and resets the commanded velocity to zero, as does a gap of more than two periods since the
last command (the arm has settled on its last target), so motion resumes under the acceleration limit. When
the control loop has not ticked for two periods, `watch` (the control loop's watchdog thread) checks what
needs no target (e-stop, connection, observation age) and holds on its own. Each fault
episode (a check that starts failing) is logged with Python logging and as a line of JSONL, and counted by
kind.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

LOG = logging.getLogger(__name__)

_TOKEN = object()


class SafeCommand:
    """Joint positions (radians, read-only) that passed the safety layer at monotonic time `issued`.

    `held` marks a hold (the last safe command repeated). Only `SafetyLayer` constructs these.
    """

    __slots__ = ("positions", "issued", "held")

    def __init__(self, positions: np.ndarray, issued: float, held: bool, *, token: object):
        if token is not _TOKEN:
            raise TypeError("a SafeCommand is issued only by gpc.hardware.safety.SafetyLayer")
        positions = np.array(positions, dtype=np.float64)
        positions.flags.writeable = False
        self.positions, self.issued, self.held = positions, issued, held

    def __repr__(self) -> str:
        return f"SafeCommand({self.positions.round(4).tolist()}, held={self.held})"


@dataclass(frozen=True)
class SafetyLimits:
    """Per-joint limits (radians, seconds); `period` is the control period the per-step limits assume."""

    lower: np.ndarray
    upper: np.ndarray
    velocity: np.ndarray
    acceleration: np.ndarray
    max_jump: np.ndarray
    period: float
    watchdog_timeout: float
    min_interval: float = 0.0  # no two commands closer than this (seconds)

    def __post_init__(self):
        dof = len(self.lower)
        for name in ("lower", "upper", "velocity", "acceleration", "max_jump"):
            value = np.broadcast_to(np.asarray(getattr(self, name), dtype=np.float64), (dof,)).copy()
            if not np.all(np.isfinite(value)):
                raise ValueError(f"{name}: must be finite, got {value.tolist()}")
            if name not in ("lower", "upper") and np.any(value <= 0):
                raise ValueError(f"{name}: must be > 0, got {value.tolist()}")
            value.flags.writeable = False
            object.__setattr__(self, name, value)
        if np.any(self.lower >= self.upper):
            raise ValueError(f"lower: must be below upper for every joint, got {self.lower.tolist()} and "
                             f"{self.upper.tolist()}")
        if not (0 < self.period < np.inf and 0 < self.watchdog_timeout < np.inf):
            raise ValueError("watchdog_timeout: period and watchdog_timeout must be finite and > 0, got "
                             f"{self.period} and {self.watchdog_timeout}")
        if not 0 <= self.min_interval < self.period:
            raise ValueError(f"min_interval: must be >= 0 and below the period, got {self.min_interval}")

    @property
    def dof(self) -> int:
        return len(self.lower)


@dataclass(frozen=True)
class Inputs:
    """What the checks see at one tick. `observation_age` is None before any observation."""

    target: np.ndarray | None
    measured: np.ndarray | None
    observation_age: float | None
    connected: bool
    estop: bool


@dataclass(frozen=True)
class Sent:
    """The last command written to the robot: positions, when (time.monotonic(), just after the write), and
    the velocity the arm was commanded over the step to it (its distance over the longest time the step can
    have taken, so no more than the arm saw)."""

    positions: np.ndarray
    written: float
    velocity: np.ndarray


@dataclass(frozen=True)
class Verdict:
    """What to send (None: nothing), whether it is a hold, and which checks fired."""

    positions: np.ndarray | None
    held: bool
    faults: tuple[str, ...] = ()
    clamps: tuple[str, ...] = ()


def conditions(inputs: Inputs, limits: SafetyLimits) -> list[str]:
    """The faults that need no target: e-stop, connection, and the observation's age and shape."""
    faults = []
    if inputs.estop:
        faults.append("estop")
    if not inputs.connected:
        faults.append("connection_lost")
    if inputs.observation_age is None or inputs.measured is None or inputs.observation_age > limits.watchdog_timeout:
        faults.append("stale_observation")
    elif inputs.measured.shape != (limits.dof,) or not np.all(np.isfinite(inputs.measured)):
        faults.append("bad_observation")
    return faults


def evaluate(inputs: Inputs, limits: SafetyLimits, last: np.ndarray | None, last_velocity: np.ndarray,
             last_target: np.ndarray | None = None, elapsed: float | None = None,
             target_interval: float | None = None) -> Verdict:
    """The checks of one tick, as a pure function of the inputs, the last command sent and its velocity,
    `elapsed` seconds since it went out (None: one period), and the last tick's target, `target_interval`
    seconds before this one (its motion lets the arm follow a moving target without braking for it)."""
    faults = conditions(inputs, limits)
    target = inputs.target
    if target is None:
        faults.append("no_action")
    elif target.shape != (limits.dof,):
        faults.append("malformed")
    elif not np.all(np.isfinite(target)):
        faults.append("non_finite")
    elif not faults and np.any(np.abs(target - inputs.measured) > limits.max_jump):
        faults.append("jump")
    if faults:
        return hold(last, faults)
    clamps = []
    goal = np.clip(target, limits.lower, limits.upper)
    if np.any(goal != target):
        clamps.append("position_limit")
    reference = last if last is not None else inputs.measured
    dt, a = limits.period if elapsed is None else min(elapsed, limits.period), limits.acceleration
    desired = (goal - reference) / dt
    high = np.minimum(limits.velocity, last_velocity + a * dt)
    low = np.maximum(-limits.velocity, last_velocity - a * dt)
    # Never approach a joint limit faster than full deceleration can stop (nor demand more than that).
    high = np.minimum(high, np.maximum(braking_velocity(limits.upper - reference, a, dt), low))
    low = np.maximum(low, np.minimum(-braking_velocity(reference - limits.lower, a, dt), high))
    # Nor approach the target faster than that, relative to the target's own motion: no overshoot on a step.
    moving = np.zeros(limits.dof) if last_target is None else np.clip(
        (goal - np.clip(last_target, limits.lower, limits.upper)) / (target_interval or limits.period),
        -limits.velocity, limits.velocity)
    high = np.minimum(high, np.maximum(np.maximum(moving, 0) + braking_velocity(goal - reference, a, dt), low))
    low = np.maximum(low, np.minimum(np.minimum(moving, 0) - braking_velocity(reference - goal, a, dt), high))
    velocity = np.clip(desired, low, high)
    clamped = velocity != desired
    at_limit = np.isclose(np.abs(velocity), limits.velocity)
    if np.any(clamped & at_limit):
        clamps.append("velocity_limit")
    if np.any(clamped & ~at_limit):
        clamps.append("acceleration_limit")  # ramping, or braking before a joint limit or the target
    positions = np.clip(reference + velocity * dt, limits.lower, limits.upper)
    if np.any(np.abs(positions - reference) > limits.velocity * dt + 1e-12):
        return hold(last, ["outside_limits"])  # only when the arm starts outside its limits: never leap back
    if np.any(np.abs(positions - inputs.measured) > limits.max_jump):
        return hold(last, ["tracking_error"])
    return Verdict(positions, False, (), tuple(clamps))


def braking_velocity(distance: np.ndarray, acceleration: np.ndarray, dt: float) -> np.ndarray:
    """The fastest velocity from which steps of dt, decelerating at `acceleration`, stop within `distance`:
    the root of v^2 / 2a + v dt / 2 = d (this step's travel plus the discrete stopping distance)."""
    d = np.maximum(distance, 0.0)
    return acceleration * (np.sqrt((dt / 2) ** 2 + 2 * d / acceleration) - dt / 2)


UNUSABLE_TARGET = frozenset({"no_action", "malformed", "non_finite"})  # faults of the target itself


def hold(last: np.ndarray | None, faults: Sequence[str]) -> Verdict:
    return Verdict(None if last is None else last.copy(), True, tuple(faults))


class Robot(Protocol):
    """What the safety layer needs from a robot adapter (gpc.hardware.robot.RosRobot, or a fake in tests)."""

    @property
    def connected(self) -> bool: ...

    @property
    def estop_engaged(self) -> bool: ...

    def latest_joint_positions(self) -> tuple[np.ndarray, float] | None: ...

    def claim(self) -> Sent | None:
        """Withdraw any command not yet written and return the last one written (None: none yet)."""

    def publish(self, command: SafeCommand) -> bool: ...


class SafetyLayer:
    """Checks every policy target, publishes the resulting safe command, and keeps the event log:
    `safety_events.jsonl` in `log_dir` and per-kind counts in `events`. A dry run sends nothing and writes each
    command it would have sent to `commands.jsonl` instead. `step` (the control loop) and `watch` (its
    watchdog thread) may run on different threads."""

    def __init__(self, limits: SafetyLimits, robot: Robot, log_dir: Path | str | None = None, dry_run: bool = False,
                 clock=time.monotonic, resume_after_reconnect: bool = False, hold_while_estopped: bool = False):
        self.limits, self.robot, self.dry_run, self.clock = limits, robot, dry_run, clock
        self.resume_after_reconnect, self.hold_while_estopped = resume_after_reconnect, hold_while_estopped
        self.last_target: np.ndarray | None = None
        self.last_target_at: float | None = None
        self.last_tick: float | None = None
        self.disconnected = False  # latched: a connection loss holds until restart unless resume_after_reconnect
        self.events: Counter[str] = Counter()  # fault / clamp episodes by kind
        self.ticks: Counter[str] = Counter()  # ticks spent in each fault / clamp
        self.published = 0  # commands handed to the robot (in dry run: computed and logged)
        self.held = 0
        self.unsent = 0  # commands the robot refused (not connected at the moment of sending)
        self.too_soon = 0  # ticks that sent nothing: within min_interval of the last command
        self.watchdog_holds = 0  # holds the watchdog sent while the control loop was late
        self._dry_sent: Sent | None = None
        self._lock = threading.Lock()
        self._active: set[str] = set()
        self._log = self._commands = None
        if log_dir is not None:
            Path(log_dir).mkdir(parents=True, exist_ok=True)
            self._log = open(Path(log_dir) / "safety_events.jsonl", "w")
            if dry_run:
                self._commands = open(Path(log_dir) / "commands.jsonl", "w")

    def step(self, target: np.ndarray | None, now: float | None = None) -> SafeCommand | None:
        """Check one tick's target and publish what is safe; returns the command sent (None: nothing)."""
        with self._lock:
            now = self.clock() if now is None else now
            self.last_tick = now
            return self._act(None if target is None else np.asarray(target, dtype=np.float64), now, False)

    def watch(self, now: float | None = None) -> SafeCommand | None:
        """The watchdog's check, on its own clock: when the control loop has not ticked for two periods, hold
        if the e-stop, the connection or the observation's age says so; returns the hold sent, if any."""
        with self._lock:
            now = self.clock() if now is None else now
            if self.last_tick is None or now - self.last_tick <= 2 * self.limits.period:
                return None
            return self._act(None, now, True)

    def _act(self, target: np.ndarray | None, now: float, watchdog: bool) -> SafeCommand | None:
        estop = self.robot.estop_engaged
        self.disconnected = not self.robot.connected or (self.disconnected and not self.resume_after_reconnect)
        latest = self.robot.latest_joint_positions()
        measured, age = (None, None) if latest is None else (latest[0], now - latest[1])
        sent = self._dry_sent if self.dry_run else self.robot.claim()
        elapsed = None if sent is None else now - sent.written
        if elapsed is not None and elapsed < self.limits.min_interval:
            if not watchdog:
                self.too_soon += 1
            return None
        inputs = Inputs(target, measured, age, not self.disconnected, estop)
        last = None if sent is None else sent.positions
        if watchdog:
            faults = conditions(inputs, self.limits)
            if not faults:
                return None
            verdict = hold(last, faults)
        else:
            settled = sent is None or elapsed > 2 * self.limits.period  # the arm has come to rest on it
            velocity = np.zeros(self.limits.dof) if settled else sent.velocity
            verdict = evaluate(inputs, self.limits, last, velocity, self.last_target, elapsed,
                               None if self.last_target_at is None else now - self.last_target_at)
            usable = not UNUSABLE_TARGET & set(verdict.faults)
            self.last_target, self.last_target_at = (target, now) if usable else (None, None)
        self._record(verdict, now, target, measured, age)
        if verdict.positions is None or ("estop" in verdict.faults and not self.hold_while_estopped):
            return None
        command = SafeCommand(verdict.positions, now, verdict.held, token=_TOKEN)
        if verdict.held:
            self.held += 1
            self.watchdog_holds += 1 if watchdog else 0
        if self.dry_run:
            LOG.debug("dry run: would send %s", command)
            if self._commands is not None:
                self._commands.write(json.dumps({"monotonic": now, "positions": _rounded(command.positions),
                                                 "held": command.held}) + "\n")
            velocity = np.zeros(self.limits.dof) if sent is None else (command.positions - sent.positions) / max(
                now - sent.written, 1e-9)
            self._dry_sent = Sent(command.positions, now, velocity)
            self.published += 1
        elif self.robot.publish(command):
            self.published += 1
        else:
            self.unsent += 1
        return command

    def _record(self, verdict: Verdict, now: float, target, measured, age) -> None:
        kinds = set(verdict.faults) | set(verdict.clamps)
        for kind in kinds:
            self.ticks[kind] += 1
        for kind in sorted(kinds - self._active):
            self.events[kind] += 1
            action = "hold" if kind in verdict.faults else "clamp"
            level = logging.WARNING if action == "hold" else logging.INFO
            LOG.log(level, "safety %s: %s (target %s, measured %s, observation age %s)", action, kind,
                    _rounded(target), _rounded(measured), None if age is None else round(age, 4))
            if self._log is not None:
                self._log.write(json.dumps({"time": time.time(), "monotonic": now, "kind": kind, "action": action,
                                            "target": _rounded(target), "measured": _rounded(measured),
                                            "observation_age_s": age, "sent": _rounded(verdict.positions)}) + "\n")
                self._log.flush()
        self._active = kinds

    def close(self) -> None:
        for log in (self._log, self._commands):
            if log is not None:
                log.close()
        self._log = self._commands = None

    def __enter__(self) -> "SafetyLayer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _rounded(x: np.ndarray | None) -> list | None:
    if x is None:
        return None
    return [None if not np.isfinite(v) else round(float(v), 5) for v in np.asarray(x, dtype=np.float64).ravel()]
