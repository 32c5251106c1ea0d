"""The real ASGI app under Hypercorn's trio ``TCPServer`` over in-memory streams.

As Hypercorn's own ``tests/trio/test_sanity.py`` does: no sockets, no threads,
so a test runs on trio's ``MockClock(autojump_threshold=0)`` and every timer
(heartbeat, read timeout, handshake timeout, rate limit) fires in virtual time,
deterministically. The client is sans-IO wsproto: tests see frames and close
codes only, never the hub's or a connection's internals.

Every byte a server writes is also appended to ``Wire.log`` as
``(client name, bytes)``, in the order the server wrote them, so a test can
say which of two clients' frames went out first.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from socket import AF_INET
from typing import Any

import trio
from hypercorn.app_wrappers import ASGIWrapper
from hypercorn.config import Config
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Event,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)

from wsproto_trio.app import WsprotoApp, create_app
from wsproto_trio.broker.memory import MemoryBroker, MemoryNetwork
from wsproto_trio.cli import enable_heartbeat, hypercorn_config
from wsproto_trio.config import Settings

DEADLINE = 60.0  # virtual seconds: the clock jumps, so this costs nothing


class _Socket:
    """What Hypercorn asks of ``stream.socket``."""

    family = AF_INET

    def getsockname(self) -> tuple[str, int]:
        return ("10.0.0.1", 9000)

    def getpeername(self) -> tuple[str, int]:
        return ("10.0.0.2", 40000)


class _Pipe:
    """One direction of a TCP connection with a bounded buffer (a socket's).

    ``trio.testing.memory_stream_pair`` buffers without bound, so a client that
    stops reading would never hold a server's write back; this one does once
    ``limit`` bytes are unread, as a full kernel buffer would.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.buffer = bytearray()
        self.closed = False
        self._changed = trio.Event()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        while len(self.buffer) >= self.limit and not self.closed:
            await self._changed.wait()
        if self.closed:
            raise trio.BrokenResourceError("the reader has gone")
        self.buffer += data
        self._notify()
        await trio.lowlevel.checkpoint()

    async def read(self, max_bytes: int | None) -> bytes:
        while not self.buffer and not self.closed:
            await self._changed.wait()
        size = len(self.buffer) if max_bytes is None else max_bytes
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        self._notify()
        await trio.lowlevel.checkpoint()
        return data

    def close(self) -> None:
        self.closed = True
        self._notify()


class _End(trio.abc.HalfCloseableStream):
    """One end of a connection made of two ``_Pipe``s."""

    def __init__(self, outgoing: _Pipe, incoming: _Pipe) -> None:
        self._out = outgoing
        self._in = incoming

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._out.closed:
            raise trio.ClosedResourceError
        await self._out.write(data)

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return await self._in.read(max_bytes)

    async def send_eof(self) -> None:
        self._out.close()
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        self._out.close()
        self._in.close()
        await trio.lowlevel.checkpoint()


def connection_pair(limit: int = 16 * 1024) -> tuple[_End, _End]:
    """(client end, server end) of one TCP connection, ``limit`` bytes buffered each way."""
    up, down = _Pipe(limit), _Pipe(limit)
    return _End(up, down), _End(down, up)


class _RecordingStream(trio.abc.HalfCloseableStream):
    """The server's end of one client's stream; logs what the server writes."""

    def __init__(
        self, inner: trio.abc.HalfCloseableStream, name: str, log: list[tuple[str, bytes]]
    ) -> None:
        self._inner = inner
        self._name = name
        self._log = log
        self.socket = _Socket()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self._log.append((self._name, bytes(data)))
        await self._inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self._inner.receive_some(max_bytes)

    async def send_eof(self) -> None:
        await self._inner.send_eof()

    async def aclose(self) -> None:
        await self._inner.aclose()


@dataclass
class Wire:
    """What every server of a test wrote, in order."""

    log: list[tuple[str, bytes]] = field(default_factory=list)

    def first(self, name: str, needle: bytes) -> int:
        """Index of the first write to client ``name`` that contains ``needle``."""
        for index, (who, data) in enumerate(self.log):
            if who == name and needle in data:
                return index
        raise AssertionError(f"no write to {name} contains {needle!r}")


def close_frame(code: int) -> bytes:
    """A server's close frame with ``code`` and no reason (unmasked)."""
    return b"\x88\x02" + code.to_bytes(2, "big")


class WireClient:
    """A sans-IO wsproto client; answers pings while it reads unless told not to."""

    def __init__(self, name: str, stream: trio.abc.Stream) -> None:
        self.name = name
        self.stream = stream
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.events: deque[Event] = deque()
        self.answer_pings = True
        self.user = ""

    async def _fill(self) -> None:
        data = await self.stream.receive_some(65536)
        if not data:
            raise EOFError(f"{self.name}: the server closed the TCP stream")
        self.ws.receive_data(bytes(data))
        for event in self.ws.events():
            if isinstance(event, Ping):
                if self.answer_pings:
                    await self.stream.send_all(self.ws.send(event.response()))
                continue
            self.events.append(event)

    async def next_event(self) -> Event:
        with trio.fail_after(DEADLINE):
            while not self.events:
                await self._fill()
        return self.events.popleft()

    async def handshake(self, subprotocols: tuple[str, ...] = ()) -> Event:
        request = Request(host="edge", target="/websockets", subprotocols=list(subprotocols))
        await self.stream.send_all(self.ws.send(request))
        return await self.next_event()

    async def send(self, channel: str, kind: str, contents: Any = None) -> None:
        frame = json.dumps({"channel": channel, "message": {"type": kind, "contents": contents}})
        await self.stream.send_all(self.ws.send(TextMessage(frame)))

    async def envelope(self) -> dict[str, Any]:
        event = await self.next_event()
        assert isinstance(event, TextMessage), event
        envelope: dict[str, Any] = json.loads(event.data)
        return envelope

    async def expect(self, kind: str) -> Any:
        envelope = await self.envelope()
        assert envelope["message"]["type"] == kind, envelope
        return envelope["message"]["contents"]

    async def next_of(self, kind: str) -> Any:
        """Skip envelopes until one of type ``kind``."""
        while (envelope := await self.envelope())["message"]["type"] != kind:
            pass
        return envelope["message"]["contents"]

    async def close_code(self) -> int:
        """Read until the server's close frame (data frames before it are skipped)."""
        while not isinstance(event := await self.next_event(), CloseConnection):
            pass
        return event.code

    async def hello(self) -> str:
        await self.send("session", "Hello")
        self.user = (await self.next_of("Welcome"))["user"]
        return self.user

    async def join(self, room: str) -> list[str]:
        await self.send("chat-room", "JoinRoom", {"room": room})
        users: list[str] = (await self.next_of("MemberList"))["users"]
        return users


@dataclass
class EdgeServer:
    app: WsprotoApp
    config: Config
    wire: Wire
    nursery: trio.Nursery
    lifespan: Lifespan
    context: WorkerContext = field(default_factory=lambda: WorkerContext(None))
    stopped: bool = False

    def open_stream(self, name: str) -> WireClient:
        """A new TCP connection to this server (nothing sent yet)."""
        client_end, server_end = connection_pair()
        stream = _RecordingStream(server_end, name, self.wire.log)
        server = TCPServer(ASGIWrapper(self.app), self.config, self.context, {}, stream)  # type: ignore[arg-type]  # Hypercorn types it as an SSL stream
        self.nursery.start_soon(server.run)
        return WireClient(name, client_end)

    async def connect(self, name: str) -> WireClient:
        """A client past the handshake that knows its user id."""
        client = self.open_stream(name)
        accepted = await client.handshake()
        assert isinstance(accepted, AcceptConnection), accepted
        await client.hello()
        return client

    async def refused_status(self, name: str) -> int:
        client = self.open_stream(name)
        rejected = await client.handshake()
        assert isinstance(rejected, RejectConnection), rejected
        while rejected.has_body and not isinstance(await client.next_event(), RejectData):
            pass
        return rejected.status_code

    async def shut_down(self) -> None:
        """What Hypercorn does on its shutdown trigger: stop, then the lifespan shutdown."""
        self.stopped = True
        await self.context.terminated.set()
        await self.lifespan.wait_for_shutdown()


@asynccontextmanager
async def open_edge_server(
    settings: Settings,
    wire: Wire | None = None,
    network: MemoryNetwork | None = None,
    *,
    heartbeat: bool = False,
) -> AsyncIterator[EdgeServer]:
    """One server (memory broker on ``network``), its lifespan started."""
    app = create_app(settings, MemoryBroker(settings.server_id, network))
    config = hypercorn_config(settings)
    if heartbeat:
        enable_heartbeat(config, settings)
    async with trio.open_nursery() as nursery:
        lifespan = Lifespan(ASGIWrapper(app), config, {})
        await nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        server = EdgeServer(app, config, wire if wire is not None else Wire(), nursery, lifespan)
        try:
            yield server
        finally:
            if not server.stopped:
                await server.shut_down()
            nursery.cancel_scope.cancel()
