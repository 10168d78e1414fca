"""A simulated 7-dof arm behind a rosbridge v2 websocket server: rehearse a deployment without a robot.

The server speaks the subset of the rosbridge v2 JSON protocol that roslibpy's topics use (`advertise`,
`unadvertise`, `publish`, `subscribe`, `unsubscribe`; roslibpy sends nothing else on connect, and service
calls get a failed `service_response`). Behind it, pybullet (DIRECT mode, no GUI) steps a Franka Panda in
real time under position control, publishes `sensor_msgs/JointState` and an e-stop heartbeat
(`std_msgs/Bool`, `data: false`, latched so that a new subscriber gets it at once), and takes joint-position
commands as `std_msgs/Float64MultiArray` or one-point `trajectory_msgs/JointTrajectory`. Messages published
by one client are routed to the others, so an e-stop node or a monitor works as on a ROS graph.

Tests drive faults through hooks: `drop_connections`, `stall`, `hold_loop`, `publish` (e.g. an e-stop),
`estop_heartbeat`, `refuse_subscription`, `joint_state_fault` (frozen, backwards, stale or future stamps,
list-shaped messages), `send_text`, `send_binary` and `send_large` (raw frames); `commands` records every
command received, with its receive time, the arm's position at that moment and how long the server's loop
had not run before it read the command (a receive time is late by up to that much: the loop watches itself).
`SimProcess` runs the simulator in a child process behind the same hooks, so that its receive times are not
skewed by the client's threads sharing a GIL.

    python -m gpc.hardware.rosbridge_sim --port 9090 [--camera jpeg]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

LOG = logging.getLogger(__name__)

DEFAULT_URDF = "franka_panda/panda.urdf"
PANDA_HOME = (0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785)  # the Panda's "ready" pose
ARRAY_COMMAND = "std_msgs/Float64MultiArray"
TRAJECTORY_COMMAND = "trajectory_msgs/JointTrajectory"
CAMERA_TYPES = {"jpeg": "sensor_msgs/CompressedImage", "raw": "sensor_msgs/Image"}
JOINT_STATE_FAULTS = (None, "freeze", "backwards", "stamp_offset", "list")
# s: the loop's watch wakes this often; a longer absence is recorded as a stall, and a command read up to
# STALL_REACH after a stall ended may have waited through it (the loop resumes its callbacks in any order).
STALL = 0.002
STALL_REACH = 0.005


@dataclass(frozen=True)
class ReceivedCommand:
    """One command as the arm got it: `received` is time.monotonic() at receipt, `measured` the arm's joint
    positions at the last simulation tick before, `applied` False when it was refused (malformed or
    non-finite), `stall` how long the server's loop had gone without running when it read the command (s;
    0 when it ran within STALL: the receive time may be late by that much, not more)."""

    received: float
    positions: np.ndarray
    measured: np.ndarray
    message_type: str
    applied: bool
    stall: float = 0.0


class ArmSim:
    """One position-controlled arm in pybullet DIRECT mode, stepped to the wall clock by `advance_to`.

    pybullet's client is not thread-safe: every call happens on the server's loop thread.
    """

    def __init__(self, urdf: str = DEFAULT_URDF, home: tuple[float, ...] = PANDA_HOME, time_step: float = 1 / 240):
        import pybullet as p
        import pybullet_data

        self.p = p
        self.client = p.connect(p.DIRECT)
        p.setAdditionalSearchPath(pybullet_data.getDataPath(), physicsClientId=self.client)
        p.setGravity(0, 0, -9.81, physicsClientId=self.client)
        p.setTimeStep(time_step, physicsClientId=self.client)
        self.body = p.loadURDF(urdf, useFixedBase=True, physicsClientId=self.client)
        infos = [p.getJointInfo(self.body, j, physicsClientId=self.client)
                 for j in range(p.getNumJoints(self.body, physicsClientId=self.client))]
        arm = [info for info in infos if info[2] == p.JOINT_REVOLUTE]
        if len(arm) != len(home):
            raise ValueError(f"{urdf} has {len(arm)} revolute joints, home pose has {len(home)}")
        self.joints = [info[0] for info in arm]
        self.names = [info[1].decode() for info in arm]
        self.lower = np.array([info[8] for info in arm])
        self.upper = np.array([info[9] for info in arm])
        self.max_force = [float(info[10]) for info in arm]
        self.max_velocity = [float(info[11]) for info in arm]
        self.time_step = time_step
        self.steps = 0
        for joint, q in zip(self.joints, home):
            p.resetJointState(self.body, joint, q, physicsClientId=self.client)
        self.command(np.asarray(home, dtype=np.float64))

    def command(self, positions: np.ndarray) -> None:
        for joint, q, force, velocity in zip(self.joints, positions, self.max_force, self.max_velocity):
            self.p.setJointMotorControl2(self.body, joint, self.p.POSITION_CONTROL, targetPosition=float(q),
                                         force=force, maxVelocity=velocity, physicsClientId=self.client)

    def advance_to(self, sim_time: float, max_steps: int = 12) -> None:
        """Step until the simulation clock reaches `sim_time` seconds, at most `max_steps` steps: after a stall
        of this process the clock jumps ahead rather than blocking the server's loop for the catch-up."""
        behind = int(sim_time / self.time_step) - self.steps
        self.steps += max(behind - max_steps, 0)
        for _ in range(min(behind, max_steps)):
            self.p.stepSimulation(physicsClientId=self.client)
            self.steps += 1

    def state(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(positions, velocities, efforts) of the arm joints."""
        states = self.p.getJointStates(self.body, self.joints, physicsClientId=self.client)
        return tuple(np.array([s[i] for s in states]) for i in (0, 1, 3))

    def render(self, width: int, height: int) -> np.ndarray:
        """An RGB frame (height, width, 3) uint8 from TinyRenderer, looking at the arm from the front."""
        view = self.p.computeViewMatrix([1.3, 0.0, 0.9], [0.0, 0.0, 0.4], [0, 0, 1])
        projection = self.p.computeProjectionMatrixFOV(60, width / height, 0.05, 5.0)
        _, _, rgba, _, _ = self.p.getCameraImage(width, height, view, projection,
                                                 renderer=self.p.ER_TINY_RENDERER, physicsClientId=self.client)
        return np.asarray(rgba, dtype=np.uint8).reshape(height, width, 4)[..., :3]

    def close(self) -> None:
        self.p.disconnect(physicsClientId=self.client)


def joint_state_message(names: list[str], positions, velocities, efforts, stamp: float | None = None) -> dict:
    now = time.time() if stamp is None else stamp
    return {"header": {"stamp": {"sec": int(now), "nanosec": int((now % 1) * 1e9)}, "frame_id": ""},
            "name": list(names), "position": [float(x) for x in positions],
            "velocity": [float(x) for x in velocities], "effort": [float(x) for x in efforts]}


def image_message(rgb: np.ndarray, fmt: str) -> dict:
    """sensor_msgs/CompressedImage (JPEG) or sensor_msgs/Image (rgb8); rosbridge sends uint8[] as base64."""
    if fmt == "jpeg":
        from PIL import Image

        buffer = io.BytesIO()
        Image.fromarray(rgb).save(buffer, format="JPEG", quality=85)
        return {"header": {"frame_id": "camera"}, "format": "jpeg",
                "data": base64.b64encode(buffer.getvalue()).decode()}
    height, width, _ = rgb.shape
    return {"header": {"frame_id": "camera"}, "height": height, "width": width, "encoding": "rgb8",
            "is_bigendian": 0, "step": 3 * width, "data": base64.b64encode(rgb.tobytes()).decode()}


def command_positions(msg: dict, message_type: str, names: list[str]) -> np.ndarray:
    """Joint positions in the arm's joint order from a command message; ValueError when malformed."""
    if message_type == TRAJECTORY_COMMAND:
        points = msg.get("points") or []
        if len(points) != 1:
            raise ValueError(f"a JointTrajectory command needs exactly one point, got {len(points)}")
        values = [float(x) for x in points[0].get("positions", [])]
        joint_names = list(msg.get("joint_names") or names)
        if sorted(joint_names) != sorted(names) or len(values) != len(names):
            raise ValueError(f"JointTrajectory joints {joint_names} do not match the arm's {names}")
        by_name = dict(zip(joint_names, values))
        return np.array([by_name[n] for n in names])
    values = [float(x) for x in msg.get("data", [])]
    if len(values) != len(names):
        raise ValueError(f"a Float64MultiArray command needs {len(names)} positions, got {len(values)}")
    return np.array(values)


class _Client:
    """One websocket connection: what it advertised (topic -> type) and its subscription ids per topic."""

    def __init__(self, ws):
        self.ws = ws
        self.advertised: dict[str, str] = {}
        self.subscriptions: dict[str, set[str]] = {}


class RosbridgeSim:
    """The arm and its rosbridge server on a background thread; `start()` returns once it listens.

    `port=0` picks a free port (read `port` after `start()`). Joint states go out at `rate_hz` on
    `joint_states_topic`; commands are taken on `command_topic`; the e-stop heartbeat goes out at
    `estop_rate_hz` on `estop_topic` (None: no e-stop); `camera` ("jpeg" or "raw") adds a TinyRenderer camera
    at `camera_rate_hz` on `camera_topic`, rendered at `camera_size` and enlarged `camera_scale` times; with
    `camera_still` the first picture is sent again and again (a render holds the server's loop for ~16 ms,
    which would make its receive times late).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 9090, rate_hz: float = 50.0,
                 joint_states_topic: str = "/joint_states", command_topic: str = "/joint_command",
                 camera: str | None = None, camera_topic: str = "/camera/image",
                 camera_size: tuple[int, int] = (64, 48), camera_rate_hz: float = 10.0, urdf: str = DEFAULT_URDF,
                 home: tuple[float, ...] = PANDA_HOME, record_limit: int | None = None,
                 estop_topic: str | None = "/estop", estop_rate_hz: float = 20.0, camera_scale: int = 1,
                 camera_still: bool = False):
        if camera is not None and camera not in CAMERA_TYPES:
            raise ValueError(f"camera must be one of {sorted(CAMERA_TYPES)} or None, got {camera!r}")
        self.host, self.port, self.rate_hz = host, port, rate_hz
        self.joint_states_topic, self.command_topic = joint_states_topic, command_topic
        self.camera, self.camera_topic, self.camera_size, self.camera_rate_hz = (camera, camera_topic, camera_size,
                                                                                 camera_rate_hz)
        self.urdf, self.home, self.camera_scale, self.camera_still = urdf, home, camera_scale, camera_still
        self.estop_topic, self.estop_rate_hz = estop_topic, estop_rate_hz
        self._lock = threading.Condition()
        self._commands: deque[ReceivedCommand] = deque(maxlen=record_limit)
        self._stalls: deque[tuple[float, float]] = deque(maxlen=record_limit)  # (last seen running, running again)
        self._command_total = 0
        self._estop_beating = estop_topic is not None
        self._refused: set[str] = set()
        self._fault: tuple[str | None, float] = (None, 0.0)
        self._last_joint_state: dict | None = None
        self._positions = np.asarray(home, dtype=np.float64)
        self._stalled = False
        self._clients: set[_Client] = set()
        self._latched: dict[str, str] = {}
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.joint_names: list[str] = []

    # -- lifecycle --------------------------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> "RosbridgeSim":
        self._thread = threading.Thread(target=self._run, name="rosbridge-sim", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"rosbridge sim did not start within {timeout} s")
        if self._error is not None:
            raise self._error
        LOG.info("rosbridge sim: %d-joint arm on ws://%s:%d", len(self.joint_names), self.host, self.port)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self._thread is None:
            return
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"rosbridge sim did not stop within {timeout} s")
        self._thread = None

    def __enter__(self) -> "RosbridgeSim":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    # -- fault-injection and inspection hooks --------------------------------------------------------------------

    def drop_connections(self) -> float:
        """Abort every client's TCP connection (no close handshake), as a pulled cable or a crashed bridge;
        returns when (time.monotonic())."""
        self._call(self._abort_all)
        return time.monotonic()

    def stall(self, stalled: bool = True) -> None:
        """Stop (or resume) publishing joint states while staying connected and simulating."""
        with self._lock:
            self._stalled = stalled

    def publish(self, topic: str, msg: Any, latch: bool = False) -> None:
        """Publish as a ROS node would, e.g. a latched e-stop: `publish("/estop", {"data": True}, latch=True)`."""
        self._call(lambda: self._route(None, topic, msg, latch))

    def hold_loop(self, seconds: float) -> None:
        """Hold the server's loop for `seconds`, as a long callback or a paused process would: what arrives
        meanwhile is read late (and its command's `stall` says so)."""
        self._call(lambda: time.sleep(seconds))

    def estop_heartbeat(self, beating: bool) -> None:
        """Stop (or resume) the e-stop heartbeat, as an e-stop node that hangs or is unplugged."""
        with self._lock:
            self._estop_beating = beating

    def refuse_subscription(self, topic: str) -> None:
        """Answer subscriptions to `topic` with an error status (as rosbridge does for an unknown type) and
        send nothing on it."""
        with self._lock:
            self._refused.add(topic)

    def joint_state_fault(self, kind: str | None, value: float = 0.0) -> None:
        """Corrupt the joint states from now on: "freeze" re-sends the last message as it was, "backwards"
        stamps each message one period before the last, "stamp_offset" adds `value` seconds to every stamp,
        "list" sends the positions as a bare list; None ends the fault."""
        if kind not in JOINT_STATE_FAULTS:
            raise ValueError(f"joint state fault must be one of {JOINT_STATE_FAULTS}, got {kind!r}")
        with self._lock:
            self._fault = (kind, value)

    def send_text(self, text: str) -> None:
        """One raw text frame to every client."""
        self._call(lambda: self._broadcast_all(text))

    def send_binary(self, size: int, text_frame: bool = False) -> None:
        """One frame of `size` bytes 0xff to every client: a binary frame (rosbridge's JSON protocol sends
        text), or with `text_frame` a text frame that is not UTF-8."""
        junk = b"\xff" * size
        self._call(lambda: self._broadcast_all(junk, text_frame))

    def send_large(self, topic: str, size: int) -> None:
        """One publish message of about `size` bytes on `topic`, a list of numbers (the costliest JSON to decode),
        sent a 64 KiB frame at a time, giving the loop back after each: neither building nor sending it holds up
        the server's loop (sent at once, 16 MB held it ~10 ms)."""
        head = json.dumps({"op": "publish", "topic": topic, "msg": {"data": []}})[:-3].encode()
        chunk = b"0.5, " * 13107
        fragments = [head] + [chunk] * max((size - len(head)) // len(chunk), 1) + [b"0.5]}}"]

        async def one_at_a_time():
            for fragment in fragments:
                yield fragment
                await asyncio.sleep(0)

        self._call(lambda: [asyncio.ensure_future(c.ws.send(one_at_a_time(), text=True)) for c in self._clients])

    def commands(self, start: int = 0) -> list[ReceivedCommand]:
        """The commands received, from the `start`-th one on (counting every command ever received)."""
        with self._lock:
            first = self._command_total - len(self._commands)
            commands, stalls = list(self._commands)[max(start - first, 0):], np.array(self._stalls).reshape(-1, 2)
        waited = waited_through(stalls, np.array([c.received for c in commands]))
        return [replace(c, stall=float(w)) for c, w in zip(commands, waited)]

    def wait_for_commands(self, count: int, timeout: float) -> bool:
        """Block until at least `count` commands were received (in total); False on timeout."""
        with self._lock:
            return self._lock.wait_for(lambda: self._command_total >= count, timeout)

    def wait_for_clients(self, count: int, timeout: float) -> bool:
        """Block until exactly `count` clients are connected; False on timeout."""
        with self._lock:
            return self._lock.wait_for(lambda: len(self._clients) == count, timeout)

    def joint_positions(self) -> np.ndarray:
        """The arm's joint positions at the last simulation tick."""
        with self._lock:
            return self._positions.copy()

    def _call(self, function) -> None:
        """Run `function` on the loop thread and wait for it."""
        if self._loop is None or self._loop.is_closed():
            raise RuntimeError("rosbridge sim is not running")

        async def run():
            function()

        asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout=5)

    # -- server --------------------------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as err:  # noqa: BLE001 - reported by start(), or logged if it happens later
            self._error = err
            if self._ready.is_set():
                LOG.exception("rosbridge sim stopped on an error")
            self._ready.set()

    async def _main(self) -> None:
        from websockets.asyncio.server import serve

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._arm = ArmSim(self.urdf, self.home)
        self._t0 = time.monotonic()
        self.joint_names = self._arm.names
        try:
            async with serve(self._serve, self.host, self.port, compression=None) as server:
                self.port = server.sockets[0].getsockname()[1]
                tasks = [asyncio.create_task(self._tick_forever()), asyncio.create_task(self._watch_loop())]
                self._ready.set()
                await self._stop.wait()
                for task in tasks:
                    task.cancel()
        finally:
            self._arm.close()

    async def _serve(self, ws) -> None:
        from websockets.exceptions import ConnectionClosed

        client = _Client(ws)
        with self._lock:
            self._clients.add(client)
            self._lock.notify_all()
        LOG.info("rosbridge sim: client connected from %s", ws.remote_address)
        try:
            async for raw in ws:
                try:
                    self._handle(client, json.loads(raw))
                except (ValueError, KeyError, TypeError) as err:
                    LOG.warning("rosbridge sim: bad message %.200r: %s", raw, err)
        except ConnectionClosed:
            pass
        finally:
            with self._lock:
                self._clients.discard(client)
                self._lock.notify_all()
            LOG.info("rosbridge sim: client %s gone", ws.remote_address)

    def _handle(self, client: _Client, message: dict[str, Any]) -> None:
        op, topic = message.get("op"), message.get("topic")
        if op == "advertise":
            client.advertised[topic] = message["type"]
        elif op == "unadvertise":
            client.advertised.pop(topic, None)
        elif op == "subscribe":
            with self._lock:
                refused = topic in self._refused
            if refused:
                self._send(client, json.dumps({"op": "status", "level": "error", "id": message.get("id"),
                                               "msg": f"subscribe: {topic} is not available"}))
                return
            client.subscriptions.setdefault(topic, set()).add(message.get("id") or "")
            if topic in self._latched:
                self._send(client, self._latched[topic])
        elif op == "unsubscribe":
            ids = client.subscriptions.get(topic, set())
            ids.discard(message.get("id") or "")
            if not ids or not message.get("id"):
                client.subscriptions.pop(topic, None)
        elif op == "publish":
            if topic == self.command_topic:
                self._command(client, message["msg"])
            self._route(client, topic, message["msg"], bool(message.get("latch")))
        elif op == "call_service":
            self._send(client, json.dumps({"op": "service_response", "id": message.get("id"),
                                           "service": message.get("service"), "result": False,
                                           "values": "services are not simulated"}))
        else:
            LOG.warning("rosbridge sim: op %r is not supported", op)

    def _command(self, client: _Client, msg: dict) -> None:
        """Record a command (with the arm's position at the last tick), then drive the arm to it if it is
        well-formed and finite. Nothing here steps the physics: the receive time is the measurement."""
        now = time.monotonic()
        with self._lock:
            measured = self._positions.copy()
        message_type = client.advertised.get(self.command_topic) or (
            TRAJECTORY_COMMAND if "points" in msg else ARRAY_COMMAND)
        try:
            positions = command_positions(msg, message_type, self.joint_names)
        except (ValueError, TypeError, KeyError) as err:
            LOG.warning("rosbridge sim: refused command: %s", err)
            positions, applied = np.full(len(self.joint_names), np.nan), False
        else:
            applied = bool(np.all(np.isfinite(positions)))
            if applied:
                self._arm.command(positions)
            else:
                LOG.warning("rosbridge sim: refused non-finite command %s", positions)
        with self._lock:
            self._commands.append(ReceivedCommand(now, positions, measured, message_type, applied))
            self._command_total += 1
            self._lock.notify_all()

    def _route(self, sender: _Client | None, topic: str, msg: dict, latch: bool) -> None:
        text = json.dumps({"op": "publish", "topic": topic, "msg": msg})
        if latch:
            self._latched[topic] = text
        for client in list(self._clients):
            if client is not sender and topic in client.subscriptions:
                self._send(client, text)

    def _broadcast(self, topic: str, text: str | bytes) -> None:
        from websockets.asyncio.server import broadcast

        broadcast([c.ws for c in self._clients if topic in c.subscriptions], text, text=True)

    def _broadcast_all(self, data: str | bytes, text: bool | None = None) -> None:
        from websockets.asyncio.server import broadcast

        broadcast([c.ws for c in self._clients], data, text=text)

    def _send(self, client: _Client, text: str) -> None:
        from websockets.asyncio.server import broadcast

        broadcast([client.ws], text)  # never blocks the loop; a dead connection is skipped

    def _abort_all(self) -> None:
        for client in list(self._clients):
            client.ws.transport.abort()

    async def _tick_forever(self) -> None:
        """Step physics to the wall clock and publish joint states, the e-stop heartbeat and camera frames at
        their rates."""
        period = 1.0 / self.rate_hz
        next_tick = next_frame = next_beat = time.monotonic()
        frame = None
        while True:
            now = time.monotonic()
            self._arm.advance_to(now - self._t0)
            positions, velocities, efforts = self._arm.state()
            with self._lock:
                self._positions = positions
                stalled, beating, fault = self._stalled, self._estop_beating, self._fault
            if not stalled:
                msg = self._joint_state(positions, velocities, efforts, *fault, period)
                self._broadcast(self.joint_states_topic,
                                json.dumps({"op": "publish", "topic": self.joint_states_topic, "msg": msg}))
                if self.camera is not None and now >= next_frame:
                    next_frame = now + 1.0 / self.camera_rate_hz
                    if frame is None or not self.camera_still:
                        rgb = self._arm.render(*self.camera_size)
                        if self.camera_scale > 1:
                            rgb = rgb.repeat(self.camera_scale, axis=0).repeat(self.camera_scale, axis=1)
                        frame = json.dumps({"op": "publish", "topic": self.camera_topic,
                                            "msg": image_message(rgb, self.camera)}).encode()
                    self._broadcast(self.camera_topic, frame)
            if beating and now >= next_beat:
                next_beat = now + 1.0 / self.estop_rate_hz
                self._route(None, self.estop_topic, {"data": False}, latch=True)
            next_tick += period
            delay = next_tick - time.monotonic()
            if delay < -period:  # fell behind (a stalled process): resynchronize instead of bursting
                next_tick = time.monotonic()
            await asyncio.sleep(max(delay, 0.0))

    async def _watch_loop(self) -> None:
        """Record each stretch longer than STALL in which the loop did not run (a long callback, a pause of the
        process): what came in meanwhile was read late, and its receive time says so only through this."""
        seen = time.monotonic()
        while True:
            await asyncio.sleep(STALL / 2)
            now = time.monotonic()
            if now - seen > STALL:
                with self._lock:
                    self._stalls.append((seen, now))
            seen = now

    def _joint_state(self, positions, velocities, efforts, fault: str | None, value: float, period: float) -> Any:
        last = self._last_joint_state
        if fault == "freeze" and last is not None:
            return last
        if fault == "list":
            return [float(q) for q in positions]
        stamp = time.time() + (value if fault == "stamp_offset" else 0.0)
        if fault == "backwards" and last is not None:
            stamp = last["header"]["stamp"]["sec"] + last["header"]["stamp"]["nanosec"] * 1e-9 - period
        self._last_joint_state = joint_state_message(self.joint_names, positions, velocities, efforts, stamp)
        return self._last_joint_state


REMOTE = ("drop_connections", "stall", "hold_loop", "publish", "estop_heartbeat", "refuse_subscription",
          "joint_state_fault", "send_text", "send_binary", "send_large", "commands", "wait_for_commands",
          "wait_for_clients", "joint_positions")


class SimProcess:
    """A `RosbridgeSim` in a child process, driven through the same hooks (the methods in `REMOTE`) over JSON
    lines on its stdin and stdout. `kwargs` are the simulator's command-line options (`camera="raw"`,
    `camera_still=True`, ...);
    its log goes to `log` (a path) or nowhere. With `realtime`, the child asks for real-time scheduling, as
    a robot's driver runs: its receive times are the measurement, and under load a normally scheduled
    process read commands up to tens of milliseconds late. `realtime` says afterwards whether it got it."""

    def __init__(self, log: str | os.PathLike | None = None, realtime: bool = True, **kwargs):
        self.argv = [sys.executable, "-m", "gpc.hardware.rosbridge_sim", "--port", "0", "--control"]
        self.argv += ["--realtime"] if realtime else []
        for key, value in kwargs.items():  # True: a flag
            self.argv += [f"--{key.replace('_', '-')}"] + ([] if value is True else [str(value)])
        self.log, self.process, self.port, self.joint_names, self.realtime = log, None, None, [], False
        self._lock = threading.Lock()

    def start(self, timeout: float = 60.0) -> "SimProcess":
        log = open(self.log, "w") if self.log is not None else subprocess.DEVNULL
        self.process = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                        text=True, bufsize=1)
        ready = threading.Timer(timeout, self.process.kill)
        ready.start()
        line = self.process.stdout.readline()
        ready.cancel()
        if not line:
            raise RuntimeError(f"the simulator did not start (exit code {self.process.poll()}); see {self.log}")
        hello = json.loads(line)
        self.port, self.joint_names, self.realtime = hello["port"], hello["joint_names"], hello["realtime"]
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is not None:
            self.process.stdin.close()  # end of requests: the child stops its server and exits
            self.process.wait(timeout)
            self.process.stdout.close()
            self.process = None

    def __enter__(self) -> "SimProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def __getattr__(self, name: str):
        if name not in REMOTE:
            raise AttributeError(name)

        def call(*args, **kwargs):
            with self._lock:
                self.process.stdin.write(json.dumps({"method": name, "args": args, "kwargs": kwargs}) + "\n")
                reply = json.loads(self.process.stdout.readline())
            if "error" in reply:
                raise RuntimeError(f"simulator: {name}: {reply['error']}")
            if name == "commands":
                return [ReceivedCommand(c["received"], np.asarray(c["positions"], dtype=np.float64),
                                        np.asarray(c["measured"], dtype=np.float64), c["message_type"],
                                        c["applied"], c["stall"]) for c in reply["result"]]
            if name == "joint_positions":
                return np.asarray(reply["result"], dtype=np.float64)
            return reply["result"]

        return call


def waited_through(stalls: np.ndarray, received: np.ndarray) -> np.ndarray:
    """For each receive time, the longest of the loop's stalls (rows in time order: last seen running,
    running again) that the command may have waited through: one it was read during, or up to STALL_REACH
    after. Stalls do not overlap, so those are the rows from the first ending at or after `received -
    STALL_REACH` up to the last starting at or before `received`."""
    first = np.searchsorted(stalls[:, 1], received - STALL_REACH, side="left")
    last = np.searchsorted(stalls[:, 0], received, side="right")
    lengths = stalls[:, 1] - stalls[:, 0]
    return np.array([lengths[i:j].max(initial=0.0) for i, j in zip(first, last)])


def serve_requests(sim: RosbridgeSim, realtime: bool) -> None:
    """`SimProcess`'s other end: one JSON request per line on stdin, one reply per line on stdout, until EOF."""
    print(json.dumps({"port": sim.port, "joint_names": sim.joint_names, "realtime": realtime}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        try:
            if request["method"] not in REMOTE:
                raise ValueError(f"not a simulator hook: {request['method']!r}")
            result = getattr(sim, request["method"])(*request["args"], **request["kwargs"])
        except Exception as err:  # noqa: BLE001 - reported to the caller
            print(json.dumps({"error": f"{type(err).__name__}: {err}"}), flush=True)
            continue
        if request["method"] == "commands":
            result = [{"received": c.received, "positions": c.positions.tolist(), "measured": c.measured.tolist(),
                       "message_type": c.message_type, "applied": c.applied, "stall": c.stall} for c in result]
        elif isinstance(result, np.ndarray):
            result = result.tolist()
        print(json.dumps({"result": result}), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A pybullet Panda arm behind a rosbridge v2 websocket server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9090, help="0 picks a free port")
    parser.add_argument("--rate", type=float, default=50.0, help="joint-state rate (Hz)")
    parser.add_argument("--joint-states-topic", default="/joint_states")
    parser.add_argument("--command-topic", default="/joint_command")
    parser.add_argument("--estop-topic", default="/estop", help="e-stop heartbeat topic; 'none' for no e-stop")
    parser.add_argument("--estop-rate", type=float, default=20.0, help="e-stop heartbeat rate (Hz)")
    parser.add_argument("--camera", choices=sorted(CAMERA_TYPES), default=None,
                        help="also publish a TinyRenderer camera (CompressedImage JPEG or raw Image)")
    parser.add_argument("--camera-topic", default="/camera/image")
    parser.add_argument("--camera-size", default="64x48", help="rendered size, WIDTHxHEIGHT")
    parser.add_argument("--camera-scale", type=int, default=1, help="enlarge each rendered frame this many times")
    parser.add_argument("--camera-rate", type=float, default=10.0, help="camera rate (Hz)")
    parser.add_argument("--camera-still", action="store_true",
                        help="send the first picture again and again (a render holds the server ~16 ms)")
    parser.add_argument("--record-limit", type=int, default=10_000, help="commands kept for inspection")
    parser.add_argument("--control", action="store_true",
                        help="take hook calls as JSON lines on stdin (gpc.hardware.rosbridge_sim.SimProcess)")
    parser.add_argument("--realtime", action="store_true",
                        help="ask for real-time scheduling (SCHED_RR), as a robot's driver runs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    realtime = False
    if args.realtime:
        try:  # before the server's thread starts: threads inherit the policy
            os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(10))
            realtime = True
        except (OSError, AttributeError) as err:
            LOG.warning("no real-time scheduling (%s): receive times carry this machine's scheduling delays", err)
    width, height = (int(n) for n in args.camera_size.split("x"))
    sim = RosbridgeSim(args.host, args.port, args.rate, args.joint_states_topic, args.command_topic, args.camera,
                       args.camera_topic, (width, height), args.camera_rate, record_limit=args.record_limit,
                       estop_topic=None if args.estop_topic == "none" else args.estop_topic,
                       estop_rate_hz=args.estop_rate, camera_scale=args.camera_scale,
                       camera_still=args.camera_still).start()
    try:
        if args.control:
            serve_requests(sim, realtime)
            return
        print(f"rosbridge sim listening on {sim.url} (joints {', '.join(sim.joint_names)}); Ctrl-C stops",
              flush=True)
        while sim.running:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()


if __name__ == "__main__":
    main()
