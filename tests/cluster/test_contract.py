"""The broker contract suite, run against ``ClusterBroker`` on a real local cluster.

The tests are the ones of ``tests/integration/test_broker_contract.py``; only
the ``pair`` differs: two cluster brokers on one cluster (started once for this
module, as these tests do not change its shape), each test under a key prefix
of its own so that no test sees another's presence.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator

import pytest
import trio

from wsproto_trio.broker.cluster.broker import ClusterBroker
from wsproto_trio.broker.cluster.topology import slot_of
from wsproto_trio.core import messages
from wsproto_trio.core.positions import Position

from ..cluster_support import LocalCluster, running_cluster
from ..integration.test_broker_contract import (
    MARK,
    PRESENCE_TTL,
    Pair,
    Side,
    test_deregister_removes_members_and_announces_left_room,
    test_deregister_removes_the_server_from_servers,
    test_join_reads_the_room_stream_at_the_join,
    test_join_returns_members_across_servers_and_announces,
    test_leave_returns_true_then_false_and_announces_once,
    test_members_rooms_and_servers_reflect_both_brokers,
    test_positions_count_from_one_and_every_subscriber_sees_the_same,
    test_publish_delivers_to_the_publisher_too_when_subscribed,
    test_publish_reaches_subscribers_only,
    test_resubscribe_after_unsubscribe_delivers_again,
    test_status_is_connected_and_ready_once_running,
    test_subscribe_is_idempotent,
    test_unsubscribe_stops_delivery,
)
from ..support import wait_until

__all__ = [
    "test_deregister_removes_members_and_announces_left_room",
    "test_deregister_removes_the_server_from_servers",
    "test_join_reads_the_room_stream_at_the_join",
    "test_join_returns_members_across_servers_and_announces",
    "test_leave_returns_true_then_false_and_announces_once",
    "test_members_rooms_and_servers_reflect_both_brokers",
    "test_positions_count_from_one_and_every_subscriber_sees_the_same",
    "test_publish_delivers_to_the_publisher_too_when_subscribed",
    "test_publish_reaches_subscribers_only",
    "test_resubscribe_after_unsubscribe_delivers_again",
    "test_status_is_connected_and_ready_once_running",
    "test_subscribe_is_idempotent",
    "test_unsubscribe_stops_delivery",
]

_prefixes = itertools.count()


@pytest.fixture(scope="module")
def shared_cluster() -> Iterator[LocalCluster]:
    with running_cluster() as cluster:
        yield cluster


@pytest.fixture
def presence_ttl() -> float:
    return PRESENCE_TTL


@pytest.fixture
async def pair(shared_cluster: LocalCluster, presence_ttl: float) -> AsyncIterator[Pair]:
    prefix = f"wsproto-t{next(_prefixes)}:"
    brokers = [
        ClusterBroker(shared_cluster.seeds, name, presence_ttl=presence_ttl, prefix=prefix)
        for name in ("a", "b")
    ]
    pair = Pair("redis-cluster", Side("a", brokers[0]), Side("b", brokers[1]), None)
    async with trio.open_nursery() as nursery:
        with trio.fail_after(15):
            for side in (pair.a, pair.b):
                await nursery.start(side.broker.serve, side.sink)
            await wait_until(lambda: all(s.broker.status().ready for s in (pair.a, pair.b)))
            for side in (pair.a, pair.b):
                await side.broker.subscribe(MARK)
        try:
            yield pair
        finally:
            nursery.cancel_scope.cancel()


# -- cluster only: writes lost in a failover ------------------------------------------


async def test_a_stream_that_lost_seen_writes_takes_a_new_epoch(
    pair: Pair, shared_cluster: LocalCluster
) -> None:
    """A promoted replica may lack the last messages its master accepted; their
    offsets must not be given out again, so the stream starts a new epoch."""
    broker = pair.a.broker
    assert isinstance(broker, ClusterBroker)
    channel = "room:lossy"
    await broker.subscribe(channel)
    template = messages.new_message("lossy", "u", "hi")
    for _ in range(3):
        top = await broker.publish_message(channel, template)
    await wait_until(lambda: broker.seen.get(channel) == top)
    meta, _ = broker.stream_keys(channel)

    def roll_back() -> None:  # what an unreplicated tail looks like after promotion
        with shared_cluster.cluster_client() as client:
            client.hset(meta, "top", 1)

    await trio.to_thread.run_sync(roll_back)
    await broker.resync()  # no failover seen: nothing is checked
    assert (await broker.stream(channel, with_log=False)).position == Position(1, top.epoch)
    topology = broker.pubsub.topology
    assert topology is not None
    owner = topology.owner(slot_of(meta))
    assert owner is not None
    broker.suspect({owner})  # as a promotion does
    await broker.resync()
    state = await broker.stream(channel, with_log=True)
    assert state.position.epoch != top.epoch and state.position.offset == 0
    assert state.log == ()
    await broker.resync()  # nothing more to forget
    assert (await broker.stream(channel, with_log=False)).position == state.position


async def test_members_a_promoted_master_lacks_are_put_back(
    pair: Pair, shared_cluster: LocalCluster
) -> None:
    """Only the rooms on a promoted master are re-registered, and a member it
    lost is added again and announced as a join."""
    a = pair.a
    assert isinstance(a.broker, ClusterBroker)
    await a.join("kept", "u1")
    await a.join("lossy2", "u2")
    members_key = a.broker.members_key("lossy2")

    def lose() -> None:
        with shared_cluster.cluster_client() as client:
            client.hdel(members_key, "u2")

    await trio.to_thread.run_sync(lose)
    topology = a.broker.pubsub.topology
    assert topology is not None
    owner = topology.owner(slot_of(members_key))
    assert owner is not None
    await pair.b.broker.subscribe("room:lossy2")
    a.broker.suspect({owner})
    await a.broker.resync()
    assert sorted(await pair.b.broker.members("lossy2")) == ["u2"]
    await wait_until(lambda: any("u2" in p for p in pair.b.sink.payloads("room:lossy2")))
    assert sorted(await pair.b.broker.members("kept")) == ["u1"]
