"""One contract suite for every broker (``wsproto_trio.broker.Broker``).

Each test gets two "servers", ``a`` and ``b``, on one broker network: two
``MemoryBroker`` on one ``MemoryNetwork``, or two ``RedisBroker`` on one real
redis-server. Each broker serves a ``Sink``: a small real implementation of the
``Server`` protocol that records what it is handed.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pytest
import trio

from wsproto_trio.broker import Broker, Member
from wsproto_trio.broker.memory import MemoryBroker, MemoryNetwork
from wsproto_trio.broker.redis import RedisBroker
from wsproto_trio.core import messages

from ..support import RedisProcess, wait_until, wait_until_async

PRESENCE_TTL = 1.5
MARK = "mark"


def member(room: str, user: str) -> Member:
    return Member(room, user, messages.joined_room(room, user), messages.left_room(room, user))


class Sink:
    """The ``Listener`` side of a broker: records deliveries; members are ours to set."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[str, str]]] = []
        self.resubscriptions: list[str] = []
        self.members: list[tuple[str, str]] = []
        self.connections = 0

    def deliver(self, batch: Sequence[tuple[str, str]]) -> None:
        self.batches.append(list(batch))

    def resubscribed(self, channels: Sequence[str]) -> None:
        self.resubscriptions.extend(channels)

    def local_members(self) -> list[Member]:
        return [member(room, user) for room, user in self.members]

    @property
    def connection_count(self) -> int:
        return self.connections

    def received(self, channel: str | None = None) -> list[tuple[str, str]]:
        return [m for batch in self.batches for m in batch if channel in (None, m[0])]

    def payloads(self, channel: str) -> list[str]:
        return [payload for _, payload in self.received(channel)]


@dataclass
class Side:
    """One server of the pair: its broker and its sink."""

    name: str
    broker: Broker
    sink: Sink = field(default_factory=Sink)

    def has(self, channel: str, payload: str) -> bool:
        return (channel, payload) in self.sink.received(channel)

    async def join(self, room: str, user: str) -> list[str]:
        self.sink.members.append((room, user))
        return (await self.broker.join(member(room, user), with_log=False)).users

    async def leave(self, room: str, user: str) -> bool:
        if (room, user) in self.sink.members:
            self.sink.members.remove((room, user))
        return await self.broker.leave(member(room, user))


@dataclass
class Backend:
    kind: str
    redis: RedisProcess | None


@dataclass
class Pair:
    kind: str
    a: Side
    b: Side
    redis: RedisProcess | None

    async def unsubscribed_everywhere(self, channel: str, subscribers: int) -> None:
        """Wait until Redis has processed an UNSUBSCRIBE (in-process: at once)."""
        redis = self.redis
        if redis is not None:
            await wait_until(lambda: redis.numsub(channel)[channel] == subscribers)

    async def marker(self, receivers: Sequence[Side], text: str = "m") -> None:
        """Publish on ``MARK`` from ``b`` and wait for every receiver to have it:
        anything published before it by ``b`` has been delivered by then."""
        await self.b.broker.publish(MARK, text)
        for side in receivers:
            await wait_until(partial(side.has, MARK, text))


@asynccontextmanager
async def open_pair(backend: Backend, presence_ttl: float) -> AsyncIterator[Pair]:
    """Two brokers on one network, serving, ready and subscribed to ``MARK``."""
    brokers: tuple[Broker, Broker]
    if backend.redis is None:
        net = MemoryNetwork()
        brokers = (MemoryBroker("a", net), MemoryBroker("b", net))
    else:
        url = backend.redis.url
        brokers = (
            RedisBroker(url, "a", presence_ttl=presence_ttl),
            RedisBroker(url, "b", presence_ttl=presence_ttl),
        )
    pair = Pair(backend.kind, Side("a", brokers[0]), Side("b", brokers[1]), backend.redis)
    async with trio.open_nursery() as nursery:
        with trio.fail_after(10):
            for side in (pair.a, pair.b):
                await nursery.start(side.broker.serve, side.sink)
            await wait_until(lambda: all(s.broker.status().ready for s in (pair.a, pair.b)))
            for side in (pair.a, pair.b):
                await side.broker.subscribe(MARK)
        try:
            yield pair
        finally:
            nursery.cancel_scope.cancel()


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "redis":
        redis: RedisProcess = request.getfixturevalue("redis_server")
        return Backend("redis", redis)
    return Backend("memory", None)


@pytest.fixture
def presence_ttl() -> float:
    """Lease length of the Redis brokers; a test may parametrize it."""
    return PRESENCE_TTL


@pytest.fixture
async def pair(backend: Backend, presence_ttl: float) -> AsyncIterator[Pair]:
    async with open_pair(backend, presence_ttl) as pair:
        yield pair


def left_room(room: str, user: str) -> dict[str, Any]:
    return {"channel": "chat-room", "message": {"type": "LeftRoom", "contents": {"room": room,
            "user": user}}}  # fmt: skip


# -- status --------------------------------------------------------------------------


async def test_status_is_connected_and_ready_once_running(pair: Pair) -> None:
    for side in (pair.a, pair.b):
        status = side.broker.status()
        assert status.connected is True
        assert status.ready is True
        assert status.reconnects == 0
        assert side.broker.name == pair.kind


# -- publish and subscribe -----------------------------------------------------------


async def test_publish_reaches_subscribers_only(pair: Pair) -> None:
    await pair.a.broker.subscribe("topic")
    await pair.b.broker.publish("topic", "p1")
    await wait_until(lambda: pair.a.sink.received("topic") == [("topic", "p1")])
    await pair.marker([pair.a, pair.b])
    assert pair.b.sink.received("topic") == []
    # a received them in publication order.
    assert pair.a.sink.received() == [("topic", "p1"), (MARK, "m")]


async def test_publish_delivers_to_the_publisher_too_when_subscribed(pair: Pair) -> None:
    for side in (pair.a, pair.b):
        await side.broker.subscribe("both")
    await pair.a.broker.publish("both", "from a")
    for side in (pair.a, pair.b):
        await wait_until(partial(side.has, "both", "from a"))
        assert side.sink.payloads("both") == ["from a"]


async def test_unsubscribe_stops_delivery(pair: Pair) -> None:
    await pair.a.broker.subscribe("topic")
    await pair.b.broker.publish("topic", "before")
    await wait_until(lambda: pair.a.sink.payloads("topic") == ["before"])
    await pair.a.broker.unsubscribe("topic")
    await pair.unsubscribed_everywhere("topic", 0)
    await pair.b.broker.publish("topic", "after")
    await pair.marker([pair.a])
    assert pair.a.sink.payloads("topic") == ["before"]


async def test_subscribe_is_idempotent(pair: Pair) -> None:
    await pair.a.broker.subscribe("topic")
    await pair.a.broker.subscribe("topic")
    if pair.redis is not None:
        assert pair.redis.numsub("topic") == {"topic": 1}
    await pair.b.broker.publish("topic", "once")
    await pair.marker([pair.a])
    assert pair.a.sink.payloads("topic") == ["once"]
    # One unsubscribe undoes any number of subscribes.
    await pair.a.broker.unsubscribe("topic")
    await pair.unsubscribed_everywhere("topic", 0)
    await pair.b.broker.publish("topic", "gone")
    await pair.marker([pair.a], "m2")
    assert pair.a.sink.payloads("topic") == ["once"]


async def test_resubscribe_after_unsubscribe_delivers_again(pair: Pair) -> None:
    await pair.a.broker.subscribe("topic")
    await pair.a.broker.unsubscribe("topic")
    await pair.unsubscribed_everywhere("topic", 0)
    await pair.a.broker.subscribe("topic")
    await pair.b.broker.publish("topic", "again")
    await wait_until(lambda: pair.a.sink.payloads("topic") == ["again"])


# -- presence ------------------------------------------------------------------------


async def test_join_returns_members_across_servers_and_announces(pair: Pair) -> None:
    await pair.a.broker.subscribe("room:r")
    assert await pair.a.join("r", "u1") == ["u1"]
    assert sorted(await pair.b.join("r", "u2")) == ["u1", "u2"]
    expected = [messages.joined_room("r", "u1"), messages.joined_room("r", "u2")]
    await wait_until(lambda: pair.a.sink.payloads("room:r") == expected)
    await pair.marker([pair.a, pair.b])
    assert pair.b.sink.received("room:r") == []  # b is not subscribed to the room
    assert pair.a.sink.payloads("room:r") == expected


async def test_leave_returns_true_then_false_and_announces_once(pair: Pair) -> None:
    await pair.a.broker.subscribe("room:r")
    await pair.a.join("r", "u1")
    await pair.b.join("r", "u2")
    assert await pair.a.leave("r", "u1") is True
    assert await pair.a.leave("r", "u1") is False
    assert await pair.a.broker.members("r") == ["u2"]
    await pair.marker([pair.a])
    announced = pair.a.sink.payloads("room:r")
    assert announced.count(messages.left_room("r", "u1")) == 1, announced
    assert announced == [
        messages.joined_room("r", "u1"),
        messages.joined_room("r", "u2"),
        messages.left_room("r", "u1"),
    ]
    assert await pair.b.leave("r", "u2") is True
    assert await pair.b.broker.members("r") == []
    assert await pair.b.broker.rooms() == {}


async def test_members_rooms_and_servers_reflect_both_brokers(pair: Pair) -> None:
    pair.a.sink.connections = 3
    pair.b.sink.connections = 5
    await pair.a.join("r", "u1")
    await pair.b.join("r", "u2")
    await pair.b.join("s", "u3")
    for side in (pair.a, pair.b):
        assert sorted(await side.broker.members("r")) == ["u1", "u2"]
        assert await side.broker.members("s") == ["u3"]
        assert await side.broker.members("nowhere") == []
        assert await side.broker.rooms() == {"r": 2, "s": 1}

    async def servers_are(expected: dict[str, int]) -> bool:
        return all([await s.broker.servers() == expected for s in (pair.a, pair.b)])

    await wait_until_async(lambda: servers_are({"a": 3, "b": 5}))
    pair.a.sink.connections = 1
    await wait_until_async(lambda: servers_are({"a": 1, "b": 5}))


# A long lease: a running Redis broker renews (and so re-registers) every ttl / 3.
@pytest.mark.parametrize("presence_ttl", [60.0])
async def test_deregister_removes_members_and_announces_left_room(pair: Pair) -> None:
    for room in ("r", "s"):
        await pair.b.broker.subscribe(f"room:{room}")
    await pair.a.join("r", "u1")
    await pair.a.join("s", "u2")
    await pair.b.join("r", "u3")
    await wait_until(lambda: len(pair.b.sink.received("room:r")) == 2)
    before = {room: len(pair.b.sink.received(f"room:{room}")) for room in ("r", "s")}

    # A cleanly exiting server has no live members left when it deregisters.
    pair.a.sink.members.clear()
    await pair.a.broker.deregister()

    await pair.marker([pair.b])
    after_r = [json.loads(p) for p in pair.b.sink.payloads("room:r")[before["r"] :]]
    after_s = [json.loads(p) for p in pair.b.sink.payloads("room:s")[before["s"] :]]
    assert after_r == [left_room("r", "u1")]
    assert after_s == [left_room("s", "u2")]
    for side in (pair.a, pair.b):
        assert await side.broker.members("r") == ["u3"]
        assert await side.broker.members("s") == []
        assert await side.broker.rooms() == {"r": 1}
    if pair.redis is not None:
        assert pair.redis.key_list("wsproto:server:a*") == []


@pytest.mark.parametrize("presence_ttl", [60.0])
async def test_deregister_removes_the_server_from_servers(pair: Pair) -> None:
    pair.a.sink.connections = 2

    async def both_listed() -> bool:
        return set(await pair.b.broker.servers()) == {"a", "b"}

    await wait_until_async(both_listed)
    await pair.a.broker.deregister()
    for side in (pair.a, pair.b):
        assert await side.broker.servers() == {"b": 0}


# -- Redis only: reconnection ----------------------------------------------------------


async def test_redis_broker_reconnects_resubscribes_and_reregisters(
    redis_server: RedisProcess,
) -> None:
    async with open_pair(Backend("redis", redis_server), PRESENCE_TTL) as pair:
        await check_reconnection(pair, redis_server)


async def check_reconnection(pair: Pair, redis: RedisProcess) -> None:
    a, b = pair.a, pair.b
    await a.broker.subscribe("topic")
    await a.join("r", "u1")
    await b.join("r", "u2")
    reconnects = {side.name: side.broker.status().reconnects for side in (a, b)}

    redis.stop()
    await wait_until(lambda: not a.broker.status().connected and not b.broker.status().connected)
    assert a.broker.status().ready is False
    redis.start()
    assert redis.key_list("wsproto:*") == []  # the restart wiped Redis

    def recovered() -> bool:
        return all(
            s.broker.status().ready and s.broker.status().reconnects > reconnects[s.name]
            for s in (a, b)
        )

    await wait_until(recovered)
    assert redis.numsub("topic", MARK) == {"topic": 1, MARK: 2}

    await b.broker.publish("topic", "after restart")
    await wait_until(lambda: a.sink.payloads("topic") == ["after restart"])

    async def members_back() -> bool:
        return sorted(await b.broker.members("r")) == ["u1", "u2"]

    await wait_until_async(members_back)
    assert await a.broker.rooms() == {"r": 2}


# -- history ---------------------------------------------------------------------------


def chat_message(text: str) -> messages.Template:
    return messages.new_message_received(text, "2024-01-01T00:00:00.000000Z")


async def test_positions_count_from_one_and_every_subscriber_sees_the_same(pair: Pair) -> None:
    for side in (pair.a, pair.b):
        await side.broker.subscribe("chat")
    before = await pair.a.broker.stream("chat", with_log=False)
    assert before.position.offset == 0 and before.log == ()
    positions = [await pair.b.broker.publish_message("chat", chat_message(t)) for t in "xyz"]
    assert [p.offset for p in positions] == [1, 2, 3]
    assert {p.epoch for p in positions} == {before.position.epoch}
    for side in (pair.a, pair.b):
        await wait_until(lambda side=side: len(side.sink.payloads("chat")) == 3)  # type: ignore[misc]
        framed = side.sink.payloads("chat")
        assert [f.split(" ", 2)[:2] for f in framed] == [
            [str(p.offset), p.epoch] for p in positions
        ]
    state = await pair.a.broker.stream("chat", with_log=True)
    assert state.position == positions[-1]
    assert [json.loads(t)["message"]["contents"]["content"] for t in state.log] == list("xyz")
    assert [json.loads(t)["message"]["contents"]["offset"] for t in state.log] == [1, 2, 3]


async def test_join_reads_the_room_stream_at_the_join(pair: Pair) -> None:
    room = messages.room_channel("h")
    await pair.a.broker.publish_message(room, messages.new_message("h", "u0", "one"))
    joined = await pair.b.broker.join(member("h", "u1"), with_log=True)
    assert joined.users == ["u1"] and joined.records == [""]
    assert joined.stream.position.offset == 1 and len(joined.stream.log) == 1
    assert (await pair.b.broker.join(member("h", "u2"), with_log=False)).stream.log == ()


async def test_history_is_bounded_and_expires(backend: Backend) -> None:
    """HISTORY_SIZE bounds the log; HISTORY_TTL after the last message the stream
    is gone (Redis: every key of it), and it comes back with a new epoch."""
    if backend.redis is None:
        net = MemoryNetwork(history_size=3, history_ttl=0.3)
        broker: Broker = MemoryBroker("a", net)
    else:
        broker = RedisBroker(backend.redis.url, "a", history_size=3, history_ttl=0.3)
    async with trio.open_nursery() as nursery:
        await nursery.start(broker.serve, Sink())
        first = [await broker.publish_message("chat", chat_message(str(i))) for i in range(5)]
        state = await broker.stream("chat", with_log=True)
        assert state.position == first[-1] and len(state.log) == 3 and state.first == 3

        if backend.redis is not None:
            redis = backend.redis
            assert redis.key_list("wsproto:{chat}:*") != []
            await wait_until(lambda: redis.key_list("wsproto:{chat}:*") == [])
        else:
            await wait_until(lambda: net.stream_count() == 0)
        again = await broker.stream("chat", with_log=True)
        assert again.position.offset == 0 and again.log == ()
        assert again.position.epoch != first[0].epoch
        nursery.cancel_scope.cancel()
