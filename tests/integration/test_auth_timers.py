"""Token expiry on trio's clock (MockClock): the timer alone, then a whole connection."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
import trio.testing

from wsproto_trio.app import make_broker
from wsproto_trio.auth.verifier import Verifier
from wsproto_trio.config import AuthSettings
from wsproto_trio.server.connection import Connection
from wsproto_trio.server.expiry import ExpiryTimer
from wsproto_trio.server.hub import Hub

from ..jwt_support import SECRET, claims, hs_token
from ..support import settings_for

EPOCH = 1_800_000_000.0  # the fake wall clock at trio time 0


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, float, float | None]] = []

    def notice(self, exp: float) -> None:
        self.events.append(("notice", trio.current_time(), exp))

    def expire(self) -> None:
        self.events.append(("expire", trio.current_time(), None))


def timer(recorder: Recorder, notice: float = 30.0) -> ExpiryTimer:
    start = trio.current_time()
    return ExpiryTimer(
        notice,
        recorder.notice,
        recorder.expire,
        wall_clock=lambda: EPOCH + trio.current_time() - start,
    )


async def test_notice_before_exp_then_close_at_exp(autojump_clock: trio.testing.MockClock) -> None:
    recorder = Recorder()
    expiry = timer(recorder)
    expiry.set(EPOCH + 100)
    await expiry.serve()
    assert recorder.events == [("notice", 70.0, EPOCH + 100), ("expire", 100.0, None)]


async def test_notice_at_once_when_less_is_left(autojump_clock: trio.testing.MockClock) -> None:
    recorder = Recorder()
    expiry = timer(recorder)
    expiry.set(EPOCH + 10)
    await expiry.serve()
    assert recorder.events == [("notice", 0.0, EPOCH + 10), ("expire", 10.0, None)]


async def test_already_expired_closes_at_once(autojump_clock: trio.testing.MockClock) -> None:
    recorder = Recorder()
    expiry = timer(recorder)
    expiry.set(EPOCH - 3)  # accepted within AUTH_LEEWAY, already past exp
    await expiry.serve()
    assert [(kind, at) for kind, at, _ in recorder.events] == [("notice", 0.0), ("expire", 0.0)]


async def test_no_exp_never_fires(autojump_clock: trio.testing.MockClock) -> None:
    recorder = Recorder()
    expiry = timer(recorder)
    expiry.set(None)
    with trio.move_on_after(10**6):
        await expiry.serve()
    assert recorder.events == []


async def test_refresh_rearms(autojump_clock: trio.testing.MockClock) -> None:
    recorder = Recorder()
    expiry = timer(recorder)
    expiry.set(EPOCH + 100)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(expiry.serve)
        await trio.sleep(80)  # the notice went out at 70
        assert recorder.events == [("notice", 70.0, EPOCH + 100)]
        expiry.set(EPOCH + 500)  # refreshed at 80: new notice at 470, close at 500
        await trio.sleep(500)
    assert recorder.events == [
        ("notice", 70.0, EPOCH + 100),
        ("notice", 470.0, EPOCH + 500),
        ("expire", 500.0, None),
    ]


async def test_refresh_to_no_exp_disarms(autojump_clock: trio.testing.MockClock) -> None:
    recorder = Recorder()
    expiry = timer(recorder)
    expiry.set(EPOCH + 100)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(expiry.serve)
        await trio.sleep(50)
        expiry.set(None)
        await trio.sleep(10_000)
        nursery.cancel_scope.cancel()
    assert recorder.events == []


async def test_deadlines_do_not_follow_wall_clock_steps(
    autojump_clock: trio.testing.MockClock,
) -> None:
    recorder = Recorder()
    wall = [EPOCH]
    expiry = ExpiryTimer(30.0, recorder.notice, recorder.expire, wall_clock=lambda: wall[0])
    expiry.set(EPOCH + 100)
    wall[0] += 3600  # an NTP step after the deadlines were fixed
    await expiry.serve()
    assert [(kind, at) for kind, at, _ in recorder.events] == [("notice", 70.0), ("expire", 100.0)]


# A whole connection on MockClock: fake ASGI events, a real hub on the memory broker --


class FakeSocket:
    """The ASGI side of one accepted websocket: what the client sends and what it got."""

    def __init__(self) -> None:
        self.inbound_send, self.inbound = trio.open_memory_channel[dict[str, Any]](100)
        self.sent: list[tuple[float, dict[str, Any]]] = []
        self.closed = trio.Event()

    async def receive(self) -> dict[str, Any]:
        return await self.inbound.receive()

    async def send(self, event: dict[str, Any]) -> None:
        self.sent.append((trio.current_time(), event))
        if event["type"] == "websocket.close":
            self.closed.set()

    def client_sends(self, channel: str, kind: str, contents: Any = None) -> None:
        text = json.dumps({"channel": channel, "message": {"type": kind, "contents": contents}})
        self.inbound_send.send_nowait({"type": "websocket.receive", "text": text})

    def envelopes(self) -> list[tuple[float, str, Any]]:
        found = []
        for at, event in self.sent:
            if event["type"] == "websocket.send":
                message = json.loads(event["text"])["message"]
                found.append((at, message["type"], message["contents"]))
        return found

    def close_event(self) -> tuple[float, dict[str, Any]]:
        closes = [(at, e) for at, e in self.sent if e["type"] == "websocket.close"]
        assert len(closes) == 1, self.sent
        return closes[0]


@asynccontextmanager
async def connection_on_mock_clock(
    token: str, notice: float = 30.0
) -> AsyncIterator[tuple[Connection, FakeSocket]]:
    auth = AuthSettings(secret=SECRET, refresh_notice=notice)
    settings = settings_for("s0", auth=auth)
    hub = Hub("s0", make_broker(settings))
    verifier = Verifier(auth)
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.serve)
        connection = Connection(
            settings, hub, batched=False, claims=await verifier.verify(token), verifier=verifier
        )
        socket = FakeSocket()
        nursery.start_soon(connection.run, socket.receive, socket.send)
        yield connection, socket
        nursery.cancel_scope.cancel()


async def closed(socket: FakeSocket, within: float) -> None:
    """Wait (virtual time) until the connection has sent its close frame."""
    with trio.fail_after(within):
        await socket.closed.wait()


def near(value: float, target: float) -> bool:
    """Token times are whole seconds of the wall clock: allow that rounding."""
    return target - 1.5 <= value <= target + 0.5


async def test_connection_expires_with_4001(autojump_clock: trio.testing.MockClock) -> None:
    token = hs_token(claims(ttl=100))
    async with connection_on_mock_clock(token) as (_connection, socket):
        socket.client_sends("chat-room", "JoinRoom", {"room": "r"})
        await closed(socket, within=200)
    kinds = [(kind, at) for at, kind, _ in socket.envelopes()]
    expiring = [at for kind, at in kinds if kind == "Expiring"]
    assert len(expiring) == 1 and near(expiring[0], 70.0), kinds
    at, close = socket.close_event()
    assert close["code"] == 4001 and near(at, 100.0)


async def test_connection_refresh_moves_the_deadlines(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with connection_on_mock_clock(hs_token(claims(ttl=100))) as (connection, socket):
        await trio.sleep(80)  # the notice went out at ~70
        fresh = claims(ttl=600)  # from now (mock 80): notice at ~650, close at ~680
        socket.client_sends("session", "Refresh", {"token": hs_token(fresh)})
        await closed(socket, within=1000)
    events = socket.envelopes()
    expiring = [(at, contents["exp"]) for at, kind, contents in events if kind == "Expiring"]
    assert len(expiring) == 2
    assert near(expiring[0][0], 70.0) and near(expiring[1][0], 650.0)
    assert expiring[1][1] == fresh["exp"]
    welcome = [contents for _, kind, contents in events if kind == "Welcome"]
    assert welcome == [{"user": connection.id, "server": "s0", "sub": "alice", "exp": fresh["exp"]}]
    at, close = socket.close_event()
    assert close["code"] == 4001 and near(at, 680.0)


async def test_failed_refresh_keeps_the_old_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with connection_on_mock_clock(hs_token(claims(ttl=100))) as (_connection, socket):
        await trio.sleep(50)
        socket.client_sends("session", "Refresh", {"token": hs_token(claims(sub="mallory"))})
        await closed(socket, within=200)
    errors = [contents["code"] for _, kind, contents in socket.envelopes() if kind == "Error"]
    assert errors == ["invalid_token"]
    at, close = socket.close_event()
    assert close["code"] == 4001 and near(at, 100.0)
