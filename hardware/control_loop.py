"""Inference apart from execution: a policy thread makes action chunks, the control loop plays them on time.

A chunk is stamped with the receive time of the observation it was computed from, and its action k is meant
for that time plus k control periods. Every tick, the execution loop takes the action for *now* from the
newest chunk (actions whose time has passed are skipped), or blends all chunks that cover now with ACT's
temporal-ensembling weights exp(-decay * i) (i = 0 for the oldest). It keeps its rate while the next chunk
is being computed, and every action goes through the safety layer, which alone can publish. A watchdog
thread, on its own clock, lets the safety layer hold when the loop falls two periods behind (`SafetyLayer.watch`).

Per-chunk latency (observation received -> chunk ready) and deadline misses (ticks run more than half a
period late; ticks dropped after a longer stall count too) go to `control.jsonl` in the log directory.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Protocol, Sequence

import numpy as np

from gpc.hardware.robot import Observation
from gpc.hardware.safety import SafetyLayer

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class Chunk:
    """Actions (n, dof) in absolute joint positions; action k is for time `observed + k * period`."""

    index: int
    observed: float
    ready: float
    actions: np.ndarray

    def action_at(self, now: float, period: float) -> np.ndarray | None:
        k = math.floor((now - self.observed) / period + 1e-9)
        return self.actions[k] if 0 <= k < len(self.actions) else None

    def ends(self, period: float) -> float:
        return self.observed + len(self.actions) * period


class ActionSchedule:
    """The chunks the execution loop draws from (thread-safe): newest chunk, or ACT temporal ensembling."""

    def __init__(self, period: float, ensemble_decay: float | None = None):
        self.period, self.ensemble_decay = period, ensemble_decay
        self._chunks: list[Chunk] = []
        self._lock = threading.Lock()

    def add(self, chunk: Chunk) -> None:
        with self._lock:
            self._chunks.append(chunk)
            self._chunks.sort(key=lambda c: c.observed)

    def action_at(self, now: float) -> np.ndarray | None:
        """The action for time `now`; None when no chunk covers it (the policy is late)."""
        with self._lock:
            self._chunks = [c for c in self._chunks if c.ends(self.period) > now]
            if not self._chunks:
                return None
            if self.ensemble_decay is None:
                return self._chunks[-1].action_at(now, self.period)
            actions = [a for a in (c.action_at(now, self.period) for c in self._chunks) if a is not None]
        if not actions:
            return None
        weights = np.exp(-self.ensemble_decay * np.arange(len(actions)))
        return np.tensordot(weights / weights.sum(), np.stack(actions), axes=1)


class ChunkPolicy(Protocol):
    """Absolute joint positions (n, dof) from an observation; `n_obs_steps` joint states of history."""

    n_obs_steps: int

    def __call__(self, observation: Observation) -> np.ndarray: ...


def observation_dict(observation: Observation) -> dict[str, np.ndarray]:
    """A policy's batch of one: `joint_positions` / `joint_velocities` (1, T, dof) and each camera by name
    (1, T, H, W, 3) uint8, T = the observation's history length."""
    obs: dict[str, np.ndarray] = {
        "joint_positions": np.stack([j.positions for j in observation.joints])[None],
        "joint_velocities": np.stack([j.velocities for j in observation.joints])[None],
    }
    for name, frames in observation.frames.items():
        if frames:
            steps = len(observation.joints)
            frames = (frames[0],) * (steps - len(frames)) + tuple(frames)[-steps:]
            obs[name] = np.stack([f.rgb for f in frames])[None]
    return obs


class ComposedPolicy:
    """A gpc Composer as a chunk policy: one weight candidate, a fresh seed per chunk."""

    def __init__(self, composer, weights: Sequence[Any], seed: int = 0):
        self.composer, self.weights, self.seed = composer, list(weights), seed
        self.n_obs_steps = composer.n_obs_steps
        self.calls = 0

    def __call__(self, observation: Observation) -> np.ndarray:
        actions = self.composer.act(observation_dict(observation), self.weights, [self.seed + self.calls])
        self.calls += 1
        return actions[0, 0].double().cpu().numpy()


@dataclass
class LoopStats:
    """What one run did; latencies and compute times in seconds, one entry per chunk."""

    ticks: int = 0
    deadline_misses: int = 0
    starved: int = 0  # ticks with no action for the moment (no chunk covered it)
    chunks: int = 0
    latencies: list[float] = field(default_factory=list)
    compute: list[float] = field(default_factory=list)

    def latency_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies, q) * 1e3) if self.latencies else float("nan")


class ControlLoop:
    """Run `policy` on `robot` through `safety` at `period` seconds per tick, with a new chunk at most every
    `inference_period` seconds from the newest observation."""

    def __init__(self, policy: ChunkPolicy, robot, safety: SafetyLayer, period: float, inference_period: float,
                 ensemble_decay: float | None = None, log_dir: Path | str | None = None, clock=time.monotonic):
        self.policy, self.robot, self.safety = policy, robot, safety
        self.period, self.inference_period, self.clock = period, inference_period, clock
        self.schedule = ActionSchedule(period, ensemble_decay)
        self.stats = LoopStats()
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._first_chunk = threading.Event()
        self._log_lock = threading.Lock()
        self._log = None
        if log_dir is not None:
            Path(log_dir).mkdir(parents=True, exist_ok=True)
            self._log = open(Path(log_dir) / "control.jsonl", "w", buffering=1)

    def run(self, duration: float, stop: threading.Event | None = None) -> LoopStats:
        """Execute from the first chunk until `duration` seconds have passed (or `stop` is set, or the policy
        fails, whose error is then raised after a clean shutdown)."""
        stop = stop or threading.Event()
        end = self.clock() + duration
        thread = threading.Thread(target=self._policy_loop, name="gpc-policy", daemon=True)
        watchdog = threading.Thread(target=self._watch, name="gpc-watchdog", daemon=True)
        thread.start()
        watchdog.start()
        try:
            while not (self._first_chunk.wait(0.01) or stop.is_set() or self._stop.is_set() or self.clock() > end):
                pass
            self._execute(end, stop)
        finally:
            self._stop.set()
            thread.join()
            watchdog.join()
            if self._log is not None:
                self._log.close()
                self._log = None
        if self.error is not None:
            raise self.error
        return self.stats

    def _execute(self, end: float, stop: threading.Event) -> None:
        start = self.clock()
        tick = 0
        while not stop.is_set() and not self._stop.is_set():
            scheduled = start + tick * self.period
            if scheduled >= end:
                break
            delay = scheduled - self.clock()
            if delay > 0 and (stop.wait(delay) or self._stop.is_set()):
                break
            now = self.clock()
            late = now - scheduled
            if late > self.period / 2:
                dropped = int(late // self.period)
                self.stats.deadline_misses += 1 + dropped
                self._write({"type": "deadline_miss", "tick": tick, "late_ms": round(late * 1e3, 3),
                             "dropped_ticks": dropped})
                tick += dropped  # never burst to catch up: the late ticks' actions are stale anyway
            target = self.schedule.action_at(now)
            if target is None:
                self.stats.starved += 1
            self.safety.step(target, now)
            self.stats.ticks += 1
            tick += 1

    def _watch(self) -> None:
        while not self._stop.wait(self.period):
            self.safety.watch(self.clock())

    def _policy_loop(self) -> None:
        last_observed = -math.inf
        next_start = self.clock()
        while not self._stop.is_set():
            delay = next_start - self.clock()
            if delay > 0 and self._stop.wait(delay):
                return
            if not self.robot.wait_for_new_state(last_observed, timeout=self.period):
                continue
            observation = self.robot.observation(self.policy.n_obs_steps)
            started = self.clock()
            try:
                actions = np.asarray(self.policy(observation), dtype=np.float64)
            except Exception as err:  # noqa: BLE001 - stop the run; the arm holds, the error is re-raised
                LOG.exception("policy failed; stopping")
                self.error = err
                self._stop.set()
                return
            ready = self.clock()
            chunk = Chunk(self.stats.chunks, observation.observed, ready, actions)
            self.schedule.add(chunk)
            self._first_chunk.set()
            last_observed = observation.observed
            self.stats.chunks += 1
            self.stats.latencies.append(ready - observation.observed)
            self.stats.compute.append(ready - started)
            self._write({"type": "chunk", "index": chunk.index, "observed": observation.observed, "ready": ready,
                         "latency_ms": round((ready - observation.observed) * 1e3, 3),
                         "compute_ms": round((ready - started) * 1e3, 3), "steps": len(actions)})
            next_start = started + self.inference_period

    def _write(self, record: Mapping[str, Any]) -> None:
        if self._log is not None:
            with self._log_lock:
                self._log.write(json.dumps(record) + "\n")
