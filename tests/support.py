"""Test support: real processes, in-process servers and a small websocket client."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import redis
import trio
from hypercorn.trio import serve
from trio_websocket import WebSocketConnection, open_websocket_url

from wsproto_trio.app import WsprotoApp, create_app
from wsproto_trio.broker import Broker
from wsproto_trio.cli import hypercorn_config
from wsproto_trio.config import RateLimit, Settings
from wsproto_trio.core.messages import NDJSON_SUBPROTOCOL

DEADLINE = 10.0


def unpositioned(contents: dict[str, Any]) -> dict[str, Any]:
    """A message's contents without its stream position (``offset``, ``epoch``)."""
    return {k: v for k, v in contents.items() if k not in ("offset", "epoch")}


def is_presence_key(key: str) -> bool:
    """Presence keys (room members, server member sets, the room index), not history."""
    return key.endswith(":members") or key == "wsproto:rooms"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisProcess:
    """A redis-server of our own on a free port; stop and start keep the port."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + DEADLINE
        while True:
            try:
                with self.client() as client:
                    if client.ping():
                        return
            except redis.exceptions.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.02)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=DEADLINE)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, decode_responses=True, socket_timeout=5)

    def numsub(self, *channels: str) -> dict[str, int]:
        with self.client() as client:
            pairs = client.pubsub_numsub(*channels)
        return {str(name): int(count) for name, count in pairs}

    def key_list(self, pattern: str = "*") -> list[str]:
        with self.client() as client:
            return sorted(str(k) for k in client.keys(pattern))


def settings_for(server_id: str, redis_url: str | None = None, **changes: Any) -> Settings:
    base = Settings(
        redis_url=redis_url,
        host="127.0.0.1",
        port=0,
        server_id=server_id,
        rate_limit=RateLimit(rate=1000.0, burst=2000.0),
        shutdown_timeout=2.0,
    )
    return base.with_changes(**changes)


@dataclass
class RunningServer:
    app: WsprotoApp
    http: str  # http://127.0.0.1:PORT

    @property
    def ws(self) -> str:
        return self.http.replace("http://", "ws://") + "/websockets"

    async def get(self, path: str, token: str | None = None) -> tuple[int, Any]:
        return await http_request("GET", self.http + path, token=token)

    async def post(self, path: str, body: str, token: str | None = None) -> tuple[int, Any]:
        return await http_request("POST", self.http + path, body=body, token=token)


@asynccontextmanager
async def open_server(
    settings: Settings, broker: Broker | None = None
) -> AsyncIterator[RunningServer]:
    """One server on a free port in this trio run, stopped gracefully on exit."""
    app = create_app(settings, broker)
    config = hypercorn_config(settings)
    config.errorlog = "-"
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(serve, app, config, shutdown_trigger=stop.wait))
        try:
            yield RunningServer(app, binds[0])
        finally:
            app.hub.drain()
            stop.set()


@asynccontextmanager
async def open_cluster(
    redis_url: str | None, count: int, **changes: Any
) -> AsyncIterator[list[RunningServer]]:
    async with trio.open_nursery() as nursery:
        servers: list[RunningServer] = []
        ready = trio.Event()
        done = trio.Event()

        async def run(index: int) -> None:
            async with open_server(settings_for(f"s{index}", redis_url, **changes)) as server:
                servers.append(server)
                if len(servers) == count:
                    ready.set()
                await done.wait()

        for index in range(count):
            nursery.start_soon(run, index)
        with trio.fail_after(DEADLINE):
            await ready.wait()
            await wait_until(lambda: all(s.app.hub.status().ready for s in servers))
        servers.sort(key=lambda s: s.app.settings.server_id)
        try:
            yield servers
        finally:
            done.set()


async def wait_until(predicate: Callable[[], bool], timeout: float = DEADLINE) -> None:
    """Poll ``predicate`` until true, failing after ``timeout`` seconds."""
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.01)


async def wait_until_async(predicate: Callable[[], Any], timeout: float = DEADLINE) -> None:
    with trio.fail_after(timeout):
        while not await predicate():
            await trio.sleep(0.02)


async def http_request(
    method: str,
    url: str,
    body: str | None = None,
    token: str | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """A minimal HTTP/1.1 client on trio sockets; returns status and decoded body."""
    rest = url.removeprefix("http://")
    hostport, _, path = rest.partition("/")
    host, _, port = hostport.partition(":")
    payload = (body or "").encode()
    extra = [f"{name}: {value}" for name, value in (headers or {}).items()]
    lines = [f"{method} /{path} HTTP/1.1", f"Host: {hostport}", "Connection: close",
             f"Content-Length: {len(payload)}", *extra]  # fmt: skip
    if body is not None:
        lines.append("Content-Type: application/json")
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    request = ("\r\n".join(lines) + "\r\n\r\n").encode() + payload
    with trio.fail_after(DEADLINE):
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            await stream.send_all(request)
            raw = b""
            while True:
                chunk = await stream.receive_some(65536)
                raw += chunk
                head, sep, content = raw.partition(b"\r\n\r\n")
                if (sep and _complete(head, content)) or not chunk:
                    break
    status = int(head.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" in head.lower():
        content = _unchunk(content)
    text = content.decode()
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def _complete(head: bytes, content: bytes) -> bool:
    for line in head.lower().split(b"\r\n"):
        if line.startswith(b"content-length:"):
            return len(content) >= int(line.split(b":", 1)[1])
    if b"transfer-encoding: chunked" in head.lower():
        return content.endswith(b"0\r\n\r\n")
    return False


def _unchunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        out += data[:size]
        data = data[size + 2 :]
    return out


@dataclass
class Client:
    """A trio-websocket client that reads envelopes one at a time."""

    ws: WebSocketConnection
    pending: list[dict[str, Any]] = field(default_factory=list)
    user: str = ""

    async def send(self, channel: str, kind: str, contents: Any = None) -> None:
        await self.ws.send_message(
            json.dumps({"channel": channel, "message": {"type": kind, "contents": contents}})
        )

    async def receive(self, timeout: float = DEADLINE) -> dict[str, Any]:
        with trio.fail_after(timeout):
            while not self.pending:
                frame = await self.ws.get_message()
                assert isinstance(frame, str)
                self.pending.extend(json.loads(p) for p in frame.split("\n") if p)
        return self.pending.pop(0)

    async def expect(self, kind: str, timeout: float = DEADLINE) -> Any:
        """The next envelope must be of type ``kind``; returns its contents."""
        envelope = await self.receive(timeout)
        assert envelope["message"]["type"] == kind, envelope
        return envelope["message"]["contents"]

    async def join(self, room: str) -> list[str]:
        await self.send("chat-room", "JoinRoom", {"room": room})
        users: list[str] = (await self.expect("MemberList"))["users"]
        return users

    async def hello(self) -> str:
        """Learn our id; broadcast traffic that overtakes the answer is kept, in order."""
        await self.send("session", "Hello")
        earlier: list[dict[str, Any]] = []
        while (envelope := await self.receive())["message"]["type"] != "Welcome":
            earlier.append(envelope)
        self.pending[:0] = earlier
        self.user = envelope["message"]["contents"]["user"]
        return self.user


@asynccontextmanager
async def open_client(
    url: str, batched: bool = False, connect_timeout: float = DEADLINE
) -> AsyncIterator[Client]:
    subprotocols = [NDJSON_SUBPROTOCOL] if batched else None
    async with open_websocket_url(
        url, subprotocols=subprotocols, connect_timeout=connect_timeout,
        disconnect_timeout=DEADLINE,
    ) as ws:  # fmt: skip
        client = Client(ws)
        await client.hello()
        yield client


@asynccontextmanager
async def open_splitting_proxy(upstream_port: int) -> AsyncIterator[int]:
    """A TCP proxy to Redis that delivers everything Redis sends in two pieces.

    Each chunk from Redis is cut in half and the halves are written separately
    with a checkpoint between, so the server sees messages arrive half at a
    time: what made redis-py's ``get_message(timeout=0)`` raise ``TimeoutError``.
    """

    async def pipe(source: trio.SocketStream, sink: trio.SocketStream, split: bool) -> None:
        try:
            while chunk := await source.receive_some(65536):
                if split and len(chunk) > 1:
                    middle = len(chunk) // 2
                    await sink.send_all(chunk[:middle])
                    await trio.sleep(0.002)
                    await sink.send_all(chunk[middle:])
                else:
                    await sink.send_all(chunk)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await sink.aclose()

    async def handle(client: trio.SocketStream) -> None:
        upstream = await trio.open_tcp_stream("127.0.0.1", upstream_port)
        async with client, upstream, trio.open_nursery() as nursery:
            nursery.start_soon(pipe, client, upstream, False)
            nursery.start_soon(pipe, upstream, client, True)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


class CutProxy:
    """A TCP proxy in front of Redis that a test can cut, or pause, for one server.

    ``cut()`` drops every connection through it and refuses new ones until
    ``restore()``: a network cut between that server and Redis, Redis itself up.
    ``pause()`` stops reading from Redis (the server sees silence and Redis's
    output buffer for it grows, until Redis drops the client); ``resume()``.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self._scopes: set[trio.CancelScope] = set()
        self._open = True
        self._flowing = trio.Event()
        self._flowing.set()

    def cut(self) -> None:
        self._open = False
        for scope in list(self._scopes):
            scope.cancel()

    def restore(self) -> None:
        self._open = True

    def pause(self) -> None:
        self._flowing = trio.Event()

    def resume(self) -> None:
        self._flowing.set()

    async def _pipe(self, source: trio.SocketStream, sink: trio.SocketStream, gated: bool) -> None:
        try:
            while True:
                if gated:
                    await self._flowing.wait()
                chunk = await source.receive_some(65536)
                if not chunk:
                    break
                await sink.send_all(chunk)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await sink.aclose()

    async def _handle(self, client: trio.SocketStream) -> None:
        async with client:
            if not self._open:
                return
            with trio.CancelScope() as scope:
                self._scopes.add(scope)
                try:
                    sock = trio.socket.socket()
                    # A small receive buffer: a paused proxy soon stops Redis
                    # from writing, instead of the kernel soaking up megabytes.
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                    await sock.connect(("127.0.0.1", self.upstream_port))
                    upstream = trio.SocketStream(sock)
                    async with upstream, trio.open_nursery() as nursery:
                        nursery.start_soon(self._pipe, client, upstream, False)
                        nursery.start_soon(self._pipe, upstream, client, True)
                finally:
                    self._scopes.discard(scope)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[CutProxy]:
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(
                partial(trio.serve_tcp, self._handle, 0, host="127.0.0.1")
            )
            self.port = listeners[0].socket.getsockname()[1]
            try:
                yield self
            finally:
                nursery.cancel_scope.cancel()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"
