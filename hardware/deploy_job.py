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
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
from omegaconf import DictConfig

from gpc.app.config import ConfigError, load_composer, resolve_path, weight_candidates
from gpc.app.schema import check, doc
from gpc.app.yaml_file import load_yaml
from gpc.hardware.control_loop import ChunkPolicy, ComposedPolicy, ControlLoop
from gpc.hardware.robot import RobotConnectionError, RosRobot
from gpc.hardware.robot_config import RobotConfig, robot_config
from gpc.hardware.safety import SafetyLayer
from gpc.runtime.outputs import check_output_dir

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeployPolicy:
    compose: Optional[str] = field(default=None, metadata=doc(
        "a composition YAML whose actions are absolute joint positions (radians); null: the rehearsal reach pair"))
    weights: Any = field(default=None, metadata=doc("one weight vector (overrides the composition's)"))
    seed: int = field(default=0, metadata=doc("noise seed", minimum=0))
    targets: Optional[list[list[float]]] = field(default=None, metadata=doc(
        "rehearsal pair: each parent's target joint configuration (radians)"))
    horizon: int = field(default=16, metadata=doc("rehearsal pair: chunk length", minimum=1))
    n_action_steps: int = field(default=12, metadata=doc("rehearsal pair: executed steps per chunk", minimum=1))
    time_constant_s: float = field(default=0.5, metadata=doc("rehearsal pair: approach time", positive=True))
    speed: float = field(default=0.5, metadata=doc("rehearsal pair: rad/s per joint at most", positive=True))
    noise_std: float = field(default=0.002, metadata=doc("rehearsal pair: each parent's spread (rad)",
                                                         positive=True))
    num_inference_steps: int = field(default=10, metadata=doc("rehearsal pair: denoising steps", minimum=1))


@dataclass(frozen=True)
class ControlSettings:
    inference_period_s: float = field(default=0.08, metadata=doc(
        "start a new chunk at most this often, from the newest observation", positive=True))
    ensemble_decay: Optional[float] = field(default=None, metadata=doc(
        "ACT temporal ensembling weights exp(-decay * i); null: the newest chunk only", minimum=0.0))


@dataclass(frozen=True)
class DeployConfig:
    robot: Any = field(metadata=doc("the robot (configs/robot/<name>.yaml); see `RobotFile`"))
    host: str = field(default="127.0.0.1", metadata=doc("the rosbridge server"))
    port: int = field(default=9090, metadata=doc("the rosbridge server's port", minimum=1, maximum=65535))
    duration_s: float = field(default=30.0, metadata=doc("run this long (Ctrl-C stops earlier)", positive=True))
    dry_run: bool = field(default=False, metadata=doc("compute and log commands without sending them"))
    log_dir: str = field(default="outputs/deploy", metadata=doc("control.jsonl, safety_events.jsonl, summary.json"))
    connect_timeout_s: float = field(default=5.0, metadata=doc(
        "for the connection, the first joint state and the e-stop's release", positive=True))
    torch_threads: Optional[int] = field(default=1, metadata=doc("inference threads; null keeps torch's default",
                                                                 minimum=1))
    policy: DeployPolicy = field(default_factory=DeployPolicy, metadata=doc("what drives the arm"))
    control: ControlSettings = field(default_factory=ControlSettings, metadata=doc("chunk timing"))


def main(config: DictConfig, source: str = "deploy config") -> None:
    threads = check(DeployConfig, config, source).torch_threads
    if threads is not None:  # this process's inference shares a small CPU with the loop
        import torch

        torch.set_num_threads(threads)
    print(format_summary(run(config, source)))


def run(config: DictConfig, source: str, wrap_policy: Callable[[ChunkPolicy], ChunkPolicy] | None = None,
        stop: threading.Event | None = None) -> dict[str, Any]:
    """Deploy as `config` says and return the summary; `wrap_policy` lets tests inject faulty policies."""
    settings = check(DeployConfig, config, source)
    robot = robot_config(config.get("robot"), source)
    log_dir = check_output_dir(settings.log_dir, source, "log_dir")
    duration, connect_timeout = settings.duration_s, settings.connect_timeout_s
    inference_period, decay = settings.control.inference_period_s, settings.control.ensemble_decay
    port = settings.port
    policy = build_policy(settings.policy, robot, source)
    if wrap_policy is not None:
        policy = wrap_policy(policy)
    dry_run = settings.dry_run
    log_dir.mkdir(parents=True, exist_ok=True)
    ros = RosRobot(robot, settings.host, port, read_only=dry_run)
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


def build_policy(value: DeployPolicy, robot: RobotConfig, source: str) -> ComposedPolicy:
    """The composed policy the `policy:` section names: a composition YAML, or the rehearsal reach pair."""
    if value.compose is not None:
        path = resolve_path(value.compose)
        if not path.is_file():
            raise ConfigError(f"{source}: policy.compose: not found: {value.compose}")
        composition = load_yaml(path, "composition")
        composer = load_composer(composition, f"{path}", base=path.resolve().parent)
        weights = value.weights if value.weights is not None else composition.get("weights")
        check_observations(composer, robot, source)
    else:
        from gpc.hardware.joint_policy import joint_reach_composer

        targets = value.targets
        if targets is None or len(targets) < 2 or any(len(t) != robot.dof for t in targets):
            raise ConfigError(f"{source}: policy.targets: need two or more joint configurations of "
                              f"{robot.dof} numbers, got {targets!r}")
        for i, target in enumerate(np.asarray(targets, dtype=np.float64)):
            if np.any(target < robot.limits.lower) or np.any(target > robot.limits.upper):
                raise ConfigError(f"{source}: policy.targets[{i}]: {target.tolist()} is outside the joint limits")
        try:
            composer = joint_reach_composer(targets, robot.limits.lower, robot.limits.upper, robot.period,
                                            value.horizon, value.n_action_steps, value.time_constant_s, value.speed,
                                            value.noise_std, value.num_inference_steps)
        except (ValueError, TypeError) as err:
            raise ConfigError(f"{source}: policy: {err}") from None
        weights = value.weights
    if composer.action_dim != robot.dof:
        raise ConfigError(f"{source}: policy: actions have {composer.action_dim} dims, the robot has {robot.dof} "
                          "joints")
    schedules = weight_candidates(weights, len(composer.parents), source, "policy.weights")
    if len(schedules) != 1:
        raise ConfigError(f"{source}: policy.weights: a deployment runs one weight vector, got {len(schedules)}")
    return ComposedPolicy(composer, schedules, value.seed)


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


def _finite(value: float | None) -> float | None:
    return None if value is None or not np.isfinite(value) else round(value, 3)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"
