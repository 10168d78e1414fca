"""Serve a composition to RoboTwin 2.0's client/server mode from gpc's own environment.

RoboTwin's `script/eval_policy_client.py` runs the simulator in RoboTwin's environment (Python 3.10, its own
torch, zarr 2, gymnasium 0.29.1) and sends observations to a model server; this is that server, so gpc never has to
be installed there. From the RoboTwin checkout (`eval_server.sh` in the installed policy folder does it all):

    /path/to/gpc/.venv/bin/python -m gpc.sims.robotwin.server --port 9999 \
        --config policy/GPC/deploy_policy.yml --overrides --task_name beat_block_hammer --seed 0

The wire is RoboTwin's own (`script/policy_model_server.py`): each message is a 4-byte big-endian length and that
many bytes of UTF-8 JSON, numpy arrays as {"__numpy_array__": true, "data": base64, "dtype", "shape"}; a request is
{"cmd": name, "obs": value or null}, the answer {"res": value}, or {"error": line, "traceback": ""} after which the
server closes that connection and goes on serving. Unlike RoboTwin's server it answers only the commands below
(not any attribute of the model), binds to loopback unless told otherwise, refuses a message over its size bound
unread, rebuilds arrays only of numeric dtypes whose bytes match their shape, and runs one request at a time.
"""

from __future__ import annotations

import argparse
import base64
import json
import socket
import socketserver
import sys
import threading
from typing import Any, Callable

import numpy as np
import yaml

DTYPES = {"bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64", "float16", "float32",
          "float64"}
MAX_MESSAGE_BYTES = 64 * 2**20  # four 640 x 480 cameras and a point cloud are about 5 MB in base64
BODY_TIMEOUT_S = 60.0  # a message whose length has arrived must arrive whole within this


class WireError(ValueError):
    """A message that is not RoboTwin's wire format."""


class _ArrayEncoder(json.JSONEncoder):
    def default(self, obj):
        if isinstance(obj, np.ndarray):
            if obj.dtype.name not in DTYPES:
                raise TypeError(f"an array of dtype {obj.dtype} cannot be sent")
            return {"__numpy_array__": True, "data": base64.b64encode(np.ascontiguousarray(obj).tobytes()).decode(),
                    "dtype": obj.dtype.name, "shape": list(obj.shape)}
        if isinstance(obj, np.generic):
            return obj.item()
        return super().default(obj)


def encode(message: Any) -> bytes:
    """One framed message: length, then JSON with arrays as RoboTwin encodes them."""
    body = json.dumps(message, cls=_ArrayEncoder).encode()
    return len(body).to_bytes(4, "big") + body


def _array(d: dict) -> Any:
    if "__numpy_array__" not in d:
        return d
    dtype, shape, data = d.get("dtype"), d.get("shape"), d.get("data")
    if dtype not in DTYPES:
        raise WireError(f"array dtype {dtype!r}: only {sorted(DTYPES)}")
    if not (isinstance(shape, list) and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0
                                           for n in shape)) or not isinstance(data, str):
        raise WireError("array: shape must be a list of non-negative integers and data a base64 string")
    try:
        raw = base64.b64decode(data, validate=True)
    except ValueError:
        raise WireError("array data is not base64") from None
    if len(raw) != int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize:
        raise WireError(f"array of shape {shape} and dtype {dtype} needs "
                        f"{int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize} bytes, got {len(raw)}")
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def decode(body: bytes) -> Any:
    try:
        return json.loads(body.decode(), object_hook=_array)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise WireError(f"not UTF-8 JSON: {err}") from None


def read_exactly(sock: socket.socket, n: int) -> bytes | None:
    """n bytes, or None where the peer closed before the first; a close part-way is a WireError."""
    chunks, got = [], 0
    while got < n:
        chunk = sock.recv(min(n - got, 1 << 20))
        if not chunk:
            if got == 0:
                return None
            raise WireError(f"connection closed after {got} of {n} bytes")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def commands(model) -> dict[str, Callable[[Any], Any]]:
    """The commands answered: RoboTwin's client calls `reset_model`; `gpc_client` calls the other three."""

    def reset_model(_):
        model.reset()

    def inputs(arms):
        if not isinstance(arms, dict):
            raise ValueError("inputs: obs must be {left_arm_dim, right_arm_dim}")
        if arms.get("left_arm_dim") is not None or arms.get("right_arm_dim") is not None:
            model.check_arms(arms.get("left_arm_dim"), arms.get("right_arm_dim"), "the client's embodiment")
        return model.inputs()

    def update_obs(observation):
        if not isinstance(observation, dict):
            raise ValueError("update_obs: obs must be RoboTwin's observation dictionary")
        model.update_obs(observation)

    def get_action(request):
        if not isinstance(request, dict) or not isinstance(request.get("observation"), dict):
            raise ValueError("get_action: obs must be {observation, instruction}")
        if not model.frames:
            model.update_obs(request["observation"])
        instruction = request.get("instruction")
        return model.get_action(instruction if isinstance(instruction, str) else None)

    return {"reset_model": reset_model, "inputs": inputs, "update_obs": update_obs, "get_action": get_action}


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server: PolicyServer = self.server  # type: ignore[assignment]
        sock: socket.socket = self.request
        while True:
            try:
                sock.settimeout(None)  # between requests a client may wait as long as RoboTwin's expert check takes
                header = read_exactly(sock, 4)
                if header is None:
                    return
                size = int.from_bytes(header, "big")
                if size > server.max_message_bytes:
                    raise WireError(f"message of {size} bytes is over the bound of {server.max_message_bytes}")
                sock.settimeout(BODY_TIMEOUT_S)
                body = read_exactly(sock, size)
                if body is None:
                    raise WireError("connection closed before the message")
                request = decode(body)
                if not isinstance(request, dict) or request.get("cmd") not in server.commands:
                    cmd = request.get("cmd") if isinstance(request, dict) else None
                    raise WireError(f"cmd {cmd!r}: answered are {sorted(server.commands)}")
                with server.lock:
                    result = server.commands[request["cmd"]](request.get("obs"))
                sock.sendall(encode({"res": result}))
            except (OSError, ConnectionError):
                return  # the client went away or stalled mid-message: nothing to answer
            except Exception as err:  # any refusal is answered, then this connection ends
                line = f"{type(err).__name__}: {str(err).strip(chr(39) + chr(34))}".splitlines()[0]
                print(f"gpc.sims.robotwin.server: {line}", file=sys.stderr, flush=True)
                try:
                    sock.sendall(encode({"error": line, "traceback": ""}))
                except OSError:
                    pass
                return


class PolicyServer(socketserver.ThreadingTCPServer):
    """RoboTwin's model server for one loaded policy; each connection in its own thread, requests one at a time."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, model, host: str = "127.0.0.1", port: int = 0, max_message_bytes: int = MAX_MESSAGE_BYTES):
        self.commands, self.lock, self.max_message_bytes = commands(model), threading.Lock(), max_message_bytes
        super().__init__((host, port), _Handler)

    @property
    def port(self) -> int:
        return self.server_address[1]


def parse_overrides(pairs: list[str], source: str = "--overrides") -> dict[str, Any]:
    """RoboTwin's `--key value` pairs. Values are read as YAML (numbers, lists, null), not run through Python's
    eval as RoboTwin does."""
    if len(pairs) % 2:
        raise ValueError(f"{source}: {pairs[-1]} has no value (give --key value pairs)")
    out = {}
    for key, value in zip(pairs[::2], pairs[1::2]):
        if not key.startswith("--"):
            raise ValueError(f"{source}: {key}: expected --key value pairs")
        try:
            out[key.lstrip("-")] = yaml.safe_load(value)
        except yaml.YAMLError:
            out[key.lstrip("-")] = value
    return out


def load_usr_args(config: str, overrides: list[str]) -> dict[str, Any]:
    """deploy_policy.yml, then the overrides, as RoboTwin's scripts merge them."""
    try:
        with open(config, encoding="utf-8") as f:
            usr_args = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as err:
        raise ValueError(f"{config}: cannot be read as YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(usr_args, dict):
        raise ValueError(f"{config}: expected a mapping of settings")
    usr_args.update(parse_overrides(overrides))
    return usr_args


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="the port eval_policy_client.py is given; 0 picks one")
    parser.add_argument("--host", default="127.0.0.1", help="the address to listen on (default loopback only)")
    parser.add_argument("--config", required=True, help="the policy folder's deploy_policy.yml")
    parser.add_argument("--max-message-mb", type=float, default=MAX_MESSAGE_BYTES / 2**20)
    parser.add_argument("--overrides", nargs=argparse.REMAINDER, default=[], help="--key value pairs, as RoboTwin's")
    args = parser.parse_args(argv)
    from gpc.sims.robotwin.policy import get_model  # after argument checks: loading torch takes seconds

    try:
        model = get_model(load_usr_args(args.config, args.overrides))
        server = PolicyServer(model, args.host, args.port, int(args.max_message_mb * 2**20))
    except (ValueError, KeyError, OSError) as err:
        print(f"gpc.sims.robotwin.server: {str(err).strip(chr(39) + chr(34))}", file=sys.stderr)
        sys.exit(2)
    print(f"gpc.sims.robotwin.server: serving {args.config} on {args.host}:{server.port}", flush=True)
    with server:
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
