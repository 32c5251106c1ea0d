"""The sharded pub/sub bridge against a real local cluster: placement, slot
migration (pushed ``sunsubscribe``), failover, connections per server."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import trio

from wsproto_trio.broker.cluster.bridge import ShardedPubSub, wire_name
from wsproto_trio.broker.cluster.topology import slot_of

from ..cluster_support import LocalCluster
from ..procs import figure
from ..support import wait_until

ROOMS = [f"room:r{i}" for i in range(30)]
CLASSIC = ["chat", "ping1", "ping2"]


class Sink:
    def __init__(self) -> None:
        self.received: list[tuple[str, str]] = []
        self.resubscribed_channels: list[str] = []

    def deliver(self, batch: Sequence[tuple[str, str]]) -> None:
        self.received.extend(batch)

    def resubscribed(self, channels: Sequence[str]) -> None:
        self.resubscribed_channels.extend(channels)

    def got(self, channel: str, data: str) -> bool:
        return (channel, data) in self.received


@asynccontextmanager
async def open_bridge(
    cluster: LocalCluster, server_id: str = "s0"
) -> AsyncIterator[tuple[ShardedPubSub, Sink]]:
    bridge = ShardedPubSub(cluster.seeds, server_id, timeout=2.0)
    sink = Sink()
    async with trio.open_nursery() as nursery:
        await nursery.start(bridge.serve, sink)
        try:
            yield bridge, sink
        finally:
            nursery.cancel_scope.cancel()


async def subscribe_all(bridge: ShardedPubSub, channels: list[str]) -> None:
    with trio.fail_after(20):
        for channel in channels:
            while True:
                try:
                    await bridge.subscribe(channel)
                    break
                except (ConnectionError, TimeoutError, OSError):
                    await trio.sleep(0.05)


def publish(cluster: LocalCluster, channel: str, data: str) -> None:
    wire, sharded = wire_name(channel)
    with cluster.cluster_client() as client:
        client.execute_command("SPUBLISH" if sharded else "PUBLISH", wire, data)


async def publish_until_heard(cluster: LocalCluster, sink: Sink, channel: str) -> None:
    """Publish numbered probes until one arrives (a subscription may be moving)."""
    with trio.fail_after(15):
        for n in range(10_000):
            data = f"probe-{channel}-{n}-{time.monotonic()}"
            await trio.to_thread.run_sync(publish, cluster, channel, data)
            with trio.move_on_after(0.2):
                await wait_until(lambda d=data: sink.got(channel, d))  # type: ignore[misc]
                return


def owners(cluster: LocalCluster, channels: list[str]) -> dict[str, int]:
    return {channel: cluster.owner(wire_name(channel)[0]) for channel in channels}


async def test_rooms_are_subscribed_on_their_owners(redis_cluster: LocalCluster) -> None:
    async with open_bridge(redis_cluster) as (bridge, sink):
        await subscribe_all(bridge, ROOMS + CLASSIC)
        where = await trio.to_thread.run_sync(owners, redis_cluster, ROOMS)
        assert set(where.values()) == set(redis_cluster.master_ports())  # spread over all
        for channel in ROOMS:
            count = await trio.to_thread.run_sync(redis_cluster.shardnumsub, wire_name(channel)[0])
            assert count == 1, channel
        numsub = await trio.to_thread.run_sync(redis_cluster.numsub, *CLASSIC)
        assert numsub == dict.fromkeys(CLASSIC, 1)
        assert bridge.connections == 4  # three masters and the classic link
        for channel in [*ROOMS[:5], "chat"]:
            await trio.to_thread.run_sync(publish, redis_cluster, channel, "hello")
            await wait_until(lambda c=channel: sink.got(c, "hello"))  # type: ignore[misc]
        for channel in ROOMS:
            await bridge.unsubscribe(channel)
        await wait_until_zero(redis_cluster, ROOMS)
        assert bridge.ready and bridge.reason is None
        assert sink.resubscribed_channels == []


async def wait_until_zero(cluster: LocalCluster, channels: list[str]) -> None:
    def counts() -> list[int]:
        return [cluster.shardnumsub(wire_name(c)[0]) for c in channels]

    with trio.fail_after(10):
        while any(await trio.to_thread.run_sync(counts)):
            await trio.sleep(0.05)


async def test_a_moved_slot_is_followed(redis_cluster: LocalCluster) -> None:
    """The old owner pushes ``sunsubscribe``; the bridge subscribes on the new
    owner and reports the channel so that the gap is filled from history."""
    async with open_bridge(redis_cluster) as (bridge, sink):
        await subscribe_all(bridge, ROOMS[:6])
        room = ROOMS[0]
        wire = wire_name(room)[0]
        source = await trio.to_thread.run_sync(redis_cluster.owner, wire)
        target = next(p for p in redis_cluster.master_ports() if p != source)
        began = trio.current_time()
        await trio.to_thread.run_sync(redis_cluster.migrate_slot, slot_of(wire), target)
        await wait_until(lambda: room in sink.resubscribed_channels)
        figure("cluster_bridge_slot_move_resubscribe_s", trio.current_time() - began)
        assert await trio.to_thread.run_sync(redis_cluster.owner, wire) == target
        assert await trio.to_thread.run_sync(redis_cluster.shardnumsub, wire) == 1
        await publish_until_heard(redis_cluster, sink, room)
        assert sink.resubscribed_channels == [room]  # the other rooms did not move


async def test_failover_resubscribes_on_the_promoted_replica(
    redis_cluster: LocalCluster,
) -> None:
    async with open_bridge(redis_cluster) as (bridge, sink):
        await subscribe_all(bridge, ROOMS + CLASSIC)
        where = await trio.to_thread.run_sync(owners, redis_cluster, ROOMS)
        dead = where[ROOMS[0]]
        moved = [room for room, port in where.items() if port == dead]
        began = trio.current_time()
        await trio.to_thread.run_sync(redis_cluster.kill_master, dead)
        await wait_until(lambda: bridge.reason is not None)  # a needed shard is away
        promotion = await trio.to_thread.run_sync(redis_cluster.wait_promoted, dead)
        promoted = trio.current_time()
        await wait_until(lambda: set(moved) <= set(sink.resubscribed_channels), timeout=10)
        await wait_until(lambda: bridge.ready, timeout=10)
        figure("cluster_bridge_failover_promotion_s", promotion)
        figure("cluster_bridge_failover_resubscribed_after_promotion_s",
               trio.current_time() - promoted)  # fmt: skip
        figure("cluster_bridge_failover_total_s", trio.current_time() - began)
        assert not set(sink.resubscribed_channels) & (set(ROOMS) - set(moved))
        for room in moved:
            wire = wire_name(room)[0]
            assert await trio.to_thread.run_sync(redis_cluster.shardnumsub, wire) == 1
        for channel in [moved[0], ROOMS[-1], "chat"]:
            await publish_until_heard(redis_cluster, sink, channel)
        assert bridge.connections == 4
