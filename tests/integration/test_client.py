"""The client library against real servers: in-process ones, and ``wsproto-trio serve``
subprocesses on a real redis-server (reconnect to another server after a kill -9)."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
import trio
import trio.testing

from wsproto_trio.chaos.proxy import Proxy
from wsproto_trio.client import (
    ChatMessage,
    Client,
    Connected,
    ConnectFailed,
    Disconnected,
    Event,
    Joined,
    JoinFailed,
    Left,
    Lost,
    Reconnected,
    Rejected,
    RoomMessage,
    open_client,
)

from ..procs import spawn_server
from ..support import DEADLINE, RedisProcess, free_port, open_cluster

E = TypeVar("E", bound=Event)


async def next_event(
    client: Client,
    cls: type[E],
    predicate: Callable[[E], bool] = lambda e: True,
    timeout: float = DEADLINE,
) -> E:
    """Skip events until one of ``cls`` matching ``predicate`` arrives."""
    with trio.fail_after(timeout):
        while True:
            event = await client.receive()
            if isinstance(event, cls) and predicate(event):
                return event


async def test_join_send_chat_leave_with_member_sets() -> None:
    async with (
        open_cluster(None, 1) as (server,),
        open_client(server.ws) as a,
        open_client(server.ws, batched=False) as b,
    ):
        assert a.batched and not b.batched
        members = await a.join("lobby")
        assert members.users == {a.user}
        members = await b.join("lobby")
        assert members.users == {a.user, b.user}
        await next_event(a, Joined, lambda e: e.user == b.user)
        assert a.members("lobby") == {a.user, b.user}

        await b.send("lobby", "hi from b")
        got = await next_event(a, RoomMessage)
        assert (got.room, got.user, got.message) == ("lobby", b.user, "hi from b")
        await a.chat("hello all")
        said = await next_event(b, ChatMessage)
        assert said.content == "hello all" and said.posted_at.endswith("Z")

        await b.leave("lobby")
        assert "lobby" not in b.rooms()
        await next_event(a, Left, lambda e: e.user == b.user)
        assert a.members("lobby") == {a.user}
        with pytest.raises(ValueError):
            await b.send("lobby", "not a member")


async def test_a_refused_join_raises() -> None:
    async with open_cluster(None, 1) as (server,), open_client(server.ws) as client:
        with pytest.raises(JoinFailed) as failed:
            await client.join("x" * 101)
        assert failed.value.code == "invalid_room"
        assert client.rooms() == frozenset()


async def test_nothing_to_connect_to_fails_within_the_connect_timeout() -> None:
    url = f"ws://127.0.0.1:{free_port()}/websockets"
    with trio.fail_after(DEADLINE), pytest.raises(ConnectFailed):
        async with open_client(url, connect_timeout=0.5):
            pass


async def test_a_refused_handshake_is_rejected() -> None:
    async with open_cluster(None, 1, allowed_origins=("https://elsewhere",)) as (server,):
        with trio.fail_after(DEADLINE), pytest.raises(Rejected) as rejected:
            async with open_client(server.ws):
                pass
        assert rejected.value.status == 403


async def test_the_body_error_comes_out_unwrapped() -> None:
    async with open_cluster(None, 1) as (server,):
        with pytest.raises(KeyError):
            async with open_client(server.ws):
                raise KeyError("mine")


async def test_a_cut_moves_the_client_to_the_other_server(redis_server: RedisProcess) -> None:
    async with open_cluster(redis_server.url, 2) as (s0, s1), trio.open_nursery() as nursery:
        port = int(s0.http.rsplit(":", 1)[1])
        proxy = Proxy(port)
        proxy_port = await nursery.start(proxy.serve)
        via_proxy = f"ws://127.0.0.1:{proxy_port}/websockets"
        async with (
            open_client([via_proxy, s1.ws], timeout=3.0) as moving,
            open_client(s1.ws) as other,
        ):
            await moving.join("r")
            await other.join("r")
            assert moving.server == "s0"
            proxy.cut()
            down = await next_event(moving, Disconnected)
            assert down.url == via_proxy
            back = await next_event(moving, Connected)
            assert back.reconnect and back.server == "s1" and back.url == s1.ws
            await next_event(moving, Reconnected)
            assert moving.rooms() == {"r"}
            await moving.send("r", "after the move")
            got = await next_event(other, RoomMessage, lambda e: e.message == "after the move")
            assert got.user == moving.user
        nursery.cancel_scope.cancel()


async def test_send_while_disconnected_waits_for_the_reconnect() -> None:
    async with open_cluster(None, 1) as (server,), trio.open_nursery() as nursery:
        proxy = Proxy(int(server.http.rsplit(":", 1)[1]))
        port = await nursery.start(proxy.serve)
        async with open_client(f"ws://127.0.0.1:{port}/websockets") as client:
            await client.join("r")
            proxy.cut()
            await next_event(client, Disconnected)
            sent = trio.Event()

            async def send() -> None:
                await client.send("r", "queued")
                sent.set()

            nursery.start_soon(send)
            await trio.testing.wait_all_tasks_blocked()
            assert not sent.is_set()
            proxy.restore()
            with trio.fail_after(DEADLINE):
                await sent.wait()
            got = await next_event(client, RoomMessage)
            assert got.message == "queued" and got.user == client.user
        nursery.cancel_scope.cancel()


async def test_kill_9_moves_clients_to_the_surviving_server(
    tmp_path: Path, redis_server: RedisProcess
) -> None:
    env = {"REDIS_URL": redis_server.url, "PRESENCE_TTL": "1.5s"}
    async with (
        spawn_server(tmp_path, "doomed", **env) as doomed,
        spawn_server(tmp_path, "survivor", **env) as survivor,
    ):
        await doomed.wait_ready()
        await survivor.wait_ready()
        async with (
            open_client([doomed.ws, survivor.ws], timeout=3.0) as moving,
            open_client(survivor.ws) as watcher,
        ):
            await moving.join("crash")
            await watcher.join("crash")
            old_user = moving.user
            doomed.signal(signal.SIGKILL)
            back = await next_event(moving, Connected, lambda e: e.reconnect)
            assert back.server == "survivor"
            await next_event(moving, Reconnected)
            # The watcher sees the new connection join, and the ghost of the old
            # one reaped once the dead server's lease lapsed.
            await next_event(watcher, Joined, lambda e: e.user == moving.user)
            await next_event(watcher, Left, lambda e: e.user == old_user)
            assert watcher.members("crash") == {watcher.user, moving.user}
            await watcher.send("crash", "still here?")
            got = await next_event(moving, RoomMessage, lambda e: e.message == "still here?")
            assert got.user == watcher.user


async def _cut_and_say(moving: Client, other: Client, proxy: Proxy, room: str, count: int) -> None:
    """Cut ``moving``'s link; while it is away, ``other`` says ``count`` things in the
    room and in the chat; then let ``moving`` back in."""
    proxy.cut()
    await next_event(moving, Disconnected)
    for number in range(count):
        await other.send(room, f"room {number}")
        await other.chat(f"chat {number}")
    last = f"room {count - 1}"  # the server took them all once its echo is back
    await next_event(other, RoomMessage, lambda e: e.message == last)
    proxy.restore()


async def test_a_cut_recovers_the_room_and_the_chat(redis_server: RedisProcess) -> None:
    async with open_cluster(redis_server.url, 2) as (s0, s1), trio.open_nursery() as nursery:
        proxy = Proxy(int(s0.http.rsplit(":", 1)[1]))
        port = await nursery.start(proxy.serve)
        async with (
            open_client(f"ws://127.0.0.1:{port}/websockets") as moving,
            open_client(s1.ws) as other,
        ):
            await moving.join("r")
            await other.join("r")
            await other.send("r", "before")
            await next_event(moving, RoomMessage, lambda e: e.message == "before")
            await _cut_and_say(moving, other, proxy, "r", 5)
            seen: list[str] = []
            with trio.fail_after(DEADLINE):
                while not isinstance(event := await moving.receive(), Reconnected):
                    if isinstance(event, RoomMessage | ChatMessage):
                        assert event.replayed, event
                        seen.append(
                            event.message if isinstance(event, RoomMessage) else event.content
                        )
            assert [s for s in seen if s.startswith("room")] == [f"room {n}" for n in range(5)]
            assert [s for s in seen if s.startswith("chat")] == [f"chat {n}" for n in range(5)]
            assert event.recovered and event.replayed == 10, event
            assert {s.room: s.replayed for s in event.streams} == {None: 5, "r": 5}
            await other.send("r", "after")
            live = await next_event(moving, RoomMessage)
            assert live.message == "after" and not live.replayed
            assert moving.stats.duplicates == 0 and moving.stats.gaps == 0
        nursery.cancel_scope.cancel()


async def test_recovery_past_the_history_is_lost(redis_server: RedisProcess) -> None:
    async with (
        open_cluster(redis_server.url, 1, history_size=2) as (server,),
        trio.open_nursery() as nursery,
    ):
        proxy = Proxy(int(server.http.rsplit(":", 1)[1]))
        port = await nursery.start(proxy.serve)
        async with (
            open_client(f"ws://127.0.0.1:{port}/websockets") as moving,
            open_client(server.ws) as other,
        ):
            await moving.join("r")
            await other.join("r")
            await _cut_and_say(moving, other, proxy, "r", 5)
            lost = await next_event(moving, Lost, lambda e: e.room == "r")
            assert lost.cause == "recovery"
            reconnected = await next_event(moving, Reconnected)
            assert not reconnected.recovered
            outcomes = {s.room: s for s in reconnected.streams}
            assert outcomes["r"].recovered is False and outcomes["r"].lost == lost
            assert outcomes[None].recovered is False
            await other.send("r", "after")
            live = await next_event(moving, RoomMessage)
            assert live.message == "after"
        nursery.cancel_scope.cancel()
