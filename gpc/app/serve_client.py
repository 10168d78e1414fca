"""A small blocking client of `gpc serve` (or any server on openpi's websocket protocol), for tests and for
robots without a client of their own; needs only numpy, msgpack and websockets.

    with PolicyClient("ws://gpu-box:8000", token=...) as policy:
        chunk = policy.infer({"keypoint": frame})["actions"]     # (n_action_steps, action_dim)
        policy.reset()                                           # before the next episode
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any, Mapping, Sequence

from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from gpc.app.wire import packb, unpackb


class ServeError(RuntimeError):
    """The server refused the connection or the request, or closed the connection."""


class PolicyClient:
    def __init__(self, uri: str = "ws://127.0.0.1:8000", token: str | None = None, open_timeout: float = 10):
        headers = {"Authorization": f"Api-Key {token}"} if token else None
        self._stack = ExitStack()  # websockets 17 wants connect() entered as a context, as 13-16 allow
        try:
            self._ws = self._stack.enter_context(connect(uri, compression=None, additional_headers=headers,
                                                         open_timeout=open_timeout))
        except InvalidStatus as err:
            body = err.response.body.decode(errors="replace").strip() if err.response.body else ""
            raise ServeError(f"{uri} refused the connection: HTTP {err.response.status_code} {body}") from None
        self.metadata: dict[str, Any] = self._receive()

    def infer(self, obs: Mapping[str, Any], weights: Sequence[float] | Mapping | None = None,
              seed: int | None = None, reset: bool = False) -> dict[str, Any]:
        """The answer to one observation frame: `actions`, `seed`, `step`, `server_timing`."""
        request = dict(obs)
        if weights is not None:
            request["weights"] = weights
        if seed is not None:
            request["seed"] = seed
        if reset:
            request["reset"] = True
        self._ws.send(packb(request))
        return self._receive()

    def reset(self) -> None:
        """Start a new episode: the server forgets this connection's observation history."""
        self._ws.send(packb({"reset": True}))
        self._receive()

    def _receive(self) -> dict[str, Any]:
        try:
            answer = self._ws.recv()
        except ConnectionClosed as err:
            raise ServeError(f"the server closed the connection: {err}") from None
        if isinstance(answer, str):  # openpi's servers answer errors as text
            raise ServeError(answer)
        return unpackb(answer)

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> "PolicyClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
