"""Servers on a real local Redis Cluster, driven by real websocket clients:
chat, pings and rooms across servers; a master killed and a rebalance while
traffic flows; a server killed and reaped."""

from __future__ import annotations

import json
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import trio
from trio_websocket import ConnectionClosed

from wsproto_trio.broker.cluster.bridge import wire_name
from wsproto_trio.config import AuthSettings

from ..cluster_support import LocalCluster
from ..jwt_support import SECRET, claims, hs_token, open_auth_client
from ..procs import figure, next_of, spawn_server
from ..support import (
    Client,
    RunningServer,
    free_port,
    open_client,
    open_cluster,
    open_server,
    settings_for,
    wait_until,
)

TOKEN = "cluster-admin"
ROOMS = [f"room-{i}" for i in range(9)]


def wire(room: str) -> str:
    return wire_name(f"room:{room}")[0]


def servers(cluster: LocalCluster, count: int = 2, **changes: Any) -> Any:
    return open_cluster(
        None, count, redis_cluster_nodes=cluster.seeds, admin_token=TOKEN, **changes
    )


async def shardnumsub(cluster: LocalCluster, room: str) -> int:
    return await trio.to_thread.run_sync(cluster.shardnumsub, wire(room))


async def wait_shardnumsub(cluster: LocalCluster, rooms: list[str], count: int) -> None:
    with trio.fail_after(10):
        for room in rooms:
            while await shardnumsub(cluster, room) != count:
                await trio.sleep(0.05)


async def test_chat_pings_and_rooms_across_two_servers(redis_cluster: LocalCluster) -> None:
    owners = {room: redis_cluster.owner(wire(room)) for room in ROOMS}
    assert set(owners.values()) == set(redis_cluster.master_ports())  # rooms on every master
    async with servers(redis_cluster) as (s0, s1):
        status, health = await s0.get("/healthz")
        assert status == 200, health
        status, text = await s0.get("/metrics")
        up = [line for line in text.splitlines() if line.startswith("wsproto_broker_shard_up{")]
        assert status == 200 and len(up) == 4, text  # a link per master, and the classic one
        assert all(line.endswith(" 1.0") for line in up), up
        async with open_client(s0.ws) as a, open_client(s1.ws) as b:
            await b.send("chat", "SubmitMessage", "hello")
            for client in (a, b):
                contents = await next_of(client, "NewMessageReceived", 10)
                assert contents["content"] == "hello" and contents["offset"] == 1
            assert (await s1.get("/ping1"))[0] == 200
            for client in (a, b):
                assert await next_of(client, "Ping", 10) == 1

            for room in ROOMS:
                await a.join(room)
                await next_of(a, "JoinedRoom", 10)
            await wait_shardnumsub(redis_cluster, ROOMS, 1)
            for room in ROOMS:
                users = await b.join(room)
                assert sorted(users) == sorted([a.user, b.user])
                await next_of(b, "JoinedRoom", 10)
            await wait_shardnumsub(redis_cluster, ROOMS, 2)  # one per server with a member
            for room in ROOMS:
                await a.send("chat-room", "SendMessage", {"room": room, "message": f"to {room}"})
                for client in (a, b):
                    while (got := await next_of(client, "NewMessage", 10))["room"] != room:
                        pass
                    assert got["message"] == f"to {room}" and got["offset"] == 1
            assert await s1.get("/api/rooms", TOKEN) == (
                200, {"rooms": [{"room": r, "members": 2} for r in sorted(ROOMS)]},
            )  # fmt: skip
            status, listed = await s0.get("/api/servers", TOKEN)
            assert sorted(s["id"] for s in listed["servers"]) == ["s0", "s1"]
            for room in ROOMS:
                await b.send("chat-room", "LeaveRoom", {"room": room})
            await wait_shardnumsub(redis_cluster, ROOMS, 1)
        # a disconnected: its rooms are left, and nobody anywhere holds them.
        await wait_shardnumsub(redis_cluster, ROOMS, 0)
        assert await s0.get("/api/rooms", TOKEN) == (200, {"rooms": []})
        numsub = await trio.to_thread.run_sync(redis_cluster.numsub, "chat", "ping1", "ping2")
        assert numsub == {"chat": 2, "ping1": 2, "ping2": 2}


@dataclass
class Member:
    """A client whose every envelope is recorded by a reader task."""

    client: Client
    got: list[dict[str, Any]] = field(default_factory=list)
    closed: bool = False

    def messages(self, room: str) -> dict[tuple[int, str], str]:
        return {
            (c["offset"], c["epoch"]): c["message"]
            for c in self.contents("NewMessage")
            if c["room"] == room
        }

    def contents(self, kind: str) -> list[Any]:
        return [e["message"]["contents"] for e in self.got if e["message"]["type"] == kind]

    def heard(self, room: str, text: str) -> bool:
        return text in self.messages(room).values()

    async def read(self) -> None:
        try:
            while True:
                self.got.append(await self.client.receive(timeout=3600))
        except ConnectionClosed:
            self.closed = True


@dataclass
class Traffic:
    """Room messages from every member, round robin, until stopped."""

    members: list[Member]
    rooms: list[str]
    sent: int = 0

    async def run(self) -> None:
        while True:
            for room in self.rooms:
                for member in self.members:
                    self.sent += 1
                    text = f"t{self.sent}"
                    await member.client.send(
                        "chat-room", "SendMessage", {"room": room, "message": text}
                    )
                await trio.sleep(0.05)


async def members_in_rooms(
    stack: AsyncExitStack, urls: list[str], rooms: list[str]
) -> list[Member]:
    members: list[Member] = []
    for url in urls:
        client = await stack.enter_async_context(open_client(url))
        for room in rooms:
            await client.send("chat-room", "JoinRoom", {"room": room})
            await next_of(client, "MemberList", 10)
            while (await next_of(client, "JoinedRoom", 10))["user"] != client.user:
                pass
        members.append(Member(client))
    return members


async def probe(members: list[Member], room: str, deadline: float) -> None:
    """Send from the first member until every member hears it (a room may be
    failing over; what is refused with ``unavailable`` is sent again)."""
    try:
        await _probe(members, room, deadline)
    except trio.TooSlowError:
        for m in members:
            print("MEMBER", m.client.user, [e for e in m.got[-30:]])
        raise


async def _probe(members: list[Member], room: str, deadline: float) -> None:
    with trio.fail_after(deadline):
        for n in range(1_000_000):
            text = f"probe-{room}-{n}-{time.monotonic()}"
            await members[0].client.send(
                "chat-room", "SendMessage", {"room": room, "message": text}
            )

            def heard(text: str = text) -> bool:
                return all(m.heard(room, text) for m in members)

            with trio.move_on_after(0.5):
                await wait_until(heard)
                return


async def probe_chat(members: list[Member], deadline: float) -> None:
    with trio.fail_after(deadline):
        for n in range(1_000_000):
            text = f"chat-probe-{n}-{time.monotonic()}"
            await members[-1].client.send("chat", "SubmitMessage", text)

            def heard(text: str = text) -> bool:
                return all(
                    any(c["content"] == text for c in m.contents("NewMessageReceived"))
                    for m in members
                )

            with trio.move_on_after(0.5):
                await wait_until(heard)
                return


async def history_is_delivered(server: RunningServer, members: list[Member], room: str) -> None:
    """Every message the room's history holds reached every member, with the
    same position and text (no accepted publish lost, none renumbered)."""
    status, history = await server.get(f"/api/rooms/{quote(room, safe='')}/history", TOKEN)
    assert status == 200, history
    kept = {(m["offset"], m["epoch"]): m["message"] for m in history["messages"]}

    def delivered() -> bool:
        return all(
            all(member.messages(room).get(position) == text for position, text in kept.items())
            for member in members
        )

    await wait_until(delivered, timeout=10)


async def test_master_killed_during_traffic(redis_cluster: LocalCluster) -> None:
    victim = redis_cluster.owner(wire(ROOMS[0]))
    async with servers(redis_cluster) as (s0, s1), AsyncExitStack() as stack:
        members = await members_in_rooms(stack, [s0.ws, s1.ws], ROOMS)
        async with trio.open_nursery() as nursery:
            for member in members:
                nursery.start_soon(member.read)
            traffic = Traffic(members, ROOMS)
            async with trio.open_nursery() as load:
                load.start_soon(traffic.run)
                await wait_until(lambda: traffic.sent > 100)
                began = trio.current_time()
                await trio.to_thread.run_sync(redis_cluster.kill_master, victim)
                promotion = await trio.to_thread.run_sync(redis_cluster.wait_promoted, victim)
                promoted = trio.current_time()
                for room in ROOMS:
                    await probe(members, room, deadline=10)
                await probe_chat(members, deadline=10)
                recovered = trio.current_time() - promoted
                load.cancel_scope.cancel()
            figure("cluster_failover_promotion_s", promotion)
            figure("cluster_failover_all_rooms_and_chat_after_promotion_s", recovered)
            figure("cluster_failover_kill_to_recovered_s", trio.current_time() - began)
            assert recovered < 10
            assert not any(m.closed for m in members)  # clients stayed connected
            for room in ROOMS:
                await history_is_delivered(s0, members, room)
            for server in (s0, s1):
                assert (await server.get("/healthz"))[0] == 200
            nursery.cancel_scope.cancel()


async def test_rebalance_onto_a_new_master_during_traffic(redis_cluster: LocalCluster) -> None:
    async with servers(redis_cluster) as (s0, s1), AsyncExitStack() as stack:
        members = await members_in_rooms(stack, [s0.ws, s1.ws], ROOMS)
        async with trio.open_nursery() as nursery:
            for member in members:
                nursery.start_soon(member.read)
            traffic = Traffic(members, ROOMS)
            async with trio.open_nursery() as load:
                load.start_soon(traffic.run)
                await wait_until(lambda: traffic.sent > 50)
                new = await trio.to_thread.run_sync(redis_cluster.add_master)
                began = trio.current_time()
                await trio.to_thread.run_sync(redis_cluster.rebalance)
                figure("cluster_rebalance_s", trio.current_time() - began)
                for room in ROOMS:
                    await probe(members, room, deadline=10)
                load.cancel_scope.cancel()
            assert new.port in redis_cluster.master_ports()
            moved = [r for r in ROOMS if redis_cluster.owner(wire(r)) == new.port]
            assert moved, "the rebalance moved none of the rooms"
            # Subscriptions followed the slots: one per server on the new owner.
            await wait_shardnumsub(redis_cluster, ROOMS, 2)
            assert not any(m.closed for m in members)
            for room in ROOMS:
                await history_is_delivered(s0, members, room)
            nursery.cancel_scope.cancel()


async def test_killed_server_is_reaped_within_presence_ttl(
    redis_cluster: LocalCluster, tmp_path: Path
) -> None:
    """A ``wsproto-trio serve`` process on the cluster, killed with -9: each of
    its members leaves every room once, within PRESENCE_TTL, on every shard."""
    ttl = 2.0
    env = {"REDIS_CLUSTER_NODES": redis_cluster.seeds_text, "PRESENCE_TTL": f"{ttl}s"}
    async with servers(redis_cluster, 1, presence_ttl=ttl) as (s0,):
        async with spawn_server(tmp_path, "doomed", **env) as doomed:
            await doomed.wait_ready()
            async with open_client(s0.ws) as a:
                for room in ROOMS:
                    await a.join(room)
                    await next_of(a, "JoinedRoom", 10)
                async with open_client(doomed.ws) as b:
                    for room in ROOMS:
                        await b.join(room)
                        await next_of(b, "JoinedRoom", 10)
                        assert (await next_of(a, "JoinedRoom", 10))["user"] == b.user
                    await wait_shardnumsub(redis_cluster, ROOMS, 2)
                    doomed.signal(9)
                    began = trio.current_time()
                    left: list[dict[str, Any]] = []
                    with trio.fail_after(ttl * 3 + 5):
                        while len(left) < len(ROOMS):
                            left.append(await next_of(a, "LeftRoom", ttl * 3 + 5))
                    figure("cluster_crash_to_all_leftroom_s", trio.current_time() - began)
                    assert sorted(c["room"] for c in left) == sorted(ROOMS)
                    assert {c["user"] for c in left} == {b.user}
                    with trio.move_on_after(ttl):  # and no second LeftRoom for anyone
                        envelope = await a.receive(ttl + 1)
                        raise AssertionError(f"unexpected {json.dumps(envelope)}")
                    expected = {"rooms": [{"room": r, "members": 1} for r in sorted(ROOMS)]}
                    assert (await s0.get("/api/rooms", TOKEN))[1] == expected
                    await wait_shardnumsub(redis_cluster, ROOMS, 1)


async def test_a_server_starts_without_its_cluster_and_says_so() -> None:
    """No node answers: the server starts, /healthz is 503 with a reason, and a
    client's JoinRoom gets ``unavailable`` rather than a hung or closed socket."""
    nowhere = (("127.0.0.1", free_port()),)
    async with open_server(settings_for("lonely", redis_cluster_nodes=nowhere)) as server:
        status, body = await server.get("/healthz")
        assert status == 503, body
        assert (await server.get("/readyz"))[0] == 503
        async with open_client(server.ws) as client:
            await client.send("chat-room", "JoinRoom", {"room": "r"})
            error = await next_of(client, "Error", 20)
            assert error["code"] == "unavailable"


async def test_identity_fields_cross_shards_with_authentication(
    redis_cluster: LocalCluster,
) -> None:
    """Section 8 on a cluster: member records stored with presence on each
    room's shard come back in MemberList, and sub rides on every envelope."""
    auth = AuthSettings(secret=SECRET)
    rooms = ROOMS[:3]  # on three different masters
    assert len({redis_cluster.owner(wire(r)) for r in rooms}) == 3
    async with (
        servers(redis_cluster, auth=auth) as (s0, s1),
        open_auth_client(s0.ws, hs_token(claims(sub="alice", info={"n": 1}))) as alice_conn,
        open_auth_client(s1.ws, hs_token(claims(sub="bob"))) as bob_conn,
    ):
        alice, bob = alice_conn.client, bob_conn.client
        for room in rooms:
            await bob.send("chat-room", "JoinRoom", {"room": room})
            await bob.expect("MemberList")
            await bob.expect("JoinedRoom")
            await alice.send("chat-room", "JoinRoom", {"room": room})
            listing = await alice.expect("MemberList")
            assert {m["sub"] for m in listing["members"]} == {"alice", "bob"}
            assert (await alice.expect("JoinedRoom"))["info"] == {"n": 1}
            assert (await bob.expect("JoinedRoom"))["sub"] == "alice"
            await bob.send("chat-room", "SendMessage", {"room": room, "message": "hi"})
            for client in (alice, bob):
                message = await client.expect("NewMessage")
                assert (message["sub"], message["room"]) == ("bob", room)
