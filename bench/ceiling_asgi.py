"""The stack ceiling: the fastest fan-out one can write on our stack without Quart.

A raw ASGI app (no framework) for ``hypercorn --worker-class trio`` with a batched redis-py
bridge and one writer task per connection. Whatever ours loses against this is spent in our
own code and in Quart; whatever this loses against ``ceiling_websockets`` is Hypercorn, wsproto
and trio. Same wire subset as the Python ceiling (``chat``, ``chat-room``, ``/ping1``/``/ping2``).

    REDIS_URL=redis://127.0.0.1:6390/0 hypercorn --worker-class trio -b 127.0.0.1:9402 \
        bench.ceiling_asgi:app

Bridge design, and why:

* Publishes are queued to one worker thread that sends everything queued so far as one
  non-transactional pipeline: one syscall and one round trip per batch, not per message, and
  the trio loop never blocks on Redis. A single thread keeps each sender's order.
* Pub/sub is read on the trio thread itself: wait for the socket with
  ``trio.lowlevel.wait_readable``, then drain ``get_message(timeout=0)``. redis-py 8 with
  hiredis raises ``TimeoutError`` when a message has arrived only in part; with the default
  ``Retry`` that reconnects and silently drops messages, so the pub/sub client is built with
  ``Retry(NoBackoff(), 0, supported_errors=())`` and the TimeoutError means "wait for more bytes"
  (the hiredis reader keeps the partial reply).
* A client that offers ``wsproto-trio.ndjson`` gets batched frames (everything queued, joined
  by newlines); that variant is the ``ceiling-asgi-batched`` bench target.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import redis
import trio
from redis.backoff import NoBackoff
from redis.retry import Retry

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

NDJSON = "wsproto-trio.ndjson"
QUEUE_SIZE = int(os.environ.get("SEND_QUEUE_SIZE", "4096"))
PUBLISH_BATCH = 512


def envelope(channel: str, kind: str, contents: Any) -> str:
    """Encode one envelope once, with compact separators."""
    return json.dumps(
        {"channel": channel, "message": {"type": kind, "contents": contents}},
        separators=(",", ":"),
    )


def now() -> str:
    """RFC 3339 UTC, Z suffix, microseconds (PROTOCOL.md 4 postedAt)."""
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class Client:
    """One websocket: a bounded outbound queue drained by its own writer task."""

    __slots__ = ("cancel", "rooms", "rx", "tx", "user")

    def __init__(self) -> None:
        self.user = str(uuid.uuid4())
        self.tx, self.rx = trio.open_memory_channel[str](QUEUE_SIZE)
        self.rooms: set[str] = set()
        self.cancel = trio.CancelScope()

    def push(self, text: str) -> None:
        """Queue without waiting; a full queue is a slow consumer and gets disconnected."""
        try:
            self.tx.send_nowait(text)
        except trio.WouldBlock:
            self.cancel.cancel()
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass


class Bridge:
    """Redis in both directions, batched; see the module docstring for why it looks like this."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.clients: set[Client] = set()
        self.rooms: dict[str, set[Client]] = {}
        self.outbox: queue.SimpleQueue[tuple[str, str]] = queue.SimpleQueue()
        no_retry = Retry(NoBackoff(), 0, supported_errors=())
        self.pubsub = redis.Redis.from_url(url, retry=no_retry).pubsub()  # type: ignore[no-untyped-call]

    def publish(self, channel: str, text: str) -> None:
        """Hand a publish to the publisher thread; never blocks the trio loop."""
        self.outbox.put((channel, text))

    def _publisher(self) -> None:
        r = redis.Redis.from_url(self.url)
        while True:
            batch = [self.outbox.get()]
            while len(batch) < PUBLISH_BATCH:
                try:
                    batch.append(self.outbox.get_nowait())
                except queue.Empty:
                    break
            pipe = r.pipeline(transaction=False)
            for channel, text in batch:
                pipe.publish(channel, text)
            pipe.execute()

    def subscribe(self, channel: str) -> None:
        """Send SUBSCRIBE on the pub/sub socket (a small blocking write from the trio thread)."""
        self.pubsub.subscribe(channel)

    def unsubscribe(self, channel: str) -> None:
        self.pubsub.unsubscribe(channel)

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start the publisher thread and read pub/sub until cancelled."""
        threading.Thread(target=self._publisher, name="publisher", daemon=True).start()
        self.pubsub.subscribe("chat", "ping1", "ping2")
        sock = self.pubsub.connection._sock
        task_status.started()
        while True:
            await trio.lowlevel.wait_readable(sock)
            while True:
                try:
                    m = self.pubsub.get_message(timeout=0)
                except redis.TimeoutError:
                    break  # a reply arrived in part: wait for the rest
                if m is None:
                    break
                if m["type"] == "message":
                    self.dispatch(m["channel"], m["data"].decode())

    def dispatch(self, channel: bytes, text: str) -> None:
        """Fan one payload out to local clients: decoded once, queued per recipient."""
        if channel.startswith(b"room:"):
            targets = self.rooms.get(channel[5:].decode(), ())
        else:
            targets = self.clients
        for c in tuple(targets):
            c.push(text)

    def join(self, c: Client, room: str) -> None:
        members = self.rooms.setdefault(room, set())
        if not members:
            self.subscribe(f"room:{room}")
        members.add(c)
        c.rooms.add(room)

    def leave(self, c: Client, room: str) -> None:
        members = self.rooms.get(room, set())
        members.discard(c)
        c.rooms.discard(room)
        if not members:
            self.rooms.pop(room, None)
            self.unsubscribe(f"room:{room}")


BRIDGE: Bridge | None = None


def handle(bridge: Bridge, c: Client, raw: str) -> None:
    """Act on one inbound envelope; malformed input is ignored (the ceiling trusts the bench)."""
    try:
        msg = json.loads(raw)["message"]
        kind, contents = msg["type"], msg["contents"]
        room = contents["room"] if isinstance(contents, dict) else ""
    except (ValueError, KeyError, TypeError):
        return
    if kind == "SubmitMessage":
        body = {"content": contents, "postedAt": now()}
        bridge.publish("chat", envelope("chat", "NewMessageReceived", body))
    elif kind == "JoinRoom" and room not in c.rooms:
        bridge.join(c, room)
        c.push(envelope("chat-room", "MemberList", {"room": room, "users": [c.user]}))
        body = {"room": room, "user": c.user}
        bridge.publish(f"room:{room}", envelope("chat-room", "JoinedRoom", body))
    elif kind == "SendMessage" and room in c.rooms:
        body = {"room": room, "user": c.user, "message": contents.get("message", "")}
        bridge.publish(f"room:{room}", envelope("chat-room", "NewMessage", body))
    elif kind == "LeaveRoom" and room in c.rooms:
        bridge.leave(c, room)


async def writer(c: Client, send: Send, batched: bool) -> None:
    """The only task that sends on this socket: one envelope per frame, or all queued as ndjson."""
    async with c.rx:
        while True:
            text = await c.rx.receive()
            if batched:
                parts = [text]
                while True:
                    try:
                        parts.append(c.rx.receive_nowait())
                    except trio.WouldBlock:
                        break
                text = "\n".join(parts) if len(parts) > 1 else text
            await send({"type": "websocket.send", "text": text})


async def websocket(scope: Scope, receive: Receive, send: Send) -> None:
    bridge = BRIDGE
    assert bridge is not None, "lifespan did not run"
    if (await receive())["type"] != "websocket.connect":
        return
    batched = NDJSON in scope.get("subprotocols", [])
    await send({"type": "websocket.accept", "subprotocol": NDJSON if batched else None})
    c = Client()
    bridge.clients.add(c)
    try:
        with c.cancel:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(writer, c, send, batched)
                while True:
                    event = await receive()
                    if event["type"] != "websocket.receive":
                        break
                    for line in (
                        (event.get("text") or "").split("\n")
                        if batched
                        else [event.get("text") or ""]
                    ):
                        handle(bridge, c, line)
                nursery.cancel_scope.cancel()
        if c.cancel.cancelled_caught:
            await send({"type": "websocket.close", "code": 1013})
    finally:
        bridge.clients.discard(c)
        for room in tuple(c.rooms):
            bridge.leave(c, room)
        c.tx.close()


async def http(scope: Scope, receive: Receive, send: Send) -> None:
    path = scope["path"]
    status, body = 404, b""
    if path in ("/ping1", "/ping2") and BRIDGE is not None:
        n = int(path[-1])
        BRIDGE.publish(f"ping{n}", envelope("ping", "Ping", n))
        status, body = 200, b"pong\n"
    elif path in ("/readyz", "/healthz"):
        status, body = 200, b"ok\n"
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def lifespan(receive: Receive, send: Send) -> None:
    """Run the bridge for the life of the server process."""
    global BRIDGE
    async with trio.open_nursery() as nursery:
        await receive()  # lifespan.startup
        BRIDGE = Bridge(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
        await nursery.start(BRIDGE.run)
        await send({"type": "lifespan.startup.complete"})
        await receive()  # lifespan.shutdown
        nursery.cancel_scope.cancel()
    await send({"type": "lifespan.shutdown.complete"})


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """The raw ASGI entry point."""
    if scope["type"] == "websocket":
        await websocket(scope, receive, send)
    elif scope["type"] == "http":
        await http(scope, receive, send)
    elif scope["type"] == "lifespan":
        await lifespan(receive, send)
