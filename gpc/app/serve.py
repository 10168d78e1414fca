"""`gpc serve`: a composition behind openpi's websocket policy protocol, one connection per robot.

Messages are msgpack with numpy arrays in openpi's encoding (gpc.app.wire), so openpi's own client works:
- on connect the server sends its metadata (`metadata()`): the parents, default weights, the observation
  keys with the shape and dtype of one frame, n_obs_steps, n_action_steps and action_dim;
- a request is a map with ONE frame of every observation key the parents read (openpi's clients send one
  observation per call); the server keeps each connection's last n_obs_steps frames, padded by repeating the
  first frame of an episode, which starts on connect and on a request with `reset: true`. Optional fields:
  `weights` (one weight vector or schedule, this request only), `seed` (this request's noise seed). A request
  that is only `{"reset": true}` starts a new episode and is answered `{"reset": true}`;
- an answer is `{"actions": (n_action_steps, action_dim) float32 in the env's units, "seed": noise seed used,
  "step": request index in the episode, "server_timing": {"infer_ms": ...}}`;
- a bad request (not msgpack, a missing or unknown key, a wrong shape or dtype, a non-finite value, bad
  weights) is answered with a text frame naming the problem, which openpi's client raises as RuntimeError;
  the connection stays open and its history unchanged. A message over `max_message_bytes` closes its
  connection (close code 1009): the server never reads it.

Inference runs in one worker thread, so the event loop keeps serving while a chunk is computed; every
connection has at most one request in inference and a bounded receive buffer.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Callable, Iterator

import numpy as np
from omegaconf import DictConfig

from gpc.app.config import ConfigError, chosen_weights, load_composer, weight_candidates
from gpc.app.schema import check
from gpc.app.schemas import ServeConfig
from gpc.core.composer import Composer, CompositionError
from gpc.core.operators import WeightSchedule

try:  # the `serve` extra; missing, `gpc serve` says so in one line
    from websockets.asyncio.server import ServerConnection, serve
    from websockets.exceptions import ConnectionClosed
    from websockets.frames import CloseCode

    from gpc.app.wire import WireError, packb, unpackb
except ModuleNotFoundError as missing:
    raise ConfigError(f"gpc serve needs {missing.name}: pip install 'gpc[serve]'") from None

LOG = logging.getLogger(__name__)
REQUEST_FIELDS = ("reset", "weights", "seed")
RECEIVE_QUEUE = 4  # frames buffered per connection while its request is in inference; then TCP pushes back


class RequestError(ValueError):
    """A request the server answers with this message instead of actions."""


@dataclass(frozen=True)
class Input:
    """One observation input of the parents: `shape` is per frame as the parent declares it."""

    key: str
    type: str
    shape: tuple[int, ...]

    def wire_form(self) -> dict[str, Any]:
        """What one frame of it looks like on the wire (the metadata's `observation` entries)."""
        if self.type == "language":
            return {"type": self.type, "shape": [], "dtype": "str"}
        if self.type == "rgb":  # a camera's uint8 (H, W, 3), as envs give it; float (3, H, W) in [0, 1] also works
            return {"type": self.type, "shape": [*self.shape[1:], self.shape[0]], "dtype": "uint8"}
        return {"type": self.type, "shape": list(self.shape), "dtype": "float32"}


def parent_inputs(composer: Composer) -> dict[str, Input]:
    """Every observation input the parents declare (`spec.inputs`), by key."""
    inputs: dict[str, Input] = {}
    for parent in composer.parents:
        for i in parent.spec.inputs:
            new = Input(i.key, i.kind, i.shape)
            if inputs.setdefault(i.key, new) != new:
                raise ConfigError(f"parents read {i.key!r} differently: {inputs[i.key]} and {new}")
    return inputs


def describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"a {value.dtype} array of shape {value.shape}"
    return f"a {type(value).__name__}"


def check_frame(spec: Input, value: Any) -> np.ndarray | str:
    """One frame of `spec`'s input, checked: shape, dtype and finite values, else RequestError."""
    if spec.type == "language":
        if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind == "U":
            value = str(value)
        if not isinstance(value, str):
            raise RequestError(f"{spec.key}: need the instruction as a string, got {describe(value)}")
        return value
    if isinstance(value, list):
        value = np.asarray(value)
    wire = spec.wire_form()
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "iuf":
        raise RequestError(f"{spec.key}: need a numeric array of shape {tuple(wire['shape'])}, got {describe(value)}")
    if spec.type == "rgb":
        fits = value.shape == tuple(wire["shape"]) and value.dtype == np.uint8 or \
               value.shape == spec.shape and value.dtype.kind == "f"
    elif spec.type == "pointcloud":  # extra channels (rgb after xyz) are dropped, as the parent would
        fits = value.ndim == 2 and value.shape[0] == spec.shape[0] and value.shape[1] >= spec.shape[-1]
    else:
        fits = value.shape == spec.shape
    if not fits:
        raise RequestError(f"{spec.key}: need one frame of shape {tuple(wire['shape'])} ({wire['dtype']}), "
                           f"got {describe(value)}")
    if value.dtype.kind == "f" and not np.isfinite(value).all():
        raise RequestError(f"{spec.key}: has non-finite values (NaN or inf)")
    return value[:, :spec.shape[-1]] if spec.type == "pointcloud" else value


@dataclass
class Job:
    """One validated request: the history it runs on, its weights and noise seed."""

    frames: list[dict[str, Any]]
    weights: WeightSchedule
    seed: int
    reset: bool


class Service:
    """The composition as served: its inputs, default weights and base seed; `infer` runs the networks."""

    def __init__(self, composer: Composer, weights: WeightSchedule, seed: int = 0):
        self.composer, self.weights, self.seed = composer, weights, int(seed)
        self.inputs = parent_inputs(composer)
        composer.candidates([weights])  # refuses what the operator cannot take (a schedule under AND / OR)

    def metadata(self) -> dict[str, Any]:
        c = self.composer
        return {"server": "gpc", "parents": [p.spec.name for p in c.parents], "operator": c.operator.name,
                "weights": weights_form(self.weights),
                "observation": {k: i.wire_form() for k, i in self.inputs.items()}, "n_obs_steps": c.n_obs_steps,
                "n_action_steps": c.layout.n_action_steps, "action_dim": c.action_dim}

    def schedule(self, raw: Any) -> WeightSchedule:
        """A request's `weights`, checked as the composition's own are; absent means the default."""
        if raw is None:
            return self.weights
        raw = raw.tolist() if isinstance(raw, np.ndarray) else raw
        try:
            candidates = weight_candidates(raw, len(self.composer.parents), "request")
            if len(candidates) != 1:
                raise RequestError(f"weights: one weight vector or schedule per request, "
                                   f"got {len(candidates)}")
            return self.composer.candidates(candidates)[0]
        except (ConfigError, CompositionError) as err:
            raise RequestError(str(err).removeprefix("request: ")) from None

    def warm_up(self) -> None:
        """One inference on a blank frame: the first robot's request then does not pay torch's first-call
        setup (1.5 s for the PushT pair on a CPU, against 0.1 s per request after it)."""
        frame = {k: "" if i.type == "language" else
                 np.zeros(i.wire_form()["shape"], np.uint8 if i.type == "rgb" else np.float32)
                 for k, i in self.inputs.items()}
        self.infer(Job([frame] * self.composer.n_obs_steps, self.weights, 0, False))

    def infer(self, job: Job) -> tuple[np.ndarray, float]:
        """(actions (n_action_steps, action_dim), seconds): runs in the worker thread."""
        began = time.perf_counter()
        obs = {key: np.stack([frame[key] for frame in job.frames])[None] for key in self.inputs}
        actions = self.composer.act(obs, [job.weights], [job.seed])[0, 0]
        return actions.cpu().numpy(), time.perf_counter() - began


def weights_form(schedule: WeightSchedule) -> Any:
    if len(schedule.knots) == 1:
        return list(schedule.weights[0])
    return {"knots": list(schedule.knots), "weights": [list(w) for w in schedule.weights]}


class Session:
    """One connection's state: its observation history, its episode (resets so far) and the step in it.
    Without a `seed` in the request, step n of episode k draws noise seeded by SeedSequence([seed, k, n]),
    so a rerun that sends the same requests on a new connection gets the same actions."""

    def __init__(self, service: Service):
        self.service = service
        self.frames: list[dict[str, Any]] = []
        self.episode, self.step = 0, 0

    def prepare(self, request: Any) -> Job | None:
        """The validated job of a request, or None for a reset alone (done at once); RequestError if bad."""
        if not isinstance(request, dict):
            raise RequestError(f"need a map of observation keys, got {describe(request)}")
        inputs = self.service.inputs
        unknown = sorted(str(k) for k in request if k not in inputs and k not in REQUEST_FIELDS)
        if unknown:
            raise RequestError(f"unknown keys {unknown}; this composition reads {sorted(inputs)} "
                               f"(plus optional {list(REQUEST_FIELDS)})")
        reset = request.get("reset", False)
        if not isinstance(reset, (bool, np.bool_)):
            raise RequestError(f"reset: need true or false, got {describe(reset)}")
        if reset and not any(k in request for k in inputs):
            self.frames, self.episode, self.step = [], self.episode + 1, 0
            return None
        missing = [k for k in inputs if k not in request]
        if missing:
            raise RequestError(f"missing observation keys {missing} (one frame each: "
                               + ", ".join(f"{k} {tuple(i.wire_form()['shape'])} {i.wire_form()['dtype']}"
                                           for k, i in inputs.items()) + ")")
        frame = {k: check_frame(spec, request[k]) for k, spec in inputs.items()}
        weights = self.service.schedule(request.get("weights"))
        history = [] if reset else self.frames
        n = self.service.composer.n_obs_steps
        frames = history[1:] + [frame] if history else [frame] * n
        episode, step = (self.episode + 1, 0) if reset else (self.episode, self.step)
        return Job(frames, weights, self.noise_seed(request.get("seed"), episode, step), bool(reset))

    def noise_seed(self, raw: Any, episode: int, step: int) -> int:
        if raw is None:
            return int(np.random.SeedSequence([self.service.seed, episode, step]).generate_state(1)[0])
        if isinstance(raw, (bool, np.bool_)) or not isinstance(raw, (int, np.integer)) or not 0 <= raw < 2 ** 64:
            raise RequestError(f"seed: need an integer in [0, 2**64), got {raw!r}")
        return int(raw)

    def commit(self, job: Job) -> int:
        """Keep the history of an answered request; returns its step in the episode."""
        if job.reset:
            self.episode, self.step = self.episode + 1, 0
        self.frames, self.step = job.frames, self.step + 1
        return self.step - 1


class PolicyServer:
    """The websocket server: token check at the handshake, one Session per connection, one inference thread
    shared by all (requests from several robots are served in turn, never two at once)."""

    def __init__(self, service: Service, host: str = "127.0.0.1", port: int = 8000, token: str | None = None,
                 max_message_bytes: int = 8 << 20, max_connections: int = 8):
        self.service, self.host, self.port, self.token = service, host, port, token
        self.max_message_bytes, self.max_connections = max_message_bytes, max_connections
        self.metadata = packb(service.metadata())
        self.connections = 0
        self.executor: ThreadPoolExecutor | None = None  # while running

    async def run(self, ready: Callable[[int], None] | None = None, stop: asyncio.Event | None = None) -> None:
        """Serve until `stop` is set (or forever); `ready` gets the bound port."""
        with ThreadPoolExecutor(1, thread_name_prefix="gpc-serve") as executor:
            self.executor = executor
            async with serve(self._handle, self.host, self.port, compression=None, max_size=self.max_message_bytes,
                             max_queue=RECEIVE_QUEUE, process_request=self._check_handshake) as server:
                if ready is not None:
                    ready(server.sockets[0].getsockname()[1])
                if stop is None:
                    await server.serve_forever()
                else:
                    await stop.wait()

    def _check_handshake(self, connection: ServerConnection, request):
        if request.path == "/healthz":  # openpi's health check
            return connection.respond(HTTPStatus.OK, "OK\n")
        if self.token is not None and not hmac.compare_digest(
                request.headers.get("Authorization", "").encode(), f"Api-Key {self.token}".encode()):
            return connection.respond(HTTPStatus.UNAUTHORIZED, "gpc serve: missing or wrong token; send the header "
                                      "'Authorization: Api-Key <token>' (openpi's api_key)\n")
        return None

    async def _handle(self, websocket: ServerConnection) -> None:
        if self.connections >= self.max_connections:
            await websocket.close(CloseCode.TRY_AGAIN_LATER, f"server full: {self.max_connections} connections")
            return
        self.connections += 1
        session = Session(self.service)
        LOG.info("connection from %s opened", websocket.remote_address)
        try:
            await websocket.send(self.metadata)
            async for message in websocket:
                await websocket.send(await self._answer(session, message))
        except ConnectionClosed as closed:
            LOG.info("connection from %s closed: %s", websocket.remote_address, closed)
        finally:
            self.connections -= 1

    async def _answer(self, session: Session, message: bytes | str) -> bytes | str:
        try:
            if isinstance(message, str):
                raise RequestError("send binary msgpack (openpi's format), not text")
            job = session.prepare(unpackb(message))
            if job is None:
                return packb({"reset": True})
            actions, seconds = await asyncio.get_running_loop().run_in_executor(self.executor,
                                                                                self.service.infer, job)
            step = session.commit(job)
            return packb({"actions": actions, "seed": job.seed, "step": step,
                          "server_timing": {"infer_ms": 1e3 * seconds}})
        except (RequestError, WireError) as err:
            return f"gpc serve: bad request: {err}"
        except Exception as err:  # noqa: BLE001 - a failed inference is answered; the server keeps serving
            LOG.exception("inference failed")
            return f"gpc serve: inference failed: {type(err).__name__}: {err}"


@contextmanager
def running(server: PolicyServer) -> Iterator[int]:
    """Run `server` in a background thread (its own event loop) for the block; yields the bound port."""
    loop = asyncio.new_event_loop()
    stop, ready, failure = asyncio.Event(), threading.Event(), []
    port: list[int] = []

    def target():
        try:
            loop.run_until_complete(server.run(lambda p: (port.append(p), ready.set()), stop))
        except BaseException as err:  # noqa: BLE001 - handed to the caller below
            failure.append(err)
            ready.set()

    thread = threading.Thread(target=target, name="gpc-serve-loop", daemon=True)
    thread.start()
    ready.wait()
    if failure:
        raise failure[0]
    try:
        yield port[0]
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join()
        loop.close()


def build_server(config: DictConfig, source: str) -> PolicyServer:
    settings = check(ServeConfig, config, source)
    weights = chosen_weights(settings.weights, config.compose, source)
    composer = load_composer(config.compose, f"{source}: compose")
    if len(weights) != 1:
        raise ConfigError(f"{source}: weights: serve one weight vector or schedule (requests may send their "
                          f"own), got {len(weights)}")
    if settings.max_message_bytes < 1024:
        raise ConfigError(f"{source}: max_message_bytes: need >= 1024, got {settings.max_message_bytes}")
    try:
        service = Service(composer, weights[0], settings.seed)
    except CompositionError as err:
        raise ConfigError(f"{source}: weights: {err}") from None
    except ConfigError as err:
        raise ConfigError(f"{source}: compose.parents: {err}") from None
    return PolicyServer(service, settings.host, settings.port, settings.token, settings.max_message_bytes,
                        settings.max_connections)


def main(config: DictConfig, source: str = "serve config") -> None:
    threads = check(ServeConfig, config, source).torch_threads
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    server = build_server(config, source)
    server.service.warm_up()
    meta = server.service.metadata()

    def ready(port: int) -> None:
        print(f"gpc serve: {' + '.join(meta['parents'])} (weights {meta['weights']}) on ws://{server.host}:{port}; "
              f"one frame of {sorted(meta['observation'])} per request, {meta['n_action_steps']} x "
              f"{meta['action_dim']} actions per answer; Ctrl-C stops", flush=True)

    async def until_terminated() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await server.run(ready, stop)

    try:
        asyncio.run(until_terminated())
    except OSError as err:
        raise ConfigError(f"{source}: host: cannot listen on {server.host}:{server.port}: {err}") from None
    except KeyboardInterrupt:
        pass
    print("gpc serve: stopped")
