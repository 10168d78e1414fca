"""`gpc deploy`: a composed policy on a robot arm behind a rosbridge server, through the safety layer.

Connects, waits for the first joint state and for the e-stop's release (its first well-formed `data: false`),
warms the policy up, then runs the control loop for `duration_s` (or until Ctrl-C) and prints a summary:
commands written to the bridge, deadline misses, chunk latency percentiles, safety events and dropped
messages by kind; the same goes to `summary.json` in `log_dir`, next to the per-chunk and per-event JSONL
logs.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
from omegaconf import DictConfig, ListConfig, OmegaConf

from gpc.config import ConfigError, load_composer, resolve_path, weight_candidates
from gpc.hardware.control_loop import ChunkPolicy, ComposedPolicy, ControlLoop
from gpc.hardware.robot import RobotConnectionError, RosRobot
from gpc.hardware.robot_config import RobotConfig, robot_config
from gpc.hardware.safety import SafetyLayer

LOG = logging.getLogger(__name__)


def main(config: DictConfig, source: str = "deploy config") -> None:
    if config.get("torch_threads") is not None:  # this process's inference shares a small CPU with the loop
        import torch

        torch.set_num_threads(int(config.torch_threads))
    print(format_summary(run(config, source)))


def run(config: DictConfig, source: str, wrap_policy: Callable[[ChunkPolicy], ChunkPolicy] | None = None,
        stop: threading.Event | None = None) -> dict[str, Any]:
    """Deploy as `config` says and return the summary; `wrap_policy` lets tests inject faulty policies."""
    robot = robot_config(config.get("robot"), source)
    duration = _number(config, "duration_s", source)
    connect_timeout = _number(config, "connect_timeout_s", source)
    control = config.get("control") or {}
    inference_period = _number(control, "inference_period_s", source, "control.")
    decay = control.get("ensemble_decay")
    if decay is not None and (isinstance(decay, bool) or not isinstance(decay, (int, float)) or decay < 0):
        raise ConfigError(f"{source}: control.ensemble_decay: need a number >= 0 or null, got {decay!r}")
    port = config.get("port")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ConfigError(f"{source}: port: need a TCP port number, got {port!r}")
    policy = build_policy(config.get("policy"), robot, source)
    if wrap_policy is not None:
        policy = wrap_policy(policy)
    dry_run = bool(config.get("dry_run", False))
    log_dir = Path(str(config.get("log_dir", "outputs/deploy")))
    log_dir.mkdir(parents=True, exist_ok=True)
    ros = RosRobot(robot, str(config.host), port, read_only=dry_run)
    began = time.monotonic()
    try:
        try:
            ros.connect(connect_timeout)
        except RobotConnectionError as err:
            raise ConfigError(f"{source}: host: {err}") from None
        try:
            ros.wait_for_joint_state(connect_timeout)
        except RobotConnectionError as err:
            raise ConfigError(f"{source}: robot.topics.joint_states: {err}") from None
        try:
            ros.wait_for_estop(connect_timeout)
        except RobotConnectionError as err:
            raise ConfigError(f"{source}: robot.topics.estop: {err}") from None
        warm_up(policy, ros, robot, source)
        with SafetyLayer(robot.limits, ros, log_dir, dry_run, resume_after_reconnect=robot.resume_after_reconnect,
                         hold_while_estopped=robot.hold_while_estopped) as safety:
            loop = ControlLoop(policy, ros, safety, robot.period, inference_period, decay, log_dir)
            began = time.monotonic()
            try:
                stats = loop.run(duration, stop)
            except KeyboardInterrupt:
                LOG.warning("interrupted: the arm holds its last command")
                stats = loop.stats
    finally:
        ros.close()
    summary = {
        "robot": robot.name, "seconds": round(time.monotonic() - began, 3), "dry_run": dry_run,
        "ticks": stats.ticks, "commands_published": safety.published if dry_run else ros.outbox.written,
        "holds": safety.held, "watchdog_holds": safety.watchdog_holds, "unsent": safety.unsent,
        "commands_replaced": ros.outbox.withdrawn, "commands_late": ros.outbox.late,
        "ticks_too_soon": safety.too_soon, "deadline_misses": stats.deadline_misses, "starved_ticks": stats.starved,
        "chunks": stats.chunks, "disconnects": ros.disconnects,
        "latency_ms": {f"p{q}": _finite(stats.latency_ms(q)) for q in (50, 95, 99)},
        "compute_ms": {f"p{q}": _finite(float(np.percentile(stats.compute, q) * 1e3) if stats.compute else None)
                       for q in (50, 95, 99)},
        "safety_events": dict(sorted(safety.events.items())),
        "dropped_messages": dict(sorted(ros.drops.counts.items())),
        "camera_frames_superseded": dict(sorted(ros.receiver.superseded.items())), "log_dir": str(log_dir),
    }
    (log_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def build_policy(value: Any, robot: RobotConfig, source: str) -> ComposedPolicy:
    """The composed policy the `policy:` section names: a composition YAML, or the rehearsal reach pair."""
    if not isinstance(value, (DictConfig, dict)):
        raise ConfigError(f"{source}: policy: need a mapping, got {value!r}")
    seed = value.get("seed", 0)
    if value.get("compose") is not None:
        path = resolve_path(str(value.compose))
        if not path.exists():
            raise ConfigError(f"{source}: policy.compose: not found: {value.compose}")
        composition = OmegaConf.load(path)
        composer = load_composer(composition, f"{source}: policy.compose")
        weights = value.get("weights") if value.get("weights") is not None else composition.get("weights")
        check_observations(composer, robot, source)
    else:
        from gpc.hardware.joint_policy import joint_reach_composer

        targets = value.get("targets")
        raw = OmegaConf.to_container(targets) if isinstance(targets, ListConfig) else targets
        if not isinstance(raw, list) or len(raw) < 2 or any(not isinstance(t, list) or len(t) != robot.dof
                                                            for t in raw):
            raise ConfigError(f"{source}: policy.targets: need two or more joint configurations of "
                              f"{robot.dof} numbers, got {raw!r}")
        for i, target in enumerate(np.asarray(raw, dtype=np.float64)):
            if np.any(target < robot.limits.lower) or np.any(target > robot.limits.upper):
                raise ConfigError(f"{source}: policy.targets[{i}]: {target.tolist()} is outside the joint limits")
        try:
            composer = joint_reach_composer(
                raw, robot.limits.lower, robot.limits.upper, robot.period, _integer(value, "horizon", source),
                _integer(value, "n_action_steps", source), _number(value, "time_constant_s", source, "policy."),
                _number(value, "speed", source, "policy."), _number(value, "noise_std", source, "policy."),
                _integer(value, "num_inference_steps", source))
        except (ValueError, TypeError) as err:
            raise ConfigError(f"{source}: policy: {err}") from None
        weights = value.get("weights")
    if composer.action_dim != robot.dof:
        raise ConfigError(f"{source}: policy: actions have {composer.action_dim} dims, the robot has {robot.dof} "
                          "joints")
    schedules = weight_candidates(weights, len(composer.parents), source, "policy.weights")
    if len(schedules) != 1:
        raise ConfigError(f"{source}: policy.weights: a deployment runs one weight vector, got {len(schedules)}")
    return ComposedPolicy(composer, schedules, int(seed))


def check_observations(composer, robot: RobotConfig, source: str) -> None:
    """Every parent's observation keys must be ones the robot provides."""
    provided = {"joint_positions", "joint_velocities", *(c.name for c in robot.cameras)}
    for parent in composer.parents:
        missing = sorted({f.key for f in parent.spec.inputs} - provided)
        if missing:
            raise ConfigError(f"{source}: policy.compose: parent {parent.spec.name!r} reads {missing}; the robot "
                              f"provides {sorted(provided)}")


def warm_up(policy: ChunkPolicy, ros: RosRobot, robot: RobotConfig, source: str) -> None:
    """One chunk before the loop starts: the first call pays one-off costs, and a wrong shape fails early."""
    try:
        actions = np.asarray(policy(ros.observation(policy.n_obs_steps)))
    except Exception as err:  # noqa: BLE001 - reported as a config problem of the policy, on one line
        raise ConfigError(f"{source}: policy: the first inference failed: {type(err).__name__}: {err}") from None
    if actions.ndim != 2 or actions.shape[1] != robot.dof:
        raise ConfigError(f"{source}: policy: a chunk must be (steps, {robot.dof}) joint positions, got "
                          f"{actions.shape}")


def format_summary(summary: dict[str, Any]) -> str:
    latency, compute = summary["latency_ms"], summary["compute_ms"]
    events = ", ".join(f"{k} {v}" for k, v in summary["safety_events"].items()) or "none"
    drops = ", ".join(f"{k} {v}" for k, v in summary["dropped_messages"].items()) or "none"
    rows = [
        ("robot", f"{summary['robot']}{' (dry run: nothing sent)' if summary['dry_run'] else ''}"),
        ("seconds", f"{summary['seconds']:.1f}"),
        ("control ticks", summary["ticks"]),
        ("commands published", f"{summary['commands_published']} ({summary['holds']} holds, "
                               f"{summary['unsent']} unsent while disconnected)"),
        ("commands not written", f"{summary['commands_replaced']} replaced by a newer one, "
                                 f"{summary['commands_late']} dropped as late"),
        ("ticks sending nothing", f"{summary['ticks_too_soon']} within min_command_interval_s"),
        ("deadline misses", summary["deadline_misses"]),
        ("ticks without an action", summary["starved_ticks"]),
        ("chunks", summary["chunks"]),
        ("latency p50/p95/p99 (ms)", "/".join(_ms(latency[k]) for k in ("p50", "p95", "p99"))
         + "  (observation received -> chunk ready)"),
        ("inference p50/p95/p99 (ms)", "/".join(_ms(compute[k]) for k in ("p50", "p95", "p99"))),
        ("disconnects", summary["disconnects"]),
        ("safety events", events),
        ("dropped messages", drops),
        ("logs", summary["log_dir"]),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def _number(section: Any, key: str, source: str, prefix: str = "") -> float:
    value = section.get(key) if section is not None else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"{source}: {prefix}{key}: need a positive number, got {value!r}")
    return float(value)


def _integer(section: Any, key: str, source: str, prefix: str = "policy.") -> int:
    value = section.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{source}: {prefix}{key}: need a positive integer, got {value!r}")
    return value


def _finite(value: float | None) -> float | None:
    return None if value is None or not np.isfinite(value) else round(value, 3)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"
