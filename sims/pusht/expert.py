"""Scripted PushT expert that plans with the simulator's privileged state.

Each decision simulates push primitives (travel around the block to a spot next to an edge, push along
a direction for j steps, hold) on a private replica of gym-pusht's physics, starting from the exact
current state, and runs the one that cuts the block's pose error fastest per step. The block only moves
while pushed (the space has full damping), so a few primitives chained greedily reach the goal. Actions
are absolute agent targets moving at bounded speed, like a mouse-teleoperated demo.
"""

from __future__ import annotations

import heapq
import itertools

import numpy as np
import pymunk
from gym_pusht.envs.pusht import PushTEnv
from shapely.geometry import LineString, Point, Polygon

R_AGENT = 15.0
GOAL = np.array([256.0, 256.0, np.pi / 4])  # gym-pusht's fixed goal pose
# The T in the block frame (gym-pusht's add_tee): a 120x30 bar on top of a 30x90 stem.
OUTLINE = np.array([(-60, 0), (60, 0), (60, 30), (15, 30), (15, 120), (-15, 120), (-15, 30), (-60, 30)],
                   dtype=float)
ARENA = (5 + 2 + R_AGENT + 1, 506 - 2 - R_AGENT - 1)  # where the agent centre fits inside the walls
V_TRAVEL = 15.0  # px per step when not in contact
HORIZON = 12  # push steps simulated per primitive
BRANCHES = (1, 2, 3, 4, 6, 8, 10, 12)  # push lengths (in steps) whose outcome is evaluated exactly
HOLD = 3  # steps the target is held after a push while the agent settles
N_EXACT = 6  # primitives re-simulated exactly, with the travel, after screening


def rotation(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s], [s, c]])


def to_world(pose, points: np.ndarray) -> np.ndarray:
    return points @ rotation(pose[2]).T + pose[:2]


GOAL_OUTLINE = to_world(GOAL, OUTLINE)
GOAL_POLYGON = Polygon(GOAL_OUTLINE)


def pose_error(pose) -> float:
    """RMS distance (px) of the T's corners from the goal's; success needs about 2 px."""
    return float(np.sqrt(((to_world(pose, OUTLINE) - GOAL_OUTLINE) ** 2).sum(-1).mean()))


def coverage(pose) -> float:
    """gym-pusht's coverage: goal area covered by the block, as a fraction."""
    return Polygon(to_world(pose, OUTLINE)).intersection(GOAL_POLYGON).area / GOAL_POLYGON.area


def _push_starts(spacing: float = 15.0, gap: float = 3.0) -> list[tuple[np.ndarray, np.ndarray]]:
    """(agent start, push direction) pairs in the block frame: `gap` px off an edge or corner, pushing
    inward or 0.5 rad to either side (inside the friction cone, so the contact sticks)."""
    tee = Polygon(OUTLINE)
    edges = np.roll(OUTLINE, -1, axis=0) - OUTLINE
    normals = np.stack([edges[:, 1], -edges[:, 0]], axis=1) / np.linalg.norm(edges, axis=1, keepdims=True)
    spots = []
    for a, edge, normal in zip(OUTLINE, edges, normals):
        n = max(1, round(np.linalg.norm(edge) / spacing))
        spots += [(a + f * edge, normal) for f in (np.arange(n) + 0.5) / n]
    for i, corner in enumerate(OUTLINE):  # corners: normal bisects the two edges'
        bisector = normals[i] + normals[i - 1]
        spots.append((corner, bisector / np.linalg.norm(bisector)))
    starts = []
    for contact, normal in spots:
        start = contact + normal * (R_AGENT + gap)
        if tee.distance(Point(start)) < R_AGENT + gap - 1e-6:  # inside a concave corner: no room
            continue
        starts += [(start, rotation(turn) @ -normal) for turn in (-0.5, 0.0, 0.5)]
    return starts


PUSH_STARTS = _push_starts()


class ReplicaSim:
    """gym-pusht's physics (same bodies, creation order and PD loop) that can be set to any state."""

    def __init__(self):
        self.space = pymunk.Space()
        self.space.gravity = 0, 0
        self.space.damping = 0.0
        self.space.add(*[PushTEnv.add_segment(self.space, a, b, 2) for a, b in
                         [((5, 506), (5, 5)), ((5, 5), (506, 5)), ((506, 5), (506, 506)), ((5, 506), (506, 506))]])
        self.agent = PushTEnv.add_circle(self.space, (256, 400), R_AGENT)
        self.block, _ = PushTEnv.add_tee(self.space, (256, 300), 0)

    def get(self) -> tuple:
        return (tuple(self.agent.position), tuple(self.agent.velocity), tuple(self.block.position),
                self.block.angle, tuple(self.block.velocity), self.block.angular_velocity)

    def set(self, state: tuple) -> None:
        self.agent.position, self.agent.velocity = state[0], state[1]
        self.block.angle = state[3]  # angle first: setting it rotates about the centre of gravity
        self.block.position, self.block.velocity, self.block.angular_velocity = state[2], state[4], state[5]

    def pose(self) -> np.ndarray:
        return np.array([*self.block.position, self.block.angle])

    def step(self, action) -> None:
        """One env step: 10 physics substeps of PD control toward the target, as PushTEnv.step."""
        ax, ay = float(action[0]), float(action[1])
        for _ in range(10):
            (px, py), (vx, vy) = self.agent.position, self.agent.velocity
            self.agent.velocity = (vx + (100 * (ax - px) + 20 * (0.0 - vx)) * 0.01,
                                   vy + (100 * (ay - py) + 20 * (0.0 - vy)) * 0.01)
            self.space.step(0.01)


def _shortest_path(start, end, keepout: Polygon, waypoints: np.ndarray) -> list | None:
    """Shortest polyline start -> end whose segments avoid `keepout` (visibility graph + Dijkstra)."""
    nodes = [np.asarray(start), np.asarray(end), *waypoints]
    dist, prev, queue = {0: 0.0}, {}, [(0.0, 0)]
    while queue:
        d, i = heapq.heappop(queue)
        if i == 1:
            path = [nodes[1]]
            while i in prev:
                i = prev[i]
                path.append(nodes[i])
            return path[::-1]
        if d > dist[i]:
            continue
        for j in range(1, len(nodes)):
            if j != i and not LineString([nodes[i], nodes[j]]).intersects(keepout):
                dj = d + float(np.linalg.norm(nodes[j] - nodes[i]))
                if dj < dist.get(j, np.inf):
                    dist[j], prev[j] = dj, i
                    heapq.heappush(queue, (dj, j))
    return None


def _travel(agent, start, direction, pose, slow: float) -> list[np.ndarray] | None:
    """Targets that bring the agent around the block to `start`, arriving along `direction`, slowing
    down to `slow` px/step at the end; None if there is no way in."""
    tee = Polygon(to_world(pose, OUTLINE))
    keepout = tee.buffer(R_AGENT + 4)
    entry = start - direction * 12
    if keepout.contains(Point(entry)):
        return None
    points = [np.asarray(agent)]
    if keepout.contains(Point(agent)):  # leave contact by the shortest way out
        exit_point = keepout.exterior.interpolate(keepout.exterior.project(Point(agent)))
        points.append(np.asarray(agent) + 1.1 * (np.array(exit_point.coords[0]) - agent))
    corners = np.clip(tee.buffer(R_AGENT + 8, join_style="mitre").exterior.coords[:-1], *ARENA)
    path = _shortest_path(points[-1], entry, keepout, corners)
    if path is None:
        return None
    polyline = np.array(points[:-1] + path + [start])
    lengths = np.linalg.norm(np.diff(polyline, axis=0), axis=1)
    cumulative, total = np.r_[0.0, np.cumsum(lengths)], lengths.sum()
    targets, d = [], 0.0
    while d < total - 1e-6:
        d = min(total, d + min(V_TRAVEL, max(slow, 0.35 * (total - d))))  # ease in near the end
        targets.append(np.array([np.interp(d, cumulative, polyline[:, k]) for k in range(2)]))
    return targets


class PushTExpert:
    """Call with the unwrapped `PushTEnv` each step; returns the next target (float32 (2,))."""

    def __init__(self):
        self.sim = ReplicaSim()
        self.plan: list[np.ndarray] = []

    def reset(self) -> None:
        self.plan = []

    def __call__(self, env: PushTEnv) -> np.ndarray:
        if not self.plan:
            self.plan = self._decide(env)
        return self.plan.pop(0)

    def _decide(self, env: PushTEnv) -> list[np.ndarray]:
        self.sim.set((tuple(env.agent.position), tuple(env.agent.velocity), tuple(env.block.position),
                      env.block.angle, tuple(env.block.velocity), env.block.angular_velocity))
        now, pose = self.sim.get(), self.sim.pose()
        error, agent = pose_error(pose), np.array(now[0])
        speed = float(np.clip(error / 4, 1.5, 8.0))  # push slower as the block gets close
        ranked = sorted(self._screen(now, pose, error, speed), key=lambda c: -c[0])
        reachable = ((start, direction, travel) for _, start, direction in ranked
                     if (travel := _travel(agent, start, direction, pose, speed)) is not None)
        best_score, best_plan = -np.inf, [agent]  # boxed in: stay and look again next step
        for start, direction, travel in itertools.islice(reachable, N_EXACT):
            for plan, final in self._outcomes(now, travel, start, direction, speed):
                done = pose_error(final) < 4 and coverage(final) > 0.95
                score = 1e6 - len(plan) if done else (error - pose_error(final)) / len(plan)
                if score > best_score:
                    best_score, best_plan = score, plan
        return [np.clip(t, 0, 512).astype(np.float32) for t in best_plan]

    def _screen(self, now: tuple, pose: np.ndarray, error: float, speed: float):
        """Cheap first pass: every push from rest at its start, travel time guessed from distance.
        Yields (error reduction per step, start, direction) in the world frame."""
        for start, direction in PUSH_STARTS:
            start, direction = to_world(pose, start), rotation(pose[2]) @ direction
            if not ((start > ARENA[0]) & (start < ARENA[1])).all():
                continue
            self.sim.set(((*start,), (0.0, 0.0), *now[2:]))
            errors = []
            for j in range(1, HORIZON + 1):
                self.sim.step(start + direction * speed * j)
                errors.append(pose_error(self.sim.pose()))
            j = int(np.argmin(errors))
            steps = np.linalg.norm(start - now[0]) / V_TRAVEL + j + 1 + HOLD
            yield (error - errors[j]) / steps, start, direction

    def _outcomes(self, now: tuple, travel: list, start, direction, speed: float):
        """Exact pass from the current state: travel, then push for each length in BRANCHES and hold.
        Yields (targets, final block pose)."""
        self.sim.set(now)
        for target in travel:
            self.sim.step(target)
        pushes = [start + direction * speed * j for j in range(1, HORIZON + 1)]
        for j, target in enumerate(pushes, 1):
            self.sim.step(target)
            if j in BRANCHES:
                branch_point = self.sim.get()
                for _ in range(HOLD):
                    self.sim.step(target)
                yield travel + pushes[:j] + [target] * HOLD, self.sim.pose()
                self.sim.set(branch_point)
