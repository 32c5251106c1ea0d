"""Two and three servers on one real Redis, driven by real websocket clients."""

from __future__ import annotations

import random
import re

import trio

from ..support import RedisProcess, is_presence_key, open_client, open_cluster, wait_until

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z$")


async def test_chat_reaches_every_client_on_every_server(redis_server: RedisProcess) -> None:
    async with open_cluster(redis_server.url, 2) as (s0, s1):
        async with open_client(s0.ws) as a, open_client(s1.ws) as b:
            await b.send("chat", "SubmitMessage", "hello from b")
            for client in (a, b):
                envelope = await client.receive()
                assert envelope["channel"] == "chat"
                assert envelope["message"]["type"] == "NewMessageReceived"
                contents = envelope["message"]["contents"]
                assert set(contents) == {"content", "postedAt", "offset", "epoch"}
                assert isinstance(contents["offset"], int) and contents["offset"] >= 1
                assert contents["content"] == "hello from b"
                assert RFC3339.match(contents["postedAt"]), contents


async def test_http_pings_reach_every_client(redis_server: RedisProcess) -> None:
    async with open_cluster(redis_server.url, 2) as (s0, s1):
        async with open_client(s0.ws) as a, open_client(s1.ws) as b:
            status, body = await s0.get("/ping1")
            assert (status, body) == (200, {"published": True})
            assert (await s1.get("/ping2"))[0] == 200
            for client in (a, b):
                for number in (1, 2):
                    assert await client.receive() == {
                        "channel": "ping",
                        "message": {"type": "Ping", "contents": number},
                    }


async def test_room_flow_across_servers_exact_json(redis_server: RedisProcess) -> None:
    async with open_cluster(redis_server.url, 2) as (s0, s1):
        async with open_client(s0.ws) as a, open_client(s1.ws) as b, open_client(s1.ws) as c:
            room = "lobby: ünïcode & spaces"
            await a.send("chat-room", "JoinRoom", {"room": room})
            listed = await a.receive()
            epoch = listed["message"]["contents"]["epoch"]
            assert listed == {
                "channel": "chat-room",
                "message": {
                    "type": "MemberList",
                    "contents": {"room": room, "users": [a.user], "offset": 0, "epoch": epoch},
                },
            }
            assert await a.receive() == {
                "channel": "chat-room",
                "message": {"type": "JoinedRoom", "contents": {"room": room, "user": a.user}},
            }
            await b.send("chat-room", "JoinRoom", {"room": room})
            members = await b.expect("MemberList")
            assert members["room"] == room and sorted(members["users"]) == sorted([a.user, b.user])
            for client in (a, b):
                assert await client.expect("JoinedRoom") == {"room": room, "user": b.user}

            await a.send("chat-room", "SendMessage", {"room": room, "message": "hi room"})
            for client in (a, b):
                assert await client.receive() == {
                    "channel": "chat-room",
                    "message": {
                        "type": "NewMessage",
                        "contents": {
                            "room": room,
                            "user": a.user,
                            "message": "hi room",
                            "offset": 1,
                            "epoch": epoch,
                        },
                    },
                }
            # c is on b's server but not a member: its next envelope is the chat
            # marker published after the room message, not the room message.
            await a.send("chat", "SubmitMessage", "marker")
            for client in (a, b, c):
                assert (await client.expect("NewMessageReceived"))["content"] == "marker"

            await a.send("chat-room", "LeaveRoom", {"room": room})
            assert await a.expect("LeftRoom") == {"room": room, "user": a.user}
            assert await b.expect("LeftRoom") == {"room": room, "user": a.user}
            await b.send("chat-room", "SendMessage", {"room": room, "message": "after"})
            assert (await b.expect("NewMessage"))["message"] == "after"
            await b.send("chat", "SubmitMessage", "marker2")
            for client in (a, b, c):
                assert (await client.expect("NewMessageReceived"))["content"] == "marker2"


async def test_disconnect_leaves_rooms_and_tells_members(redis_server: RedisProcess) -> None:
    async with open_cluster(redis_server.url, 2) as (s0, s1):
        async with open_client(s0.ws) as a:
            await a.join("r")
            await a.expect("JoinedRoom")
            async with open_client(s1.ws) as b:
                await b.join("r")
                await b.expect("JoinedRoom")
                await a.expect("JoinedRoom")
                b_user = b.user
            assert await a.expect("LeftRoom") == {"room": "r", "user": b_user}
            await a.send("chat-room", "JoinRoom", {"room": "other"})
            assert (await a.expect("MemberList"))["users"] == [a.user]
        # a is gone too: nothing of the rooms is left in Redis.
        await wait_until(lambda: redis_server.numsub("room:r", "room:other") ==
                         {"room:r": 0, "room:other": 0})  # fmt: skip
        # (history keys stay until HISTORY_TTL; presence keys go at once)
        assert [k for k in redis_server.key_list() if is_presence_key(k)] == []


async def test_numsub_follows_local_membership(redis_server: RedisProcess) -> None:
    def numsub() -> dict[str, int]:
        return redis_server.numsub("ping1", "ping2", "chat", "room:x")

    async with open_cluster(redis_server.url, 2) as (s0, s1):
        assert numsub() == {"ping1": 2, "ping2": 2, "chat": 2, "room:x": 0}
        async with open_client(s0.ws) as a1, open_client(s0.ws) as a2, open_client(s1.ws) as b:
            await a1.join("x")
            assert numsub()["room:x"] == 1
            await a2.join("x")
            assert numsub()["room:x"] == 1  # still one subscription per server
            await b.join("x")
            assert numsub()["room:x"] == 2
            await a1.send("chat-room", "LeaveRoom", {"room": "x"})
            for user in (a1.user, a2.user, b.user):
                assert (await a1.expect("JoinedRoom"))["user"] == user
            assert await a1.expect("LeftRoom") == {"room": "x", "user": a1.user}
            assert numsub()["room:x"] == 2
            await a2.send("chat-room", "LeaveRoom", {"room": "x"})
            await wait_until(lambda: numsub()["room:x"] == 1)
            await b.send("chat-room", "LeaveRoom", {"room": "x"})
            await wait_until(lambda: numsub()["room:x"] == 0)
        assert numsub() == {"ping1": 2, "ping2": 2, "chat": 2, "room:x": 0}


async def test_many_clients_many_rooms_concurrently(redis_server: RedisProcess) -> None:
    """50 clients on 3 servers join and leave 20 rooms at once; presence ends exact."""
    rooms = [f"room-{i}" for i in range(20)]
    rng = random.Random(7)
    async with open_cluster(redis_server.url, 3) as servers:
        final: dict[str, set[str]] = {room: set() for room in rooms}
        clients_done = trio.Event()
        finished = 0

        async def client_task(index: int) -> None:
            nonlocal finished
            server = servers[index % 3]
            picks = rng.sample(rooms, 6)
            keep = picks[:3]
            async with open_client(server.ws, batched=index % 2 == 0) as client:
                for room in picks:
                    await client.send("chat-room", "JoinRoom", {"room": room})
                for room in picks[3:]:
                    await client.send("chat-room", "LeaveRoom", {"room": room})
                # Our own LeftRoom acks for the three rooms left, in order.
                left: list[str] = []
                while len(left) < 3:
                    envelope = await client.receive()
                    kind = envelope["message"]["type"]
                    assert kind != "Error", envelope
                    contents = envelope["message"]["contents"]
                    if kind == "LeftRoom" and contents["user"] == client.user:
                        left.append(contents["room"])
                assert left == picks[3:]
                for room in keep:
                    final[room].add(client.user)
                finished += 1
                if finished == 50:
                    clients_done.set()
                await all_checked.wait()

        all_checked = trio.Event()
        async with trio.open_nursery() as nursery:
            for index in range(50):
                nursery.start_soon(client_task, index)
            with trio.fail_after(30):
                await clients_done.wait()
            for room in rooms:
                for server in servers:
                    users = await server.app.hub.broker.members(room)
                    assert sorted(users) == sorted(final[room]), room
            all_checked.set()
        # Everyone disconnected: no room subscription and no presence key is left.
        channels = [f"room:{room}" for room in rooms]
        await wait_until(lambda: sum(redis_server.numsub(*channels).values()) == 0)
        leftovers = [k for k in redis_server.key_list() if is_presence_key(k)]
        assert leftovers == []
        for server in servers:
            assert server.app.hub.rooms.rooms() == {}
