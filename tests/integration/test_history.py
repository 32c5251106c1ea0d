"""History and recovery (PROTOCOL.md section 7) on real servers and a real redis-server.

Two servers share one Redis; a client that reconnects to the other server
recovers what it missed, and a server whose link to Redis breaks fills the gap
from history before it delivers anything newer.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any
from urllib.parse import quote

import pytest
import trio
import trio.lowlevel

from wsproto_trio.broker.memory import MemoryBroker, MemoryNetwork

from ..support import (
    DEADLINE,
    Client,
    CutProxy,
    RedisProcess,
    RunningServer,
    http_request,
    open_client,
    open_cluster,
    open_server,
    settings_for,
    unpositioned,
    wait_until,
)

TOKEN = "history-admin"


@asynccontextmanager
async def two_servers(url0: str, url1: str, **changes: Any) -> AsyncIterator[list[RunningServer]]:
    """Two servers on one Redis, each through its own URL (one may be a proxy)."""
    async with (
        open_server(settings_for("s0", url0, admin_token=TOKEN, **changes)) as s0,
        open_server(settings_for("s1", url1, admin_token=TOKEN, **changes)) as s1,
    ):
        await wait_until(lambda: s0.app.hub.status().ready and s1.app.hub.status().ready)
        yield [s0, s1]


async def room_messages(client: Client, count: int) -> list[dict[str, Any]]:
    """The next ``count`` envelopes of the room, which must all be NewMessage."""
    return [await client.expect("NewMessage") for _ in range(count)]


async def send_room(client: Client, room: str, *texts: str) -> None:
    for text in texts:
        await client.send("chat-room", "SendMessage", {"room": room, "message": text})


async def test_positions_are_shared_by_every_recipient_on_every_server(
    redis_server: RedisProcess,
) -> None:
    async with open_cluster(redis_server.url, 2) as (s0, s1):
        async with open_client(s0.ws) as a, open_client(s1.ws) as b:
            await a.send("chat-room", "JoinRoom", {"room": "pos"})
            listed = await a.expect("MemberList")
            assert listed["offset"] == 0 and 1 <= len(listed["epoch"]) <= 32
            await a.expect("JoinedRoom")
            await b.join("pos")
            await a.expect("JoinedRoom")
            await b.expect("JoinedRoom")
            await send_room(a, "pos", "one", "two")
            await send_room(b, "pos", "three")
            seen = [await room_messages(c, 3) for c in (a, b)]
            assert seen[0] == seen[1]
            assert [m["offset"] for m in seen[0]] == [1, 2, 3]
            assert {m["epoch"] for m in seen[0]} == {listed["epoch"]}
            await a.send("chat", "SubmitMessage", "hi")
            chat = [await c.expect("NewMessageReceived") for c in (a, b)]
            assert chat[0] == chat[1] and chat[0]["offset"] >= 1


async def test_room_recovery_after_reconnecting_to_the_other_server(
    redis_server: RedisProcess,
) -> None:
    async with open_cluster(redis_server.url, 2) as (s0, s1):
        async with open_client(s1.ws) as sender:
            await sender.join("rec")
            await sender.expect("JoinedRoom")
            async with open_client(s0.ws) as reader:
                await reader.join("rec")
                await reader.expect("JoinedRoom")
                await sender.expect("JoinedRoom")
                await send_room(sender, "rec", "m1", "m2")
                got = await room_messages(reader, 2)
                last = got[-1]
                await room_messages(sender, 2)
            # The reader is gone; three messages are sent meanwhile.
            await sender.expect("LeftRoom")
            await send_room(sender, "rec", "m3", "m4", "m5")
            for _ in range(3):
                await sender.expect("NewMessage")
            since = {"offset": last["offset"], "epoch": last["epoch"]}
            async with open_client(s1.ws) as back:
                await back.send("chat-room", "JoinRoom", {"room": "rec", "since": since})
                listed = await back.expect("MemberList")
                assert listed["recovered"] is True
                assert listed["offset"] == 5
                replayed = await room_messages(back, 3)
                assert [m["message"] for m in replayed] == ["m3", "m4", "m5"]
                assert [m["offset"] for m in replayed] == [3, 4, 5]
                assert (await back.expect("JoinedRoom"))["user"] == back.user
                await send_room(sender, "rec", "m6")
                assert (await back.expect("NewMessage"))["offset"] == 6


async def test_failed_room_recovery_says_so_and_falls_back_to_history(
    redis_server: RedisProcess,
) -> None:
    async with open_cluster(redis_server.url, 1, history_size=3, admin_token=TOKEN) as (s0,):
        async with open_client(s0.ws) as sender:
            await sender.join("fb")
            await sender.expect("JoinedRoom")
            await send_room(sender, "fb", *[f"m{i}" for i in range(1, 7)])
            await room_messages(sender, 6)
            async with open_client(s0.ws) as late:
                # Offset 1 of this epoch: 2 and 3 are no longer kept.
                epoch = (await sender_epoch(s0, "fb"))["epoch"]
                await late.send(
                    "chat-room",
                    "JoinRoom",
                    {"room": "fb", "since": {"offset": 1, "epoch": epoch}, "history": 50},
                )
                listed = await late.expect("MemberList")
                assert listed["recovered"] is False and listed["offset"] == 6
                assert [m["message"] for m in await room_messages(late, 3)] == ["m4", "m5", "m6"]
                await late.expect("JoinedRoom")
            async with open_client(s0.ws) as stranger:
                await stranger.send(
                    "chat-room", "JoinRoom", {"room": "fb", "since": {"offset": 6, "epoch": "x"}}
                )
                listed = await stranger.expect("MemberList")
                assert listed["recovered"] is False
                await stranger.expect("JoinedRoom")  # no replay without history


async def sender_epoch(server: RunningServer, room: str) -> dict[str, Any]:
    status, body = await server.get(f"/api/rooms/{quote(room, safe='')}/history", token=TOKEN)
    assert status == 200, body
    assert isinstance(body, dict)
    return body


async def test_history_on_join_without_since(redis_server: RedisProcess) -> None:
    async with open_cluster(redis_server.url, 2) as (s0, s1):
        async with open_client(s0.ws) as sender:
            await sender.join("h")
            await sender.expect("JoinedRoom")
            await send_room(sender, "h", "a", "b", "c")
            await room_messages(sender, 3)
            async with open_client(s1.ws) as newcomer:
                await newcomer.send("chat-room", "JoinRoom", {"room": "h", "history": 2})
                listed = await newcomer.expect("MemberList")
                assert "recovered" not in listed and listed["offset"] == 3
                got = await room_messages(newcomer, 2)
                assert [(m["offset"], m["message"]) for m in got] == [(2, "b"), (3, "c")]


async def test_messages_published_during_a_join_arrive_once_in_order(
    redis_server: RedisProcess,
) -> None:
    async with open_cluster(redis_server.url, 2) as (s0, s1):
        async with open_client(s0.ws, batched=True) as sender:
            await sender.join("busy")
            await sender.expect("JoinedRoom")
            async with AsyncExitStack() as stack:
                joiners = [
                    await stack.enter_async_context(open_client((s0, s1)[i % 2].ws))
                    for i in range(4)
                ]

                async def flood() -> None:
                    await send_room(sender, "busy", *[f"f{i}" for i in range(200)])

                async def join_during_the_flood() -> None:
                    for joiner in joiners:  # joins land at different points of the flood
                        await joiner.send("chat-room", "JoinRoom", {"room": "busy", "history": 5})
                        await trio.lowlevel.checkpoint()  # let the flood go on between joins

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(flood)
                    nursery.start_soon(join_during_the_flood)
                for joiner in joiners:
                    listed = await joiner.expect("MemberList")
                    top = listed["offset"]
                    offsets: list[int] = []
                    while not offsets or offsets[-1] < 200:
                        envelope = await joiner.receive()
                        if envelope["message"]["type"] == "NewMessage":
                            offsets.append(envelope["message"]["contents"]["offset"])
                    replayed = min(5, top)
                    assert offsets == list(range(top - replayed + 1, 201)), (top, offsets)


async def test_chat_recovery_through_the_url(redis_server: RedisProcess) -> None:
    async with open_cluster(redis_server.url, 2) as (s0, s1):
        async with open_client(s0.ws) as sender:
            await sender.send("chat", "SubmitMessage", "c1")
            first = await sender.expect("NewMessageReceived")
            for text in ("c2", "c3"):
                await sender.send("chat", "SubmitMessage", text)
                await sender.expect("NewMessageReceived")
            query = f"?chat_epoch={first['epoch']}&chat_offset={first['offset']}"
            async with open_client(s1.ws + query) as back:
                position = await back.expect("Position")
                assert position == {
                    "offset": first["offset"] + 2,
                    "epoch": first["epoch"],
                    "recovered": True,
                }
                got = [await back.expect("NewMessageReceived") for _ in range(2)]
                assert [m["content"] for m in got] == ["c2", "c3"]
                await sender.send("chat", "SubmitMessage", "c4")
                assert (await back.expect("NewMessageReceived"))["content"] == "c4"
            async with open_client(s1.ws + "?chat_history=1") as peek:
                position = await peek.expect("Position")
                assert "recovered" not in position
                assert (await peek.expect("NewMessageReceived"))["content"] == "c4"


@pytest.mark.parametrize(
    "query",
    [
        "chat_epoch=abc",
        "chat_offset=3",
        "chat_epoch=abc&chat_offset=-1",
        "chat_epoch=abc&chat_offset=x",
        "chat_epoch=" + "e" * 33 + "&chat_offset=1",
        "chat_epoch=a%20b&chat_offset=1",
        "chat_history=0",
        "chat_history=lots",
    ],
)
async def test_malformed_chat_recovery_refuses_the_handshake(query: str) -> None:
    async with open_server(settings_for("bad-url")) as server:
        status, body = await http_request(
            "GET",
            server.http + "/websockets?" + query,
            headers={
                "Upgrade": "websocket",
                "Connection": "Upgrade",
                "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                "Sec-WebSocket-Version": "13",
            },
        )
        assert status == 400
        assert isinstance(body, dict) and isinstance(body["error"], str), body


@pytest.mark.parametrize(
    "extra",
    [
        {"since": 5},
        {"since": {"offset": -1, "epoch": "e"}},
        {"since": {"offset": True, "epoch": "e"}},
        {"since": {"offset": 1}},
        {"since": {"offset": 1, "epoch": "bad epoch"}},
        {"history": 0},
        {"history": "5"},
        {"history": 1.5},
    ],
)
async def test_malformed_since_or_history_is_invalid_message(extra: dict[str, Any]) -> None:
    async with open_server(settings_for("bad-join")) as server:
        async with open_client(server.ws) as client:
            await client.send("chat-room", "JoinRoom", {"room": "r", **extra})
            assert (await client.expect("Error"))["code"] == "invalid_message"
            await client.join("r")  # the connection is fine and the room still joinable


async def test_gap_from_a_cut_redis_link_is_filled_in_order(redis_server: RedisProcess) -> None:
    proxy = CutProxy(redis_server.port)
    async with proxy.running(), two_servers(redis_server.url, proxy.url) as (s0, s1):
        async with open_client(s0.ws) as sender, open_client(s1.ws) as reader:
            await reader.join("cut")
            await reader.expect("JoinedRoom")
            await sender.join("cut")
            await sender.expect("JoinedRoom")
            await reader.expect("JoinedRoom")
            await send_room(sender, "cut", "before")
            assert (await reader.expect("NewMessage"))["offset"] == 1
            proxy.cut()
            await wait_until(lambda: not s1.app.hub.status().connected)
            await send_room(sender, "cut", *[f"during{i}" for i in range(10)])
            await sender.send("chat", "SubmitMessage", "chat during")
            with trio.move_on_after(2.0):
                while True:  # sender gets its own messages meanwhile; the reader none
                    await sender.receive()
            proxy.restore()
            # Each stream is filled in order; the two streams may interleave.
            got: dict[str, list[dict[str, Any]]] = {"chat": [], "chat-room": []}
            while len(got["chat-room"]) < 10 or not got["chat"]:
                envelope = await reader.receive()
                got[envelope["channel"]].append(envelope["message"]["contents"])
            assert [m["offset"] for m in got["chat-room"]] == list(range(2, 12))
            assert [m["message"] for m in got["chat-room"]] == [f"during{i}" for i in range(10)]
            assert [m["content"] for m in got["chat"]] == ["chat during"]
            await send_room(sender, "cut", "after")
            assert (await reader.expect("NewMessage"))["offset"] == 12
            assert s1.app.hub.status().reconnects >= 1


async def test_gap_longer_than_history_is_lost_then_continues(
    redis_server: RedisProcess,
) -> None:
    proxy = CutProxy(redis_server.port)
    async with (
        proxy.running(),
        two_servers(redis_server.url, proxy.url, history_size=5) as (
            s0,
            s1,
        ),
    ):
        async with open_client(s0.ws) as sender, open_client(s1.ws) as reader:
            await reader.join("small")
            await reader.expect("JoinedRoom")
            await sender.join("small")
            await sender.expect("JoinedRoom")
            await reader.expect("JoinedRoom")
            proxy.cut()
            await wait_until(lambda: not s1.app.hub.status().connected)
            await send_room(sender, "small", *[f"m{i}" for i in range(1, 21)])
            await room_messages(sender, 20)
            proxy.restore()
            lost = await reader.expect("Lost")
            assert lost["room"] == "small" and lost["offset"] == 15
            got = await room_messages(reader, 5)
            assert [m["offset"] for m in got] == [16, 17, 18, 19, 20]
            assert lost["epoch"] == got[0]["epoch"]


async def test_redis_dropping_a_stalled_pubsub_client_loses_nothing(
    redis_server: RedisProcess,
) -> None:
    """Redis closes a pub/sub client over ``client-output-buffer-limit pubsub``;
    the server reconnects and fills the gap from history."""
    with redis_server.client() as client:
        client.config_set("client-output-buffer-limit", "pubsub 262144 0 0")
    proxy = CutProxy(redis_server.port)
    async with (
        proxy.running(),
        two_servers(
            redis_server.url, proxy.url, history_size=200, send_queue_bytes=32 * 1024 * 1024
        ) as (
            s0,
            s1,
        ),
    ):
        async with open_client(s0.ws) as sender, open_client(s1.ws) as reader:
            await reader.join("flood")
            await reader.expect("JoinedRoom")
            await sender.join("flood")
            await sender.expect("JoinedRoom")
            await reader.expect("JoinedRoom")
            reconnects = s1.app.hub.status().reconnects
            proxy.pause()  # s1 stops reading: Redis buffers for it, then drops it
            # Far more than the kernel's socket buffers hold, so Redis's own
            # output buffer for s1 passes the limit.
            texts = [f"{i} " + "x" * 50_000 for i in range(150)]
            async with trio.open_nursery() as nursery:
                nursery.start_soon(send_room, sender, "flood", *texts)
                await room_messages(sender, 150)
            await wait_until(lambda: redis_server.numsub("room:flood")["room:flood"] == 1)
            proxy.resume()
            got = await room_messages(reader, 150)
            assert [m["offset"] for m in got] == list(range(1, 151))
            assert [m["message"] for m in got] == texts
            await wait_until(lambda: s1.app.hub.status().reconnects > reconnects)


async def test_history_ttl_drops_every_key_and_gives_a_new_epoch(
    redis_server: RedisProcess,
) -> None:
    async with open_cluster(redis_server.url, 1, history_ttl=0.5, admin_token=TOKEN) as (s0,):
        async with open_client(s0.ws) as client:
            await client.join("ttl")
            await client.expect("JoinedRoom")
            await send_room(client, "ttl", "old")
            old = await client.expect("NewMessage")
            await client.send("chat-room", "LeaveRoom", {"room": "ttl"})
            await client.expect("LeftRoom")

            def history_keys() -> list[str]:
                return [
                    k
                    for k in redis_server.key_list("wsproto:*")
                    if k.endswith(":meta") or k.endswith(":log")
                ]

            assert history_keys() != []
            await wait_until(lambda: history_keys() == [], timeout=DEADLINE)
            listed_users = await client.join("ttl")
            assert listed_users == [client.user]
            body = await sender_epoch(s0, "ttl")
            assert body["offset"] == 0 and body["epoch"] != old["epoch"]


async def test_redis_restart_gives_new_epochs_and_tells_connected_clients(
    redis_server: RedisProcess,
) -> None:
    async with open_cluster(redis_server.url, 2) as (s0, s1):
        async with open_client(s0.ws) as a, open_client(s1.ws) as b:
            await a.send("chat", "SubmitMessage", "before")
            before = [await c.expect("NewMessageReceived") for c in (a, b)]
            redis_server.stop()
            await wait_until(lambda: not s0.app.hub.status().connected)
            redis_server.start()
            await wait_until(lambda: s0.app.hub.status().ready and s1.app.hub.status().ready)
            await a.send("chat", "SubmitMessage", "after")
            for client, old in zip((a, b), before, strict=True):
                envelope = await next_chat(client)
                assert envelope["message"]["type"] == "Lost"
                lost = envelope["message"]["contents"]
                assert lost["epoch"] != old["epoch"] and lost["offset"] == 0
                got = (await next_chat(client))["message"]["contents"]
                assert unpositioned(got)["content"] == "after"
                assert (got["offset"], got["epoch"]) == (1, lost["epoch"])


async def next_chat(client: Client) -> dict[str, Any]:
    while (envelope := await client.receive())["channel"] != "chat":
        pass
    return envelope


async def test_admin_history_routes(redis_server: RedisProcess) -> None:
    async with open_cluster(redis_server.url, 1, admin_token=TOKEN, history_size=4) as (s0,):
        async with open_client(s0.ws) as client:
            await client.join("a/b")
            await client.expect("JoinedRoom")
            await send_room(client, "a/b", "1", "2", "3", "4", "5")
            sent = await room_messages(client, 5)
            body = await sender_epoch(s0, "a/b")
            assert body["room"] == "a/b" and body["offset"] == 5
            assert body["epoch"] == sent[0]["epoch"]
            assert body["messages"] == sent[1:]
            status, limited = await s0.get("/api/rooms/a%2Fb/history?limit=2", token=TOKEN)
            assert status == 200 and limited["messages"] == sent[3:]
            status, empty = await s0.get("/api/rooms/none/history", token=TOKEN)
            assert status == 200 and empty["offset"] == 0 and empty["messages"] == []
            assert (await s0.get("/api/rooms/a/history?limit=0", token=TOKEN))[0] == 400
            assert (await s0.get("/api/rooms/a/history"))[0] == 401
            await client.send("chat", "SubmitMessage", "hello")
            chat = await client.expect("NewMessageReceived")
            status, body = await s0.get("/api/chat/history?limit=1", token=TOKEN)
            assert status == 200
            assert body == {"epoch": chat["epoch"], "offset": chat["offset"], "messages": [chat]}
            publish = json.dumps({"channel": "chat-room", "room": "a/b", "message": "api"})
            assert (await s0.post("/api/publish", publish, token=TOKEN))[0] == 200
            got = await client.expect("NewMessage")
            assert got["user"] == "api" and got["offset"] == 6


async def test_memory_broker_keeps_history_and_recovers() -> None:
    network = MemoryNetwork(history_size=10, history_ttl=60.0)
    async with (
        open_server(settings_for("m0"), MemoryBroker("m0", network)) as s0,
        open_server(settings_for("m1"), MemoryBroker("m1", network)) as s1,
    ):
        async with open_client(s0.ws) as sender:
            await sender.join("mem")
            await sender.expect("JoinedRoom")
            await send_room(sender, "mem", "x", "y")
            first, _ = await room_messages(sender, 2)
            since = {"offset": first["offset"], "epoch": first["epoch"]}
            async with open_client(s1.ws) as other:
                await other.send("chat-room", "JoinRoom", {"room": "mem", "since": since})
                listed = await other.expect("MemberList")
                assert listed["recovered"] is True and listed["offset"] == 2
                assert (await other.expect("NewMessage"))["message"] == "y"
