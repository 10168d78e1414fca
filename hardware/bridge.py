"""roslibpy's websocket, guarded: nothing a broken or hostile rosbridge sends can crash, stall or flood us.

roslibpy decodes every frame on its loop thread, which also writes our commands: a multi-megabyte frame
froze both for a quarter of a second, a binary frame raised and dropped the connection, and a message of
an unexpected shape raised inside callbacks. `GuardedRos` is a roslibpy `Ros` whose websocket protocol

- reads the head of each message (rosbridge writes `{"op": "publish", "topic": ...` first) and keeps at most
  the byte limit of that topic, or `CONTROL_LIMIT` when the head names no subscribed topic; a larger message
  is dropped unparsed, so decoding never costs more than the largest limit allows;
- drops binary frames, undecodable text, and JSON that is not a rosbridge message, through `reject` (a
  log line per episode; a rejected message on the e-stop topic engages the stop);
- reports `status` messages (how rosbridge refuses a subscription) to `on_status`;
- offers no compression (a compressed frame's size is unknown until it is inflated) and leaves UTF-8
  checking to the JSON decoder (autobahn's per-frame validator cost 6 ms per MB on the loop thread).
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any, Callable, Mapping

import roslibpy
from roslibpy.comm.comm_asyncio import AsyncioRosBridgeClientFactory, AsyncioRosBridgeProtocol

LOG = logging.getLogger(__name__)

CONTROL_LIMIT = 65536  # bytes: status and other protocol messages, and any message whose head names no topic
HEAD_BYTES = 1024
_HEAD = re.compile(rb'\s*\{\s*"op"\s*:\s*"publish"\s*,\s*"topic"\s*:\s*"([^"\\]{1,512})"')


class Guard:
    """What the guarded protocol needs to know: byte limits per topic, and where to report rejected messages
    (`reject(topic or "bridge", cause, detail)`) and status messages."""

    def __init__(self, limits: Mapping[str, int], reject: Callable[[str, str, str], None],
                 on_status: Callable[[Mapping[str, Any]], None]):
        self.limits, self.reject, self.on_status = dict(limits), reject, on_status

    def limit(self, head: bytes) -> tuple[str | None, int]:
        match = _HEAD.match(head)
        topic = None if match is None else match.group(1).decode("utf-8", "replace")
        return topic, self.limits.get(topic, CONTROL_LIMIT)


class _Incoming:
    """One message as it arrives, frame by frame: kept up to its limit, counted beyond."""

    __slots__ = ("binary", "size", "chunks", "topic", "limit", "oversized")

    def __init__(self, binary: bool):
        self.binary, self.size, self.chunks = binary, 0, []
        self.topic, self.limit, self.oversized = None, None, False

    def add(self, data: bytes, guard: Guard) -> None:
        self.size += len(data)
        if self.binary or self.oversized:
            return
        self.chunks.append(data)
        if self.limit is None and self.size >= HEAD_BYTES:
            self.classify(guard)
        if self.limit is not None and self.size > self.limit:
            self.chunks, self.oversized = [], True

    def classify(self, guard: Guard) -> None:
        self.topic, self.limit = guard.limit(b"".join(self.chunks)[:HEAD_BYTES])


class GuardedProtocol(AsyncioRosBridgeProtocol):
    """roslibpy's asyncio protocol with autobahn's message assembly replaced by a bounded one."""

    def onMessageBegin(self, isBinary):  # noqa: N802, N803 - autobahn's names
        self._incoming = _Incoming(isBinary)

    def onMessageFrameBegin(self, length):  # noqa: N802
        pass  # sizes are checked as data arrives

    def onMessageFrameData(self, payload):  # noqa: N802
        self._incoming.add(payload, self.factory.guard)

    def onMessageFrameEnd(self):  # noqa: N802
        pass

    def onMessageEnd(self):  # noqa: N802
        incoming, self._incoming = self._incoming, None
        guard = self.factory.guard
        if incoming.binary:
            guard.reject("bridge", "binary frame", f"{incoming.size} bytes; rosbridge's protocol is JSON text")
            return
        if incoming.limit is None:
            incoming.classify(guard)
        where = incoming.topic or "bridge"
        if incoming.oversized or incoming.size > incoming.limit:
            guard.reject(where, "too large", f"{incoming.size} bytes, limit {incoming.limit}")
            return
        try:
            message = json.loads(b"".join(incoming.chunks).decode("utf-8"))
        except ValueError as err:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            guard.reject(where, "not JSON", f"{type(err).__name__}: {str(err)[:120]}")
            return
        op = message.get("op") if isinstance(message, dict) else None
        if op == "publish" and isinstance(message.get("topic"), str) and "msg" in message:
            self._deliver(message["topic"], message["msg"])
        elif op == "status":
            guard.on_status(message)
        else:  # gpc calls no services or actions: nothing else is expected
            guard.reject(where, "not a publish or status message", repr(message)[:120])

    def _deliver(self, topic: str, msg: Any) -> None:
        try:
            self.factory.emit(topic, msg)
        except Exception as err:  # noqa: BLE001 - a bug in a callback must not cost the connection
            LOG.error("handling a message on %s failed: %s: %s", topic, type(err).__name__, err)


class GuardedFactory(AsyncioRosBridgeClientFactory):
    protocol = GuardedProtocol
    compression = "none"

    def __init__(self, url: str, guard: Guard):
        super().__init__(url)
        self.guard = guard
        self.setProtocolOptions(utf8validateIncoming=False)


class GuardedRos(roslibpy.Ros):
    """roslibpy's `Ros` on the guarded protocol. `Ros.__init__` has no factory argument, so this sets up the
    same state it does (roslibpy 2.1) with `GuardedFactory`; `on_ready(proto)` / `on_close(proto)` follow
    the connection."""

    def __init__(self, host: str, port: int, guard: Guard, on_ready: Callable, on_close: Callable):
        self._id_counter = 0
        self.factory = GuardedFactory(GuardedFactory.create_url(host, port), guard)
        self.is_connecting = False
        self.on("ready", on_ready)  # before connecting, so that the first connection is seen too
        self.on("close", on_close)
        self.connect()

    def call_soon(self, function: Callable[[], None]) -> bool:
        """Run `function` on the transport's loop thread (where writes happen); False if the loop is gone."""
        loop = self.factory.manager.loop
        if loop is None or loop.is_closed():
            return False
        loop.call_soon_threadsafe(function)
        return True
